"""Chunk selection of one ShadowKV decode layer, three ways, timed at Llama-3.1-8B shapes.

    python benchmarks/bench_select.py --batch 10 --context 122880

All three score the chunks with kernels/landmark_scores.py (reading the stacked landmarks in place, as the
decode step does); they differ in what follows the scores:
  xla:         softmax, group max, lax.top_k and the chunk-id gather in XLA (top_k="xla");
  two_kernels: the same in XLA but the top-k by kernels/top_k.py (the kernel path before the fused kernel);
  fused:       kernels/chunk_selection.py, one kernel from the scores to the chunk ids (top_k="pallas"),
               at several warp counts;
  split:       the same selection with each row over S programs (select_top_chunks_split, with the landmark
               kernel's softmax statistics), at several S; "step" is what the decode step runs at this batch.
Shapes are Llama-3.1-8B's (32 query heads, 8 KV heads, D 128) with the bench's default ShadowKV config at that
context. Each is checked to pick the same set as "xla", then timed as --calls calls in one compiled loop over
--layers distinct layers of landmarks (as the decode step's layer scan runs them; a lone call would time its
launch); "per step" multiplies by the model's layer count.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import jax
import jax.numpy as jnp
import numpy as np

from common import run_meta, save_json
from shadowkv_jax.kernels.chunk_selection import (max_group_softmax, padded_width, select_top_chunks,
                                                  select_top_chunks_split, selection_splits)
from shadowkv_jax.kernels.landmark_scores import DECODE_LAUNCH, landmark_scores
from shadowkv_jax.kernels.top_k import top_k_indices
from shadowkv_jax.shadowkv.decode import select_chunks
from shadowkv_jax.shapes import NAMED_SHAPES
from shadowkv_jax.throughput import shadowkv_factory, wall_times


def _scores(q, landmarks, layer, interpret, padded=False, stats=None):
    """The landmark kernel's scores [B, Hkv, G, N], as select_chunks computes them in place (`padded`: rows
    padded to a multiple of 16, as it computes them for the selection kernel; `stats`: with the softmax
    statistics the split selection takes, as (scores, (m, l)))."""
    b, hq, d = q.shape
    hkv = landmarks.shape[2]
    width = padded_width(landmarks.shape[3]) if padded else None
    return landmark_scores(q.reshape(b, hkv, hq // hkv, d), landmarks, layer, scale=d ** -0.5, interpret=interpret,
                           width=width, stats=stats, **DECODE_LAUNCH)


def two_kernels(q, landmarks, chunk_ids, num_chunks, k, layer, interpret):
    """Landmark kernel, softmax and group max in XLA, kernels/top_k.py, chunk ids gathered in XLA."""
    ids = jax.lax.dynamic_index_in_dim(chunk_ids, layer, 0, keepdims=False)
    score = max_group_softmax(_scores(q, landmarks, layer, interpret), ids, num_chunks)
    return jnp.take_along_axis(ids, top_k_indices(score, k, interpret=interpret), axis=-1)


def fused(q, landmarks, chunk_ids, num_chunks, k, layer, interpret, num_warps):
    return select_top_chunks(_scores(q, landmarks, layer, interpret, padded=True), chunk_ids, num_chunks, k, layer,
                             num_warps=num_warps, interpret=interpret)


def split(q, landmarks, chunk_ids, num_chunks, k, layer, interpret, splits):
    s, parts = _scores(q, landmarks, layer, interpret, padded=True, stats=(chunk_ids, num_chunks))
    return select_top_chunks_split(s, parts, chunk_ids, num_chunks, k, layer, splits=splits, interpret=interpret)


def ms_per_call(fn, args, layers: int, calls: int, repeats: int) -> float:
    """Median ms of one call in a compiled loop of `calls` calls over the stacked layers."""
    run = jax.jit(lambda *a: jax.lax.fori_loop(
        0, calls, lambda i, acc: acc + fn(*a, layer=i % layers)[0, 0, 0], jnp.int32(0)))
    return 1e3 * statistics.median(wall_times(lambda: run(*args), repeats)) / calls


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="llama-3.1-8b")
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--context", type=int, default=122880)
    p.add_argument("--layers", type=int, default=4, help="distinct layers of landmarks the loop cycles through")
    p.add_argument("--calls", type=int, default=32, help="calls per timed loop (as many as the model's layers)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of the loop (median)")
    p.add_argument("--warps", type=int, nargs="+", default=[8, 16, 32], help="the fused kernel's warp counts")
    p.add_argument("--splits", type=int, nargs="+", default=[2, 4, 8], help="the split selection's slices a row")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    cfg = NAMED_SHAPES[args.model]
    sk = shadowkv_factory(cfg)(args.context)
    k = sk.selected_chunks
    n_sel = sk.num_chunks(args.context) - sk.outlier_chunks
    b, hq, hkv, d, n_l = args.batch, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, args.layers
    interpret = jax.devices()[0].platform != "gpu"
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.standard_normal((b, hq, d)), cfg.jnp_dtype)
    landmarks = jax.random.normal(jax.random.key(1), (n_l, b, hkv, n_sel, d), cfg.jnp_dtype)
    chunk_ids = jnp.asarray(np.stack([rng.permuted(np.broadcast_to(np.arange(n_sel, dtype=np.int32), (b, hkv, n_sel)),
                                                   axis=-1) for _ in range(n_l)]))
    num_chunks = jnp.full((b,), n_sel, jnp.int32).at[-1].set(n_sel - 100)  # the last sequence: 100 padding slots
    paths = {"xla": lambda *a, layer: select_chunks(*a, k=k, top_k="xla", interpret=interpret, layer=layer),
             "two_kernels": lambda *a, layer: two_kernels(*a, k, layer, interpret)}
    for w in args.warps:
        paths[f"fused_warps{w}"] = lambda *a, layer, w=w: fused(*a, k, layer, interpret, w)
    for sp in args.splits:
        paths[f"split{sp}"] = lambda *a, layer, sp=sp: split(*a, k, layer, interpret, sp)
    paths["step"] = lambda *a, layer: select_chunks(*a, k=k, top_k="pallas", interpret=interpret, layer=layer)
    inputs = (q, landmarks, chunk_ids, num_chunks)
    want = np.sort(np.asarray(jax.jit(paths["xla"])(*inputs, layer=1)), -1)
    row = {**run_meta(), "model": args.model, "batch": b, "context": args.context, "k": k, "selectable": n_sel,
           "step_splits": selection_splits(b * hkv),
           "layers": cfg.num_layers, "calls": args.calls, "same_set": {}, "ms_per_layer": {}}
    for name, fn in paths.items():
        got = np.sort(np.asarray(jax.jit(fn)(*inputs, layer=1)), -1)
        row["same_set"][name] = bool(np.array_equal(got, want))
        row["ms_per_layer"][name] = ms_per_call(fn, inputs, n_l, args.calls, args.repeats)
        print(json.dumps({"path": name, "same_set": row["same_set"][name],
                          "ms_per_layer": row["ms_per_layer"][name]}), flush=True)
    print("| path | same set as xla | ms/layer | ms/step |\n|---|---|---|---|")
    for name, t in row["ms_per_layer"].items():
        print(f"| {name} | {row['same_set'][name]} | {t:.4f} | {t * cfg.num_layers:.2f} |")
    save_json(args.json, row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
