"""Chunk selection of one ShadowKV decode layer: XLA's lax.top_k vs the Pallas top-k kernel.

    python benchmarks/bench_select.py --batch 14 --context 122880

Shapes are Llama-3.1-8B's (32 query heads, 8 KV heads, D 128) with the bench's default ShadowKV config
at that context. Times the whole selection (landmark scores, softmax, group max, top-k) and the top-k
alone, median of --repeats calls after compilation; "per step" multiplies by the layer count. Checks
that both pick the same set.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from common import run_meta, save_json
from shadowkv_jax.kernels.top_k import top_k_indices
from shadowkv_jax.shadowkv.decode import select_chunks
from shadowkv_jax.shapes import NAMED_SHAPES
from shadowkv_jax.throughput import shadowkv_factory, wall_times


def _median_ms(fn, repeats: int) -> float:
    return 1e3 * statistics.median(wall_times(fn, repeats))


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="llama-3.1-8b")
    p.add_argument("--batch", type=int, default=14)
    p.add_argument("--context", type=int, default=122880)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    cfg = NAMED_SHAPES[args.model]
    sk = shadowkv_factory(cfg)(args.context)
    k = sk.selected_chunks
    n_sel = sk.num_chunks(args.context) - sk.outlier_chunks
    b, hq, hkv, d = args.batch, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    interpret = jax.devices()[0].platform != "gpu"
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.standard_normal((b, hq, d)), cfg.jnp_dtype)
    landmarks = jnp.asarray(rng.standard_normal((b, hkv, n_sel, d)), cfg.jnp_dtype)
    chunk_ids = jnp.broadcast_to(jnp.arange(n_sel, dtype=jnp.int32), (b, hkv, n_sel))
    num_chunks = jnp.full((b,), n_sel, jnp.int32)
    scores = jnp.asarray(rng.random((b * hkv, n_sel)), jnp.float32)
    select = {t: jax.jit(partial(select_chunks, k=k, top_k=t, interpret=interpret)) for t in ("xla", "pallas")}
    top_k = {"xla": jax.jit(lambda x: jax.lax.top_k(x, k)[1]),
             "pallas": jax.jit(partial(top_k_indices, k=k, interpret=interpret))}
    same = bool(np.array_equal(np.sort(np.asarray(select["xla"](q, landmarks, chunk_ids, num_chunks)), -1),
                               np.asarray(select["pallas"](q, landmarks, chunk_ids, num_chunks))))
    row = {**run_meta(), "model": args.model, "batch": b, "context": args.context, "k": k, "selectable": n_sel,
           "layers": cfg.num_layers, "same_set": same, "ms_per_layer": {}}
    for t in ("xla", "pallas"):
        row["ms_per_layer"][f"select_{t}"] = _median_ms(lambda: select[t](q, landmarks, chunk_ids, num_chunks),
                                                        args.repeats)
        row["ms_per_layer"][f"top_k_{t}"] = _median_ms(lambda: top_k[t](scores), args.repeats)
    for tile, warps in ((4096, 8), (16384, 8), (16384, 16)):  # the kernel's tiling (default: 16384, 8)
        fn = jax.jit(partial(top_k_indices, k=k, tile=tile, num_warps=warps, interpret=interpret))
        row["ms_per_layer"][f"top_k_pallas_tile{tile}_warps{warps}"] = _median_ms(lambda: fn(scores), args.repeats)
    print(json.dumps(row))
    print("| part | xla ms/layer | pallas ms/layer | xla ms/step | pallas ms/step |\n|---|---|---|---|---|")
    for part in ("select", "top_k"):
        x, y = row["ms_per_layer"][f"{part}_xla"], row["ms_per_layer"][f"{part}_pallas"]
        print(f"| {part} | {x:.3f} | {y:.3f} | {x * cfg.num_layers:.2f} | {y * cfg.num_layers:.2f} |")
    print(f"same set: {same}; faster top-k: {'pallas' if row['ms_per_layer']['select_pallas'] < row['ms_per_layer']['select_xla'] else 'xla'}")
    save_json(args.json, row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
