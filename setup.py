"""Build script: one extension, ``gmmkernels._C``, with CPU kernels always and CUDA kernels when asked or possible.

Switches (environment variables):
  GMMKERNELS_NO_EXTENSION=1  build nothing native (pure Python: reference + Triton backends only)
  GMMKERNELS_NO_CUDA=1       CPU kernels only, even with a CUDA torch and nvcc
  FORCE_CUDA=1               build CUDA kernels even without a visible GPU (set TORCH_CUDA_ARCH_LIST)
  TORCH_CUDA_ARCH_LIST       e.g. "9.0" (default when forced without a GPU: "8.0;9.0")
  GMMKERNELS_CPU_NATIVE=0    do not compile CPU kernels with -march=native
  DEBUG=1                    -O0 -g;  NVCC_FLAGS extra nvcc flags;  MAX_JOBS / NVCC_THREADS parallelism
"""
import glob
import os
import shlex
import sys

from setuptools import setup


def _flag(name: str) -> bool:
    return os.getenv(name, "0").strip().lower() in ("1", "true", "yes", "on")


def _say(msg: str) -> None:
    print(f"gmmkernels: {msg}", file=sys.stderr, flush=True)


def _cuda_decision(torch, cuda_home):
    """Return (build_cuda: bool, reason: str)."""
    if _flag("GMMKERNELS_NO_CUDA"):
        return False, "CPU only (GMMKERNELS_NO_CUDA=1)"
    cuda_torch = torch.version.cuda is not None
    if _flag("FORCE_CUDA"):
        if not cuda_torch:
            raise RuntimeError("gmmkernels: FORCE_CUDA=1 needs a CUDA build of torch (torch.version.cuda is None)")
        if cuda_home is None:
            raise RuntimeError("gmmkernels: FORCE_CUDA=1 needs the CUDA toolkit: set CUDA_HOME to the folder holding bin/nvcc")
        if not torch.cuda.is_available():
            os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        return True, "CPU+CUDA (FORCE_CUDA=1)"
    if not cuda_torch:
        return False, "CPU only (torch is a CPU build)"
    if cuda_home is None:
        return False, "CPU only (no CUDA toolkit found: set CUDA_HOME)"
    if not torch.cuda.is_available():
        return False, "CPU only (no GPU visible; FORCE_CUDA=1 with TORCH_CUDA_ARCH_LIST builds CUDA anyway)"
    return True, "CPU+CUDA"


# setup.py commands that compile; the others (egg_info, dist_info, sdist, ...) only describe or package the sources
# and need no torch (the sdist takes csrc/ from MANIFEST.in)
_BUILD_COMMANDS = {"build", "build_ext", "bdist_wheel", "editable_wheel", "develop", "install", "bdist_egg"}

_NO_TORCH = """gmmkernels: torch is not importable here, and the extension must be compiled against the torch it will run with.
Install torch first, then build without pip's build isolation (an isolated build would download another torch):
    CPU machine:  pip install torch  (the CPU build), then  pip install --no-build-isolation .
    GPU machine:  pip install torch  (a CUDA build matching your toolkit), then  pip install --no-build-isolation .
Pure-Python install (reference and Triton backends only):  GMMKERNELS_NO_EXTENSION=1 pip install ."""


def _metadata_only() -> bool:
    return not _BUILD_COMMANDS.intersection(sys.argv[1:])


def get_extensions():
    if _flag("GMMKERNELS_NO_EXTENSION"):
        _say("building no native extension (GMMKERNELS_NO_EXTENSION=1): reference and Triton backends only")
        return [], {}
    try:
        import torch
    except ImportError:
        if _metadata_only():
            return [], {}
        sys.exit(_NO_TORCH)
    from torch.utils import cpp_extension

    build_cuda, reason = _cuda_decision(torch, cpp_extension.CUDA_HOME)
    debug = _flag("DEBUG")
    here = os.path.dirname(os.path.abspath(__file__))
    srcs = sorted(glob.glob("csrc/*.cpp")) + sorted(glob.glob("csrc/cpu/*.cpp")) + sorted(glob.glob("csrc/simt/*.cpp"))
    cxx = ["-O0", "-g"] if debug else ["-O3"]
    cxx += ["-fopenmp" if "OpenMP" in torch.__config__.parallel_info() else "-DGMMKERNELS_NO_OPENMP"]
    # `omp simd` loops vectorise without the OpenMP runtime too; libm calls that cannot set errno (sqrt) vectorise
    cxx += ["-fopenmp-simd", "-fno-math-errno"]
    macros = []
    if os.getenv("GMMKERNELS_CPU_NATIVE", "1") != "0" and not debug:
        cxx += ["-march=native"]
        macros += [("GMMKERNELS_CPU_NATIVE", "1")]
    archs = ""
    if build_cuda:
        srcs += sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp"))
        archs = os.environ.get("TORCH_CUDA_ARCH_LIST", "")
        macros += [("WITH_CUDA", None)]
        nvcc = (["-O0", "-g", "-lineinfo"] if debug else ["-O3", "-lineinfo"]) + [
            "--expt-relaxed-constexpr", "-DWITH_CUDA",
            "--threads", os.getenv("NVCC_THREADS", "1"),
        ] + shlex.split(os.getenv("NVCC_FLAGS", ""))
        args = {"cxx": cxx + ["-DWITH_CUDA"], "nvcc": nvcc}
        Ext = cpp_extension.CUDAExtension
        if not archs and torch.cuda.is_available():
            archs = ";".join(sorted({f"{a}.{b}" for a, b in (torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count()))}))
        reason += f", archs {archs or 'torch default'}"
    else:
        args = {"cxx": cxx}
        Ext = cpp_extension.CppExtension
    macros += [("GMMKERNELS_CUDA_ARCHS", f'"{archs}"')]
    # An object file is named after its source path without the suffix (csrc/cpu/<op>.o, csrc/cuda/<op>.o,
    # csrc/cuda/<op>_kernels.o): two sources that differ only in their suffix would overwrite each other's object.
    stems = [os.path.splitext(s)[0] for s in srcs]
    clash = sorted({s for s in stems if stems.count(s) > 1})
    if clash:
        raise RuntimeError(f"gmmkernels: sources that would share an object file: {clash}")
    if _metadata_only():
        return [], {}
    _say(f"building {reason} against torch {torch.__version__} ({len(srcs)} files)" + (" [debug]" if debug else ""))
    ext = Ext(
        "gmmkernels._C",
        srcs,
        # setuptools rebuilds only when a listed file is newer than the library: list the headers too
        depends=sorted(glob.glob("csrc/include/**/*.h", recursive=True)),
        include_dirs=[os.path.join(here, "csrc", "include")],
        define_macros=macros,
        extra_compile_args=args,
        extra_link_args=["-fopenmp"] if "-fopenmp" in cxx else [],
    )
    cmd = {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)}
    return [ext], cmd


ext_modules, cmdclass = get_extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
