"""The landmark-score kernel's launch and form, timed at Llama-3.1-8B shapes.

    python benchmarks/landmark_variants.py [--batch 10] [--context 122880] [--json OUT]

Forms: "dot" is kernels/landmark_scores.py (one tensor-core dot of the padded query group against the
block's landmarks; bf16 products are exact in fp32, the scale applied after); "rows" is its earlier form
(an fp32 multiply-and-sum per query head on the CUDA cores), kept here for the comparison. A "dot" launch
may name blocks per program and pipeline stages too (dot/128/4/8/3: each program loops over 8 blocks). Each is checked against the jnp reference, then timed as 32 calls
in one compiled loop over distinct layers, as the decode step's layer scan runs them; the percentage is
of the HBM rate measured here.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

from common import run_meta, save_json
from shadowkv_jax.throughput import wall_times
from shadowkv_jax.kernels.common import compiler_params
from shadowkv_jax.kernels.landmark_scores import landmark_scores, landmark_scores_reference

HKV, G, D, C = 8, 4, 128, 8


def _rows_kernel(layer_ref, q_ref, lm_ref, s_ref, *, n, block, groups, scale):
    """The earlier form: each query head's scores as an fp32 multiply-and-sum over D on the CUDA cores."""
    from jax.experimental.pallas import triton as plt

    b, h, j = pl.program_id(0), pl.program_id(1), pl.program_id(2)
    d = lm_ref.shape[-1]
    rows = j * block + jax.lax.broadcasted_iota(jnp.int32, (block,), 0)
    valid = rows < n
    col = jax.lax.broadcasted_iota(jnp.int32, (1, d), 1)
    lm = plt.load(lm_ref.at[layer_ref[0], b, h, rows[:, None], col], mask=valid[:, None], other=0)
    lm = lm.astype(jnp.float32)
    for g in range(groups):
        qg = q_ref[b, h, g, :].astype(jnp.float32) * scale
        plt.store(s_ref.at[b, h, g, rows], jnp.sum(lm * qg[None, :], axis=1), mask=valid)


@functools.partial(jax.jit, static_argnames=("scale", "block", "num_warps", "interpret"))
def rows_scores(q, landmarks, layer, *, scale=1.0, block=128, num_warps=8, interpret=False):
    b, hkv, g, d = q.shape
    n = landmarks.shape[3]
    kernel = functools.partial(_rows_kernel, n=n, block=block, groups=g, scale=float(scale))
    return pl.pallas_call(kernel, out_shape=jax.ShapeDtypeStruct((b, hkv, g, n), jnp.float32),
                          grid=(b, hkv, pl.cdiv(n, block)), interpret=interpret,
                          compiler_params=compiler_params(interpret, num_warps, 1),
                          name="landmark_scores_rows")(jnp.reshape(layer, (1,)).astype(jnp.int32), q, landmarks)


def timed_loop(fn, q, lm, n=32, repeats=5):
    run = jax.jit(lambda q, lm: jax.lax.fori_loop(
        0, n, lambda i, acc: acc + fn(q, lm, i % lm.shape[0])[0, 0, 0, 0], jnp.float32(0)))
    return statistics.median(wall_times(lambda: run(q, lm), repeats)) / n


def hbm_rate() -> float:
    """Bytes per second of a 1 GiB read-modify-write (as bench_kernels measures it)."""
    x = jnp.ones((1 << 28,), jnp.float32)
    copy = jax.jit(lambda x: x * 1.0001)
    return 2 * x.nbytes / statistics.median(wall_times(lambda: copy(x), 10))


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--context", type=int, default=122880)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--launches", nargs="+", default=["rows/128/8", "rows/256/8", "rows/512/8", "rows/128/4",
                                                     "rows/256/4", "dot/128/4", "dot/256/4", "dot/256/8",
                                                     "dot/512/8"],
                   help="form/block/warps, or dot/block/warps/blocks per program/pipeline stages")
    p.add_argument("--calls", type=int, default=32, help="kernel calls per timed loop (as many as layers)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of the loop (median)")
    p.add_argument("--interpret", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    b, n = args.batch, args.context // C
    q = jax.random.normal(jax.random.key(0), (b, HKV, G, D), jnp.bfloat16)
    lm = jax.random.normal(jax.random.key(1), (args.layers, b, HKV, n, D), jnp.bfloat16)
    hbm = float("nan") if args.interpret else hbm_rate()
    scale = 1 / np.sqrt(D)
    ref = np.asarray(landmark_scores_reference(q, lm, 1, scale=scale))
    nbytes = b * HKV * n * D * 2
    rows = []
    for launch in args.launches:
        form, block, warps, *looped = launch.split("/")  # looped: blocks per program, pipeline stages
        f = rows_scores if form == "rows" else landmark_scores
        extra = {"blocks": int(looped[0]), "num_stages": int(looped[1])} if looped else {}
        fn = functools.partial(f, scale=scale, block=int(block), num_warps=int(warps), interpret=args.interpret,
                               **extra)
        err = float(np.abs(np.asarray(fn(q, lm, 1)) - ref).max())
        t = timed_loop(fn, q, lm, args.calls, args.repeats)
        rows.append({"launch": launch, "ms_per_layer": 1e3 * t, "pct_of_hbm": 100 * nbytes / t / hbm,
                     "max_abs_err": err})
        print(json.dumps(rows[-1]), flush=True)
    save_json(args.json, {"meta": run_meta(hbm_bytes_per_s=hbm), "rows": rows})
    print(f"\nHBM {hbm / 1e12:.2f} TB/s; landmarks {nbytes / 1e6:.0f} MB per layer (batch {b}, context {args.context})")
    print("| form/block/warps | ms per layer | % of HBM | max abs err |")
    for r in rows:
        print(f"| {r['launch']} | {r['ms_per_layer']:.4f} | {r['pct_of_hbm']:.0f}% | {r['max_abs_err']:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
