"""Datasets: every named set, the toy laws, the digits' scaling."""
import numpy as np
import pytest
import torch

from gmmkernels.diffusion import DATASETS, get_dataset, load_digits
from gmmkernels.diffusion.data import gmm25, grid7x7

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: intra-op threads only add overhead


@pytest.mark.parametrize("name", DATASETS)
def test_datasets(name):
    ds = get_dataset(name, n=500, seed=1)
    assert ds.x.dtype == torch.float32 and tuple(ds.x.shape[1:]) == ds.data_shape
    assert torch.isfinite(ds.x).all()
    if name.startswith("digits"):
        assert len(ds) == 1797 and ds.x.min() >= -1 and ds.x.max() <= 1 and ds.num_classes == 10
        assert ds.x.min() == -1 and ds.x.max() == 1
        assert sorted(ds.labels.unique().tolist()) == list(range(10))
        assert "CC BY 4.0" in ds.info["license"]
    else:
        assert len(ds) == 500
    # same seed, same data
    assert torch.equal(ds.x, get_dataset(name, n=500, seed=1).x)


def test_toy_laws():
    g = gmm25(4, seed=0)
    assert g.K == 25 and g.D == 4
    mu = g.means
    assert torch.equal(mu[:, :2], mu[:, 2:])  # (8i, 8j) repeated dim/2 times
    assert sorted(set(mu[:, 0].tolist())) == [-16.0, -8.0, 0.0, 8.0, 16.0]
    assert torch.allclose(g.weights.sum(), torch.tensor(1.0, dtype=F64))
    grid = grid7x7()
    assert grid.K == 49 and float(grid.scale[0]) == 0.25
    d = torch.cdist(grid.means, grid.means) + 100 * torch.eye(49, dtype=F64)
    assert float(d.min()) == pytest.approx(1.0)  # spacing = 4 sigma
    with pytest.raises(ValueError, match="even"):
        gmm25(3)
    with pytest.raises(ValueError, match="unknown dataset"):
        get_dataset("cifar10")


def test_digits_scaling():
    x, y = load_digits()
    raw = np.load(__import__("importlib.resources").resources.files("gmmkernels").joinpath("data/digits.npz").open("rb"))
    np.testing.assert_allclose(x.squeeze(1).numpy(), raw["images"] / 8.0 - 1.0, rtol=0, atol=1e-7)
    x16, _ = load_digits(16)
    assert x16.shape == (1797, 1, 16, 16)
