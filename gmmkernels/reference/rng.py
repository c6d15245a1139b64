"""Reference of the counter-based random numbers of the native kernels (csrc/include/gmmkernels/rng.h; described in
docs/kernels.md (Random numbers)).

Every draw of a fused sampling op is a pure function of (seed, element index, step, tag): Philox4x32-10 of the
counter (index low, index high, step, tag << 16) under the 64-bit key ``seed``. Uniforms are (word + 1/2) / 2^32,
normals the first Box-Muller normal of the first two uniforms. Computed here in float64 from int64 tensors that
hold uint32 words; the kernels agree to a few ulp (they use their own log / cos).
"""
from __future__ import annotations

import torch
from torch import Tensor


# ----------------------------------------------------------------------------------------------------------
# Philox4x32-10 (Salmon et al., SC'11) on int64 tensors holding uint32 values


_M32 = 0xFFFFFFFF


def _mulhilo(a: int, b: Tensor):
    """(hi, lo) 32-bit halves of the 64-bit product of the constant a and the uint32 tensor b, without overflow."""
    ah, al = a >> 16, a & 0xFFFF
    bh, bl = b >> 16, b & 0xFFFF
    t = ah * bl + al * bh
    lo_part = al * bl + ((t & 0xFFFF) << 16)
    lo = lo_part & _M32
    hi = (ah * bh + (t >> 16) + (lo_part >> 32)) & _M32
    return hi, lo


def philox_ref(c0: Tensor, c1: Tensor, c2: int, c3: int, seed: int):
    """Philox4x32-10 of counters (c0, c1, c2, c3) under the 64-bit key ``seed``: four uint32 words as int64 tensors."""
    k0, k1 = seed & _M32, (seed >> 32) & _M32
    x, y = c0 & _M32, c1 & _M32
    z = torch.full_like(x, c2 & _M32)
    w = torch.full_like(x, c3 & _M32)
    for _ in range(10):
        hi0, lo0 = _mulhilo(0xD2511F53, x)
        hi1, lo1 = _mulhilo(0xCD9E8D57, z)
        x, y, z, w = hi1 ^ y ^ k0, lo1, hi0 ^ w ^ k1, lo0
        k0 = (k0 + 0x9E3779B9) & _M32
        k1 = (k1 + 0xBB67AE85) & _M32
    return x, y, z, w


def _u01(v: Tensor) -> Tensor:
    return (v.double() + 0.5) * (1.0 / 4294967296.0)


def philox_uniform_ref(index: Tensor, seed: int, step: int, tag: int) -> Tensor:
    """First uniform in (0, 1) of rng.h's Stream(seed, index, step, tag), float64."""
    index = index.long()
    x, _, _, _ = philox_ref(index & _M32, index >> 32, step, tag << 16, seed)
    return _u01(x)


def philox_normal_ref(index: Tensor, seed: int, step: int, tag: int) -> Tensor:
    """First normal (Box-Muller on the first two uniforms) of rng.h's Stream(seed, index, step, tag), float64."""
    index = index.long()
    x, y, _, _ = philox_ref(index & _M32, index >> 32, step, tag << 16, seed)
    u1, u2 = _u01(x), _u01(y)
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(6.283185307179586 * u2)


def seed64(seed: int) -> int:
    """The 64 bits of a Python int seed as the unsigned key of the streams."""
    return int(seed) & 0xFFFFFFFFFFFFFFFF
