"""Run many command lines of `gmmkernels`, each in its own process, for the CLI tests.

One Python subprocess imports the package once, then forks a child per command line: the child runs the command's
``main`` with its stdout thrown away and its stderr captured, and exits with the command's status (an uncaught
exception prints its traceback and exits 1, as the interpreter does). The children pay no import time, so a table of
dozens of wrong invocations takes seconds; each still has its own process, exit status and stderr.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence

REPO = Path(__file__).resolve().parent.parent

_RUNNER = r"""
import json, os, signal, sys, traceback
import torch
torch.set_num_threads(1)  # no thread pool exists before the forks
from gmmkernels import cli
from gmmkernels.diffusion import commands
mains = {"gmmkernels": cli.main, "python -m gmmkernels.diffusion": commands.main}
results = []
for entry, argv in json.loads(sys.stdin.read()):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.dup2(w, 2)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        signal.alarm(120)
        try:
            code = mains[entry](argv)
        except SystemExit as e:
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 1)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    results.append({"rc": os.waitstatus_to_exitcode(status), "stderr": b"".join(chunks).decode(errors="replace")})
print(json.dumps(results))
"""


def env() -> Dict[str, str]:
    """The environment of a subprocess that imports this checkout's package."""
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return e


def run_many(cases: Sequence[Sequence], cwd) -> List[dict]:
    """[{"rc", "stderr"}] of each (entry, argv) of ``cases``; entry is "gmmkernels" or
    "python -m gmmkernels.diffusion"."""
    r = subprocess.run([sys.executable, "-c", _RUNNER], input=json.dumps([list(c) for c in cases]), cwd=cwd,
                       env=env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_one(args: Sequence[str], cwd, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m <args>`` in a fresh interpreter (the real entry points)."""
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env(), capture_output=True, text=True,
                          timeout=timeout)


def assert_usage_error(rc: int, stderr: str, expect: str, prog: str = "gmmkernels") -> None:
    """Exit status 2, exactly one line on stderr that starts with ``prog`` and contains ``expect``, no traceback."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert "Traceback" not in stderr, stderr
    assert rc == 2, (rc, stderr)
    assert len(lines) == 1, stderr
    assert lines[0].startswith(prog) and "error" in lines[0], lines[0]
    assert expect in lines[0], (expect, lines[0])
