"""PNG output: the dependency-free PNG writer, image grids and the data-vs-samples figure."""
import numpy as np
import torch

from gmmkernels.diffusion import load_digits
from gmmkernels.diffusion.plotting import data_vs_samples, image_grid, save_png


def test_png_writer(tmp_path):
    import matplotlib.image as mpimg

    img = (np.arange(12 * 7).reshape(12, 7) % 256).astype(np.uint8)
    save_png(tmp_path / "a.png", img)
    back = mpimg.imread(tmp_path / "a.png")
    np.testing.assert_allclose(back * 255, img, atol=0.5)
    rgb = np.stack([img, 255 - img, img // 2], -1)
    save_png(tmp_path / "b.png", rgb)
    np.testing.assert_allclose(mpimg.imread(tmp_path / "b.png")[..., :3] * 255, rgb, atol=0.5)
    x, _ = load_digits()
    assert image_grid(x[:23], nrow=10, scale=2).shape == (3 * 17 + 1, 10 * 17 + 1)
    for data in (x[:50], torch.randn(500, 2), torch.randn(500, 1), torch.randn(100, 5)):
        p = data_vs_samples(data, data + 0.1, tmp_path / "c.png")
        assert mpimg.imread(p).ndim == 2
