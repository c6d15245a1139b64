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

# Features of the image itself, not of its class: each is 1 when the image's attribute lies above the median of its
# digit's training images, so within every digit about half the images have it and the class cannot predict it.
STYLE_FEATURES = ("thick", "wide", "slanted")


def image_attributes(x: Tensor) -> Tensor:
    """[N, 1, 8, 8] images in [-1, 1] -> [N, 3] continuous attributes (ink, width, slant): total ink (sum of
    (x + 1) / 2), the ink-weighted standard deviation of the column index, and the ink-weighted regression slope of
    the column on the row (positive: the strokes lean to the right going up)."""
    w = ((x.reshape(x.shape[0], 8, 8).double() + 1) / 2).clamp_min(0)
    ink = w.sum((1, 2)).clamp_min(1e-6)
    r = torch.arange(8, dtype=torch.float64).view(1, 8, 1)
    c = torch.arange(8, dtype=torch.float64).view(1, 1, 8)
    mr = (w * r).sum((1, 2)) / ink
    mc = (w * c).sum((1, 2)) / ink
    vr = (w * (r - mr.view(-1, 1, 1)) ** 2).sum((1, 2)) / ink
    vc = (w * (c - mc.view(-1, 1, 1)) ** 2).sum((1, 2)) / ink
    cov = (w * (r - mr.view(-1, 1, 1)) * (c - mc.view(-1, 1, 1))).sum((1, 2)) / ink
    return torch.stack([ink, vc.sqrt(), -cov / vr.clamp_min(1e-6)], 1)


def style_thresholds(x: Tensor, labels: Tensor) -> Tensor:
    """[10, 3] per-digit medians of :func:`image_attributes` over the images ``x`` with digit ``labels``."""
    a = image_attributes(x)
    return torch.stack([a[labels == d].median(0).values if bool((labels == d).any()) else a.median(0).values
                        for d in range(10)])


def style_features(x: Tensor, digits: Tensor, thresholds: Tensor) -> Tensor:
    """[N, 3] binary style features (thick, wide, slanted) of images x, judged against the thresholds of ``digits``
    (the true digit for data, the classifier's digit for samples)."""
    return (image_attributes(x) > thresholds[digits.long()]).float()


def all_features(x: Tensor, digits: Tensor, thresholds: Tensor) -> Tensor:
    """[N, 7]: the four class features of ``digits`` then the three style features of the images."""
    return torch.cat([digit_features(digits), style_features(x, digits, thresholds)], 1)


def combination_classes(feats: Tensor, table: Optional[Tensor] = None):
    """Each distinct row of ``feats`` [N, F] is a class. Returns (classes [N] long, table [C, F]); with ``table``
    given, rows missing from it get class -1."""
    if table is None:
        table, inv = torch.unique(feats, dim=0, return_inverse=True)
        return inv, table
    eq = (feats.unsqueeze(1) == table.unsqueeze(0)).all(-1)  # [N, C]
    return torch.where(eq.any(1), eq.float().argmax(1), torch.full((feats.shape[0],), -1)).long(), table


def class_codes(n_classes: int, n_dims: int, seed: int = 0) -> Tensor:
    """[C, n_dims] distinct random +-1 codes, one per class (needs C <= 2^n_dims): the class-GMM's latent targets.
    They carry the class index only: two classes that share a feature share nothing in their codes."""
    if n_classes > 2**n_dims:
        raise ValueError(f"class_codes: {n_classes} classes need more than {n_dims} dimensions")
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(2**n_dims, generator=g)[:n_classes]
    bits = (pick.unsqueeze(1) >> torch.arange(n_dims)) & 1
    return (2 * bits - 1).float()


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
    grid spacing), learned weights. form "general": means, log-scales and weights all learned.

    Coordinate f of the latent of a request v [N, F] (values 0..n_values-1) is drawn from mixture (f, v_f); its
    fitting target is N(targets[f, v_f], target_std^2), by default targets[f] = (-1, +1) for the two values of a
    binary feature. With ``n_values`` = C classes, ``targets`` = the classes' codes transposed and v_f = the class
    for every f, the same module is a class-GMM (:class:`ClassGMM`)."""

    def __init__(self, n_features: int, form: str = "expansion", n_components: int = 9, lo: float = -2.0,
                 hi: float = 2.0, n_values: int = 2, targets: Optional[Tensor] = None):
        super().__init__()
        if form not in ("expansion", "general"):
            raise ValueError(f"FeatureGMM: form must be 'expansion' or 'general', got {form!r}")
        V = int(n_values)
        if targets is None:
            targets = torch.linspace(-1.0, 1.0, V).expand(n_features, V)
        if tuple(targets.shape) != (n_features, V):
            raise ValueError(f"FeatureGMM: argument 'targets' must be [n_features={n_features}, n_values={V}], "
                             f"got {tuple(targets.shape)}")
        self.form, self.F, self.M, self.V = form, n_features, n_components, V
        self.register_buffer("targets", targets.float().clone())
        grid = torch.linspace(lo, hi, n_components)
        spacing = (hi - lo) / max(n_components - 1, 1)
        self.logits = nn.Parameter(torch.zeros(n_features, V, n_components))
        if form == "expansion":
            self.register_buffer("means_", grid.expand(n_features, V, n_components).clone())
            self.register_buffer("log_scale_", torch.full((n_features, V, n_components), math.log(spacing)))
        else:
            self.means_ = nn.Parameter(grid.expand(n_features, V, n_components).clone())
            self.log_scale_ = nn.Parameter(torch.full((n_features, V, n_components), math.log(spacing)))

    def _params(self, feats: Tensor):
        v = feats.long().clamp(0, self.V - 1)  # [N, F]
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
        """One latent per request: component k by inversion of the weights' CDF at a uniform u, then mu_k + s_k z.
        The draw consumes one uniform and one normal per coordinate whatever the weights, so two GMMs given one
        generator state share u (their component choices are coupled by quantile) and z."""
        lg, mu, sd = self._params(feats)
        N = feats.shape[0]
        u = torch.rand((N, self.F, 1), generator=generator, dtype=torch.float64)
        cdf = torch.softmax(lg.double().cpu(), -1).cumsum(-1)
        k = (cdf[..., :-1] < u).sum(-1, keepdim=True).to(mu.device)
        z = torch.randn((N, self.F), generator=generator).to(mu)
        return mu.gather(2, k).squeeze(2) + sd.gather(2, k).squeeze(2) * z

    def fit(self, target_std: float = 0.35, steps: int = 300, n: int = 2048, lr: float = 0.05, seed: int = 0) -> float:
        """Maximum likelihood of the weights (and, for "general", means and scales) to the targets
        N(targets[f, v], target_std^2), values v uniform; returns the final mean NLL per feature."""
        g = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        nll = float("nan")
        cols = torch.arange(self.F)
        for _ in range(steps):
            feats = torch.randint(0, self.V, (n, self.F), generator=g)
            z = self.targets[cols, feats] + target_std * torch.randn((n, self.F), generator=g)
            loss = -self.log_prob(z, feats).mean() / self.F
            opt.zero_grad()
            loss.backward()
            opt.step()
            nll = float(loss.detach())
        return nll


class ClassGMM(FeatureGMM):
    """Class-GMM conditioning latents: one mixture per (class, latent coordinate), fitted to N(code_c, s^2) with
    code_c = ``codes[c]`` (:func:`class_codes`). The same family, size and fit as :class:`FeatureGMM`; what differs
    is what indexes the mixture (the class, not each feature's value), so classes that share features share nothing
    in their latents."""

    def __init__(self, codes: Tensor, form: str = "expansion", n_components: int = 9, lo: float = -2.0, hi: float = 2.0):
        C, Fd = codes.shape
        super().__init__(Fd, form, n_components, lo, hi, n_values=C, targets=codes.T.contiguous())

    def sample(self, classes: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """Latents [N, F] for class indices [N] (or [N, F] values, as :meth:`FeatureGMM.sample`)."""
        v = classes.unsqueeze(1).expand(-1, self.F) if classes.dim() == 1 else classes
        return super().sample(v, generator)


# ---------------------------------------------------------------------------------------------------------
# auxiliary classifier: NGMG vs BCE


AUX_LOSSES = ("ngmg", "bce", "mae")


def _aux_net(seed: int, n_out: int = len(FEATURES)) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.SiLU(), nn.Linear(128, 128), nn.SiLU(),
                             nn.Linear(128, n_out))


def flip_labels(feats: Tensor, rate: float, generator: torch.Generator) -> Tensor:
    """Each 0/1 entry of ``feats`` flipped independently with probability ``rate`` (symmetric label noise)."""
    noisy = feats.clone()
    flip = torch.rand(noisy.shape, generator=generator) < rate
    noisy[flip] = 1 - noisy[flip]
    return noisy


def train_aux_classifier(loss: str, x: Tensor, feats: Tensor, x_test: Tensor, feats_test: Tensor, *, steps: int = 1500,
                         seed: int = 0, label_noise: float = 0.2, lr: float = 3e-3, eval_every: int = 50,
                         sigma=(2.0, 0.25), batch: int = 128, x_val: Optional[Tensor] = None,
                         feats_val: Optional[Tensor] = None):
    """Train the feature classifier with ``loss`` "ngmg" (outputs are feature values, target mixture = one
    component at the label, sigma annealed), "bce" (outputs are logits) or "mae" (|sigmoid(logit) - label|, a
    bounded loss known to tolerate symmetric label noise; the control for NGMG's boundedness). The training labels
    get ``label_noise``; the flips and batches depend on ``seed`` only, and the network's initial weights too, so
    the losses compared on one seed see the same data. Curves record the accuracy on (x_test, feats_test) and, when
    given, on (x_val, feats_val). Returns (net, curve list of dicts)."""
    if loss not in AUX_LOSSES:
        raise ValueError(f"train_aux_classifier: argument 'loss' must be one of {AUX_LOSSES}, got {loss!r}")
    g = torch.Generator().manual_seed(1000 + seed)
    noisy = flip_labels(feats, label_noise, g)
    net = _aux_net(seed, feats.shape[1])
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    curve = []

    def acc(xe, fe):
        return float((aux_decide(net, loss, xe) == fe).float().mean())

    for step in range(1, steps + 1):
        i = torch.randint(len(x), (batch,), generator=g)
        out = net(x[i])
        if loss == "bce":
            L = F.binary_cross_entropy_with_logits(out, noisy[i])
        elif loss == "mae":
            L = (torch.sigmoid(out) - noisy[i]).abs().mean()
        else:
            s = anneal_sigma(step, steps, *sigma)
            L = ngmg_loss(out, noisy[i].unsqueeze(1), sigma=s)
        opt.zero_grad()
        L.backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            with torch.no_grad():
                rec = {"step": step, "loss": float(L.detach()), "test_acc": acc(x_test, feats_test)}
                if x_val is not None:
                    rec["val_acc"] = acc(x_val, feats_val)
            curve.append(rec)
    return net.eval().requires_grad_(False), curve


def aux_predict(net: nn.Module, loss: str, x: Tensor) -> Tensor:
    """Feature values in [0, 1]-ish units: sigmoid of logits (BCE, MAE) or the raw outputs (NGMG)."""
    o = net(x)
    return o if loss == "ngmg" else torch.sigmoid(o)


def aux_decide(net: nn.Module, loss: str, x: Tensor) -> Tensor:
    """0/1 feature decisions of the auxiliary classifier (its predicted value above 1/2)."""
    return (aux_predict(net, loss, x) > 0.5).float()


# ---------------------------------------------------------------------------------------------------------
# conditional diffusion


COND_MODES = ("class", "feature", "feature-bits", "class-gmm", "class-code")


def aux_term(net: nn.Module, loss: str, x0_hat: Tensor, feats: Tensor) -> Tensor:
    """The auxiliary classifier's loss on denoised predictions: NGMG (sigma 0.5) for an NGMG-trained classifier,
    BCE on its logits for a BCE-trained one, |sigmoid - label| for an MAE-trained one."""
    if loss == "ngmg":
        return ngmg_loss(aux_predict(net, loss, x0_hat), feats.unsqueeze(1), sigma=0.5)
    o = net(x0_hat)
    if loss == "bce":
        return F.binary_cross_entropy_with_logits(o, feats)
    return (torch.sigmoid(o) - feats).abs().mean()


class CondTrainer:
    """Conditional eps-network training on digits. ``mode``:

    * "class": the digit label through a class embedding;
    * "feature": latents from ``gmm`` (a :class:`FeatureGMM`) drawn per step for the requested features;
    * "feature-bits": the feature vector itself as +-1 (no latent noise);
    * "class-gmm": latents from ``gmm`` (a :class:`ClassGMM`) drawn per step for the request's class;
    * "class-code": the class's code (``gmm.targets``) itself (no latent noise).

    ``feats`` [N, F] are the training images' features (default: :func:`digit_features` of ``y``); ``classes`` [N]
    their class indices (class modes). Every mode but "class" feeds an F-vector through the same layer, so those
    networks start from the same weights for one ``seed``. Batches, times and noise come from one generator and the
    latents from another, so every mode sees the same training pairs. Optional auxiliary term:
    aux_weight * :func:`aux_term` (classifier(x0_hat), features) at t <= aux_tmax."""

    def __init__(self, mode: str, x: Tensor, y: Tensor, gmm: Optional[FeatureGMM], *, seed: int = 0, size: str = "small",
                 aux=None, aux_weight: float = 0.0, aux_tmax: int = 300, lr: float = 1e-3, batch: int = 128,
                 feats: Optional[Tensor] = None, classes: Optional[Tensor] = None):
        from ..models import MLPEps, default_model
        from ..schedules import DiscreteSchedule

        if mode not in COND_MODES:
            raise ValueError(f"CondTrainer: argument 'mode' must be one of {COND_MODES}, got {mode!r}")
        if mode.startswith("class-") and classes is None:
            raise ValueError(f"CondTrainer: mode {mode!r} needs the training images' classes")
        self.mode, self.x, self.y, self.gmm = mode, x, y, gmm
        self.feats = digit_features(y) if feats is None else feats.float()
        self.classes = classes
        self.sched = DiscreteSchedule.linear(1000)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            if mode == "class":
                self.net = default_model((1, 8, 8), 1000.0, arch="mlp", size=size, num_classes=10)
            else:
                cfg = dict(default_model((1, 8, 8), 1000.0, arch="mlp", size=size).config)
                cfg.pop("arch")
                cfg["cond_dim"] = self.feats.shape[1]
                self.net = MLPEps(**cfg)
        import copy

        self.ema = copy.deepcopy(self.net).eval().requires_grad_(False)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.g = torch.Generator().manual_seed(seed)
        self.g_cond = torch.Generator().manual_seed(seed + 7919)
        self.aux, self.aux_weight, self.aux_tmax, self.batch = aux, aux_weight, aux_tmax, batch
        self.step = 0
        self.losses: List[float] = []

    def cond_for(self, y: Tensor, feats: Tensor, g=None, classes: Optional[Tensor] = None):
        if self.mode == "class":
            return y
        if self.mode == "feature-bits":
            return 2 * feats - 1
        if self.mode == "feature":
            return self.gmm.sample(feats, generator=g)
        if classes is None or bool((classes < 0).any()):
            raise ValueError("CondTrainer: class conditioning needs a known class for every request")
        if self.mode == "class-code":
            return self.gmm.targets.T[classes]
        return self.gmm.sample(classes, generator=g)

    def train(self, steps: int):
        for _ in range(steps):
            g = self.g
            i = torch.randint(len(self.x), (self.batch,), generator=g)
            x0, y, f = self.x[i], self.y[i], self.feats[i]
            t = torch.randint(1, 1001, (self.batch,), generator=g)
            eps = torch.randn(x0.shape, generator=g)
            a, s = (v.float().view(-1, 1, 1, 1) for v in self.sched.alpha_sigma(t.double()))
            xt = a * x0 + s * eps
            c = self.cond_for(y, f, self.g_cond, None if self.classes is None else self.classes[i])
            e = self.net(xt, t.float(), cond=c)
            L = (e - eps).pow(2).mean()
            if self.aux is not None and self.aux_weight > 0:
                m = t <= self.aux_tmax
                if bool(m.any()):
                    x0h = ((xt[m] - s[m] * e[m]) / a[m]).clamp(-1.5, 1.5)
                    L = L + self.aux_weight * aux_term(self.aux[0], self.aux[1], x0h, f[m])
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
    def sample(self, y: Tensor, feats: Tensor, K: int = 100, seed: int = 1, classes: Optional[Tensor] = None,
               noise=None) -> Tensor:
        """DDPM samples for the requests (y, feats[, classes]): latents from a generator seeded seed + 7919, the start
        noise from one seeded ``seed``, the step noise from that one too or from ``noise(i, x)`` (e.g.
        :func:`gmmkernels.diffusion.samplers.counter_noise`): every mode given one seed shares x_T and the step noise,
        and the GMM modes share their latents' uniforms and normals."""
        from ..samplers import sample

        g = torch.Generator().manual_seed(seed)
        c = self.cond_for(y, feats, torch.Generator().manual_seed(seed + 7919), classes)
        return sample(self.ema, self.sched, (len(y), 1, 8, 8), "ddpm", K, generator=g, cond=c, noise=noise)
