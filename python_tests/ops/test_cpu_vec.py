"""The SIMD helpers of the CPU kernels (csrc/include/gmmkernels/cpu_vec.h) at each vector width they are built for:
16 bytes (SSE2 and other targets), 32 (AVX2) and 64 (AVX-512). A small C++ program (cpp/cpu_vec_check.cpp) is
compiled with each target's flags and run where this CPU can run it: the horizontal sum and maximum (every lane the
same, exact on integers), the L x L transpose, and the vector exp within 4 ulp of std::exp with its clamps, NaN and
-inf. The installed extension is built for one width only (-march=native), so these widths are otherwise untested
here. Also: the width the extension reports matches the one the FMA probe of the benchmarks measures."""
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = Path(__file__).resolve().parent / "cpp" / "cpu_vec_check.cpp"
X86 = platform.machine() in ("x86_64", "AMD64")

# name: (flags, vector bytes, the /proc/cpuinfo flags needed to run it)
TARGETS = {
    "baseline": (["-march=x86-64"] if X86 else [], 16, []),
    "avx2": (["-mavx2", "-mfma"], 32, ["avx2", "fma"]),
    "avx512": (["-mavx512f", "-mavx512dq", "-mavx2", "-mfma"], 64, ["avx512f", "avx512dq"]),
}


def _cxx():
    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        pytest.skip("no C++ compiler (the extension could not have been built either)")
    return cxx


def _cpu_flags():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _build(name, tmp_path):
    flags, _, _ = TARGETS[name]
    exe = tmp_path / f"cpu_vec_check_{name}"
    r = subprocess.run([_cxx(), "-std=c++20", "-O2", "-Wall", "-Werror", *flags, f"-I{ROOT / 'csrc' / 'include'}",
                        str(SRC), "-o", str(exe)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-4000:]
    return exe


@pytest.mark.parametrize("name", [n for n in TARGETS if X86 or n == "baseline"])
def test_cpu_vec_compiles_at_every_width(name, tmp_path):
    """Every width compiles without a warning, including those this CPU cannot run."""
    assert _build(name, tmp_path).stat().st_size > 0


@pytest.mark.parametrize("name", [n for n in TARGETS if X86 or n == "baseline"])
def test_cpu_vec_checks_at_each_width_this_cpu_runs(name, tmp_path):
    flags, vbytes, needs = TARGETS[name]
    missing = [f for f in needs if f not in _cpu_flags()]
    if missing:
        pytest.skip(f"this CPU lacks {', '.join(missing)}: compiled only (test_cpu_vec_compiles_at_every_width)")
    r = subprocess.run([str(_build(name, tmp_path))], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-4000:]
    assert f"vector_bytes {vbytes} " in r.stdout


def test_extension_width_matches_the_fma_probe():
    """The extension's vector width (cpu_vec.h under -march=native) is the one the benchmarks' FMA bound assumes."""
    import gmmkernels

    info = gmmkernels.build_info()
    if "cpu_vector_bytes" not in info:
        pytest.skip("no native extension")
    from benchmarks.bench_mixture_em_stats import fma_peak

    if info.get("cpu_native") is False:
        pytest.skip("extension built without -march=native (GMMKERNELS_CPU_NATIVE=0)")
    peak = fma_peak(1)
    if peak["method"].startswith("assumed"):
        pytest.skip("no C compiler for the probe")
    assert peak["vector_bytes"] == info["cpu_vector_bytes"]
    assert peak["lanes"] == {"float32": info["cpu_vector_bytes"] // 4, "float64": info["cpu_vector_bytes"] // 8}
