"""Datasets: toy mixtures with an exact law, two moons, and the 8x8 digits shipped with the package.

:func:`get_dataset` returns a :class:`Dataset` with the training tensor ``x`` [N, *data_shape], optional
``labels``, the exact ``mixture`` when the law is a Gaussian mixture (for NLL / oracle / mode metrics),
and ``mode_std`` for the mode-coverage metric. Nothing is downloaded.

Toy laws (all as :class:`gmmkernels.GaussianMixture`, float64):
  gmm1d     1-D, 3 components (weights .3/.5/.2, means -1.5/0.2/1.6, stds .2/.3/.15)
  gmm2d     2-D, 8 components evenly on a circle of radius 2, std 0.2, equal weights
  grid7x7   2-D, 49 components on a 7x7 grid (docs/methods.md (SMD)); spacing 1, std 0.25 (= spacing / 4)
  gmm25     gmm_25(dim) of docs/methods.md (MGDM): means (8i, 8j) repeated dim/2 times, i, j in -2..2,
            identity covariance, weights U(0, 1) normalised (drawn from ``seed``)
  moons     two interleaved half circles with N(0, 0.05^2) noise, centred (no exact density)
  digits    scikit-learn's 1797 8x8 digits (UCI, CC BY 4.0), scaled to [-1, 1], shape [1, 8, 8]
  digits16  the same upsampled bilinearly to [1, 16, 16]
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .. import GaussianMixture

DATASETS = ("gmm1d", "gmm2d", "grid7x7", "gmm25", "moons", "digits", "digits16")
_F64 = torch.float64


@dataclass
class Dataset:
    name: str
    x: Tensor                       # [N, *data_shape], float32
    data_shape: Tuple[int, ...]
    labels: Optional[Tensor] = None  # [N] long
    num_classes: int = 0
    mixture: Optional[GaussianMixture] = None
    mode_std: Optional[float] = None
    info: dict = field(default_factory=dict)

    @property
    def is_image(self) -> bool:
        return len(self.data_shape) == 3

    def __len__(self) -> int:
        return self.x.shape[0]


# -- mixtures ---------------------------------------------------------------------------------------

def gmm1d() -> GaussianMixture:
    w = torch.tensor([0.3, 0.5, 0.2], dtype=_F64)
    mu = torch.tensor([[-1.5], [0.2], [1.6]], dtype=_F64)
    sd = torch.tensor([[0.2], [0.3], [0.15]], dtype=_F64)
    return GaussianMixture(w.log(), mu, sd, "diag")


def gmm2d(n_modes: int = 8, radius: float = 2.0, std: float = 0.2) -> GaussianMixture:
    ang = torch.arange(n_modes, dtype=_F64) * (2 * math.pi / n_modes)
    mu = radius * torch.stack([ang.cos(), ang.sin()], 1)
    return GaussianMixture(torch.zeros(n_modes, dtype=_F64), mu, torch.full((n_modes,), std, dtype=_F64), "spherical")


def grid7x7(spacing: float = 1.0, std: float = 0.25) -> GaussianMixture:
    c = (torch.arange(7, dtype=_F64) - 3) * spacing
    mu = torch.cartesian_prod(c, c)
    return GaussianMixture(torch.zeros(49, dtype=_F64), mu, torch.full((49,), std, dtype=_F64), "spherical")


def gmm25(dim: int = 2, seed: int = 0) -> GaussianMixture:
    """gmm_25(dim): means (8i, 8j) tiled to ``dim`` values (dim even), identity covariance, random weights."""
    if not isinstance(dim, int) or dim < 2 or dim % 2:
        raise ValueError(f"gmm25: dim must be an even int >= 2, got {dim!r}")
    c = torch.arange(-2, 3, dtype=_F64) * 8.0
    mu = torch.cartesian_prod(c, c).repeat(1, dim // 2)
    w = torch.rand(25, generator=torch.Generator().manual_seed(seed), dtype=_F64)
    return GaussianMixture((w / w.sum()).log(), mu, torch.ones(25, dtype=_F64), "spherical")


def two_moons(n: int, noise: float = 0.05, generator: Optional[torch.Generator] = None) -> Tensor:
    """Two interleaved half circles (outer: angle in [0, pi] on the unit circle; inner: 1 - cos, 1/2 - sin),
    plus N(0, noise^2), shifted to zero mean: [n, 2] float32."""
    n1 = n // 2
    n2 = n - n1
    a1 = torch.rand(n1, generator=generator, dtype=_F64) * math.pi
    a2 = torch.rand(n2, generator=generator, dtype=_F64) * math.pi
    outer = torch.stack([a1.cos(), a1.sin()], 1)
    inner = torch.stack([1 - a2.cos(), 0.5 - a2.sin()], 1)
    x = torch.cat([outer, inner]) + noise * torch.randn(n, 2, generator=generator, dtype=_F64)
    x = x - torch.tensor([0.5, 0.25], dtype=_F64)
    perm = torch.randperm(n, generator=generator)
    return x[perm].float()


# -- digits -----------------------------------------------------------------------------------------

def _digits_raw():
    with resources.files("gmmkernels").joinpath("data/digits.npz").open("rb") as f:
        z = np.load(f)
        return z["images"].copy(), z["labels"].copy()


def digits_info() -> dict:
    with resources.files("gmmkernels").joinpath("data/digits.json").open("r") as f:
        return json.load(f)


def load_digits(size: int = 8) -> Tuple[Tensor, Tensor]:
    """The 1797 digits as ([N, 1, size, size] float32 in [-1, 1], labels [N] long); size 8 or 16."""
    img, lab = _digits_raw()
    x = torch.from_numpy(img.astype(np.float32)).unsqueeze(1) / 8.0 - 1.0
    if size == 16:
        x = torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False).clamp(-1, 1)
    elif size != 8:
        raise ValueError(f"load_digits: size must be 8 or 16, got {size}")
    return x, torch.from_numpy(lab.astype(np.int64))


# -- registry ---------------------------------------------------------------------------------------

def get_dataset(name: str, n: int = 20000, seed: int = 0, dim: int = 2) -> Dataset:
    """Build dataset ``name`` (one of :data:`DATASETS`). Toys draw ``n`` points with ``seed``; ``dim`` is
    gmm25's dimension. The digits ignore n and seed (all 1797 images)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")
    if name in ("digits", "digits16"):
        size = 8 if name == "digits" else 16
        x, y = load_digits(size)
        return Dataset(name, x, (1, size, size), labels=y, num_classes=10, info=digits_info())
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"get_dataset: n must be an int >= 2, got {n!r}")
    g = torch.Generator().manual_seed(seed)
    if name == "moons":
        return Dataset(name, two_moons(n, generator=g), (2,))
    mix = {"gmm1d": gmm1d, "gmm2d": gmm2d, "grid7x7": grid7x7}.get(name)
    mix = mix() if mix is not None else gmm25(dim, seed)
    x = mix.sample(n, generator=g).float()
    std = {"gmm1d": 0.3, "gmm2d": 0.2, "grid7x7": 0.25, "gmm25": 1.0}[name]
    return Dataset(name, x, (mix.D,), mixture=mix, mode_std=std)
