"""mixture_suffstats (gmmkernels/ops/mixture_suffstats.py): every backend against the float64 reference, determinism,
fake kernel and bad inputs."""
import pytest
import torch

import gmmkernels  # noqa: F401
from gmmkernels import _backend, mixture_suffstats
from gmmkernels.reference import mixture_suffstats as fref

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
# the last two are long enough for the CUDA kernel to split N into chunks (partial sums added in a second pass)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 37, 5, 3), (3, 130, 33, 40), (2, 0, 3, 2), (1, 5000, 16, 8),
                                   (2, 3001, 5, 20), (2, 50, 3, 0)], ids=str)
@pytest.mark.parametrize("shared_x", [False, True])
def test_suffstats_matches_reference(device, full, dtype, shape, shared_x):
    if not _backend.has_kernel("mixture_suffstats", "CUDA" if device == "cuda" else "CPU"):
        pytest.skip("no native mixture_suffstats kernel")
    B, N, K, D = shape
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1 if shared_x else B, N, D, generator=g, dtype=torch.float64)
    r = torch.softmax(torch.randn(B, N, K, generator=g, dtype=torch.float64), -1)
    want = fref.mixture_suffstats_ref(x, r, full)
    got = torch.ops.gmmkernels.mixture_suffstats(x.to(device, dtype), r.to(device, dtype), full)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5 * max(1, N) ** 0.5)
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double().cpu(), b, **tol)


# The CUDA kernels' block programs run on CPU threads (csrc/simt/mixture_suffstats.cpp): one row; odd sizes; two tiles
# of components and of dimensions, with three tiles of the x x^T program of which the upper one leaves at once; no
# rows; no dimensions; N long enough to be cut into chunks (partial sums added by a second program), also for x x^T.
SIMT_SHAPES = [(1, 1, 1, 1), (2, 37, 5, 3), (1, 70, 33, 40), (2, 0, 3, 2), (2, 50, 3, 0), (1, 1100, 3, 20)]


@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", SIMT_SHAPES, ids=str)
def test_simt_suffstats_matches_reference(full, dtype, shape):
    if not _backend.has_kernel("_simt_mixture_suffstats", "CPU"):
        pytest.skip("the extension has no CPU run of the CUDA kernels")
    B, N, K, D = shape
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1 if B > 1 and N % 2 else B, N, D, generator=g, dtype=torch.float64)
    r = torch.softmax(torch.randn(B, N, K, generator=g, dtype=torch.float64), -1)
    want = fref.mixture_suffstats_ref(x, r, full)
    got = torch.ops.gmmkernels._simt_mixture_suffstats(x.to(dtype), r.to(dtype), full)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5 * max(1, N) ** 0.5)
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b, **tol)
    if full:
        assert torch.equal(got[2], got[2].transpose(-1, -2))  # one writer per mirrored pair


@pytest.mark.parametrize("device", DEVICES)
def test_suffstats_deterministic_and_public_wrapper(device):
    x = torch.randn(4, 4000, 7, device=device)
    r = torch.softmax(torch.randn(4, 4000, 9, device=device), -1)
    a = mixture_suffstats(x, r, True)
    b = mixture_suffstats(x, r, True)
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    if _backend.has_kernel("mixture_suffstats", "CUDA" if device == "cuda" else "CPU"):
        assert torch.equal(a[2], a[2].transpose(-1, -2))  # the kernels write each mirrored pair from one sum
    c = mixture_suffstats(x.double(), r.double(), True, backend="reference")
    for u, v in zip(a, c):
        torch.testing.assert_close(u.double(), v, rtol=1e-5, atol=1e-3)


def test_suffstats_errors():
    with pytest.raises(ValueError, match="mixture_suffstats: 'x' has N=3"):
        mixture_suffstats(torch.randn(3, 2), torch.rand(4, 2))
    if _backend.has_kernel("mixture_suffstats", "CPU"):
        with pytest.raises(RuntimeError, match="mixture_suffstats"):
            torch.ops.gmmkernels.mixture_suffstats(torch.randn(2, 3), torch.rand(1, 3, 2), False)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_suffstats_errors_cuda():
    if not _backend.has_kernel("mixture_suffstats", "CUDA"):
        pytest.skip("no CUDA mixture_suffstats kernel")
    op = torch.ops.gmmkernels.mixture_suffstats
    x, r = torch.randn(1, 3, 2, device="cuda"), torch.rand(1, 3, 2, device="cuda")
    with pytest.raises(RuntimeError, match="mixture_suffstats"):
        op(x[0], r, False)  # x not [B, N, D]
    with pytest.raises(RuntimeError, match="mixture_suffstats"):
        op(x, r.cpu(), False)  # mixed devices
    with pytest.raises(RuntimeError, match="mixture_suffstats"):
        op(x, r.double(), False)  # mixed dtypes
    with pytest.raises(RuntimeError, match="mixture_suffstats"):
        op(x, r[:, :2], False)  # N mismatch
