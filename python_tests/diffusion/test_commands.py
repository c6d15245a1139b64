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
