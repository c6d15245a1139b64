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


def forest(ax, rows, title: str, xlabel: str, better: str = "left") -> None:
    """Paired differences as a forest plot on ``ax``: one row per comparison (dicts with 'label', 'diff', 'ci95',
    'a_better', 'n'), the mean difference with its 95% interval, a line at zero, and the side where the first arm
    is better (``better`` 'left' for lower-is-better metrics, 'right' otherwise) named on the x axis."""
    ys = list(range(len(rows)))[::-1]
    for y, r in zip(ys, rows):
        lo, hi = r["ci95"]
        excl = lo > 0 or hi < 0
        ax.errorbar([r["diff"]], [y], xerr=[[r["diff"] - lo], [hi - r["diff"]]], fmt="o", capsize=3,
                    color="C3" if excl else "C0")
        ax.annotate(f"{r['a_better']}/{r['n']}", (hi, y), xytext=(4, 0), textcoords="offset points", va="center",
                    fontsize=7)
    ax.axvline(0.0, color="k", lw=0.8)
    ax.set_yticks(ys)
    ax.set_yticklabels([r["label"] for r in rows], fontsize=7)
    ends = [abs(v) for r in rows for v in (r["diff"], *r["ci95"]) if v == v]
    small = sorted(abs(r["ci95"][1] - r["ci95"][0]) / 2 for r in rows if r["ci95"][0] == r["ci95"][0])
    if ends and small and max(ends) > 30 * max(small[len(small) // 2], 1e-12):  # one arm far off: keep the rest visible
        ax.set_xscale("symlog", linthresh=max(small[len(small) // 2], 1e-12) * 4)
    side = "first arm better <--" if better == "left" else "--> first arm better"
    ax.set_xlabel(f"{xlabel}: first arm - second arm ({side})\nbar: 95% interval (red: excludes 0); k/n: seeds where "
                  "the first arm is better", fontsize=7)
    ax.set_title(title, fontsize=9)


def forest_figure(panels, path, base: float = 1.2, per_panel: float = 0.0, per_row: float = 0.42):
    """A figure of stacked :func:`forest` panels saved to ``path``: panels are (title, metric label, better side,
    rows); the height is base + per_panel * panels + per_row * rows (inches). Returns the path, or MISSING."""
    plt = pyplot()
    if plt is None:  # pragma: no cover
        return MISSING
    n = sum(len(p[3]) for p in panels)
    fig, axes = plt.subplots(len(panels), 1, figsize=(8.5, base + per_panel * len(panels) + per_row * n), squeeze=False)
    for ax, (title, metric, better, rows) in zip(axes[:, 0], panels):
        forest(ax, rows, title, metric, better)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


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
