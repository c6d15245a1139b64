"""Packaging: the sdist carries everything a CPU or CUDA build needs, setup.py explains a build without torch, and
a stale build (compiled against another torch) is reported."""
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from gmmkernels import _backend, info

ROOT = Path(__file__).resolve().parent.parent


def _git_files(*paths):
    r = subprocess.run(["git", "ls-files", *paths], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("not a git checkout")
    return set(r.stdout.split())


def test_sdist_holds_every_source_header_and_the_licence(tmp_path):
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path)], cwd=ROOT, check=True,
                   capture_output=True, timeout=600)
    (sdist,) = tmp_path.glob("gmmkernels-*.tar.gz")
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    want = _git_files("csrc", "gmmkernels", "LICENSE", "pyproject.toml", "setup.py", "README.md",
                      "scripts/setup.sh", "scripts/cuda_compile_check.sh")
    assert any(n.endswith(".cu") for n in want) and any(n.endswith(".h") for n in want)
    assert not want - names, f"missing from the sdist: {sorted(want - names)}"
    assert not [n for n in names if n.endswith((".so", ".o", ".pyc"))]


def _run_setup(*argv):
    """setup.py with torch made unimportable (as in a build environment without torch)."""
    code = ("import sys; sys.modules['torch'] = None; sys.argv = ['setup.py', *sys.argv[1:]]; "
            "exec(compile(open('setup.py').read(), 'setup.py', 'exec'))")
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_build_without_torch_explains_what_to_run():
    r = _run_setup("build_ext", "--inplace", "--build-temp", "/nonexistent")
    assert r.returncode != 0
    assert "torch is not importable" in r.stderr and "pip install --no-build-isolation ." in r.stderr


def test_metadata_needs_no_torch():
    r = _run_setup("--name")
    assert r.returncode == 0 and r.stdout.strip() == "gmmkernels", r.stderr


def test_torch_mismatch_message():
    msg = _backend.torch_mismatch("2.14.1", "2.13.0+cpu")
    assert "built against torch 2.14.1 but torch 2.13.0+cpu is running" in msg and "--no-build-isolation" in msg
    assert _backend.torch_mismatch("2.13.0", "2.13.0+cpu") is None  # the local tag does not matter
    assert _backend.torch_mismatch(None, "2.13.0") is None  # no extension: nothing to compare


def test_this_build_matches_and_info_says_so_when_not(monkeypatch):
    if _backend.HAS_C:
        assert _backend.LOAD_PROBLEM is None, _backend.LOAD_PROBLEM
    monkeypatch.setattr(_backend, "LOAD_PROBLEM", _backend.torch_mismatch("1.0.0", "2.13.0"))
    text = info.render(info.collect())
    assert "WARNING    gmmkernels: the native extension was built against torch 1.0.0" in text
