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
