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


def test_reproduce_plan_reaches_the_experiment_and_the_result(tmp_path, monkeypatch):
    """--plan (inline or @FILE) is passed to the experiment as a dict, and result.json records the command that
    reruns it."""
    from gmmkernels.diffusion import experiments

    seen = []

    def fake(out, quick, device, plan=None):
        seen.append(plan)
        return {"ok": True}

    monkeypatch.setattr(experiments.Experiment, "reproduce", property(lambda self: fake))
    (tmp_path / "p.json").write_text('{"toy_seeds": [0, 1]}')
    for arg in ('{"toy_seeds": [0, 1]}', f"@{tmp_path / 'p.json'}"):
        assert cli.main(["reproduce", "mixddpm", "--quick", "--out", str(tmp_path / "r"), "--plan", arg]) == 0
        assert seen[-1] == {"toy_seeds": [0, 1]}
        res = json.loads((tmp_path / "r" / "result.json").read_text())
        assert res["command"].endswith("""--quick --plan '{"toy_seeds": [0, 1]}'"""), res["command"]
    assert cli.main(["reproduce", "mixddpm", "--out", str(tmp_path / "r")]) == 0
    assert seen[-1] is None and "--plan" not in json.loads((tmp_path / "r" / "result.json").read_text())["command"]


def test_demo_methods_parsing():
    from types import SimpleNamespace

    from gmmkernels import demo

    assert demo._methods(SimpleNamespace(methods="all")) == list(demo.METHODS)
    assert demo._methods(SimpleNamespace(methods="none")) == []
    assert demo._methods(SimpleNamespace(methods=" smd , gms ")) == ["smd", "gms"]
    with pytest.raises(ValueError, match="unknown --methods entry 'x'"):
        demo._methods(SimpleNamespace(methods="x"))


# -- wrong invocations of the top-level command and its info / demo / reproduce / bench subcommands, each in its own
# process (python_tests/_cli_runner.py): exit status 2, one line on stderr naming the subcommand, no traceback

from _cli_runner import assert_usage_error, run_many, run_one  # noqa: E402

_NO_CUDA = not __import__("torch").cuda.is_available()
WRONG = [
    ([], "a command is required"),
    (["nonsense"], "invalid choice: 'nonsense'"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["info", "--jsn"], "gmmkernels info: error: unrecognized arguments: --jsn"),
    (["info", "extra"], "gmmkernels info: error: unrecognized arguments: extra"),
    (["demo", "--out", "{file}"], "gmmkernels demo: error: --out: {file} exists and is not a folder"),
    (["demo", "--out", "{file}/sub"], "gmmkernels demo: error: --out: cannot write into {file}/sub"),
    (["demo", "--device", "meta"], "--device: only cpu, cuda and auto are supported, got 'meta'"),
    (["demo", "--device", "nonsense"], "--device: not a device: 'nonsense'"),
    (["demo", "--seed", "-1"], "argument --seed: must be an int in [0, 2^63), got -1"),
    (["demo", "--seed", "x"], "argument --seed: invalid int value: 'x'"),
    (["demo", "--methods", "gms,bogus", "--out", "{tmp}/d", "--skip-diffusion"], "unknown --methods entry 'bogus'"),
    (["demo", "--quick", "--bogus"], "gmmkernels demo: error: unrecognized arguments: --bogus"),
    (["reproduce"], "the following arguments are required: experiment"),
    (["reproduce", "nonsense"], "invalid choice: 'nonsense'"),
    (["reproduce", "gms", "--out", "{file}"], "gmmkernels reproduce: error: --out: {file} exists and is not a folder"),
    (["reproduce", "gms", "--device", "meta"], "gmmkernels reproduce: error: --device: only cpu"),
    (["reproduce", "gms", "--seed", str(2**70)], "argument --seed: must be an int in [0, 2^63)"),
    (["reproduce", "gms", "--quick", "extra"], "gmmkernels reproduce: error: unrecognized arguments: extra"),
    (["reproduce", "gms", "--plan", "{{}}"], "--plan: the gms reproduction has no plan to change"),
    (["reproduce", "mixddpm", "--out", "{tmp}/r", "--plan", "nope"], "--plan: not JSON (Expecting value at character 0)"),
    (["reproduce", "mixddpm", "--out", "{tmp}/r", "--plan", "[1]"], "--plan: expected a JSON object of plan entries"),
    (["reproduce", "mixddpm", "--out", "{tmp}/r", "--plan", "@{tmp}/missing.json"], "--plan: cannot read"),
    (["reproduce", "mixddpm", "--out", "{tmp}/r", "--plan", '{{"toy_seedz": [0]}}'],
     "--plan: plan: unknown entries 'toy_seedz'; the entries are digit_K"),
    (["reproduce", "mixddpm", "--out", "{tmp}/r", "--plan", '{{"toy_arms": ["DDPM", "Foo"]}}'],
     "--plan: plan: toy_arms: unknown arm(s) 'Foo'"),
    (["reproduce", "ngmg", "--out", "{tmp}/r", "--plan", '{{"Kz": 3}}'], "--plan: plan: unknown entries 'Kz'"),
    (["reproduce", "mgdm", "--out", "{tmp}/r", "--plan", '{{"toy": {{"dimz": 1}}}}'],
     "--plan: plan toy: unknown entries 'dimz'"),
    (["reproduce", "mgdm", "--out", "{tmp}/r", "--plan", '{{"toi": {{}}}}'], "--plan: plan: unknown entries 'toi'"),
] + ([(["demo", "--device", "cuda"], "no CUDA device is available"),
      (["reproduce", "gms", "--device", "cuda:0"], "no CUDA device is available")] if _NO_CUDA else [])


@pytest.fixture(scope="module")
def wrong_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "file").write_text("not a folder")
    fill = lambda s: s.format(file=tmp / "file", tmp=tmp)  # noqa: E731
    results = run_many([("gmmkernels", [fill(a) for a in argv]) for argv, _ in WRONG], cwd=tmp)
    return {i: (r, fill(expect)) for i, ((_, expect), r) in enumerate(zip(WRONG, results))}


@pytest.mark.parametrize("i", range(len(WRONG)), ids=[" ".join(a) or "(none)" for a, _ in WRONG])
def test_wrong_invocation_exits_2_with_one_line(wrong_runs, i):
    r, expect = wrong_runs[i]
    assert_usage_error(r["rc"], r["stderr"], expect)


def test_the_entry_point_reports_like_main(tmp_path):
    r = run_one(["gmmkernels", "info", "--jsn"], cwd=tmp_path)
    assert_usage_error(r.returncode, r.stderr, "gmmkernels info: error: unrecognized arguments: --jsn")
    assert r.stdout == ""
    r = run_one(["gmmkernels.info", "--jsn"], cwd=tmp_path)  # the info module's own entry point
    assert_usage_error(r.returncode, r.stderr, "gmmkernels info: error: unrecognized arguments: --jsn")
    assert r.stdout == ""


@pytest.mark.parametrize("argv", [["bench", "--help"], ["bench", "--quick", "--help"]])
def test_bench_passes_every_argument_to_the_runner(argv, tmp_path):
    r = run_one(["gmmkernels", *argv], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "run_all.py" in r.stdout and "--quick" in r.stdout and "unrecognized" not in r.stderr


def test_bench_arguments_reach_the_runner(monkeypatch):
    calls = []
    monkeypatch.setattr(cli.subprocess, "call", lambda cmd, cwd: calls.append(cmd) or 0)
    assert cli.main(["bench", "--quick", "--device", "cpu", "--only", "gms_fit"]) == 0
    assert calls[0][-5:] == ["--quick", "--device", "cpu", "--only", "gms_fit"]
    assert calls[0][1].endswith("run_all.py")
