"""Dependency-free PNG output: image grids, 2-D scatter densities and 1-D histograms, side by side.

Everything renders to uint8 arrays and is written by a minimal PNG encoder (zlib + CRC chunks), so the
CLI and the demo need no plotting library.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor


def save_png(path, img: np.ndarray) -> Path:
    """Write a uint8 array [H, W] (grey) or [H, W, 3] (RGB) as PNG."""
    img = np.ascontiguousarray(img, dtype=np.uint8)
    if img.ndim == 2:
        color = 0
    elif img.ndim == 3 and img.shape[2] == 3:
        color = 2
    else:
        raise ValueError(f"save_png: expected [H, W] or [H, W, 3], got {img.shape}")
    H, W = img.shape[:2]
    raw = b"".join(b"\x00" + img[i].tobytes() for i in range(H))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, 8, color, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return path


def image_grid(x: Tensor, nrow: int = 10, scale: int = 4, pad: int = 1) -> np.ndarray:
    """Images [N, C, H, W] in [-1, 1] (C = 1 or 3) -> uint8 grid, each pixel repeated ``scale`` times."""
    x = torch.as_tensor(x).detach().float().cpu().clamp(-1, 1)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"image_grid: expected [N, 1|3, H, W], got {tuple(x.shape)}")
    N, C, H, W = x.shape
    ncol = min(nrow, N)
    rows = (N + ncol - 1) // ncol
    img = ((x + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    img = img.repeat(scale, 1).repeat(scale, 2)
    h, w = H * scale, W * scale
    out = np.full((rows * (h + pad) + pad, ncol * (w + pad) + pad, C), 128, np.uint8)
    for i in range(N):
        r, c = divmod(i, ncol)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = img[i]
    return out[..., 0] if C == 1 else out


def scatter_image(x: Tensor, bounds: Optional[Sequence[float]] = None, size: int = 256) -> np.ndarray:
    """2-D points [N, 2] -> grey density image (log-scaled 2-D histogram, dark = dense)."""
    p = torch.as_tensor(x).detach().double().cpu().reshape(len(x), -1)[:, :2].numpy()
    if bounds is None:
        lo, hi = np.percentile(p, 0.5, 0).min(), np.percentile(p, 99.5, 0).max()
        m = 0.1 * (hi - lo)
        bounds = (lo - m, hi + m)
    lo, hi = bounds
    h, _, _ = np.histogram2d(p[:, 1], p[:, 0], bins=size, range=[[lo, hi], [lo, hi]])
    h = np.log1p(h[::-1])
    h = h / max(h.max(), 1e-12)
    return (255 * (1 - h)).astype(np.uint8)


def hist_image(x: Tensor, bounds: Optional[Sequence[float]] = None, width: int = 256, height: int = 128) -> np.ndarray:
    """1-D samples -> grey histogram image (bars dark on white)."""
    v = torch.as_tensor(x).detach().double().cpu().flatten().numpy()
    if bounds is None:
        lo, hi = np.percentile(v, 0.5), np.percentile(v, 99.5)
        m = 0.1 * (hi - lo)
        bounds = (lo - m, hi + m)
    h, _ = np.histogram(v, bins=width, range=tuple(bounds))
    hgt = np.round(h / max(h.max(), 1) * (height - 1)).astype(int)
    img = np.full((height, width), 255, np.uint8)
    for j, k in enumerate(hgt):
        if k:
            img[height - k:, j] = 40
    return img


def side_by_side(*imgs: np.ndarray, gap: int = 8) -> np.ndarray:
    """Concatenate grey images horizontally (padded to the same height) with a grey gap."""
    H = max(i.shape[0] for i in imgs)
    parts = []
    for k, im in enumerate(imgs):
        if im.ndim != 2:
            raise ValueError("side_by_side: grey images only")
        pad = np.full((H - im.shape[0], im.shape[1]), 255, np.uint8)
        parts.append(np.vstack([im, pad]))
        if k < len(imgs) - 1:
            parts.append(np.full((H, gap), 160, np.uint8))
    return np.hstack(parts)


def data_vs_samples(data: Tensor, samples: Tensor, path, n_images: int = 100) -> Path:
    """Write ``path`` showing the data (left) next to the samples (right): image grids for images,
    density plots for 2-D, histograms for 1-D, the first two coordinates otherwise."""
    d = torch.as_tensor(data)
    s = torch.as_tensor(samples)
    if d.dim() == 4:
        img = side_by_side(image_grid(d[:n_images]), image_grid(s[:n_images]))
    else:
        d2, s2 = d.reshape(len(d), -1).double(), s.reshape(len(s), -1).double()
        both = torch.cat([d2, s2])
        lo = float(torch.quantile(both[:20000], 0.002))
        hi = float(torch.quantile(both[:20000], 0.998))
        m = 0.1 * (hi - lo)
        b = (lo - m, hi + m)
        if d2.shape[1] == 1:
            img = side_by_side(hist_image(d2, b), hist_image(s2, b))
        else:
            img = side_by_side(scatter_image(d2, b), scatter_image(s2, b))
    return save_png(path, img)
