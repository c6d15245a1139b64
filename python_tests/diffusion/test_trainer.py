"""Trainer: learning, exact resume from checkpoints, DDP (2 gloo processes via torchrun) vs one process."""
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from gmmkernels.diffusion import TrainConfig, Trainer, get_dataset, load_checkpoint, make_schedule
from gmmkernels.diffusion.models import MLPEps, UNetEps


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: intra-op threads only add overhead


def _mlp(seed=0, **kw):
    torch.manual_seed(seed)
    return MLPEps(2, hidden=32, depth=2, **kw)


def test_loss_decreases_and_history():
    ds = get_dataset("gmm2d", n=4000)
    tr = Trainer(_mlp(), make_schedule("linear", 100), ds.x,
                 TrainConfig(steps=300, batch_size=128, lr=3e-3, log_every=50, progress=False))
    hist = tr.train()
    assert [h["step"] for h in hist] == [50, 100, 150, 200, 250, 300]
    assert hist[-1]["loss"] < 0.8 * hist[0]["loss"]
    # the EMA tracks the weights
    assert not all(torch.equal(a, b) for a, b in zip(tr.ema.parameters(), tr.model.parameters()))


def test_moment_heads_are_trained():
    ds = get_dataset("gmm1d", n=2000)
    m = MLPEps(1, hidden=32, depth=2, heads=("eps", "eps2", "eps3"))
    tr = Trainer(m, make_schedule("vp"), ds.x, TrainConfig(steps=200, batch_size=128, lr=3e-3, progress=False, log_every=0))
    tr.train()
    x = torch.randn(500, 1)
    with torch.no_grad():
        out = tr.model(x, torch.full((500,), 0.9), heads=True)
    # near t = 1 the data are almost pure noise: E[eps^2 | x_t] ~ 1
    assert 0.6 < float(out["eps2"].mean()) < 1.4


def _states_equal(a: Trainer, b: Trainer):
    for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()):
        assert torch.equal(x, y)
    for x, y in zip(a.ema.state_dict().values(), b.ema.state_dict().values()):
        assert torch.equal(x, y)
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    for k in sa:
        for n in sa[k]:
            assert torch.equal(sa[k][n], sb[k][n])
    assert torch.equal(a.generator.get_state(), b.generator.get_state())
    assert a.step == b.step


@pytest.mark.parametrize("arch", ["mlp", "unet"])
def test_resume_is_bit_identical(tmp_path, arch):
    """Stop at step 4, reload into a fresh trainer, continue to 8: identical to an uninterrupted run
    (dropout on, so the torch RNG state is part of the check)."""
    if arch == "mlp":
        ds = get_dataset("gmm2d", n=1000)
        make = lambda: _mlp(dropout=0.2, heads=("eps", "eps2"))  # noqa: E731
    else:
        ds = get_dataset("digits")
        ds.x = ds.x[:200]

        def make():
            torch.manual_seed(0)
            return UNetEps((1, 8, 8), ch=8, dropout=0.2)
    sched = make_schedule("cosine", 50)
    cfg = TrainConfig(steps=8, batch_size=16, lr=1e-3, warmup=3, ema_decay=0.9, log_every=2, progress=False)
    torch.manual_seed(123)
    full = Trainer(make(), sched, ds.x, cfg)
    full.train()

    torch.manual_seed(123)
    first = Trainer(make(), sched, ds.x, cfg, out_dir=tmp_path)
    first.train(4)
    assert (tmp_path / "checkpoint.pt").exists()
    torch.manual_seed(999)  # the global RNG is restored from the checkpoint
    second = Trainer(make(), sched, ds.x, cfg)
    second.load(tmp_path / "checkpoint.pt")
    assert second.step == 4
    second.train()
    _states_equal(full, second)
    assert [h["loss"] for h in second.history] == [h["loss"] for h in full.history]

    model, sch2, ck = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ck["step"] == 4 and sch2.spec() == sched.spec()
    for x, y in zip(model.state_dict().values(), first.ema.state_dict().values()):
        assert torch.equal(x, y)


@pytest.mark.parametrize("kw, match", [
    (dict(batch_size=0), "TrainConfig: argument 'batch_size' must be an int >= 1, got 0"),
    (dict(optimizer="sgd"), "TrainConfig: argument 'optimizer' must be one of"),
    (dict(lr=-1.0), "TrainConfig: argument 'lr' must be a finite number > 0, got -1.0"),
    (dict(ema_decay=1.0), r"TrainConfig: argument 'ema_decay' must be a finite number in \[0, 1\), got 1.0"),
    (dict(grad_clip=-1.0), "TrainConfig: argument 'grad_clip' must be None or a finite number >= 0"),
])
def test_bad_train_config(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw).validate()


def test_bad_trainer_args():
    with pytest.raises(TypeError, match="TrainConfig: argument 'steps' must be an int >= 0, got 2.5"):
        TrainConfig(steps=2.5).validate()
    with pytest.raises(ValueError, match="unknown keys"):
        TrainConfig.from_dict({"stepz": 3})
    with pytest.raises(ValueError, match="Trainer: argument 'labels' is None, but config.conditional=True needs labels"):
        Trainer(_mlp(), make_schedule("linear", 10), torch.zeros(10, 2), TrainConfig(conditional=True))
    with pytest.raises(ValueError, match="not a gmmkernels diffusion checkpoint"):
        Trainer(_mlp(), make_schedule("linear", 10), torch.zeros(10, 2)).load_state_dict({"x": 1})


# -- DDP --------------------------------------------------------------------------------------------

WORKER = textwrap.dedent("""
    import json, os, sys, torch
    torch.set_num_threads(1)
    from gmmkernels.diffusion import TrainConfig, Trainer, get_dataset, init_distributed, make_schedule
    from gmmkernels.diffusion.models import MLPEps
    from gmmkernels.diffusion.commands import main
    out = sys.argv[1]
    rank, world, dev = init_distributed("cpu")
    assert world == 2 and torch.distributed.get_backend() == "gloo"
    ds = get_dataset("gmm2d", n=1000)
    torch.manual_seed(0)
    model = MLPEps(2, hidden=32, depth=2)
    tr = Trainer(model, make_schedule("linear", 100), ds.x,
                 TrainConfig(steps=3, batch_size=64, lr=1e-3, grad_clip=None, log_every=1, progress=False))
    tr.train_step()
    if rank == 0:
        torch.save([p.grad.clone() for p in model.parameters()], os.path.join(out, "grads.pt"))
    tr.train()
    if rank == 0:
        torch.save(model.state_dict(), os.path.join(out, "params.pt"))
        json.dump(tr.history, open(os.path.join(out, "hist.json"), "w"))
    # the CLI in data-parallel mode
    rc = main(["train", "--dataset", "gmm2d", "--n-train", "1000", "--steps", "4", "--batch-size", "32",
               "--model-size", "tiny", "--n-samples", "100", "-K", "5", "--quiet", "--out", os.path.join(out, "cli")])
    assert rc == 0
""")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_gloo_processes_match_single_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    root = str(Path(__file__).resolve().parents[2])  # the checkout under test, also when another copy is installed
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(script), str(tmp_path)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    ds = get_dataset("gmm2d", n=1000)
    torch.manual_seed(0)
    model = MLPEps(2, hidden=32, depth=2)
    tr = Trainer(model, make_schedule("linear", 100), ds.x,
                 TrainConfig(steps=3, batch_size=64, lr=1e-3, grad_clip=None, log_every=1, progress=False))
    tr.train_step()
    ddp_grads = torch.load(tmp_path / "grads.pt")
    for g1, g2 in zip([p.grad for p in model.parameters()], ddp_grads):
        torch.testing.assert_close(g2, g1, rtol=1e-5, atol=1e-7)
    tr.train()
    ddp_params = torch.load(tmp_path / "params.pt")
    for k, v in model.state_dict().items():
        torch.testing.assert_close(ddp_params[k], v, rtol=1e-5, atol=1e-6)
    hist = json.load(open(tmp_path / "hist.json"))
    assert [h["step"] for h in hist] == [h["step"] for h in tr.history] == [2, 3]  # loss averaged over both ranks
    for h, h1 in zip(hist, tr.history):
        assert h["loss"] == pytest.approx(h1["loss"], rel=1e-5)

    m = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["steps"] == 4
