"""What ptxas reports for the GPU kernels (registers per thread, spills, stack, shared memory), without a GPU.

    python benchmarks/ptxas_report.py cuda   [--arch 90] [--out FILE.json]
    python benchmarks/ptxas_report.py triton [--arch 90] [--out FILE.json]

cuda: compiles each csrc/cuda/*_kernels.cu on its own (they include no torch header) with the toolkit's nvcc at the
build's -O3 and ``-Xptxas -v`` for sm_<arch>, and lists every kernel instantiation (about 10 s per file). The nvcc of
$CUDA_HOME/bin is used when CUDA_HOME is set (on the development machines the nvcc on PATH is a wrapper).

triton: compiles the kernels of ``gmmkernels.triton.mixture_em_stats`` (``_em_stats_kernel``, one component tile;
``_em_logp_kernel`` and ``_em_tile_stats_kernel``, K in tiles) for sm_<arch>a with Triton's own compiler and the ptxas
it ships, for each (kernel, BLOCK_K, BLOCK_D, one chunk or several) x (BLOCK_N, num_warps): registers per thread /
bytes of spill stores (about 3 minutes). The CUDA block sizes (``cuda_blocks``) were chosen from this table. Must run
without TRITON_INTERPRET=1 (the interpreter replaces the compiler).

Spills and register counts are static facts of the compiled code, not timings: a kernel that spills may still be
fast, and one that does not may be slow.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SIGNATURE = {"X": "*fp32", "WM": "*fp32", "W": "*fp32", "LOGC": "*fp32", "PART": "*fp32", "RESP": "*fp32",
             "LOGP": "*fp32", "RL": "*fp32",
             "N": "i32", "K": "i32", "D": "i32", "x_bstride": "i32", "ROWS": "i32", "WITH_RESP": "constexpr",
             "ONE_CHUNK": "constexpr", "BLOCK_N": "constexpr", "BLOCK_K": "constexpr", "BLOCK_D": "constexpr"}


def resources(kernel, arch: int, consts: dict, num_warps: int, ptxas: str) -> tuple[int, int]:
    """(registers per thread, bytes of spill stores) that ptxas reports for one compiled configuration."""
    import triton
    from triton.backends.compiler import GPUTarget

    sig = {name: SIGNATURE[name] for name in kernel.arg_names}
    src = triton.compiler.ASTSource(fn=kernel, signature=sig, constexprs=consts)
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})
    ptx = compiled.asm["ptx"]
    target = re.search(r"^\.target\s+(\S+)", ptx, re.M).group(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        out = subprocess.run([ptxas, "-v", f"-arch={target}", path, "-o", os.path.join(tmp, "k.o")],
                             capture_output=True, text=True, check=True).stderr
    regs = int(re.search(r"Used (\d+) registers", out).group(1))
    spill = re.search(r"(\d+) bytes spill stores", out)
    return regs, int(spill.group(1)) if spill else 0


_ENTRY = re.compile(r"Compiling entry function '(\S+)'")
_FUNC = re.compile(r"Function properties for (\S+)")
_PROPS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGS = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")


def parse_ptxas(text: str) -> list[dict]:
    """The kernels of one ``ptxas -v`` log: mangled name, registers, spill stores / loads, stack and static shared
    memory in bytes. Each "Function properties for F" line names the function of the properties line after it;
    "Used N registers" belongs to the last entry function compiled. Device functions that are not entry points are
    left out."""
    entries, props = {}, {}
    cur = prop_of = None
    for line in text.splitlines():
        m = _ENTRY.search(line)
        if m:
            cur = m.group(1)
            entries.setdefault(cur, dict(kernel=cur))
            continue
        m = _FUNC.search(line)
        if m:
            prop_of = m.group(1)
            continue
        m = _PROPS.search(line)
        if m and prop_of is not None:
            props[prop_of] = dict(stack_bytes=int(m.group(1)), spill_store_bytes=int(m.group(2)),
                                  spill_load_bytes=int(m.group(3)))
            prop_of = None
            continue
        m = _REGS.search(line)
        if m and cur is not None:
            entries[cur].update(registers=int(m.group(1)), smem_bytes=int(m.group(2) or 0))
    return [dict(e, **props.get(name, {})) for name, e in entries.items()]


def demangle(names: list[str]) -> list[str]:
    """Readable kernel names (c++filt when present), the anonymous-namespace prefix dropped."""
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True).stdout
        names = out.splitlines()
    except (OSError, subprocess.CalledProcessError):
        pass
    return [re.sub(r"\(anonymous namespace\)::", "", n) for n in names]


def cuda_report(arch: int) -> list[dict]:
    """ptxas's report for every kernel of csrc/cuda/*_kernels.cu, compiled as the build compiles them."""
    home = os.environ.get("CUDA_HOME")
    nvcc = os.path.join(home, "bin", "nvcc") if home else "nvcc"
    rows = []
    for src in sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*_kernels.cu"))):
        with tempfile.TemporaryDirectory() as tmp:
            res = subprocess.run([nvcc, f"-arch=sm_{arch}", "-O3", "-std=c++17", "--expt-relaxed-constexpr",
                                  "-DWITH_CUDA", "-Xptxas", "-v", "-I", os.path.join(ROOT, "csrc", "include"), "-c",
                                  src, "-o", os.path.join(tmp, "k.o")], capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"nvcc failed on {src}:\n{res.stderr[-3000:]}")
        found = parse_ptxas(res.stderr)
        for r, name in zip(found, demangle([r["kernel"] for r in found])):
            r.update(file=os.path.relpath(src, ROOT), kernel=name.split("(")[0])
            rows.append(r)
    return rows


def triton_report(arch: int) -> list[dict]:
    """Registers and spill stores of the Triton EM kernel over the block configurations."""
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise RuntimeError("unset TRITON_INTERPRET: the interpreter does not compile kernels")
    sys.path.insert(0, ROOT)
    import triton
    from triton.backends.nvidia.compiler import get_ptxas

    from gmmkernels.triton.mixture_em_stats import _em_logp_kernel, _em_stats_kernel, _em_tile_stats_kernel

    ptxas = get_ptxas(arch).path
    rows = []
    # (kernel, label, ONE_CHUNK (None: no such parameter), (BLOCK_K, BLOCK_D) classes (BLOCK_D None: none), BLOCK_Ns)
    one_tile = [(16, 16), (16, 32), (32, 16), (32, 32), (64, 16), (64, 32)]
    variants = [(_em_stats_kernel, "one tile, one chunk ", True, one_tile, (16, 32, 64)),
                (_em_stats_kernel, "one tile, chunked   ", False, one_tile, (16, 32, 64)),
                (_em_logp_kernel, "K tiles: log p      ", None, [(32, None), (64, None)], (32, 64, 128)),
                (_em_tile_stats_kernel, "K tiles: statistics ", True, [(32, 32), (32, 64), (32, 128)], (16, 32, 64)),
                (_em_tile_stats_kernel, "K tiles: stats, chunked", False, [(32, 32), (32, 64)], (16, 32, 64))]
    for kernel, label, one, classes, bns in variants:
        for bk, bd in classes:
            cells = []
            for bn in bns:
                for nw in (4, 8):
                    consts = dict(BLOCK_N=bn, BLOCK_K=bk)
                    if bd is not None:
                        consts.update(WITH_RESP=False, ONE_CHUNK=one, BLOCK_D=bd)
                    regs, spill = resources(kernel, arch, consts, nw, ptxas)
                    rows.append(dict(kernel=kernel.__name__, BLOCK_K=bk, BLOCK_D=bd, one_chunk=one, BLOCK_N=bn,
                                     num_warps=nw, registers=regs, spill_store_bytes=spill))
                    cells.append(f"N{bn}/w{nw} {regs}/{spill}")
            print(f"{label} BLOCK_K={bk:2d} BLOCK_D={bd or '-'!s:>3s} | " + "  ".join(cells), flush=True)
    where = ptxas.split("site-packages" + os.sep)[-1]  # the ptxas the triton package ships
    return [dict(r, triton=triton.__version__, ptxas=where) for r in rows]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["cuda", "triton"])
    ap.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90: H100 / H200)")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    a = ap.parse_args(argv)
    try:
        rows = cuda_report(a.arch) if a.what == "cuda" else triton_report(a.arch)
    except (RuntimeError, OSError) as e:
        print(f"ptxas_report: {e}", file=sys.stderr)
        return 2
    if a.what == "cuda":
        w = max(len(r["kernel"]) for r in rows) if rows else 10
        print(f"{'kernel':{w}s}  regs  spill st/ld  stack  smem")
        for r in rows:
            print(f"{r['kernel']:{w}s}  {r.get('registers', 0):4d}  {r.get('spill_store_bytes', 0):5d}/"
                  f"{r.get('spill_load_bytes', 0):<5d} {r.get('stack_bytes', 0):5d}  {r.get('smem_bytes', 0):5d}")
        print(f"{len(rows)} kernels, {sum(r.get('spill_store_bytes', 0) > 0 for r in rows)} with spill stores")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(dict(what=a.what, arch=a.arch, rows=rows), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
