"""Epsilon-networks: a time-conditioned residual MLP for vectors and a small UNet for 8x8 / 16x16 images.

Both share the calling convention of the samplers and the trainer::

    eps = model(x, t)                      # x [N, *data_shape], t [N] in schedule units (0..t_max)
    eps = model(x, t, cond=c)              # c: class labels [N] (long) or condition vectors [N, cond_dim]
    out = model(x, t, heads=True)          # dict {"eps": ..., "eps2": ..., "eps3": ...} for the heads built

Extra heads (``heads=("eps", "eps2", "eps3")``) are separate zero-initialised output layers on the
shared trunk; GMS and SN-DDPM train them on eps^2 and eps^3 (elementwise powers).
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

HEADS = ("eps", "eps2", "eps3")


def timestep_embedding(t: Tensor, dim: int, t_max: float) -> Tensor:
    """Sinusoidal embedding (Vaswani et al. 2017 / DDPM) of 1000 t / t_max: [N] -> [N, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    arg = (t.float() * (1000.0 / t_max)).unsqueeze(1) * freqs.unsqueeze(0)
    emb = torch.cat([arg.cos(), arg.sin()], 1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def _check_heads(heads) -> Tuple[str, ...]:
    heads = tuple(heads)
    if not heads or heads[0] != "eps" or len(set(heads)) != len(heads) or any(h not in HEADS for h in heads):
        raise ValueError(f"heads must start with 'eps' and be distinct names from {HEADS}, got {heads}")
    return heads


class _CondEmbed(nn.Module):
    """Time embedding plus an optional class / vector condition embedding."""

    def __init__(self, emb_dim: int, t_max: float, num_classes: int, cond_dim: int):
        super().__init__()
        if num_classes and cond_dim:
            raise ValueError("use either num_classes (class labels) or cond_dim (vectors), not both")
        if num_classes < 0 or cond_dim < 0:
            raise ValueError("num_classes and cond_dim must be >= 0")
        self.t_max, self.emb_dim = float(t_max), emb_dim
        self.num_classes, self.cond_dim = num_classes, cond_dim
        self.time = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.cls = nn.Embedding(num_classes, emb_dim) if num_classes else None
        self.vec = nn.Linear(cond_dim, emb_dim) if cond_dim else None

    def forward(self, t: Tensor, cond: Optional[Tensor], N: int) -> Tensor:
        if t.dim() == 0:
            t = t.expand(N)
        if t.shape != (N,):
            raise ValueError(f"t must be a scalar or a [N={N}] tensor, got shape {tuple(t.shape)}")
        e = self.time(timestep_embedding(t, self.emb_dim, self.t_max))
        if cond is None:
            return e
        if self.cls is not None:
            if cond.dtype not in (torch.int64, torch.int32) or cond.shape != (N,):
                raise ValueError(f"cond must be class labels: an integer [N={N}] tensor")
            return e + self.cls(cond.long())
        if self.vec is not None:
            if cond.shape != (N, self.cond_dim):
                raise ValueError(f"cond must be a [N={N}, cond_dim={self.cond_dim}] tensor, got {tuple(cond.shape)}")
            return e + self.vec(cond.to(e.dtype))
        raise ValueError("this model is unconditional: pass cond=None (build it with num_classes or cond_dim)")


class MLPEps(nn.Module):
    """Residual MLP epsilon-network for vectors [N, dim]: in-proj, ``depth`` blocks
    (LayerNorm -> Linear -> SiLU -> Linear, plus a projection of the embedding), out-proj per head."""

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, t_max: float = 1000.0, emb_dim: int = 64,
                 num_classes: int = 0, cond_dim: int = 0, heads: Sequence[str] = ("eps",), dropout: float = 0.0,
                 data_shape: Optional[Sequence[int]] = None):
        super().__init__()
        if dim < 1 or hidden < 1 or depth < 1:
            raise ValueError(f"MLPEps: dim, hidden and depth must be positive, got {dim}, {hidden}, {depth}")
        data_shape = (dim,) if data_shape is None else tuple(int(v) for v in data_shape)
        if math.prod(data_shape) != dim:
            raise ValueError(f"MLPEps: data_shape {data_shape} does not hold dim={dim} values")
        self.config = dict(arch="mlp", dim=dim, hidden=hidden, depth=depth, t_max=t_max, emb_dim=emb_dim,
                           num_classes=num_classes, cond_dim=cond_dim, heads=list(_check_heads(heads)), dropout=dropout,
                           data_shape=list(data_shape))
        self.heads = tuple(self.config["heads"])
        self.data_shape = data_shape
        self.dim = dim
        self.embed = _CondEmbed(emb_dim, t_max, num_classes, cond_dim)
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList()
        for _ in range(depth):
            self.blocks.append(nn.ModuleDict(dict(
                norm=nn.LayerNorm(hidden), fc1=nn.Linear(hidden, hidden), emb=nn.Linear(emb_dim, hidden),
                fc2=nn.Linear(hidden, hidden), drop=nn.Dropout(dropout))))
        self.out_norm = nn.LayerNorm(hidden)
        self.out = nn.ModuleDict({h: nn.Linear(hidden, dim) for h in self.heads})
        for h in self.heads[1:]:
            nn.init.zeros_(self.out[h].weight)
            nn.init.zeros_(self.out[h].bias)

    def forward(self, x: Tensor, t: Tensor, cond: Optional[Tensor] = None, heads: bool = False):
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(f"MLPEps: x must be [N, {', '.join(map(str, self.data_shape))}], got {tuple(x.shape)}")
        N = x.shape[0]
        e = self.embed(t, cond, N)
        h = self.inp(x.reshape(N, self.dim))
        for b in self.blocks:
            r = F.silu(b["fc1"](b["norm"](h)) + b["emb"](e))
            h = h + b["fc2"](b["drop"](r))
        h = F.silu(self.out_norm(h))
        if not heads:
            return self.out["eps"](h).reshape(x.shape)
        return {k: self.out[k](h).reshape(x.shape) for k in self.heads}


def norm_groups(ch: int) -> int:
    """Number of GroupNorm groups for ``ch`` channels: the largest of 8, 4, 2, 1 that divides it."""
    for g in (8, 4, 2, 1):
        if ch % g == 0:
            return g
    return 1


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float):
        super().__init__()
        self.n1 = nn.GroupNorm(norm_groups(cin), cin)
        self.c1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.n2 = nn.GroupNorm(norm_groups(cout), cout)
        self.drop = nn.Dropout(dropout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        h = self.c1(F.silu(self.n1(x))) + self.emb(e)[:, :, None, None]
        h = self.c2(self.drop(F.silu(self.n2(h))))
        return h + self.skip(x)


class SelfAttention(nn.Module):
    def __init__(self, ch: int, n_heads: int = 4):
        super().__init__()
        self.norm = nn.GroupNorm(norm_groups(ch), ch)
        self.attn = nn.MultiheadAttention(ch, n_heads if ch % n_heads == 0 else 1, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        N, C, H, W = x.shape
        h = self.norm(x).reshape(N, C, H * W).transpose(1, 2)
        h, _ = self.attn(h, h, h, need_weights=False)
        return x + h.transpose(1, 2).reshape(N, C, H, W)


class UNetEps(nn.Module):
    """Small UNet epsilon-network for images [N, C, H, W] with H = W in {8, 16} (any size divisible by
    2^(len(ch_mult)-1) works). ``ch_mult`` sets the channels per resolution (ch * m), with one downsampling
    between resolutions, ``n_res`` residual blocks per level and self-attention at the lowest resolution."""

    def __init__(self, image_shape: Sequence[int] = (1, 8, 8), ch: int = 32, ch_mult: Sequence[int] = (1, 2),
                 n_res: int = 1, t_max: float = 1000.0, num_classes: int = 0, cond_dim: int = 0,
                 heads: Sequence[str] = ("eps",), dropout: float = 0.0, attention: bool = True):
        super().__init__()
        image_shape = tuple(int(v) for v in image_shape)
        if len(image_shape) != 3:
            raise ValueError(f"UNetEps: image_shape must be (C, H, W), got {image_shape}")
        C, H, W = image_shape
        down = 2 ** (len(ch_mult) - 1)
        if H % down or W % down:
            raise ValueError(f"UNetEps: H and W must be divisible by {down} for ch_mult={tuple(ch_mult)}, got {H}x{W}")
        if ch < 1 or n_res < 1 or not ch_mult:
            raise ValueError("UNetEps: ch and n_res must be positive and ch_mult non-empty")
        self.config = dict(arch="unet", image_shape=list(image_shape), ch=ch, ch_mult=list(ch_mult), n_res=n_res,
                           t_max=t_max, num_classes=num_classes, cond_dim=cond_dim, heads=list(_check_heads(heads)),
                           dropout=dropout, attention=attention)
        self.heads = tuple(self.config["heads"])
        self.data_shape = image_shape
        emb = 4 * ch
        self.embed = _CondEmbed(emb, t_max, num_classes, cond_dim)
        self.inp = nn.Conv2d(C, ch, 3, padding=1)
        chans = [ch * m for m in ch_mult]
        self.down = nn.ModuleList()
        skips = [ch]
        cur = ch
        for i, c in enumerate(chans):
            for _ in range(n_res):
                self.down.append(ResBlock(cur, c, emb, dropout))
                cur = c
                skips.append(cur)
            if i < len(chans) - 1:
                self.down.append(nn.Conv2d(cur, cur, 3, stride=2, padding=1))
                skips.append(cur)
        self.mid1 = ResBlock(cur, cur, emb, dropout)
        self.mid_attn = SelfAttention(cur) if attention else nn.Identity()
        self.mid2 = ResBlock(cur, cur, emb, dropout)
        self.up = nn.ModuleList()
        for i, c in reversed(list(enumerate(chans))):
            for _ in range(n_res + 1):
                self.up.append(ResBlock(cur + skips.pop(), c, emb, dropout))
                cur = c
            if i > 0:
                self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
        self.out_norm = nn.GroupNorm(norm_groups(cur), cur)
        self.out = nn.ModuleDict({h: nn.Conv2d(cur, C, 3, padding=1) for h in self.heads})
        for h in self.heads[1:]:
            nn.init.zeros_(self.out[h].weight)
            nn.init.zeros_(self.out[h].bias)

    def forward(self, x: Tensor, t: Tensor, cond: Optional[Tensor] = None, heads: bool = False):
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(f"UNetEps: x must be [N, {', '.join(map(str, self.data_shape))}], got {tuple(x.shape)}")
        e = self.embed(t, cond, x.shape[0])
        h = self.inp(x)
        hs = [h]
        for m in self.down:
            h = m(h, e) if isinstance(m, ResBlock) else m(h)
            hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, e)), e)
        for m in self.up:
            if isinstance(m, ResBlock):
                h = m(torch.cat([h, hs.pop()], 1), e)
            else:
                h = m(h)
        h = F.silu(self.out_norm(h))
        if not heads:
            return self.out["eps"](h)
        return {k: self.out[k](h) for k in self.heads}


def build_model(config: Dict) -> nn.Module:
    """Rebuild a model from its ``config`` dict (``model.config``, stored in checkpoints)."""
    cfg = dict(config)
    arch = cfg.pop("arch", None)
    if arch == "mlp":
        return MLPEps(**cfg)
    if arch == "unet":
        return UNetEps(**cfg)
    raise ValueError(f"unknown model arch {arch!r}; choose 'mlp' or 'unet'")


def default_model(data_shape: Sequence[int], t_max: float, *, arch: Optional[str] = None, size: str = "small",
                  num_classes: int = 0, heads: Sequence[str] = ("eps",)) -> nn.Module:
    """A sensible model for ``data_shape``: MLP for vectors, UNet for images (``arch='mlp'`` on images
    flattens them). ``size``: 'tiny' | 'small' | 'base'."""
    data_shape = tuple(data_shape)
    arch = arch or ("unet" if len(data_shape) == 3 else "mlp")
    if size not in ("tiny", "small", "base"):
        raise ValueError(f"model size must be 'tiny', 'small' or 'base', got {size!r}")
    if arch == "mlp":
        dim = math.prod(data_shape)
        hidden = {"tiny": 64, "small": 128, "base": 256}[size] * (2 if dim > 16 else 1)
        depth = {"tiny": 2, "small": 3, "base": 4}[size]
        return MLPEps(dim, hidden, depth, t_max=t_max, num_classes=num_classes, heads=heads, data_shape=data_shape)
    if arch == "unet":
        if len(data_shape) != 3:
            raise ValueError(f"arch 'unet' takes images (C, H, W), got data shape {data_shape}")
        ch = {"tiny": 16, "small": 32, "base": 64}[size]
        mult = (1, 2) if data_shape[1] <= 8 else (1, 2, 2)
        return UNetEps(data_shape, ch=ch, ch_mult=mult, n_res=1, t_max=t_max, num_classes=num_classes, heads=heads)
    raise ValueError(f"unknown model arch {arch!r}; choose 'mlp' or 'unet'")
