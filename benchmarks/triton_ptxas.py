"""Registers and spills of the Triton EM kernel per block configuration, without a GPU.

Compiles ``gmmkernels.triton.mixture_em_stats._em_stats_kernel`` for a CUDA target (default sm_90a, an H100 / H200)
with Triton's own compiler and the ptxas it ships, and prints what ``ptxas -v`` reports for each (BLOCK_K, BLOCK_D,
one chunk or several) x (BLOCK_N, num_warps): registers per thread / bytes of spill stores. The block sizes of the
kernel's ``_config`` were chosen from this table. Runs on a CPU-only machine (no driver needed); must run without
TRITON_INTERPRET=1 (the interpreter replaces the compiler).

    python benchmarks/triton_ptxas.py [--arch 90] [--out results/triton_ptxas.json]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SIGNATURE = {"X": "*fp32", "MU": "*fp32", "W": "*fp32", "LOGC": "*fp32", "PART": "*fp32", "RESP": "*fp32",
             "N": "i32", "K": "i32", "D": "i32", "x_bstride": "i32", "ROWS": "i32", "WITH_RESP": "constexpr",
             "ONE_CHUNK": "constexpr", "BLOCK_N": "constexpr", "BLOCK_K": "constexpr", "BLOCK_D": "constexpr"}


def resources(kernel, arch: int, consts: dict, num_warps: int, ptxas: str) -> tuple[int, int]:
    """(registers per thread, bytes of spill stores) that ptxas reports for one compiled configuration."""
    import triton
    from triton.backends.compiler import GPUTarget

    src = triton.compiler.ASTSource(fn=kernel, signature=SIGNATURE, constexprs=consts)
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90: H100 / H200)")
    ap.add_argument("--out", default=None, help="write the table as JSON here")
    a = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        print("unset TRITON_INTERPRET: the interpreter does not compile kernels", file=sys.stderr)
        return 2
    sys.path.insert(0, ROOT)
    import triton
    from triton.backends.nvidia.compiler import get_ptxas

    from gmmkernels.triton.mixture_em_stats import _em_stats_kernel

    ptxas = get_ptxas(a.arch).path
    rows = []
    for bk, bd in [(16, 16), (16, 32), (32, 16), (32, 32), (64, 16), (64, 32)]:
        for one in (True, False):
            cells = []
            for bn in (16, 32, 64):
                for nw in (4, 8):
                    regs, spill = resources(_em_stats_kernel, a.arch, dict(WITH_RESP=False, ONE_CHUNK=one, BLOCK_N=bn,
                                                                           BLOCK_K=bk, BLOCK_D=bd), nw, ptxas)
                    rows.append(dict(BLOCK_K=bk, BLOCK_D=bd, one_chunk=one, BLOCK_N=bn, num_warps=nw, registers=regs,
                                     spill_store_bytes=spill))
                    cells.append(f"N{bn}/w{nw} {regs}/{spill}")
            print(f"BLOCK_K={bk:2d} BLOCK_D={bd:2d} {'one chunk ' if one else 'chunked   '}| " + "  ".join(cells),
                  flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(dict(arch=a.arch, triton=triton.__version__, ptxas=ptxas, rows=rows), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
