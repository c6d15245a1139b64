"""The registry of the methods' experiments: its entries, and that `gmmkernels reproduce` and `gmmkernels demo` both
take their method lists and functions from it."""
import argparse
import importlib
import inspect
import json
from types import SimpleNamespace

import pytest

from gmmkernels import cli, demo
from gmmkernels.diffusion.experiments import EXPERIMENTS, Experiment, names, resolve


def _subcommand(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def test_registry_entries():
    assert list(EXPERIMENTS) == ["gms", "mgdm", "mixddpm", "ngmg", "smd"]
    for name, e in EXPERIMENTS.items():
        assert isinstance(e, Experiment) and e.name == name
        assert e.description.strip() and "\n" not in e.description
        module = f"gmmkernels.diffusion.experiments.{name}"
        assert e.reproduce is getattr(importlib.import_module(module), f"reproduce_{name}")
        assert e.demo_section is importlib.import_module(module).demo_section
        assert list(inspect.signature(e.reproduce).parameters)[:3] == ["out", "quick", "device"]
        assert list(inspect.signature(e.demo_section).parameters)[:2] == ["out", "quick"]
        assert resolve(name) == name
        assert all(resolve(a) == name for a in e.aliases)
    assert len(set(names())) == len(names()) and set(EXPERIMENTS) <= set(names())
    with pytest.raises(KeyError):
        resolve("nonsense")


def test_reproduce_takes_its_choices_from_the_registry():
    s = _subcommand("reproduce")
    (pos,) = [a for a in s._actions if a.dest == "experiment"]
    assert list(pos.choices) == list(names())
    top = cli.build_parser().format_help()
    assert "re-run a paper's experiment at small scale: " + ", ".join(EXPERIMENTS) in " ".join(top.split())


def test_demo_takes_its_methods_from_the_registry():
    assert demo.METHODS == tuple(EXPERIMENTS)
    assert demo._methods(SimpleNamespace(methods="all")) == list(EXPERIMENTS)
    assert demo._methods(SimpleNamespace(methods=",".join(names()))) == [resolve(n) for n in names()]
    with pytest.raises(ValueError, match="choose from " + ", ".join(EXPERIMENTS)):
        demo._methods(SimpleNamespace(methods="nonsense"))
    (opt,) = [a for a in _subcommand("demo")._actions if a.dest == "methods"]
    assert ", ".join(EXPERIMENTS) + ", 'all' or 'none'" in opt.help


def test_both_commands_call_the_registry_functions(tmp_path, monkeypatch):
    calls = []
    mod = importlib.import_module("gmmkernels.diffusion.experiments.smd")
    monkeypatch.setattr(mod, "reproduce_smd",
                        lambda out, quick, device: calls.append(("reproduce", out, quick)) or {"x": 1})
    monkeypatch.setattr(mod, "demo_section", lambda out, quick: calls.append(("demo", out, quick)) or {"y": 2})
    assert cli.main(["reproduce", "smd", "--quick", "--device", "cpu", "--out", str(tmp_path / "r")]) == 0
    res = json.loads((tmp_path / "r" / "result.json").read_text())
    assert res == {"x": 1, "command": f"gmmkernels reproduce smd --out {tmp_path / 'r'} --device cpu --seed 0 --quick"}
    res = demo._method_section("smd", tmp_path / "d", True)
    assert res["y"] == 2 and "seconds" in res
    assert calls == [("reproduce", tmp_path / "r", True), ("demo", tmp_path / "d" / "smd", True)]
