"""k-means (gmmkernels/fit/kmeans.py): k-means++ seeding, Lloyd's iterations on the dispatcher kernel against the
float64 oracle (gmmkernels/reference/kmeans.py), degenerate data and bad inputs."""
import numpy as np
import pytest
import torch

import gmmkernels
from gmmkernels import kmeans, kmeans_plusplus
from gmmkernels.reference import kmeans as kref

from _cases import blobs3 as _blobs  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
BACKEND_DEVICE = [(b, d) for d in DEVICES for b in gmmkernels.ops.mixture_dispatch.dispatch_backends(d)]


def test_kmeans_plusplus_spreads_seeds():
    X = torch.tensor(_blobs(2), dtype=torch.float64)
    idx = kmeans_plusplus(X, 3, torch.Generator().manual_seed(0))
    labels = torch.arange(300) // 100
    assert sorted(labels[idx].tolist()) == [0, 1, 2]


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
def test_kmeans_matches_reference_and_recovers_clusters(backend, device):
    g = torch.Generator().manual_seed(11)
    true = 8.0 * torch.randn(5, 6, generator=g, dtype=torch.float64)
    lab = torch.randint(5, (400,), generator=g)
    x = true[lab] + torch.randn(400, 6, generator=g, dtype=torch.float64)
    c_ref, j_ref = kref.kmeans_ref(x, 5, seed=3)
    dtype = torch.float32 if backend == "triton" else torch.float64
    km = kmeans(x.to(device=device, dtype=dtype), 5, seed=3, backend=backend)
    # the seedings differ (greedy k-means++ here, plain in the oracle), so the centers come in another order:
    # match them, then the fixed point must be the same
    perm = torch.cdist(km.centers.double().cpu(), c_ref).argmin(1)
    assert sorted(perm.tolist()) == list(range(5))
    torch.testing.assert_close(km.centers.double().cpu(), c_ref[perm], rtol=1e-5, atol=1e-5)
    assert torch.equal(perm[km.assignment.cpu()], j_ref)
    # the clustering is the true one up to a permutation
    pairs = set(zip(km.assignment.tolist(), lab.tolist()))
    assert len(pairs) == 5
    assert km.inertia < 7.0  # ~ D = 6 for unit-variance clusters
