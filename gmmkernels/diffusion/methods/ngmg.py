"""GMM conditioning and the Negative Gaussian Mixture Gradient (NGMG) (Lu, Wu, Ding, Duan, Zhuang, Yuan;
arXiv 2401.11261, Neurocomputing 614:128764, 2025).

What is from the paper and what is reconstructed (docs/methods.md (NGMG); no code is public and only the
abstracts and TL;DRs could be read, so almost everything here is a documented placeholder design):

[PAPER] Conditioning inputs are treated as distributions: a GMM per feature defines the conditioning latent,
        and the diffusion model is conditioned on latents sampled from it; feature-conditioned models give
        fewer "defect" generations than class-conditioned ones. NGMG is a gradient function used to train an
        auxiliary classifier in diffusion training; it is claimed to be more stable than BCE and to share the
        benefit of the Wasserstein distance for distributions on low-dimensional manifolds.
[RECON] * Latent GMMs (:class:`FeatureGMM`): for feature f and value v in {0, 1}, a 1-D mixture
          p_{f,v}(z) = sum_m pi_{f,v,m} N(z; mu_m, s^2). "expansion" form (the authors' earlier GMM expansion,
          [UNVERIFIED] as the form used): fixed, evenly spaced means on [-2, 2], one shared s = spacing, learned
          weights only. "general" form: means, scales and weights all learned. Weights are learned by maximum
          likelihood (Adam on -log p through the fused mixture kernel) to a target latent law, by default
          N(-1, 0.35^2) for v = 0 and N(+1, 0.35^2) for v = 1 (our choice; the paper's targets are unknown).
        * NGMG (:func:`ngmg_loss`, docs/methods.md (NGMG) read literally): for a prediction x and a target mixture
          {w_k, mu_k, sigma}, U(x) = -sum_k w_k exp(-|x - mu_k|^2 / (2 sigma^2)) (w normalised), the loss value,
          and the NGMG grad_x U = sum_k w_k (x - mu_k) / sigma^2 exp(...), used as d(loss)/dx in backward.
          ``normalize=True`` divides it by sum_k w_k exp(...) (then it equals -grad log p, the mixture score).
          ``sigma2_scale=True`` (default) multiplies U by sigma^2 so the gradient tends to x - mu (an MSE
          gradient) when sigma is large, and decays for outliers when sigma is small. sigma is annealed from
          large to small during training (:func:`anneal_sigma`, geometric).
        * Features of the 8x8 digits (our definition, from the labels): odd (1 3 5 7 9), closed loop
          (0 6 8 9), only straight strokes (1 4 7), "large" (digit >= 5). 6 and 8 share a code, so a feature
          request can be met by several classes, which is the set-theoretic point of feature conditioning.
        * Defect rate (our definition): the fraction of generated samples that the package's digits
          classifier cannot assign to any digit with confidence (max softmax probability < 0.5).
        * The auxiliary classifier sees clean images; its NGMG or BCE loss is compared under 20% feature-label
          noise (training stability = spread of the test-accuracy curves over seeds). Optionally the frozen
          classifier adds an NGMG term on the denoised prediction x0_hat to the conditional diffusion loss.

Entry points: :func:`ngmg_loss`, :func:`anneal_sigma`, :class:`FeatureGMM`, :func:`digit_features`,
:func:`train_aux_classifier`, :class:`CondTrainer`. The experiments (``gmmkernels reproduce ngmg`` and the demo
section; the conditional-generation metrics and the defect rate) are in :mod:`gmmkernels.diffusion.experiments.ngmg`.
"""
from __future__ import annotations

import math
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ... import mixture_stats

FEATURES = ("odd", "loop", "straight", "large")
_LOOP = (0, 6, 8, 9)
_STRAIGHT = (1, 4, 7)


def digit_features(labels: Tensor) -> Tensor:
    """[N] digit labels -> [N, 4] float features (odd, loop, straight, large) in {0, 1}."""
    y = labels.long()
    odd = y % 2
    loop = torch.zeros_like(y)
    for d in _LOOP:
        loop |= (y == d).long()
    straight = torch.zeros_like(y)
    for d in _STRAIGHT:
        straight |= (y == d).long()
    large = (y >= 5).long()
    return torch.stack([odd, loop, straight, large], 1).float()


FEATURE_TABLE = digit_features(torch.arange(10))  # [10, 4]


# ---------------------------------------------------------------------------------------------------------
# NGMG


class _NGMG(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, logits, means, scale, normalize, sigma2_scale, backend):
        # x [B, 1, D], logits [B, K], means [B, K, D], scale [B, K] (spherical)
        D = x.shape[-1]
        st = mixture_stats(x.detach(), logits.detach(), means.detach(), scale.detach(), "spherical",
                           backend=backend, with_score=True)
        lp, score = st.log_prob[:, 0], st.score[:, 0]
        sig = scale.detach()[:, 0]
        dens = torch.exp(lp + 0.5 * D * torch.log(2 * math.pi * sig * sig))  # sum_k w_k exp(-d^2 / 2 s^2)
        mult = sig * sig if sigma2_scale else torch.ones_like(sig)
        U = -dens * mult
        g = -score if normalize else -dens[:, None] * score  # grad_x U (before the sigma^2 factor)
        ctx.save_for_backward(g * mult[:, None])
        return U

    @staticmethod
    def backward(ctx, gU):
        (g,) = ctx.saved_tensors
        return (gU[:, None] * g).unsqueeze(1), None, None, None, None, None, None


def ngmg_loss(pred: Tensor, target_means: Tensor, target_weights: Optional[Tensor] = None, sigma: float = 1.0, *,
              per_feature: bool = True, normalize: bool = False, sigma2_scale: bool = True, reduction: str = "mean",
              backend: str = "auto") -> Tensor:
    """Negative Gaussian-mixture loss U of predictions, whose backward is the NGMG (see the module docstring).

    pred [N, F]; target_means [N, K, F] (per-sample targets) or [K, F] (shared); target_weights [N, K] / [K]
    (non-negative, normalised inside; default equal). ``per_feature``: each of the F coordinates is its own 1-D
    mixture (the loss sums over features); otherwise one F-dimensional mixture per sample. The forward value and
    the gradient come from one pass of the fused mixture kernel (log-density and score). Gradients flow to
    ``pred`` only (targets are data). ``reduction``: "mean" | "sum" | "none" (then [N] or [N, F])."""
    fn = "ngmg_loss"
    if not isinstance(pred, Tensor) or not pred.is_floating_point() or pred.dim() != 2:
        raise ValueError(f"{fn}: argument 'pred' must be a floating-point tensor [N, F]")
    if not isinstance(target_means, Tensor) or target_means.dim() not in (2, 3):
        raise ValueError(f"{fn}: argument 'target_means' must be [N, K, F] or [K, F]")
    N, Fd = pred.shape
    tm = target_means.to(pred.dtype)
    if tm.dim() == 2:
        tm = tm.unsqueeze(0).expand(N, *tm.shape)
    if tm.shape[0] != N or tm.shape[2] != Fd:
        raise ValueError(f"{fn}: argument 'target_means' must be [N={N}, K, F={Fd}] or [K, F={Fd}], got {tuple(target_means.shape)}")
    K = tm.shape[1]
    if target_weights is None:
        w = torch.ones(N, K, dtype=pred.dtype, device=pred.device)
    else:
        w = target_weights.to(pred.dtype)
        w = w.unsqueeze(0).expand(N, K) if w.dim() == 1 else w
        if tuple(w.shape) != (N, K):
            raise ValueError(f"{fn}: argument 'target_weights' must be [N={N}, K={K}] or [K={K}], got {tuple(target_weights.shape)}")
        if bool((w < 0).any()):
            raise ValueError(f"{fn}: argument 'target_weights' must be non-negative")
    if not (isinstance(sigma, (int, float)) and sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"{fn}: argument 'sigma' must be a positive finite float, got {sigma!r}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{fn}: argument 'reduction' must be 'mean', 'sum' or 'none', got {reduction!r}")
    logits = torch.log(w)
    if per_feature:
        x = pred.reshape(N * Fd, 1, 1)
        means = tm.permute(0, 2, 1).reshape(N * Fd, K, 1)
        lg = logits.unsqueeze(1).expand(N, Fd, K).reshape(N * Fd, K)
    else:
        x = pred.reshape(N, 1, Fd)
        means = tm
        lg = logits
    scale = torch.full(lg.shape, float(sigma), dtype=pred.dtype, device=pred.device)
    U = _NGMG.apply(x, lg.contiguous(), means.contiguous(), scale, bool(normalize), bool(sigma2_scale), backend)
    if per_feature:
        U = U.reshape(N, Fd)
    if reduction == "none":
        return U
    return U.sum() if reduction == "sum" else U.mean()


def ngmg_reference(pred: Tensor, target_means: Tensor, target_weights: Optional[Tensor], sigma: float,
                   per_feature: bool = True, sigma2_scale: bool = True) -> Tensor:
    """Direct formula of U (per sample [N] or per feature [N, F]); autograd of it gives the NGMG."""
    N, Fd = pred.shape
    tm = target_means if target_means.dim() == 3 else target_means.unsqueeze(0).expand(N, *target_means.shape)
    K = tm.shape[1]
    w = torch.ones(N, K, dtype=pred.dtype) if target_weights is None else target_weights
    w = w.expand(N, K) if w.dim() == 1 else w
    w = w / w.sum(-1, keepdim=True)
    d = pred.unsqueeze(1) - tm  # [N, K, F]
    if per_feature:
        U = -(w.unsqueeze(-1) * torch.exp(-d**2 / (2 * sigma**2))).sum(1)
    else:
        U = -(w * torch.exp(-(d**2).sum(-1) / (2 * sigma**2))).sum(1)
    return U * (sigma**2 if sigma2_scale else 1.0)


def anneal_sigma(step: int, total: int, sigma_start: float = 2.0, sigma_end: float = 0.25) -> float:
    """Geometric annealing sigma_start -> sigma_end over ``total`` steps (constant afterwards)."""
    f = min(max(step / max(total, 1), 0.0), 1.0)
    return float(sigma_start * (sigma_end / sigma_start) ** f)


# ---------------------------------------------------------------------------------------------------------
# conditioning latents


class FeatureGMM(nn.Module):
    """Per-feature, per-value 1-D Gaussian mixtures of the conditioning latent z [N, F].

    form "expansion": means fixed on an even grid of ``n_components`` points in [lo, hi], one shared sigma (the
    grid spacing), learned weights. form "general": means, log-scales and weights all learned."""

    def __init__(self, n_features: int, form: str = "expansion", n_components: int = 9, lo: float = -2.0,
                 hi: float = 2.0):
        super().__init__()
        if form not in ("expansion", "general"):
            raise ValueError(f"FeatureGMM: form must be 'expansion' or 'general', got {form!r}")
        self.form, self.F, self.M = form, n_features, n_components
        grid = torch.linspace(lo, hi, n_components)
        spacing = (hi - lo) / max(n_components - 1, 1)
        self.logits = nn.Parameter(torch.zeros(n_features, 2, n_components))
        if form == "expansion":
            self.register_buffer("means_", grid.expand(n_features, 2, n_components).clone())
            self.register_buffer("log_scale_", torch.full((n_features, 2, n_components), math.log(spacing)))
        else:
            self.means_ = nn.Parameter(grid.expand(n_features, 2, n_components).clone())
            self.log_scale_ = nn.Parameter(torch.full((n_features, 2, n_components), math.log(spacing)))

    def _params(self, feats: Tensor):
        v = feats.long().clamp(0, 1)  # [N, F]
        idx = v.unsqueeze(-1).unsqueeze(-1).expand(-1, -1, 1, self.M)  # [N, F, 1, M]
        pick = lambda p: p.unsqueeze(0).expand(v.shape[0], -1, -1, -1).gather(2, idx).squeeze(2)  # noqa: E731
        return pick(self.logits), pick(self.means_), pick(self.log_scale_).exp()

    def log_prob(self, z: Tensor, feats: Tensor, backend: str = "auto") -> Tensor:
        """sum_f log p_{f, v_f}(z_f) [N], through the fused mixture kernel (differentiable in the parameters)."""
        from ... import mixture_log_prob

        lg, mu, sd = self._params(feats)
        N = z.shape[0]
        lp = mixture_log_prob(z.reshape(N * self.F, 1, 1), lg.reshape(N * self.F, self.M),
                              mu.reshape(N * self.F, self.M, 1), sd.reshape(N * self.F, self.M), "spherical",
                              backend=backend)
        return lp.reshape(N, self.F).sum(1)

    @torch.no_grad()
    def sample(self, feats: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        lg, mu, sd = self._params(feats)
        N = feats.shape[0]
        k = torch.multinomial(torch.softmax(lg.reshape(-1, self.M).double().cpu(), -1), 1, generator=generator)
        k = k.reshape(N, self.F, 1).to(mu.device)
        z = torch.randn((N, self.F), generator=generator).to(mu)
        return mu.gather(2, k).squeeze(2) + sd.gather(2, k).squeeze(2) * z

    def fit(self, target_std: float = 0.35, steps: int = 300, n: int = 2048, lr: float = 0.05, seed: int = 0) -> float:
        """Maximum likelihood of the weights (and, for "general", means and scales) to targets N(+-1, target_std^2);
        returns the final mean NLL per feature."""
        g = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        nll = float("nan")
        for _ in range(steps):
            feats = torch.randint(0, 2, (n, self.F), generator=g).float()
            z = (2 * feats - 1) + target_std * torch.randn((n, self.F), generator=g)
            loss = -self.log_prob(z, feats).mean() / self.F
            opt.zero_grad()
            loss.backward()
            opt.step()
            nll = float(loss.detach())
        return nll


# ---------------------------------------------------------------------------------------------------------
# auxiliary classifier: NGMG vs BCE


def _aux_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.SiLU(), nn.Linear(128, 128), nn.SiLU(),
                         nn.Linear(128, len(FEATURES)))


def train_aux_classifier(loss: str, x: Tensor, feats: Tensor, x_test: Tensor, feats_test: Tensor, *, steps: int = 1500,
                         seed: int = 0, label_noise: float = 0.2, lr: float = 3e-3, eval_every: int = 50,
                         sigma=(2.0, 0.25), batch: int = 128):
    """Train the feature classifier with ``loss`` "ngmg" (outputs are feature values, target mixture = one
    component at the label, sigma annealed) or "bce" (outputs are logits). Returns (net, curve list of dicts)."""
    g = torch.Generator().manual_seed(1000 + seed)
    noisy = feats.clone()
    flip = torch.rand(noisy.shape, generator=g) < label_noise
    noisy[flip] = 1 - noisy[flip]
    net = _aux_net(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    curve = []
    for step in range(1, steps + 1):
        i = torch.randint(len(x), (batch,), generator=g)
        out = net(x[i])
        if loss == "bce":
            L = F.binary_cross_entropy_with_logits(out, noisy[i])
        else:
            s = anneal_sigma(step, steps, *sigma)
            L = ngmg_loss(out, noisy[i].unsqueeze(1), sigma=s)
        opt.zero_grad()
        L.backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            with torch.no_grad():
                o = net(x_test)
                pred = (o > 0) if loss == "bce" else (o > 0.5)
                acc = float((pred.float() == feats_test).float().mean())
            curve.append({"step": step, "loss": float(L.detach()), "test_acc": acc})
    return net.eval().requires_grad_(False), curve


def aux_predict(net: nn.Module, loss: str, x: Tensor) -> Tensor:
    """Feature values in [0, 1]-ish units: sigmoid of logits (BCE) or the raw outputs (NGMG)."""
    o = net(x)
    return torch.sigmoid(o) if loss == "bce" else o


# ---------------------------------------------------------------------------------------------------------
# conditional diffusion


class CondTrainer:
    """Conditional eps-network training on digits. cond: "class" (labels), "feature" (GMM latents sampled per
    step from the requested features) or "feature-bits" (the 0/1 feature vector itself). Optional auxiliary
    term: aux_weight * NGMG(classifier(x0_hat), features) at t <= aux_tmax."""

    def __init__(self, mode: str, x: Tensor, y: Tensor, gmm: Optional[FeatureGMM], *, seed: int = 0, size: str = "small",
                 aux=None, aux_weight: float = 0.0, aux_tmax: int = 300, lr: float = 1e-3, batch: int = 128):
        from ..models import default_model
        from ..schedules import DiscreteSchedule

        torch.manual_seed(seed)
        self.mode, self.x, self.y, self.gmm = mode, x, y, gmm
        self.feats = digit_features(y)
        self.sched = DiscreteSchedule.linear(1000)
        if mode == "class":
            self.net = default_model((1, 8, 8), 1000.0, arch="mlp", size=size, num_classes=10)
        else:
            from ..models import MLPEps

            base = default_model((1, 8, 8), 1000.0, arch="mlp", size=size)
            cfg = dict(base.config)
            cfg.pop("arch")
            cfg["cond_dim"] = len(FEATURES)
            self.net = MLPEps(**cfg)
        import copy

        self.ema = copy.deepcopy(self.net).eval().requires_grad_(False)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.g = torch.Generator().manual_seed(seed)
        self.aux, self.aux_weight, self.aux_tmax, self.batch = aux, aux_weight, aux_tmax, batch
        self.step = 0
        self.losses: List[float] = []

    def cond_for(self, y: Tensor, feats: Tensor, g=None):
        if self.mode == "class":
            return y
        if self.mode == "feature-bits":
            return 2 * feats - 1
        return self.gmm.sample(feats, generator=g)

    def train(self, steps: int):
        for _ in range(steps):
            g = self.g
            i = torch.randint(len(self.x), (self.batch,), generator=g)
            x0, y, f = self.x[i], self.y[i], self.feats[i]
            t = torch.randint(1, 1001, (self.batch,), generator=g)
            eps = torch.randn(x0.shape, generator=g)
            a, s = (v.float().view(-1, 1, 1, 1) for v in self.sched.alpha_sigma(t.double()))
            xt = a * x0 + s * eps
            c = self.cond_for(y, f, g)
            e = self.net(xt, t.float(), cond=c)
            L = (e - eps).pow(2).mean()
            if self.aux is not None and self.aux_weight > 0:
                m = t <= self.aux_tmax
                if bool(m.any()):
                    x0h = ((xt[m] - s[m] * e[m]) / a[m]).clamp(-1.5, 1.5)
                    pred = aux_predict(self.aux[0], self.aux[1], x0h)
                    L = L + self.aux_weight * ngmg_loss(pred, f[m].unsqueeze(1), sigma=0.5)
            self.opt.zero_grad()
            L.backward()
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
            self.opt.step()
            with torch.no_grad():
                for pe, p in zip(self.ema.parameters(), self.net.parameters()):
                    pe.lerp_(p, 0.005)
            self.step += 1
            self.losses.append(float(L.detach()))

    @torch.no_grad()
    def sample(self, y: Tensor, feats: Tensor, K: int = 100, seed: int = 1) -> Tensor:
        from ..samplers import sample

        g = torch.Generator().manual_seed(seed)
        c = self.cond_for(y, feats, g)
        return sample(self.ema, self.sched, (len(y), 1, 8, 8), "ddpm", K, generator=g, cond=c)
