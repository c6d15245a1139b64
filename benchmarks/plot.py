"""Plots and a Markdown table from benchmark result files (schema gmmkernels.bench/1).

    python benchmarks/plot.py RESULT.json [RESULT.json ...] --out DIR

Per (op, mode, dtype, device): DIR/<op>__<mode>__<dtype>__<device>__time.png (p50 ms per case and provider,
log scale, p20-p80 whiskers) and ...__speedup.png (speedup of every provider over torch-eager, log scale).
The Markdown table (p50 ms, speedup vs torch-eager in parentheses, errors as footnotes) goes to stdout.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections import OrderedDict
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _harness as H

BASELINE = "torch-eager"


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", s).strip("-")


def case_label(r: dict) -> str:
    p = r.get("params") or {}
    core = " ".join(f"{k}={H._short(p[k])}" for k in ("N", "K", "D") if k in p)
    extra = " ".join(f"{k}={v}" for k, v in p.items() if k not in ("N", "K", "D"))
    return f"{r.get('case') or ''} {core} {extra}".strip()


def load_rows(paths) -> list[tuple[dict, dict]]:
    out = []
    for path in paths:
        doc = H.load_results(path)
        for r in doc["results"]:
            if not isinstance(r, dict) or "provider" not in r:
                continue
            r.setdefault("op", Path(path).name.split("__")[0])
            r.setdefault("mode", "fwd")
            r.setdefault("dtype", "float32")
            r.setdefault("device", doc["meta"].get("device_type", "?"))
            ms = r.get("ms")
            if isinstance(ms, (int, float)):
                r["ms"] = {"p50": float(ms)}
            elif isinstance(ms, dict) and "p50" not in ms:
                r["ms"] = None
            out.append((doc["meta"], r))
    return out


def group_rows(rows):
    groups: "OrderedDict[tuple, list]" = OrderedDict()
    for meta, r in rows:
        key = (r["op"], r["mode"], r["dtype"], str(meta.get("device", r["device"])))
        groups.setdefault(key, []).append(r)
    return groups


def _ordered(items):
    return list(OrderedDict.fromkeys(items))


def markdown(groups) -> str:
    lines = []
    for (op, mode, dtype, device), rows in groups.items():
        providers = _ordered(r["provider"] for r in rows)
        cases = _ordered(case_label(r) for r in rows)
        lines.append(f"\n### {op} · {mode} · {dtype} · {device}\n")
        lines.append("| case | " + " | ".join(providers) + " |")
        lines.append("|---|" + "---|" * len(providers))
        notes: "OrderedDict[str, int]" = OrderedDict()
        for c in cases:
            cells = []
            for p in providers:
                r = next((x for x in rows if x["provider"] == p and case_label(x) == c), None)
                if r is None:
                    cells.append("")
                elif r.get("ms"):
                    sp = r.get("speedup_vs_eager")
                    cell = f"{r['ms']['p50']:.4g} ms"
                    if sp and p != BASELINE:
                        cell += f" ({sp:.3g}×)"
                    if r.get("ok") is False:
                        cell += " **inexact**"
                    cells.append(cell)
                else:
                    err = (r.get("error") or "no result").split(":")[0] + ": " + (r.get("error") or "")[:160]
                    n = notes.setdefault(r.get("error") or "no result", len(notes) + 1)
                    cells.append(f"— [{n}]")
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
        for text, n in notes.items():
            lines.append(f"\n[{n}] {text[:300]}")
    return "\n".join(lines) + "\n"


def plot_groups(groups, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    # one colour per provider across every figure
    everyone = _ordered(r["provider"] for rows in groups.values() for r in rows)
    cmap = plt.get_cmap("tab20" if len(everyone) > 10 else "tab10")
    colour = {p: cmap(i % cmap.N) for i, p in enumerate(everyone)}
    for (op, mode, dtype, device), rows in groups.items():
        providers = _ordered(r["provider"] for r in rows)
        cases = _ordered(case_label(r) for r in rows)
        width = 0.8 / max(1, len(providers))
        xs = np.arange(len(cases))
        stem = f"{op}__{_slug(mode)}__{dtype}__{_slug(device.lower())}"
        for kind in ("time", "speedup"):
            fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(cases) + 2), 4.8))
            any_bar = False
            for i, p in enumerate(providers):
                vals, lo, hi = [], [], []
                for c in cases:
                    r = next((x for x in rows if x["provider"] == p and case_label(x) == c and x.get("ms")), None)
                    if r is None:
                        vals.append(np.nan), lo.append(0), hi.append(0)
                        continue
                    if kind == "time":
                        v = r["ms"]["p50"]
                        vals.append(v)
                        lo.append(max(0.0, v - r["ms"].get("p20", v)))
                        hi.append(max(0.0, r["ms"].get("p80", v) - v))
                    else:
                        sp = r.get("speedup_vs_eager")
                        vals.append(sp if sp else np.nan), lo.append(0), hi.append(0)
                if all(np.isnan(v) for v in vals):
                    continue
                any_bar = True
                pos = xs - 0.4 + width * (i + 0.5)
                yerr = np.array([lo, hi]) if kind == "time" else None
                ax.bar(pos, vals, width, yerr=yerr, capsize=2, label=p, color=colour[p])
            if not any_bar:
                plt.close(fig)
                continue
            ax.set_yscale("log")
            ax.set_xticks(xs)
            ax.set_xticklabels([c.replace(" ", "\n", 1) for c in cases], fontsize=7)
            if kind == "time":
                ax.set_ylabel("time per call, ms (p50; whiskers p20-p80)")
            else:
                ax.axhline(1.0, color="k", lw=0.8)
                ax.set_ylabel(f"speedup vs {BASELINE} (higher is better)")
                ax.set_xlabel(f"no bars: {BASELINE} or the provider has no timing (see the table)", fontsize=7)
            ax.set_title(f"{op} {mode} {dtype} — {device}", fontsize=9)
            ax.legend(fontsize=7, ncol=2)
            ax.grid(axis="y", which="both", alpha=0.3)
            fig.tight_layout()
            path = out_dir / f"{stem}__{kind}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            written.append(path)
    return written


def make_plots(paths, out_dir, print_table: bool = True) -> list[Path]:
    groups = group_rows(load_rows(paths))
    if print_table:
        print(markdown(groups))
    return plot_groups(groups, Path(out_dir))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", help="result JSON files")
    ap.add_argument("--out", default=str(H.DEFAULT_OUT / "plots"), help="directory for the PNGs")
    ap.add_argument("--no-png", action="store_true", help="only print the Markdown table")
    args = ap.parse_args(argv)
    groups = group_rows(load_rows(args.results))
    print(markdown(groups))
    if not args.no_png:
        for p in plot_groups(groups, Path(args.out)):
            print(f"wrote {p}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
