"""mixDDPM and mixSGM: diffusion models with a Gaussian-mixture prior (Jia, Zhu, Liu, Zheng; arXiv 2410.19149).

What is from the paper and what is reconstructed (docs/methods.md (mixDDPM); no code of the paper is public
and only its abstract and reviews could be read):

[PAPER] The prior is a Gaussian mixture with data-driven centers (clustering, or class structure); a
        dispatcher assigns each data point to one center; the forward and reverse processes are per-cluster
        diffusions with one shared network; training and sampling are Algorithms 1 and 2 (the network of
        Algorithm 2 is written eps_theta(x_t, t), without the cluster index); the "Reverse Effort" metric is
        the average distance between the initial noise and the final sample; variants mixDDPM (discrete)
        and mixSGM (score SDE); the claim is better quality than DDPM/SGM at equal, limited training steps.
[RECON] Everything with an equation:
        * prior p_T = sum_k pi_k N(c_k, s_k^2 I), pi_k = fraction of training points dispatched to k,
          s_k = 1 (the paper's form) or, as an option here, a per-cluster scale (``scales="cluster"``: the
          root-mean-square distance of the cluster's points to c_k; not in the sources);
        * dispatcher j = D(x0) = argmin_k |x0 - c_k| (``dispatch="nearest"``) or the class label
          (``dispatch="label"``, centers = class means);
        * centred forward process x_t = a_t x0 + (1 - a_t) c_j + sigma_t s_j eps, i.e. DDPM on
          y = (x - c_j) / s_j; loss |eps - eps_theta(x_t, t[, j])|^2 with the DDPM schedule;
        * whether eps_theta sees j is a flag (``cluster_cond``; False is Algorithm 2 as written). Measured
          here: without j the network cannot tell the clusters apart at high noise when the centers are
          closer than a few noise units (standardised data), its eps estimate is then centred on the wrong
          center and sampling diverges; the experiments therefore use cluster_cond=True and report the
          no-j variant as an ablation;
        * sampling: j ~ Cat(pi), x_T = c_j + s_j z, then any DDPM/DDIM sampler in y-space, shifted back;
        * mixSGM: the VP-SDE centred at c_j, dx = -1/2 beta(t) (x - c_j) dt + s_j sqrt(beta(t)) dW, same
          marginals with abar(t) = exp(-int beta); eps-parametrised score s = -eps / (sigma_t s_j); reverse SDE
          by Euler-Maruyama or predictor-corrector (reverse-diffusion predictor + Langevin corrector of
          Song et al. 2021, signal-to-noise ratio 0.16). If the paper's SGM is a VE SDE this family is wrong
          (docs/methods.md (mixDDPM)): a centred prior changes nothing for VE.
        * Reverse Effort: mean_n |x_T^(n) - x_0^(n)|_2 over generated pairs (the paper's eqs. 14-15 are not
          available; also reported squared, and the data-side value E|x0 - c_D(x0)|^2 + D of
          docs/methods.md (mixDDPM)).

DDPM and SGM are the same code with one center at the origin and unit scale, so every comparison runs one
training loop and one sampler. Training uses the fused dispatcher :func:`gmmkernels.mixture_dispatch`
(nearest center + centred noising in one kernel) and centers from :func:`gmmkernels.kmeans`.

Entry points: :class:`MixPrior`, :class:`MixTrainer`, :func:`sample_mix`, :func:`reverse_effort`. The
experiments (``gmmkernels reproduce mixddpm`` and the demo section) are in
:mod:`gmmkernels.diffusion.experiments.mixddpm`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional

import torch
from torch import Tensor, nn

from ... import kmeans, mixture_dispatch, nearest_center
from .. import samplers as _samplers
from ..samplers import NoiseFn
from ..schedules import VPSDE
from ..trainer import TrainConfig, Trainer

SCALES = ("unit", "cluster")
DISPATCH = ("nearest", "label")


# ---------------------------------------------------------------------------------------------------------
# the prior


@dataclass
class MixPrior:
    """Gaussian-mixture prior sum_k pi_k N(c_k, s_k^2 I) plus the training data's dispatch.

    centers [K, *data_shape], weights [K] (sum 1), scales [K], assignment [N] of the training points, and
    ``dispatch`` ("nearest" or "label"): how training points are assigned during training."""

    centers: Tensor
    weights: Tensor
    scales: Tensor
    assignment: Tensor
    dispatch: str = "nearest"
    name: str = "mixture"

    @property
    def K(self) -> int:
        return self.centers.shape[0]

    @classmethod
    def standard(cls, x: Tensor) -> "MixPrior":
        """N(0, I): plain DDPM / SGM expressed as a one-center prior."""
        N = x.shape[0]
        return cls(torch.zeros(1, *x.shape[1:]), torch.ones(1), torch.ones(1), torch.zeros(N, dtype=torch.long),
                   "nearest", "standard")

    @classmethod
    def from_kmeans(cls, x: Tensor, k: int, *, scales: str = "unit", seed: int = 0, iters: int = 100,
                    backend: str = "auto", n_init: int = 1) -> "MixPrior":
        """Centers by k-means (fused dispatcher for the assignment step), nearest-center dispatch. ``n_init`` > 1
        keeps the lowest-inertia run of k-means seeded ``seed``, ``seed + 1``, ..."""
        if not isinstance(n_init, int) or n_init < 1:
            raise ValueError(f"MixPrior.from_kmeans: argument 'n_init' must be an int >= 1, got {n_init!r}")
        runs = [kmeans(x.float(), k, iters=iters, seed=seed + r, backend=backend) for r in range(n_init)]
        km = min(runs, key=lambda r: r.inertia)
        return cls._finish(x, km.centers, km.assignment, scales, "nearest", f"kmeans{k}")

    @classmethod
    def from_labels(cls, x: Tensor, labels: Tensor, *, scales: str = "unit", dispatch: str = "label") -> "MixPrior":
        """Centers = class means; dispatch by the label (default) or by the nearest class mean."""
        if dispatch not in DISPATCH:
            raise ValueError(f"MixPrior.from_labels: dispatch must be one of {DISPATCH}, got {dispatch!r}")
        K = int(labels.max()) + 1
        xf = x.float().reshape(x.shape[0], -1)
        s = torch.zeros(K, xf.shape[1]).index_add_(0, labels, xf)
        n = torch.bincount(labels, minlength=K).clamp_min(1).float()
        centers = (s / n[:, None]).reshape(K, *x.shape[1:])
        j = labels if dispatch == "label" else nearest_center(x.float(), centers)
        return cls._finish(x, centers, j, scales, dispatch, "labels")

    @classmethod
    def _finish(cls, x, centers, j, scales, dispatch, name):
        if scales not in SCALES:
            raise ValueError(f"MixPrior: scales must be one of {SCALES}, got {scales!r}")
        K = centers.shape[0]
        xf = x.float().reshape(x.shape[0], -1)
        cf = centers.float().reshape(K, -1)
        n = torch.bincount(j, minlength=K).float()
        w = n / n.sum()
        if scales == "cluster":
            d2 = ((xf - cf[j]) ** 2).sum(1)
            s2 = torch.zeros(K).index_add_(0, j, d2) / (n.clamp_min(1) * xf.shape[1])
            sc = s2.sqrt().clamp_min(1e-3)
            sc = torch.where(n > 0, sc, torch.ones_like(sc))
        else:
            sc = torch.ones(K)
        return cls(centers.float(), w, sc, j.long(), dispatch, name + ("+scales" if scales == "cluster" else ""))

    def as_standard(self) -> "MixPrior":
        """The control of the mixture prior: every component N(0, I), with this prior's weights and assignment and
        dispatch by that assignment. A network fed the cluster index sees the same j as under this prior (same
        training pairs, same sampled j), only the prior and the centred forward process are gone."""
        K = self.K
        return MixPrior(torch.zeros_like(self.centers), self.weights.clone(), torch.ones(K), self.assignment.clone(),
                        "label", "standard+index")

    def to(self, device) -> "MixPrior":
        return MixPrior(self.centers.to(device), self.weights.to(device), self.scales.to(device),
                        self.assignment.to(device), self.dispatch, self.name)

    def sample_clusters(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        return torch.multinomial(self.weights.cpu().double(), n, replacement=True, generator=generator)

    def sample(self, n: int, generator: Optional[torch.Generator] = None):
        """(x_T [n, *shape], z, j): j ~ Cat(pi), z ~ N(0, I), x_T = c_j + s_j z."""
        j = self.sample_clusters(n, generator)
        z = torch.randn((n, *self.centers.shape[1:]), generator=generator)
        shape = (-1,) + (1,) * (self.centers.dim() - 1)
        dev = self.centers.device
        j, z = j.to(dev), z.to(dev)
        return self.centers[j] + self.scales[j].view(shape) * z, z, j

    def reverse_effort_data(self, x: Tensor) -> float:
        """E|x0 - c_D(x0)|^2 / s^2 + D over the training data (independent prior and data;
        docs/methods.md (mixDDPM))."""
        xf = x.float().reshape(x.shape[0], -1)
        cf = self.centers.reshape(self.K, -1).to(xf)
        j = self.assignment.to(xf.device)
        return float(((xf - cf[j]) ** 2).sum(1).mean() + xf.shape[1] * (self.scales.to(xf) ** 2 * self.weights.to(xf)).sum())


# ---------------------------------------------------------------------------------------------------------
# networks in y-space and training


class CentredModel(nn.Module):
    """Wraps an eps-network eps_theta(x, t[, j]) as a network of y = (x - c_j) / s_j with cond = j, so the
    package's DDPM/DDIM/Euler-Maruyama samplers run the per-cluster diffusions unchanged."""

    def __init__(self, net: nn.Module, prior: MixPrior, cluster_cond: bool = False):
        super().__init__()
        self.net = net
        self.prior = prior
        self.cluster_cond = bool(cluster_cond)

    def forward(self, y: Tensor, t: Tensor, cond: Optional[Tensor] = None, heads: bool = False):
        if cond is None:
            raise ValueError("CentredModel: pass the cluster indices as cond")
        shape = (-1,) + (1,) * (y.dim() - 1)
        p = self.prior
        x = p.centers[cond].to(y) + p.scales[cond].to(y).view(shape) * y
        return self.net(x, t, cond=cond) if self.cluster_cond else self.net(x, t)


class MixTrainer(Trainer):
    """:class:`gmmkernels.diffusion.trainer.Trainer` with the centred forward process of mixDDPM / mixSGM.

    x_t = a_t x0 + (1 - a_t) c_j + sigma_t s_j eps comes from the fused dispatcher (``dispatch="nearest"``:
    it also finds j) or from the given labels (``dispatch="label"``). The loss stays |eps_theta(x_t, t[, j]) - eps|^2.
    """

    def __init__(self, model: nn.Module, schedule, data: Tensor, prior: MixPrior, config: Optional[TrainConfig] = None,
                 *, cluster_cond: bool = False, backend: str = "auto", device="cpu", **kw):
        cfg = TrainConfig(**{**(config.__dict__ if config is not None else {}), "conditional": True})
        super().__init__(model, schedule, data, cfg, labels=prior.assignment, device=device, **kw)
        self.prior = prior.to(self.device)
        self.cluster_cond = bool(cluster_cond)
        self.backend = backend

    def loss(self, x0: Tensor, t: Tensor, eps: Tensor, cond=None) -> Tensor:
        a, s = self.alpha_sigma(t, x0.device)
        p = self.prior
        j_pre = cond
        sig = s * p.scales[j_pre]
        if p.dispatch == "nearest" and p.K > 1:
            xt, j, _ = mixture_dispatch(x0, p.centers, a, sig, eps, backend=self.backend)
        else:  # the given assignment (labels, or the one center): x_t = a x0 + (1 - a) c_j + sigma eps directly
            j = j_pre
            shape = (-1,) + (1,) * (x0.dim() - 1)
            a_ = a.to(dtype=x0.dtype, device=x0.device).view(shape)
            s_ = sig.to(dtype=x0.dtype, device=x0.device).view(shape)
            xt = a_ * x0 + (1 - a_) * p.centers[j]
            xt = xt + s_ * eps
        out = self.net(xt, t, cond=j) if self.cluster_cond else self.net(xt, t)
        return (out - eps).pow(2).mean()


# ---------------------------------------------------------------------------------------------------------
# sampling


@torch.no_grad()
def pc_sample(model: nn.Module, schedule: VPSDE, shape, K: int = 100, *, cond=None, x_T: Tensor,
              snr: float = 0.16, n_corrector: int = 1, generator=None, noise: Optional[NoiseFn] = None) -> Tensor:
    """Predictor-corrector sampler of the VP-SDE (Song et al. 2021): reverse-diffusion (Euler-Maruyama) predictor,
    ``n_corrector`` Langevin corrector steps with step 2 (snr |z| / |score|)^2, Tweedie denoising at t_min.
    ``model`` is an eps-network: score = -eps / sigma_t. ``noise(i, x)`` (e.g. :func:`counter_noise`) replaces the
    generator's normals: draw i = step * (n_corrector + 1) + c for corrector c, + n_corrector for the predictor."""
    ts = schedule.grid(K)
    x = x_T.clone()
    draw = 0

    def eps_at(x, t):
        return model(x, torch.full((x.shape[0],), float(t), device=x.device), cond=cond)

    def fresh():
        nonlocal draw
        z = torch.randn(x.shape, generator=generator).to(x) if noise is None else noise(draw, x)
        draw += 1
        return z

    for i in range(K):
        t, s = float(ts[i]), float(ts[i + 1])
        a_t, sig_t = (float(v) for v in schedule.alpha_sigma(t))
        draw = i * (n_corrector + 1)
        for _ in range(n_corrector):
            score = -eps_at(x, t) / sig_t
            z = fresh()
            gn = score.reshape(x.shape[0], -1).norm(dim=1).mean()
            zn = z.reshape(x.shape[0], -1).norm(dim=1).mean()
            step = 2.0 * (snr * zn / gn.clamp_min(1e-12)) ** 2
            x = x + step * score + (2.0 * step).sqrt() * z
        eps = eps_at(x, t)
        if s == 0.0:
            x = (x - sig_t * eps) / a_t
        else:
            beta, dt = float(schedule.beta(t)), t - s
            x = x + (0.5 * beta * x - beta * eps / sig_t) * dt + math.sqrt(beta * dt) * fresh()
    return x


@torch.no_grad()
def sample_mix(net: nn.Module, prior: MixPrior, schedule, n: int, *, method: str = "ddpm", K: Optional[int] = None,
               cluster_cond: bool = False, generator: Optional[torch.Generator] = None, device="cpu",
               noise: Optional[NoiseFn] = None):
    """Draw n samples: j ~ Cat(pi), x_T = c_j + s_j z, reverse process in y-space. ``method``: "ddpm", "ddim"
    (discrete schedules), "em" (Euler-Maruyama) or "pc" (predictor-corrector) for the VP-SDE.
    j and z come from ``generator``; the per-step noise too, or from ``noise(i, x)`` when given (e.g.
    :func:`gmmkernels.diffusion.samplers.counter_noise`). Priors with the same weights (a mixture prior and its
    :meth:`MixPrior.as_standard` control) then share every random number: j, z and each step's noise.
    Returns (x0 [n, *shape], x_T, j)."""
    device = torch.device(device)
    prior = prior.to(device)
    net = net.to(device).eval()
    x_T, z, j = prior.sample(n, generator)
    wrapped = CentredModel(net, prior, cluster_cond)
    shape = tuple(x_T.shape)
    if method == "pc":
        y0 = pc_sample(wrapped, schedule, shape, K or 100, cond=j, x_T=z, generator=generator, noise=noise)
    else:
        m = {"ddpm": "ddpm", "ddim": "ddim", "em": "euler_maruyama"}.get(method)
        if m is None:
            raise ValueError(f"sample_mix: method must be 'ddpm', 'ddim', 'em' or 'pc', got {method!r}")
        y0 = _samplers.sample(wrapped, schedule, shape, m, K, generator=generator, x_T=z, cond=j, device=device,
                              noise=noise)
    sh = (-1,) + (1,) * (len(shape) - 1)
    x0 = prior.centers[j] + prior.scales[j].view(sh) * y0
    return x0, x_T, j


def reverse_effort(x_T: Tensor, x0: Tensor) -> Dict[str, float]:
    """Reverse Effort of generated pairs: mean |x_T - x_0|_2 and mean |x_T - x_0|_2^2 (per sample)."""
    d = (x_T.reshape(x_T.shape[0], -1).double() - x0.reshape(x0.shape[0], -1).double())
    return {"reeff_l2": float(d.norm(dim=1).mean()), "reeff_sq": float((d**2).sum(1).mean())}
