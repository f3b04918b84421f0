"""How fast can this GPU read HBM? The roofline divides by `throughput.measure_bandwidths`'s rate (a 4 GiB
bf16 sum in f32); this times other read-bound kernels over the same bytes, so a probe that undershoots the
device (a roofline too lenient) shows. Each: the best and the median of `--repeats` timed calls.

    python benchmarks/bench_hbm_read.py --gib 4 --repeats 10 --json OUT.json
"""

from __future__ import annotations

import argparse
import statistics

import jax
import jax.numpy as jnp

from common import run_meta, save_json
from shadowkv_jax.throughput import hbm_read_probe, wall_times

# name -> (function of the bf16 vector, bytes moved per byte of input): reductions read each byte once,
# a copy reads and writes it
PROBES = {
    "sum_f32 (the bench's probe)": (hbm_read_probe, 1),
    "max_bf16": (lambda v: jnp.max(v), 1),
    "sum_rows_f32 [N/4096, 4096] over rows": (lambda v: jnp.sum(v.reshape(-1, 4096), axis=0, dtype=jnp.float32), 1),
    "sum_cols_f32 [N/4096, 4096] over columns": (lambda v: jnp.sum(v.reshape(-1, 4096), axis=1, dtype=jnp.float32),
                                                 1),
    "copy (x + 1)": (lambda v: v + jnp.bfloat16(1), 2),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--json")
    args = ap.parse_args()
    x = jnp.ones((int(args.gib * (1 << 30)) // 2 // 4096 * 4096,), jnp.bfloat16)  # whole rows of 4096
    rows = []
    for name, (fn, moved) in PROBES.items():
        f = jax.jit(fn)
        times = wall_times(lambda: f(x), args.repeats)
        rows.append({"probe": name, "bytes": x.nbytes * moved, "best_bytes_per_s": x.nbytes * moved / min(times),
                     "median_bytes_per_s": x.nbytes * moved / statistics.median(times)})
        print(f"{name:44s} best {rows[-1]['best_bytes_per_s'] / 1e12:.2f} TB/s, "
              f"median {rows[-1]['median_bytes_per_s'] / 1e12:.2f} TB/s")
    save_json(args.json, {"meta": run_meta(gib=args.gib, repeats=args.repeats), "rows": rows})


if __name__ == "__main__":
    main()
