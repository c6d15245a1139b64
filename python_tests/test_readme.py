"""Every code block of the README works as written: python blocks run, shell blocks name existing scripts,
commands, subcommands, flags and environment variables."""
import re
import shlex
import subprocess
import sys
import tomllib
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCKS = [(m.group(1), m.group(2), README[: m.start()].count("\n") + 1)
          for m in re.finditer(r"^```(\w*)\n(.*?)^```", README, re.S | re.M)]
PYTHON = [(src, line) for lang, src, line in BLOCKS if lang == "python"]
SHELL = [(src, line) for lang, src, line in BLOCKS if lang in ("bash", "sh", "")]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
TEST_COMMAND = "bash scripts/setup.sh && python3 -m pytest python_tests -q"


def test_readme_opens_with_the_two_commands():
    lang, src, _ = BLOCKS[0]
    assert lang == "bash"
    assert src.splitlines() == ["bash scripts/setup.sh && python3 -m gmmkernels demo", TEST_COMMAND]
    assert README.startswith("# gmmkernels\n\n")
    ci = (ROOT / ".ci" / "run").read_text()
    assert TEST_COMMAND in ci, "CI must run the README's test command as written"


@pytest.mark.parametrize("src, line", PYTHON, ids=[f"line{ln}" for _, ln in PYTHON])
def test_python_block_runs(src, line, capsys):
    exec(compile(src, f"README.md:{line}", "exec"), {"__name__": "__readme__"})
    assert capsys.readouterr().out.strip(), "every README example prints what it computed"


# ---------------------------------------------------------------------------------------------------------------
# shell blocks


@lru_cache(maxsize=None)
def _help(*cmd) -> str:
    r = subprocess.run([sys.executable, "-m", *cmd, "--help"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, f"{' '.join(cmd)} --help failed: {r.stderr}"
    return r.stdout


def _gmmkernels_help(sub: str) -> str:
    from gmmkernels import cli

    action = next(a for a in cli.build_parser()._actions if a.dest == "command")
    assert sub in action.choices, f"`gmmkernels {sub}` is not a command"
    return action.choices[sub].format_help()


def _known_env(name: str) -> bool:
    files = [ROOT / "setup.py", ROOT / "scripts" / "setup.sh", *sorted((ROOT / "gmmkernels").rglob("*.py"))]
    return name in ("CUDA_HOME", "MAX_JOBS", "TORCH_CUDA_ARCH_LIST") or any(name in f.read_text() for f in files)


def _flags(words) -> list:
    return [w.split("=", 1)[0] for w in words if w.startswith("-")]


def check_command(words: list) -> None:
    """Raise AssertionError when a README shell command names something that does not exist."""
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
        name = words.pop(0).split("=", 1)[0]
        assert _known_env(name), f"environment variable {name} is read nowhere"
    prog, args = words[0], words[1:]
    if prog == "bash":
        script = ROOT / args[0]
        assert script.is_file(), f"{args[0]} does not exist"
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    elif prog in ("python3", "python") and args[:2] == ["-m", "gmmkernels"] or prog == "gmmkernels":
        args = args[2:] if prog != "gmmkernels" else args
        sub = args[0]
        text = _gmmkernels_help(sub)
        for f in _flags(args[1:]):
            assert f in text, f"`gmmkernels {sub}` has no flag {f}"
        if sub == "reproduce" and args[1:] and args[1].startswith("{"):
            from gmmkernels.diffusion.experiments import names

            assert set(args[1].strip("{}").split(",")) <= set(names())
    elif prog in ("python3", "python") and args[:2] == ["-m", "pytest"]:
        text = _help("pytest")
        for a in args[2:]:
            assert a in text if a.startswith("-") else (ROOT / a).exists(), f"pytest argument {a}"
    elif prog == "pip" and args[0] == "install":
        text = _help("pip", "install")
        for f in _flags(args[1:]):
            assert f in text, f"`pip install` has no flag {f}"
        for a in args[1:]:
            if a.endswith(".tar.gz"):
                assert a == f"gmmkernels-{VERSION}.tar.gz", f"{a}: the sdist of this version is gmmkernels-{VERSION}.tar.gz"
    else:
        raise AssertionError(f"the README test does not know the command {prog!r}: teach check_command about it")


def _commands(src: str):
    """(words of each command) of a shell block; in a block without a language (a usage summary), the lines that
    start with `gmmkernels`, up to the description after two spaces."""
    for raw in src.replace("\\\n", " ").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        for part in line.split("&&"):
            words = shlex.split(part.replace("[", " ").replace("]", " ").replace(" / ", " "))
            if words:
                yield words


def _usage_commands(src: str):
    for raw in src.splitlines():
        if raw.startswith("gmmkernels "):
            synopsis, _, desc = raw.partition("   ")
            words = shlex.split(synopsis.replace("[", " ").replace("]", " ").split(" / ")[0])
            yield words + [w for w in re.findall(r"--[a-z][a-z0-9-]*", desc)]


def _all_commands():
    out = []
    for lang_src, line in SHELL:
        lang = next(lg for lg, s, ln in BLOCKS if ln == line)
        cmds = _usage_commands(lang_src) if lang == "" else _commands(lang_src)
        out += [(words, line) for words in cmds]
    return out


@pytest.mark.parametrize("words, line", _all_commands(), ids=[f"line{ln}:{' '.join(w)[:60]}" for w, ln in _all_commands()])
def test_shell_command_names_what_exists(words, line):
    check_command(list(words))


def test_checker_catches_mistakes():
    for bad in (["bash", "scripts/nope.sh"], ["python3", "-m", "gmmkernels", "demo", "--fast"],
                ["pip", "install", "--no-isolation", "."], ["pip", "install", "gmmkernels-9.9.tar.gz"],
                ["GMMKERNELS_NO_SUCH_SWITCH=1", "pip", "install", "."], ["make", "all"]):
        with pytest.raises(AssertionError):
            check_command(bad)
