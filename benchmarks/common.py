"""What every benchmark script records: where and when it ran, and how to write its JSON."""

from __future__ import annotations

import json
import statistics
import sys
import time

from shadowkv_jax import throughput


def run_meta(**extra) -> dict:
    """Device, platform, JAX version, date and the command line, plus any extra fields."""
    return throughput.run_meta(command=" ".join(sys.argv), **extra)


def save_json(path: str | None, obj) -> None:
    """Write `obj` to `path` (indented) when a path was given."""
    if path:
        with open(path, "w") as f:
            json.dump(obj, f, indent=1)


def median_seconds(fn, *args, repeats: int = 5) -> float:
    """Median wall time of fn(*args) over `repeats` runs, after one untimed run (compilation, warm-up)."""
    import jax

    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
