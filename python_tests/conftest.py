import importlib.util
import os

import torch

if not torch.cuda.is_available():
    # CPU machines exercise the Triton kernels through the interpreter; must be set before triton is imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

HAS_TRITON = importlib.util.find_spec("triton") is not None


def _name_tokens(item) -> set:
    return set(getattr(item, "originalname", item.name).split("_"))


def _runs_on_cuda(item) -> bool:
    """A test parametrised with the device "cuda" (or a CUDA torch.device), or named for CUDA (test_cuda_..., ..._cuda),
    needs the GPU."""
    if "cuda" in _name_tokens(item):
        return True
    cs = getattr(item, "callspec", None)
    if cs is None:
        return False
    return any((isinstance(v, str) and v.startswith("cuda")) or (isinstance(v, torch.device) and v.type == "cuda")
               for v in cs.params.values())


@pytest.hookimpl(tryfirst=True)  # before -m selection, so `-m cuda` also picks the CUDA cases of device-parametrised tests
def pytest_collection_modifyitems(config, items):
    for it in items:
        if _runs_on_cuda(it):
            it.add_marker(pytest.mark.cuda)
        if "triton" in _name_tokens(it):  # so that `-m triton` (the GPU check) selects every Triton test
            it.add_marker(pytest.mark.triton)
        if "cuda" in it.keywords and not torch.cuda.is_available():
            it.add_marker(pytest.mark.skip(reason="needs a CUDA device"))
        if "triton" in it.keywords and not HAS_TRITON:
            it.add_marker(pytest.mark.skip(reason="triton is not installed"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny ops (threads would only add overhead); use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
