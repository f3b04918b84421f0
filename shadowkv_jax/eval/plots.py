"""Plots for evaluation results (matplotlib, an optional dependency: `pip install shadowkv-jax[plots]`)."""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence


def niah_grid(rows: Sequence[dict]) -> tuple[list[float], list[int], list[list[float]]]:
    """(depths, lengths, accuracy[depth][length]) from `niah.run_cases` rows."""
    cells = defaultdict(list)
    for r in rows:
        cells[(r["depth"], r["target_tokens"])].append(bool(r["found"]))
    depths = sorted({d for d, _ in cells})
    lengths = sorted({n for _, n in cells})
    grid = [[(sum(cells[(d, n)]) / len(cells[(d, n)])) if cells[(d, n)] else float("nan") for n in lengths]
            for d in depths]
    return depths, lengths, grid


def niah_heatmap(rows: Sequence[dict], path: str, title: str = "Needle in a haystack") -> str:
    """Depth x length heatmap of the fraction of needles found; saved to `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depths, lengths, grid = niah_grid(rows)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.5 + 0.9 * len(lengths)), 1.2 + 0.5 * len(depths)))
    im = ax.imshow(grid, cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(lengths)), [f"{n:,}" for n in lengths])
    ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
    ax.set_xlabel("prompt tokens")
    ax.set_ylabel("needle depth")
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="fraction found")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _sweep_series(rows: Sequence[dict], key: str) -> dict[str, list[float]]:
    """Rows sorted by `key`, as columns (x, accuracy, attention_error, its max layer, hit rate)."""
    rows = sorted(rows, key=lambda r: r[key])
    col = lambda name: [float(r.get(name, float("nan"))) for r in rows]  # noqa: E731
    return {"x": col(key), "accuracy": col("accuracy"), "error": col("attention_error"),
            "error_max": col("attention_error_max_layer"), "hit_rate": col("hit_rate")}


def sweep_plot(rank_rows: Sequence[dict], chunk_rows: Sequence[dict], *, path: str,
               full_accuracy: float | None = None, defaults: dict | None = None,
               title: str = "ShadowKV sweeps") -> str:
    """2x2 figure of `sweep` rows: accuracy (top) and attention-output error (bottom) against the rank
    (left) and the chunk size (right), both on log2 x axes. `defaults` ({"rank": r, "chunk_size": c})
    draws a labelled dashed vertical line at the reference default; `full_accuracy` a horizontal line
    on the accuracy panels. Either list may be empty (its column is left blank). Saved to `path` (PNG).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    defaults = defaults or {}
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex="col")
    for col, (rows, key, label) in enumerate(((rank_rows, "rank", "rank r"),
                                              (chunk_rows, "chunk_size", "chunk size c"))):
        top, bottom = axes[0, col], axes[1, col]
        s = _sweep_series(rows, key) if rows else None
        if s:
            top.plot(s["x"], s["accuracy"], "o-", color="C0", label="ShadowKV accuracy")
            top.plot(s["x"], s["hit_rate"], "s:", color="C2", alpha=0.7, label="hit rate")
            bottom.plot(s["x"], s["error"], "o-", color="C3", label="mean over layers")
            bottom.plot(s["x"], s["error_max"], "^--", color="C3", alpha=0.5, label="worst layer")
            for ax in (top, bottom):
                ax.set_xscale("log", base=2)
                ax.set_xticks(s["x"], [f"{x:g}" for x in s["x"]])
                ax.minorticks_off()
        if full_accuracy is not None:
            top.axhline(full_accuracy, color="k", lw=1, label=f"full attention ({full_accuracy:.2f})")
        if key in defaults:
            d = defaults[key]
            for ax in (top, bottom):
                ax.axvline(d, color="gray", ls="--", lw=1)
            top.annotate(f"default {d}", (d, 1.02), xycoords=("data", "axes fraction"), ha="center",
                         fontsize=8, color="gray")
        other = {"rank": f"chunk size {defaults.get('chunk_size', '?')}",
                 "chunk_size": f"rank {defaults.get('rank', '?')}, budget/outlier/local tokens held"}[key]
        top.set_title(f"{label} ({other})", fontsize=9, pad=14)
        top.set_ylim(-0.03, 1.05)
        top.set_ylabel("accuracy / hit rate")
        bottom.set_ylabel("attention-output rel. error")
        bottom.set_ylim(bottom=0)
        bottom.set_xlabel(label)
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
