"""Epsilon-networks: shapes, heads, conditioning, config round trip, clear errors."""
import pytest
import torch

from gmmkernels.diffusion.models import HEADS, MLPEps, UNetEps, build_model, default_model, timestep_embedding


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: intra-op threads only add overhead


def test_timestep_embedding():
    e = timestep_embedding(torch.tensor([0.0, 500.0]), 32, 1000.0)
    assert e.shape == (2, 32)
    assert torch.allclose(e[0, :16], torch.ones(16)) and torch.allclose(e[0, 16:], torch.zeros(16))
    # continuous time in [0, 1] maps to the same embedding as the discrete index scaled by T
    torch.testing.assert_close(timestep_embedding(torch.tensor([0.5]), 31, 1.0), timestep_embedding(torch.tensor([500.0]), 31, 1000.0))


def test_mlp_shapes_heads_and_cond():
    m = MLPEps(3, hidden=32, depth=2, heads=HEADS, num_classes=4)
    x, t = torch.randn(5, 3), torch.randint(1, 1001, (5,)).float()
    assert m(x, t).shape == (5, 3)
    out = m(x, t, cond=torch.tensor([0, 1, 2, 3, 0]), heads=True)
    assert set(out) == set(HEADS) and all(v.shape == (5, 3) for v in out.values())
    assert torch.all(out["eps2"] == 0) and torch.all(out["eps3"] == 0)  # zero-initialised extra heads
    assert not torch.equal(m(x, t, cond=torch.zeros(5, dtype=torch.long)), m(x, t, cond=torch.ones(5, dtype=torch.long)))
    assert m(x, torch.tensor(3.0)).shape == (5, 3)  # scalar time broadcasts


def test_mlp_vector_cond_and_flattened_images():
    m = MLPEps(4, hidden=16, depth=1, cond_dim=2)
    assert m(torch.randn(3, 4), torch.ones(3), cond=torch.randn(3, 2)).shape == (3, 4)
    img = default_model((1, 8, 8), 1000.0, arch="mlp", size="tiny")
    assert img(torch.randn(2, 1, 8, 8), torch.ones(2)).shape == (2, 1, 8, 8)


@pytest.mark.parametrize("size", [8, 16])
def test_unet_shapes(size):
    m = default_model((1, size, size), 1000.0, size="tiny", num_classes=10, heads=("eps", "eps2"))
    x = torch.randn(3, 1, size, size)
    t = torch.tensor([1.0, 500.0, 1000.0])
    assert m(x, t).shape == x.shape
    out = m(x, t, cond=torch.tensor([1, 2, 3]), heads=True)
    assert set(out) == {"eps", "eps2"} and out["eps2"].shape == x.shape
    out["eps"].sum().backward()
    assert all(p.grad is not None for n, p in m.named_parameters() if not n.startswith(("out.eps2", "embed.cls")))


def test_unet_rgb_and_vector_cond():
    m = UNetEps((3, 16, 16), ch=8, ch_mult=(1, 2, 2), cond_dim=5, attention=False)
    assert m(torch.randn(2, 3, 16, 16), torch.ones(2), cond=torch.randn(2, 5)).shape == (2, 3, 16, 16)


def test_build_model_roundtrip():
    for m in (MLPEps(2, 16, 2, heads=("eps", "eps2")), UNetEps((1, 8, 8), ch=8)):
        m2 = build_model(m.config)
        m2.load_state_dict(m.state_dict())
        x = torch.randn(2, *m.data_shape)
        torch.testing.assert_close(m(x, torch.ones(2)), m2(x, torch.ones(2)))


@pytest.mark.parametrize("fn, exc, match", [
    (lambda: MLPEps(2, heads=("eps2",)), ValueError, "heads must start with 'eps'"),
    (lambda: MLPEps(2, heads=("eps", "eps4")), ValueError, "heads must start"),
    (lambda: MLPEps(0), ValueError, "must be positive"),
    (lambda: MLPEps(2, num_classes=3, cond_dim=2), ValueError, "either num_classes"),
    (lambda: UNetEps((1, 6, 6), ch_mult=(1, 2, 2)), ValueError, "divisible by 4"),
    (lambda: UNetEps((8, 8)), ValueError, r"\(C, H, W\)"),
    (lambda: default_model((2,), 1000.0, arch="unet"), ValueError, "takes images"),
    (lambda: default_model((2,), 1000.0, size="huge"), ValueError, "model size"),
    (lambda: build_model({"arch": "transformer"}), ValueError, "unknown model arch"),
    (lambda: MLPEps(2)(torch.zeros(3, 5), torch.ones(3)), ValueError, r"x must be \[N, 2\]"),
    (lambda: MLPEps(2)(torch.zeros(3, 2), torch.ones(4)), ValueError, "t must be a scalar"),
    (lambda: MLPEps(2)(torch.zeros(3, 2), torch.ones(3), cond=torch.zeros(3)), ValueError, "unconditional"),
    (lambda: MLPEps(2, num_classes=3)(torch.zeros(3, 2), torch.ones(3), cond=torch.zeros(3)), ValueError, "class labels"),
])
def test_model_errors(fn, exc, match):
    with pytest.raises(exc, match=match):
        fn()
