"""Benchmark of gmmkernels.lowrank_adapter (the SMD hypernetwork adapter chain, docs/kernels.md (lowrank_adapter)).

Modes
  fwd      out = W_L(...(W_1 r)), W_l = u_l u_l^T + softplus(s_l) I, for r [P, d], u [P, L, d], s [L].
  fwd+bwd  the same forward, then the gradients of <g, out> with respect to r, u and s.
Providers
  gmmkernels-cpu / -cuda / -triton   the fused kernels (never form d x d per pixel)
  torch-eager                        the official code's materialised form (W_l as [P, d, d]; the baseline)
  torch-factored                     the rank-one form u (u.r) + c r in plain torch ops (autograd, unfused)
  torch-compile                      torch.compile of torch-factored
The float64 check uses the rank-one form on every row (identical math to the materialised form; the tests check
that equality separately).

Extra: ``--train-step`` times one training step (forward, backward, Adam) of the SMD model against the vanilla
model on the same data (digits 8x8 UNet and the 2-D MLP toy), i.e. the training-step overhead of SMD.

Run: python benchmarks/bench_lowrank_adapter.py [--quick] [--device cpu|cuda] [--providers ...] [--train-step]
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import torch.nn.functional as F

from benchmarks import _harness as H

OP = "lowrank_adapter"
TOL = {"ieee": {"out_rel": 1e-5, "grad_rel": 1e-4}, "bf16": {"out_rel": 2e-2, "grad_rel": 5e-2}}


# ----------------------------------------------------------------------------------------------
# baselines


def materialised(r, u, s):
    """The official code's form: W_l = u_l u_l^T + softplus(s_l) I as a [P, d, d] tensor per layer."""
    d = r.shape[-1]
    eye = torch.eye(d, dtype=r.dtype, device=r.device)
    c = F.softplus(s)
    x = r
    for l in range(u.shape[1]):
        ul = u[:, l]
        W = torch.matmul(ul[:, :, None], ul[:, None, :]) + c[l] * eye
        x = torch.matmul(W, x[:, :, None])[:, :, 0]
    return x


def factored(r, u, s):
    c = F.softplus(s)
    x = r
    for l in range(u.shape[1]):
        ul = u[:, l]
        x = ul * (ul * x).sum(-1, keepdim=True) + c[l] * x
    return x


def _wrap(case, inputs, f):
    leaves = [inputs["r"], inputs["u"], inputs["s"]]
    if case.mode == "fwd":

        def fn():
            with torch.no_grad():
                return {"out": f(*leaves)}

        return fn
    g = inputs["g"]

    def fn():
        out = f(*leaves)
        grads = torch.autograd.grad((out * g).sum(), leaves)
        return {"out": out.detach(), "grad_r": grads[0], "grad_u": grads[1], "grad_s": grads[2]}

    return fn


def _gmm_provider(backend):
    def setup(case, inputs):
        from gmmkernels import lowrank_adapter

        return _wrap(case, inputs, lambda r, u, s: lowrank_adapter(r, u, s, backend=backend))

    def available(device):
        try:
            from gmmkernels import available_adapter_backends
        except Exception as e:
            return f"gmmkernels.ops.lowrank_adapter does not import: {e}"
        if backend == "triton" and device != "cuda":
            return "Triton kernels are timed on CUDA only (on CPU they would run in the interpreter)"
        backs = available_adapter_backends(device)
        return None if backend in backs else f"backend {backend!r} not in {backs}"

    return setup, available


def _compile_setup(case, inputs):
    import torch._dynamo

    torch._dynamo.reset()
    compiled = torch.compile(factored, dynamic=False)
    return _wrap(case, inputs, compiled)


REGISTRY = H.ProviderRegistry()
for _b in ("cpu", "cuda", "triton"):
    _s, _a = _gmm_provider(_b)
    REGISTRY.register(H.Provider(f"gmmkernels-{_b}", _s, _a, "ieee", devices=(("cuda",) if _b != "cpu" else ("cpu",)),
                                 description=f"gmmkernels.lowrank_adapter(backend={_b!r}): fused kernel"))
REGISTRY.register(H.Provider("torch-eager", lambda c, i: _wrap(c, i, materialised), precision="ieee",
                             nkd_temporaries={"fwd": 3, "fwd+bwd": 6},
                             description="official materialised form: W_l = u u^T + softplus(s) I as [P, d, d]"))
REGISTRY.register(H.Provider("torch-factored", lambda c, i: _wrap(c, i, factored), precision="ieee",
                             description="rank-one form in plain torch ops (autograd)"))
REGISTRY.register(H.Provider("torch-compile", _compile_setup, precision="ieee",
                             description="torch.compile(rank-one form); first_call_ms includes compilation"))


# ----------------------------------------------------------------------------------------------
# inputs, reference, checks, counts


def make_inputs(case: H.Case) -> dict:
    p = case.params
    P, L, d = p["P"], p["L"], p["d"]
    g = torch.Generator().manual_seed(1234 + P + 7 * L + 13 * d)
    dev, dt = case.device, case.torch_dtype
    inputs = {"r": torch.randn(P, d, generator=g), "u": torch.randn(P, L, d, generator=g) / math.sqrt(d),
              "s": torch.randn(L, generator=g)}
    inputs = {k: v.to(device=dev, dtype=dt).contiguous() for k, v in inputs.items()}
    if case.mode != "fwd":
        for v in inputs.values():
            v.requires_grad_(True)
        inputs["g"] = torch.randn(P, d, generator=g).to(device=dev, dtype=dt)
    return inputs


def reference(case: H.Case, inputs: dict) -> dict:
    leaves = [inputs[k].detach().double().requires_grad_(case.mode != "fwd") for k in ("r", "u", "s")]
    with torch.set_grad_enabled(case.mode != "fwd"):
        out = factored(*leaves)
    if case.mode == "fwd":
        return {"out": out}
    grads = torch.autograd.grad((out * inputs["g"].double()).sum(), leaves)
    return {"out": out.detach(), "grad_r": grads[0], "grad_u": grads[1], "grad_s": grads[2]}


def _rel_l2(a, b) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    den = torch.linalg.vector_norm(b).item()
    num = torch.linalg.vector_norm(a - b).item()
    return num / den if den > 0 else num


def compare(case: H.Case, out: dict, expected: dict, precision: str):
    tol = TOL["bf16" if case.dtype in ("bfloat16", "float16") else "ieee"]
    errs = {"out_rel_l2": _rel_l2(out["out"], expected["out"])}
    ok = errs["out_rel_l2"] <= tol["out_rel"]
    for k in ("grad_r", "grad_u", "grad_s"):
        if k in expected:
            errs[f"{k}_rel_l2"] = _rel_l2(out[k], expected[k])
            ok &= errs[f"{k}_rel_l2"] <= tol["grad_rel"]
    errs["tolerances"] = tol
    return errs, bool(ok)


def counts(case: H.Case) -> H.Counts:
    """Useful work of the rank-one form: forward 4 L P d FLOP (dot + axpy per layer), reads r and u, writes out;
    fwd+bwd adds the backward (about 3x: replay + three dots + two axpys per layer) and its reads/writes."""
    p = case.params
    P, L, d = p["P"], p["L"], p["d"]
    es = max(2, torch.empty((), dtype=case.torch_dtype).element_size())
    flops = 4 * L * P * d
    nbytes = es * (P * d * (L + 2))
    if case.mode != "fwd":
        flops += 12 * L * P * d
        nbytes += es * (P * d * (2 * L + 3))
    return H.Counts(float(flops), float(nbytes), 0.0)


SPEC = H.OpSpec(make_inputs=make_inputs, reference=reference, compare=compare, counts=counts,
                nkd_elements=lambda c: c.params["P"] * c.params["d"] * c.params["d"])


def _cases(device: str, quick: bool, dtypes) -> list:
    C = []

    def add(name, P, L, d, modes=("fwd", "fwd+bwd")):
        for dt in dtypes:
            for m in modes:
                C.append(H.Case(OP, {"P": P, "L": L, "d": d}, dt, m, device, name))

    if quick:
        add("quick", 256, 2, 16)
        return C
    if device == "cpu":
        add("smd-32x32-b8", 8 * 32 * 32, 2, 100)       # the code's adapter at batch 8 (d_z = 100)
        add("smd-8x8-b128", 128 * 8 * 8, 2, 32)        # the digits model of `reproduce smd`
        return C
    add("smd-32x32-b128", 128 * 32 * 32, 2, 100)       # the code's CIFAR setting: P = 131k, d_z = 100
    add("smd-32x32-b32", 32 * 32 * 32, 2, 100)
    add("smd-d256", 65536, 2, 256)
    add("smd-d512-generic", 16384, 2, 512)
    return C


# ----------------------------------------------------------------------------------------------
# training-step overhead of SMD over vanilla


def train_step_overhead(device: str, quick: bool, log=print) -> list:
    from gmmkernels.diffusion.methods import smd as S

    rows = []
    cfgs = [("toy-mlp-2d", (2,), 512, 16), ("digits-unet-8x8", (1, 8, 8), 128, 32)]
    if not quick and device == "cuda":
        cfgs.append(("unet-32x32", (3, 32, 32), 64, 100))
    n_iter = 3 if quick else 20
    for name, shape, batch, dz in cfgs:
        sch = S.make_smd_schedule("sigmoid", 1000)
        res = {}
        for method in ("vanilla", "smd"):
            for backend in (("auto", "reference") if method == "smd" else ("auto",)):
                torch.manual_seed(0)
                model = S.build_smd_model(shape, sch, smd=method == "smd", latent_dim=dz, backend=backend).to(device)
                opt = torch.optim.Adam(model.parameters(), lr=1e-4)
                x = torch.randn(batch, *shape, device=device)
                g = torch.Generator().manual_seed(0)

                def step():
                    loss = S.smd_loss(model, x, generator=g)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()

                step()
                if device == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                ts = []
                for _ in range(n_iter):
                    t0 = time.perf_counter()
                    step()
                    if device == "cuda":
                        torch.cuda.synchronize()
                    ts.append(time.perf_counter() - t0)
                ts.sort()
                ms = 1e3 * ts[len(ts) // 2]
                mem = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
                key = method if method == "vanilla" else f"smd-{backend}"
                res[key] = ms
                rows.append({"op": "smd_train_step", "case": name, "provider": key, "device": device,
                             "params": {"shape": list(shape), "batch": batch, "d_z": dz}, "ms": {"p50": ms},
                             "peak_mem_mb": mem})
        log(f"[train step {name}, batch {batch}, d_z {dz}] vanilla {res['vanilla']:.2f} ms, SMD fused "
            f"{res['smd-auto']:.2f} ms ({res['smd-auto'] / res['vanilla']:.2f}x), SMD materialised "
            f"{res['smd-reference']:.2f} ms ({res['smd-reference'] / res['vanilla']:.2f}x)")
    return rows


# ----------------------------------------------------------------------------------------------


def add_arguments(ap):
    ap.add_argument("--train-step", action="store_true", help="also time SMD vs vanilla training steps")


def meta_extra(args) -> dict:
    return {"providers": {n: REGISTRY[n].description for n in REGISTRY.names()}}


def run(args) -> list:
    cases = H.filter_cases(_cases(args.device, args.quick, args.dtype_list), args)
    wanted = args.provider_list
    if wanted is None and args.quick:
        wanted = [p.name for p in REGISTRY.select(args.device, None) if p.name != "torch-compile"]
    providers = REGISTRY.select(args.device, wanted)
    rows = H.run_cases(SPEC, cases, providers, min_run_time=args.min_run_time, threads=args.threads,
                       budget_s=args.budget_s)
    if getattr(args, "train_step", False):
        extra = train_step_overhead(args.device, args.quick)
        for r in extra:
            row = H.base_row(H.Case(r["op"], r["params"], "float32", "fwd+bwd", r["device"], r["case"]), r["provider"],
                             "ieee")
            row.update(ms={"p20": None, "p50": r["ms"]["p50"], "p80": None, "iqr": None}, peak_mem_mb=r["peak_mem_mb"])
            rows.append(row)
    return rows


if __name__ == "__main__":
    import benchmarks.bench_lowrank_adapter as _self

    sys.exit(H.main_for(_self))
