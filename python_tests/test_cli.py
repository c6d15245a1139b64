"""The top-level `gmmkernels` command: info, demo argument errors, reproduce argument errors."""
import json

import pytest

from gmmkernels import cli


def test_info_json_lists_every_op_family(capsys):
    assert cli.main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    ops = info["ops"]
    for needle in ("mixture_stats", "gms_fit", "gms_step", "mixture_dispatch", "lowrank_adapter",
                   "mixture_suffstats", "gibbs", "MGDM"):
        assert any(needle in name for name in ops), (needle, list(ops))
    for name, o in ops.items():
        assert "reference" in o["backends"]["cpu"], name
        if info["native_extension"]:
            assert "CPU" in o["native_kernels"], name
            assert "cpu" in o["backends"]["cpu"], name


def test_demo_rejects_unknown_method_before_running(tmp_path, capsys):
    assert cli.main(["demo", "--methods", "gms,bogus", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "bogus" in err and "--methods" in err
    assert not (tmp_path / "d" / "summary.json").exists()


def test_demo_rejects_unavailable_device(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert cli.main(["demo", "--device", "cuda", "--out", str(tmp_path / "d")]) == 2
    assert "cuda" in capsys.readouterr().err


def test_reproduce_unknown_experiment_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["reproduce", "nonsense"])
    assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_demo_methods_parsing():
    from types import SimpleNamespace

    from gmmkernels import demo

    assert demo._methods(SimpleNamespace(methods="all")) == list(demo.METHODS)
    assert demo._methods(SimpleNamespace(methods="none")) == []
    assert demo._methods(SimpleNamespace(methods=" smd , gms ")) == ["smd", "gms"]
    with pytest.raises(ValueError, match="unknown --methods entry 'x'"):
        demo._methods(SimpleNamespace(methods="x"))
