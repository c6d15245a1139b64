"""A small digits classifier whose penultimate features define the digits Frechet distance (FD).

The FD between generated and real digits in this 64-d feature space plays the role FID plays for
natural images (Frechet distance of Inception features): a distribution-level score that is sensitive
to both quality and diversity. Values are only comparable with other values of this same classifier.

The network (two 3x3 convs, a max-pool, a 64-unit feature layer, a linear read-out) is trained
deterministically (seed 0, CPU, about 10 s) on the first 1500 shipped digits on first use, and cached in
``$GMMKERNELS_CACHE`` (default ``~/.cache/gmmkernels``) as ``digits_classifier_v1.pt``; the held-out
297 digits give the accuracy stored with it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

VERSION = "v1"
_CACHED: Optional[nn.Module] = None


class DigitsNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 4 * 4, 64)
        self.head = nn.Linear(64, 10)

    def features(self, x: Tensor) -> Tensor:
        h = F.relu(self.c1(x))
        h = F.max_pool2d(F.relu(self.c2(h)), 2)
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def cache_dir() -> Path:
    return Path(os.environ.get("GMMKERNELS_CACHE", Path.home() / ".cache" / "gmmkernels"))


def to_classifier_input(x: Tensor) -> Tensor:
    """[N, 1, 8, 8] / [N, 64] / [N, 1, 16, 16] samples in [-1, 1] -> [N, 1, 8, 8] float32, clamped."""
    x = torch.as_tensor(x).detach().float().cpu()
    if x.dim() == 2 and x.shape[1] == 64:
        x = x.reshape(-1, 1, 8, 8)
    if x.dim() == 4 and x.shape[1:] == (1, 16, 16):
        x = F.avg_pool2d(x, 2)
    if x.dim() != 4 or x.shape[1:] != (1, 8, 8):
        raise ValueError(f"digits classifier: expected [N, 1, 8, 8] (or [N, 64], [N, 1, 16, 16]), got {tuple(x.shape)}")
    return x.clamp(-1, 1)


def train_digits_classifier(epochs: int = 30, seed: int = 0) -> tuple:
    """Train the classifier; returns (net, held-out accuracy)."""
    from .data import load_digits

    x, y = load_digits()
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = DigitsNet()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    xtr, ytr, xte, yte = x[:1500], y[:1500], x[1500:], y[1500:]
    for _ in range(epochs):
        perm = torch.randperm(len(xtr), generator=g)
        for i in range(0, len(xtr), 100):
            b = perm[i:i + 100]
            loss = F.cross_entropy(net(xtr[b]), ytr[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        acc = float((net(xte).argmax(1) == yte).float().mean())
    return net, acc


def load_digits_classifier(retrain: bool = False) -> nn.Module:
    """The cached classifier (trained and written on first use; in-memory when the cache is not writable)."""
    global _CACHED
    if _CACHED is not None and not retrain:
        return _CACHED
    path = cache_dir() / f"digits_classifier_{VERSION}.pt"
    net = None
    if path.exists() and not retrain:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            net = DigitsNet()
            net.load_state_dict(state["model"])
            net.accuracy = float(state["accuracy"])
        except Exception:  # a corrupt or foreign file: retrain below
            net = None
    if net is None:
        net, acc = train_digits_classifier()
        net.accuracy = acc
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save({"model": net.state_dict(), "accuracy": torch.tensor(acc)}, tmp)
            os.replace(tmp, path)
        except OSError:
            pass
    _CACHED = net.eval().requires_grad_(False)
    return _CACHED


@torch.no_grad()
def digits_features(net: nn.Module, x: Tensor, batch: int = 1024) -> Tensor:
    x = to_classifier_input(x)
    return torch.cat([net.features(x[i:i + batch]) for i in range(0, len(x), batch)]).double()
