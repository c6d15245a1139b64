"""The one optional matplotlib import of the figures (the experiments' and the demo's): matplotlib is not a
dependency of the package, so every figure is skipped when it is missing."""
from __future__ import annotations

#: what a figure's entry in a summary says when it was skipped
MISSING = "skipped: matplotlib is not installed"


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (figures go to files only), or None when
    matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_figure(fig, path, shows: str, better: str, dpi: int = 110, bbox: bool = False) -> dict:
    """Write ``fig`` to ``path`` (tight layout; ``bbox=True``: a tight bounding box instead, for figures with a shared
    colourbar), close it, and return its entry of a summary's "figures": {"path", "shows", "better"}."""
    import matplotlib.pyplot as plt

    if bbox:
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    else:
        fig.tight_layout()
        fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return {"path": str(path), "shows": shows, "better": better}
