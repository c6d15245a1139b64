"""Metrics against closed forms and the digits Frechet distance."""
import math

import numpy as np
import pytest
import torch

from gmmkernels import GaussianMixture
from gmmkernels.diffusion import load_digits
from gmmkernels.diffusion import metrics as M
from gmmkernels.diffusion.data import gmm2d

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: intra-op threads only add overhead


def test_sliced_wasserstein_closed_forms():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 2, generator=g, dtype=F64)  # a shifted copy: W1 per direction is exact
    assert M.sliced_wasserstein(x, x) == 0.0
    c = torch.tensor([0.3, -0.4], dtype=F64)
    # W1 of a shift along theta is |<theta, c>|; E|<theta, c>| over the circle = |c| * 2/pi
    assert M.sliced_wasserstein(x, x + c, n_proj=4000) == pytest.approx(0.5 * 2 / math.pi, rel=0.02)
    v = torch.randn(3000, 1, generator=g, dtype=F64)
    assert M.sliced_wasserstein(v, v + 0.7) == pytest.approx(0.7, abs=1e-12)  # exact in 1-D
    # unequal sizes through quantile matching
    assert M.sliced_wasserstein(v, torch.cat([v, v])) == pytest.approx(0.0, abs=1e-12)
    assert M.sliced_wasserstein(x, x + c, p=2, n_proj=4000) == pytest.approx(0.5 / math.sqrt(2), rel=0.02)


def test_mmd():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1500, 2, generator=g), torch.randn(1500, 2, generator=g)
    assert abs(M.mmd(a, b)) < 0.01
    assert M.mmd(a, b + 0.5) > 0.05
    with pytest.raises(ValueError):
        M.mmd(a[:1], b)


def test_mode_coverage():
    mix = gmm2d()
    x = mix.sample(40000, generator=torch.Generator().manual_seed(0))
    cov = M.mode_coverage(x, mix.means, 0.2)
    assert cov["on_mode"] == pytest.approx(1 - math.exp(-2), abs=0.01)  # P(|z| <= 2) for a 2-D Gaussian
    assert cov["modes_covered"] == 8 and cov["occupancy_tv"] < 0.02
    half = x[torch.cdist(x, mix.means).argmin(1) < 4]
    cov = M.mode_coverage(half, mix.means, 0.2)
    assert cov["modes_covered"] == 4 and cov["occupancy_tv"] == pytest.approx(0.5, abs=0.02)


def test_mixture_nll_is_entropy_for_a_gaussian():
    sd = torch.tensor([[0.5, 2.0]], dtype=F64)
    mix = GaussianMixture(torch.zeros(1, dtype=F64), torch.zeros(1, 2, dtype=F64), sd)
    x = mix.sample(50000, generator=torch.Generator().manual_seed(0))
    entropy = float(0.5 * 2 * math.log(2 * math.pi * math.e) + torch.log(sd).sum())
    assert M.mixture_nll(x, mix) == pytest.approx(entropy, abs=0.02)
    assert M.mixture_nll(x + 3, mix) > entropy + 1


def test_frechet_distance_closed_form():
    from scipy.linalg import sqrtm

    g = torch.Generator().manual_seed(0)
    A, B = torch.randn(5, 5, generator=g, dtype=F64), torch.randn(5, 5, generator=g, dtype=F64)
    c1, c2 = A @ A.T + 0.1 * torch.eye(5, dtype=F64), B @ B.T + 0.1 * torch.eye(5, dtype=F64)
    m1, m2 = torch.randn(5, generator=g, dtype=F64), torch.randn(5, generator=g, dtype=F64)
    ref = float((m1 - m2).pow(2).sum() + c1.trace() + c2.trace() - 2 * np.trace(sqrtm(c1.numpy() @ c2.numpy()).real))
    assert M.frechet_distance(m1, c1, m2, c2) == pytest.approx(ref, rel=1e-8)
    assert M.frechet_distance(m1, c1, m1, c1) == pytest.approx(0.0, abs=1e-8)


def test_digits_fd(tmp_path, monkeypatch):
    from gmmkernels.diffusion import digits_classifier as dc

    monkeypatch.setenv("GMMKERNELS_CACHE", str(tmp_path))
    monkeypatch.setattr(dc, "_CACHED", None)
    net = dc.load_digits_classifier()
    assert (tmp_path / f"digits_classifier_{dc.VERSION}.pt").exists()
    assert net.accuracy > 0.9
    monkeypatch.setattr(dc, "_CACHED", None)
    net2 = dc.load_digits_classifier()  # from the cache file
    for a, b in zip(net.parameters(), net2.parameters()):
        assert torch.equal(a, b)
    x, _ = load_digits()
    real = M.digits_fd(x[:900], x[900:])
    noisy = M.digits_fd((x[:900] + 0.3 * torch.randn(x[:900].shape)).clamp(-1, 1), x[900:])
    noise = M.digits_fd(torch.rand(900, 1, 8, 8) * 2 - 1, x[900:])
    assert real < noisy < noise and noise > 10 * real
    hist = M.digits_class_histogram(x)
    assert len(hist) == 10 and min(hist) > 0.07


def test_psnr_ssim():
    x = torch.rand(3, 1, 8, 8, dtype=F64) * 2 - 1
    torch.testing.assert_close(M.ssim(x, x), torch.ones(3, dtype=F64))
    torch.testing.assert_close(M.psnr(x, x + 0.1), torch.full((3,), 10 * math.log10(4 / 0.01), dtype=F64))
    noisy = x + 0.5 * torch.randn(x.shape, dtype=F64)
    assert bool((M.ssim(noisy, x) < 1).all()) and bool((M.psnr(noisy, x) < M.psnr(x + 0.1, x)).all())


def test_paired_stats_against_the_t_interval():
    a = [1.0, 2.0, 3.5, 0.5]
    b = [2.0, 2.6, 4.2, 1.4]
    p = M.paired_stats(a, b)
    d = np.array(a) - np.array(b)
    se = d.std(ddof=1) / math.sqrt(4)
    assert p["diff"] == pytest.approx(d.mean()) and p["se"] == pytest.approx(se)
    assert p["ci95"] == pytest.approx([d.mean() - 3.1824 * se, d.mean() + 3.1824 * se], rel=1e-4)
    assert p["a_better"] == 4 and p["excludes_zero"] and p["a_wins"] and p["n"] == 4
    q = M.paired_stats(a, b, higher_better=True)  # the same interval, now on the losing side
    assert q["excludes_zero"] and not q["a_wins"] and q["a_better"] == 0
    r = M.paired_stats([1.0, 3.0], [2.0, 2.0])  # one win, one loss: no verdict
    assert not r["excludes_zero"] and r["a_better"] == 1
    one = M.paired_stats([1.0], [2.0])
    assert math.isnan(one["se"]) and not one["excludes_zero"]
    assert "better on 4/4" in M.format_paired_stats(p)
    assert M.t_quantile_975(1) == pytest.approx(12.706, abs=1e-3) and M.t_quantile_975(200) == pytest.approx(1.972, abs=1e-3)
    assert M.t_quantile_975(31) == pytest.approx(2.040, abs=1e-3)
    with pytest.raises(ValueError, match="paired_stats: arguments 'a' and 'b'"):
        M.paired_stats([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="t_quantile_975: argument 'df'"):
        M.t_quantile_975(0)


def test_digits_fd_floor_shrinks_with_n():
    small = M.digits_fd_floor(64, reps=3)
    big = M.digits_fd_floor(1000, reps=3)
    assert small["n"] == 64 and small["reps"] == 3 and small["std"] > 0
    assert big["mean"] < small["mean"]
    with pytest.raises(ValueError, match="digits_fd_floor: argument 'n'"):
        M.digits_fd_floor(1)


# -- paired comparisons and noise floors


@pytest.mark.parametrize("df", [1, 2, 3, 4, 7, 10, 30, 200])
def test_t_quantile_matches_scipy(df):
    stats = pytest.importorskip("scipy.stats")
    for p in (0.5, 0.6, 0.9, 0.975, 0.9995, 0.025):
        assert M.t_quantile(p, df) == pytest.approx(float(stats.t.ppf(p, df)), rel=1e-9, abs=1e-12)


def test_t_quantile_bad_arguments():
    with pytest.raises(ValueError, match="t_quantile: argument 'df'"):
        M.t_quantile(0.9, 0)
    with pytest.raises(ValueError, match="t_quantile: argument 'p'"):
        M.t_quantile(1.0, 3)


def test_paired_difference_pairs_and_units():
    a = [1.0, 2.0, 3.5, 4.0]
    b = [1.5, 2.5, 3.0, 5.0]
    d = M.paired_difference(a, b)
    diffs = [-0.5, -0.5, 0.5, -1.0]
    m = sum(diffs) / 4
    se = math.sqrt(sum((v - m) ** 2 for v in diffs) / 3 / 4)
    assert d["n"] == d["n_pairs"] == 4 and d["mean"] == pytest.approx(m) and d["se"] == pytest.approx(se)
    h = M.t_quantile(0.975, 3) * se
    assert d["ci"] == pytest.approx([m - h, m + h]) and not d["excludes_zero"]
    assert (d["n_below"], d["n_above"]) == (3, 1)
    # units: the differences are averaged per unit and the interval is over the unit means
    du = M.paired_difference(a, b, units=["s0", "s0", "s1", "s1"])
    assert du["n"] == 2 and du["n_pairs"] == 4 and du["per_unit"] == pytest.approx([-0.5, -0.25])
    assert du["se"] == pytest.approx(0.125) and du["ci"][1] - du["ci"][0] == pytest.approx(2 * 12.7062047 * 0.125)
    one = M.paired_difference([1.0], [0.0])
    assert one["n"] == 1 and math.isnan(one["se"]) and M.paired_verdict(one) == "inconclusive (one unit)"
    with pytest.raises(ValueError, match="paired_difference: arguments 'a' and 'b'"):
        M.paired_difference([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="paired_difference: argument 'units'"):
        M.paired_difference([1.0, 2.0], [1.0, 2.0], units=[0])


def test_paired_verdict_needs_the_interval_and_the_resolution():
    shift = M.paired_difference([0.9, 1.9, 2.95, 3.9], [1.0, 2.0, 3.0, 4.0])  # all lower, tight
    assert shift["excludes_zero"] and M.paired_verdict(shift) == "better"
    assert M.paired_verdict(shift, lower_is_better=False) == "worse"
    assert M.paired_verdict(shift, tol=0.5) == "no difference"  # below the metric's resolution
    noisy = M.paired_difference([0.0, 2.0, -1.0, 1.5], [1.0, 1.0, 0.0, 1.0])
    assert not noisy["excludes_zero"] and M.paired_verdict(noisy) == "no difference"
    assert M.format_paired(shift, ".2f").startswith("-0.09 +- 0.01 [95% CI -0.") and "4/4 below 0" in \
        M.format_paired(shift, ".2f")


def test_real_split_floor_and_pixel_fd():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 3, generator=g, dtype=F64)
    f = M.real_split_floor(x, lambda a, b: float(a.mean() - b.mean()), n_splits=5, seed=1)
    assert f["n"] == 200 and f["n_rest"] == 200 and len(f["values"]) == 5
    assert len(set(f["values"])) == 5 and abs(f["mean"]) < 0.2  # different splits, centred on 0
    assert M.real_split_floor(x, lambda a, b: len(a) + 0.0, n_splits=2, n=100)["values"] == [100.0, 100.0]
    with pytest.raises(ValueError, match="real_split_floor: argument 'n'"):
        M.real_split_floor(x, lambda a, b: 0.0, n=399)
    # pixel FD of a shifted copy: |shift|^2
    assert M.pixel_fd(x, x + 0.5) == pytest.approx(3 * 0.25, abs=1e-9)
