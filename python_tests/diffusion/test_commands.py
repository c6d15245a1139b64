"""`train` / `sample` subcommands (through gmmkernels.diffusion.commands.main) and the demo section."""
import argparse
import json

import pytest
import torch

from gmmkernels.diffusion import commands
from gmmkernels.diffusion.commands import main

TINY = ["--steps", "30", "--batch-size", "64", "--model-size", "tiny", "--n-train", "2000", "--n-samples", "200",
        "-K", "10", "--quiet", "--threads", "1"]


@pytest.fixture(autouse=True, scope="module")
def _restore_threads():  # the commands set the thread count (--threads)
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_train_sample_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "gmm2d", "--out", str(out), *TINY]) == 0
    for f in ("checkpoint.pt", "metrics.json", "metrics.jsonl", "samples.png", "samples.pt", "config.json"):
        assert (out / f).exists(), f
    m = json.loads((out / "metrics.json").read_text())
    for k in ("sliced_wasserstein", "mmd", "nll", "nll_data", "mode_on_mode", "final_loss"):
        assert isinstance(m[k], float), k
    assert m["steps"] == 30 and m["n_samples"] == 200

    assert main(["sample", "--ckpt", str(out), "--sampler", "ddim", "-K", "5", "--n-samples", "100", "--quiet",
                 "--out", str(tmp_path / "s")]) == 0
    s = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert s["sampler"] == "ddim" and s["n_samples"] == 100 and s["step"] == 30
    assert torch.load(tmp_path / "s" / "samples.pt").shape == (100, 2)

    assert main(["train", "--dataset", "gmm2d", "--out", str(out), "--resume", str(out), *TINY[:-7],
                 "--steps", "40", "--n-samples", "50", "-K", "5", "--quiet"]) == 0
    assert json.loads((out / "metrics.json").read_text())["steps"] == 40


def test_config_files_and_digits(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('dataset = "digits"\narch = "mlp"\nsteps = 10\nbatch_size = 32\nn_samples = 50\nK = 5\n'
                   'model_size = "tiny"\nquiet = true\nconditional = true\nthreads = 1\n')
    out = tmp_path / "d"
    assert main(["train", "--config", str(cfg), "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["dataset"] == "digits" and m["steps"] == 10
    assert {"digits_fd", "digits_class_histogram", "digits_fd_real_subset"} <= set(m)
    assert main(["sample", "--ckpt", str(out / "checkpoint.pt"), "--label", "3", "--n-samples", "20", "-K", "4",
                 "--quiet", "--out", str(tmp_path / "d3")]) == 0
    jcfg = tmp_path / "c.json"
    jcfg.write_text(json.dumps({"dataset": "gmm1d", "steps": 5, "n-samples": 30, "K": 3, "quiet": True,
                                "schedule": "vp", "sampler": "euler_maruyama", "heads": "eps,eps2"}))
    assert main(["train", "--config", str(jcfg), "--out", str(tmp_path / "e"), "--steps", "7"]) == 0
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["steps"] == 7  # flags override the file
    assert main(["sample", "--ckpt", str(tmp_path / "e"), "--sampler", "sn_ddpm", "-K", "3", "--n-samples", "20",
                 "--quiet"]) == 0


@pytest.mark.parametrize("argv, msg", [
    (["train"], "--dataset is required"),
    (["train", "--dataset", "gmm2d", "-K", "2000"], "at most T=1000"),
    (["train", "--dataset", "gmm2d", "--sampler", "sn_ddpm"], "--heads eps,eps2"),
    (["train", "--dataset", "gmm2d", "--sampler", "euler_maruyama"], "--schedule vp"),
    (["train", "--dataset", "gmm2d", "--heads", "eps2"], "--heads"),
    (["train", "--dataset", "gmm2d", "--ema", "1.5"], "--ema"),
    (["train", "--dataset", "gmm2d", "--steps", "-3"], "--steps: must be >= 0"),
    (["train", "--dataset", "gmm2d", "--conditional"], "labelled dataset"),
    (["train", "--dataset", "gmm2d", "--device", "cuda:0"] if not torch.cuda.is_available() else ["train"], "device"
     if not torch.cuda.is_available() else "--dataset"),
    (["train", "--dataset", "digits", "--arch", "unet", "--config", "/nonexistent.toml"], "no such file"),
    (["sample"], "--ckpt is required"),
    (["sample", "--ckpt", "/nonexistent"], "no checkpoint"),
])
def test_usage_errors(argv, msg, capsys):
    assert main(argv) == 2
    assert msg in capsys.readouterr().err


def test_bad_config_content(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"dataset": "gmm2d", "stepz": 3}')
    assert main(["train", "--config", str(bad)]) == 2
    assert "unknown option(s) ['stepz']" in capsys.readouterr().err
    bad.write_text('{"dataset": "gmm2d", "steps": "many"}')
    assert main(["train", "--config", str(bad)]) == 2
    assert "--steps: expected int" in capsys.readouterr().err
    bad.write_text("{not json")
    assert main(["train", "--config", str(bad)]) == 2
    assert "cannot parse" in capsys.readouterr().err


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--dataset", "cifar"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    assert "--batch-size" in capsys.readouterr().out


def test_register_into_foreign_parser():
    p = argparse.ArgumentParser(prog="gmmkernels")
    commands.register(p.add_subparsers(dest="cmd"))
    args = p.parse_args(["sample", "--ckpt", "x", "-K", "7"])
    assert args.func is commands.cmd_sample and args.K == 7


def test_demo_run_small(tmp_path):
    from gmmkernels.diffusion.data import get_dataset

    torch.set_num_threads(1)
    r = commands._demo_run(get_dataset("gmm2d", n=2000), "mlp", "tiny", 20, 64, 1e-3, 100, 5, tmp_path / "t.png")
    assert (tmp_path / "t.png").exists() and r["steps"] == 20 and "sliced_wasserstein" in r
    json.dumps(r)


@pytest.mark.slow
def test_demo_section_quick(tmp_path):
    r = commands.demo_section(tmp_path, quick=True)
    json.dumps(r)
    assert (tmp_path / "diffusion_toy2d.png").exists() and (tmp_path / "diffusion_digits.png").exists()
    assert r["toy2d"]["mode_modes_covered"] == 8 and r["digits"]["digits_classes_covered"] >= 8


# -- wrong invocations of train / sample and damaged checkpoints, each in its own process (python_tests/_cli_runner.py):
# exit status 2, one line on stderr that names the flag (and the file), no traceback

from _cli_runner import assert_usage_error, run_many, run_one  # noqa: E402

T = ["train", "--dataset", "gmm2d", "--steps", "2", "--batch-size", "8", "--model-size", "tiny", "--n-train", "50",
     "--n-samples", "10", "-K", "2", "--quiet", "--threads", "1", "--out", "{tmp}/t"]
S = ["sample", "--ckpt", "{good}", "--n-samples", "10", "-K", "2", "--quiet", "--threads", "1", "--out", "{tmp}/s"]
DAMAGED = {  # file name -> what the message must say
    "empty.pt": "the checkpoint file is empty",
    "random.pt": "not a torch.save archive",
    "raw.pkl": "a raw pickle, not a torch.save archive",
    "tensor.pt": "holds a Tensor, not a gmmkernels diffusion checkpoint",
    "truncated.pt": "a truncated or damaged torch.save archive",
    "foreign.pt": "not a gmmkernels diffusion checkpoint",
    "incomplete.pt": "the checkpoint lacks",
    "code.pt": "holds Python objects other than tensors and plain containers",
}
_CUDA = torch.cuda.is_available()
WRONG = [
    (["train"], "--dataset is required"),
    (["train", "--dataset", "cifar"], "argument --dataset: invalid choice: 'cifar'"),
    ([*T, "--bogus"], "gmmkernels train: error: unrecognized arguments: --bogus"),
    ([*T, "--steps", "x"], "argument --steps: invalid int value: 'x'"),
    ([*T, "--steps", "-3"], "--steps: must be >= 0, got -3"),
    ([*T, "--batch-size", "0"], "--batch-size: must be >= 1"),
    ([*T, "--lr", "inf"], "--lr: must be a finite number, got inf"),
    ([*T, "--lr", "nan"], "--lr: must be a finite number, got nan"),
    ([*T, "--lr", "0"], "--lr: must be > 0.0"),
    ([*T, "--weight-decay", "nan"], "--weight-decay: must be a finite number"),
    ([*T, "--weight-decay", "inf"], "--weight-decay: must be a finite number"),
    ([*T, "--weight-decay", "-1"], "--weight-decay: must be >= 0.0"),
    ([*T, "--grad-clip", "nan"], "--grad-clip: must be a finite number"),
    ([*T, "--grad-clip", "-1"], "--grad-clip: must be >= 0.0"),
    ([*T, "--ema", "nan"], "--ema: must be a finite number"),
    ([*T, "--ema", "1"], "--ema: must be < 1.0"),
    ([*T, "--eta", "nan"], "--eta: must be a finite number"),
    ([*T, "--eta", "2"], "--eta: must be <= 1.0"),
    ([*T, "--dataset", "gmm25", "--dim", "3"], "--dim 3 with --dataset gmm25: gmm25: dim must be an even int >= 2"),
    ([*T, "--dataset", "gmm25", "--dim", "0"], "--dim: must be >= 1, got 0"),
    ([*T, "--n-train", "1"], "--n-train: must be >= 2"),
    ([*T, "-K", "0"], "--K: must be >= 1"),
    ([*T, "-K", "2000"], "--K: at most T=1000 steps"),
    ([*T, "--T", "0"], "--T: must be >= 1"),
    ([*T, "--threads", "0"], "--threads: must be >= 1"),
    ([*T, "--seed", "-1"], "argument --seed: must be an int in [0, 2^63)"),
    ([*T, "--heads", "eps2"], "--heads: a comma list starting with eps"),
    ([*T, "--sampler", "sn_ddpm"], "--sampler sn_ddpm needs the second-moment head"),
    ([*T, "--sampler", "euler_maruyama"], "--sampler euler_maruyama integrates the VP-SDE"),
    ([*T, "--conditional"], "--conditional needs a labelled dataset"),
    ([*T, "--device", "meta"], "--device: only cpu and cuda are supported"),
    ([*T, "--device", "nonsense"], "--device: not a device: 'nonsense'"),
    ([*T, "--out", "{file}"], "--out: {file} exists and is not a folder"),
    ([*T, "--out", "{file}/sub"], "--out: cannot write into {file}/sub"),
    ([*T, "--config", "{tmp}/missing.toml"], "--config: no such file"),
    ([*T, "--config", "{tmp}/broken.json"], "--config: cannot parse"),
    ([*T, "--config", "{tmp}/unknown.json"], "--config: unknown option(s) ['stepz']"),
    ([*T, "--config", "{tmp}/types.json"], "--conditional: expected bool, got 'yes'"),
    ([*T, "--resume", "{tmp}/missing.pt"], "--resume: no checkpoint at"),
    ([*T, "--resume", "{tmp}"], "--resume: no checkpoint at {tmp}/checkpoint.pt"),
    ([*T, "--resume", "{big}"], "--resume: {big}: the checkpoint's weights do not fit this model"),
    (["sample"], "--ckpt is required"),
    (["sample", "--ckpt", "{tmp}/missing.pt"], "--ckpt: no checkpoint at"),
    ([*S, "-K", "0"], "--K: must be >= 1"),
    ([*S, "-K", "2000"], "--K: at most T=1000 steps for this checkpoint"),
    ([*S, "--n-samples", "0"], "--n-samples: must be >= 1"),
    ([*S, "--eta", "nan"], "--eta: must be a finite number"),
    ([*S, "--clip", "nan"], "--clip: must be a finite number"),
    ([*S, "--clip", "0"], "--clip: must be > 0.0"),
    ([*S, "--label", "3"], "--label needs a class-conditional checkpoint"),
    ([*S, "--ckpt", "{digits}", "--label", "10"], "--label: digits has the classes 0..9, got 10"),
    ([*S, "--ckpt", "{digits}", "--label", "-1"], "--label: must be >= 0"),
    ([*S, "--sampler", "sn_ddpm"], "--sampler sn_ddpm needs a model trained with the eps2 head"),
    ([*S, "--sampler", "euler_maruyama"], "--sampler euler_maruyama needs a model trained with --schedule vp"),
    ([*S, "--spacing", "cubic"], "argument --spacing: invalid choice: 'cubic'"),
    ([*S, "--seed", "-1"], "argument --seed: must be an int in [0, 2^63)"),
    ([*S, "--threads", "0"], "--threads: must be >= 1"),
    ([*S, "--device", "meta"], "--device: only cpu and cuda are supported"),
    ([*S, "--out", "{file}"], "--out: {file} exists and is not a folder"),
    ([*S, "--bogus"], "gmmkernels sample: error: unrecognized arguments: --bogus"),
] + [([*T, "--resume", f"{{tmp}}/{name}"], f"--resume: {{tmp}}/{name}: {what}") for name, what in DAMAGED.items()] \
  + [([*S, "--ckpt", f"{{tmp}}/{name}"], f"--ckpt: {{tmp}}/{name}: {what}") for name, what in DAMAGED.items()] \
  + ([] if _CUDA else [([*T, "--device", "cuda"], "--device cuda: no CUDA device is available")])


class _Code:
    """Pickles as a call that would create a file: loading it must not run it."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _damaged_files(tmp, good):
    import pickle

    (tmp / "empty.pt").write_bytes(b"")
    (tmp / "random.pt").write_bytes(bytes(range(256)) * 20)
    (tmp / "raw.pkl").write_bytes(pickle.dumps({"format": "gmmkernels.diffusion/1"}))
    torch.save(torch.zeros(3), tmp / "tensor.pt")
    (tmp / "truncated.pt").write_bytes(good.read_bytes()[:3000])
    torch.save({"weights": torch.zeros(2)}, tmp / "foreign.pt")
    torch.save({"format": "gmmkernels.diffusion/1", "step": 3}, tmp / "incomplete.pt")
    torch.save({"format": "gmmkernels.diffusion/1", "step": _Code(tmp / "code-ran")}, tmp / "code.pt")


@pytest.fixture(scope="module")
def wrong_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cmd")
    quick = ["--steps", "2", "--batch-size", "8", "--n-train", "50", "--n-samples", "10", "-K", "2", "--quiet",
             "--threads", "1"]
    assert main(["train", "--dataset", "gmm2d", "--model-size", "tiny", *quick, "--out", str(tmp / "good")]) == 0
    assert main(["train", "--dataset", "gmm2d", "--model-size", "small", *quick, "--out", str(tmp / "big")]) == 0
    assert main(["train", "--dataset", "digits", "--arch", "mlp", "--model-size", "tiny", "--conditional", *quick,
                 "--out", str(tmp / "digits")]) == 0
    (tmp / "file").write_text("not a folder")
    (tmp / "broken.json").write_text("{not json")
    (tmp / "unknown.json").write_text('{"stepz": 3}')
    (tmp / "types.json").write_text('{"conditional": "yes"}')
    _damaged_files(tmp, tmp / "good" / "checkpoint.pt")
    paths = dict(tmp=tmp, file=tmp / "file", good=tmp / "good", big=tmp / "big" / "checkpoint.pt",
                 digits=tmp / "digits")
    fill = lambda s: s.format(**paths)  # noqa: E731
    results = run_many([("gmmkernels", [fill(a) for a in argv]) for argv, _ in WRONG], cwd=tmp)
    assert not (tmp / "code-ran").exists()  # weights-only loading: the pickled call never ran
    assert not list(tmp.glob("**/*.tmp"))
    return {i: (r, fill(expect)) for i, ((_, expect), r) in enumerate(zip(WRONG, results))}


def _id(argv):
    for base in (T, S):
        if argv[:len(base)] == base:
            argv = [base[0], *argv[len(base):]]
    return " ".join(argv).replace("{tmp}/", "")


@pytest.mark.parametrize("i", range(len(WRONG)), ids=[_id(a) for a, _ in WRONG])
def test_wrong_invocation_exits_2_with_one_line(wrong_runs, i):
    r, expect = wrong_runs[i]
    assert_usage_error(r["rc"], r["stderr"], expect)


def test_module_entry_point_reports_like_the_command(tmp_path):
    r = run_one(["gmmkernels.diffusion", "train", "--dataset", "gmm2d", "--lr", "inf"], cwd=tmp_path)
    assert_usage_error(r.returncode, r.stderr, "--lr: must be a finite number, got inf")
    r = run_one(["gmmkernels.diffusion", "sample", "--bogus"], cwd=tmp_path)
    assert_usage_error(r.returncode, r.stderr, "python -m gmmkernels.diffusion sample: error: unrecognized arguments",
                       prog="python -m gmmkernels.diffusion")


def test_help_shows_the_required_options(capsys):
    for argv, needle in ((["train", "--help"], "--dataset {"), (["sample", "--help"], "--ckpt PATH")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
        out = capsys.readouterr().out
        usage = out.split("\n\n")[0]
        assert needle in usage and f"[{needle}" not in usage, usage
        assert "required (on the command line or as" in out


# -- reproducible training; atomic checkpoints


def test_same_command_same_checkpoint_and_samples(tmp_path):
    argv = ["train", "--dataset", "gmm2d", "--steps", "20", "--batch-size", "64", "--model-size", "tiny", "--n-train",
            "500", "--n-samples", "50", "-K", "5", "--quiet", "--threads", "1", "--seed", "3", "--out", str(tmp_path / "r")]
    files = []
    for run in range(2):
        torch.manual_seed(100 + run)  # whatever the global generator held before, the command seeds it
        assert main(argv) == 0
        files.append({f: (tmp_path / "r" / f).read_bytes() for f in ("checkpoint.pt", "samples.pt")})
        (tmp_path / "r").rename(tmp_path / f"r{run}")
    assert files[0] == files[1]
    ck = torch.load(tmp_path / "r0" / "checkpoint.pt", weights_only=True)
    assert all("time_s" not in h for h in ck["history"])  # wall-clock fields stay in metrics.jsonl
    assert "time_s" in (tmp_path / "r0" / "metrics.jsonl").read_text()
    # another seed, other weights
    assert main([*argv[:-4], "--seed", "4", *argv[-2:]]) == 0
    other = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    assert not torch.equal(next(iter(other["model"].values())), next(iter(ck["model"].values())))


def test_stale_temporary_checkpoint_is_removed(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt.tmp").write_bytes(b"half a checkpoint")  # what a killed save leaves
    assert main(["train", "--dataset", "gmm2d", "--out", str(out), "--steps", "2", *TINY[2:]]) == 0
    assert not (out / "checkpoint.pt.tmp").exists() and (out / "checkpoint.pt").exists()
    (out / "checkpoint.pt.tmp").write_bytes(b"half a checkpoint")
    assert main(["train", "--dataset", "gmm2d", "--out", str(out), "--resume", str(out), "--steps", "3", *TINY[2:]]) == 0
    assert not (out / "checkpoint.pt.tmp").exists()
