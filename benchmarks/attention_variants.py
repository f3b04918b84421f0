"""Where the gather-reconstruct kernel's time goes with device values: variants of its loop body, timed.

    python benchmarks/attention_variants.py [--batch 10] [--context 122880] [--json OUT]

Each variant is the kernel's device-values path (no reuse, one value array) as it was before the RoPE tables
(kernels/sparse_attention.rope_tables), with one thing changed:
  base       cos/sin computed for every token (the kernel's form until the twelfth session)
  no_trig    keys without RoPE (no cos/sin): what the trigonometry costs (wrong result, timing only)
  no_values  p @ k instead of p @ v: what the value gather costs (wrong result, timing only)
  prefetch   the next block's chunk ids, A rows and values loaded before this block's math (loop carry)
  chunk_trig cos/sin once per chunk (angle addition: cos(a + b) from the chunk start a and the offset b)
  both       prefetch + chunk_trig
Timed as 32 calls in one compiled loop (as the layer scan runs them); the exact variants are checked
against the jnp reference first.
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
from shadowkv_jax.kernels.common import NEG_INF, compiler_params, dot, pad_groups, partials_shape
from shadowkv_jax.kernels.sparse_attention import (_pow2_parts, _rotate_half, combine, plan, rope_inv_freq_full,
                                                   sparse_attention_partials_reference)

HKV, G, D, RANK, C = 8, 4, 128, 160, 8
EXACT = ("base", "prefetch", "chunk_trig", "both")


def _variant_kernel(layer_ref, q_ref, a_ref, w_ref, wr_ref, chunks_ref, freq_ref, v_ref, o_ref, m_ref, l_ref, *,
                    variant, num_selected, chunk_size, block_tokens, blocks_per_split, rank_parts, k_pad):
    b, h, s = pl.program_id(0), pl.program_id(1), pl.program_id(2)
    layer = layer_ref[0]
    q = q_ref[b, h]
    d = q.shape[-1]
    freq = freq_ref[...].astype(jnp.float32)
    iota = jax.lax.broadcasted_iota(jnp.int32, (block_tokens,), 0)
    slot_in_block, t_in_chunk = iota // chunk_size, iota % chunk_size
    prefetch = variant in ("prefetch", "both")
    chunk_trig = variant in ("chunk_trig", "both")
    if chunk_trig:  # offsets within a chunk: the same for every block
        off_angle = t_in_chunk.astype(jnp.float32)[:, None] * freq[None, :]
        cos_off, sin_off = jnp.cos(off_angle), jnp.sin(off_angle)

    def load(i):
        slot = (s * blocks_per_split + i) * (block_tokens // chunk_size) + slot_in_block
        chunk = chunks_ref[b, h, jnp.minimum(slot, k_pad - 1)]
        pos = chunk * chunk_size + t_in_chunk
        rows = tuple(a_ref[layer, b, pos, pl.ds(off, size)] for off, size in rank_parts)
        v = None if variant == "no_values" else v_ref[layer, b, h, chunk, t_in_chunk, :]
        return slot, chunk, rows, v

    def math_(m, l, acc, slot, chunk, rows, v):
        k_pre = jnp.zeros((block_tokens, d), jnp.float32)
        k_rot = jnp.zeros((block_tokens, d), jnp.float32)
        for (off, size), r in zip(rank_parts, rows):
            k_pre += dot(r, w_ref[b, h, pl.ds(off, size), :])
            k_rot += dot(r, wr_ref[b, h, pl.ds(off, size), :])
        if variant == "no_trig":
            k = (k_pre + k_rot).astype(q.dtype)
        elif chunk_trig:
            base = (chunk * chunk_size).astype(jnp.float32)[:, None] * freq[None, :]
            cb, sb = jnp.cos(base), jnp.sin(base)
            cos, sin = cb * cos_off - sb * sin_off, sb * cos_off + cb * sin_off
            k = (k_pre * cos + k_rot * sin).astype(q.dtype)
        else:
            angle = (chunk * chunk_size + t_in_chunk).astype(jnp.float32)[:, None] * freq[None, :]
            k = (k_pre * jnp.cos(angle) + k_rot * jnp.sin(angle)).astype(q.dtype)
        scores = jnp.where((slot < num_selected)[None, :], dot(q, k.T), NEG_INF)
        m_new = jnp.maximum(m, jnp.max(scores, axis=1))
        p = jnp.exp(scores - m_new[:, None])
        alpha = jnp.exp(m - m_new)
        v = k if v is None else v
        acc = acc * alpha[:, None] + dot(p.astype(v.dtype), v)
        return m_new, l * alpha + jnp.sum(p, axis=1), acc

    init = (jnp.full((q.shape[0],), NEG_INF, jnp.float32), jnp.zeros((q.shape[0],), jnp.float32),
            jnp.zeros((q.shape[0], d), jnp.float32))
    if prefetch:
        def body(i, carry):
            m, l, acc, *cur = carry
            nxt = load(i + 1)  # issued before this block's math: its latency hides behind it
            return (*math_(m, l, acc, *cur), *nxt)
        m, l, acc, *_ = jax.lax.fori_loop(0, blocks_per_split, body, init + load(0))
    else:
        m, l, acc = jax.lax.fori_loop(0, blocks_per_split, lambda i, c: math_(*c, *load(i)), init)
    o_ref[b, h, s] = acc
    m_ref[b, h, s] = m
    l_ref[b, h, s] = l


@functools.partial(jax.jit, static_argnames=("variant", "block_tokens", "num_splits", "num_warps", "num_stages",
                                             "interpret"))
def variant_partials(q, a, w, chunks, values, inv_freq, layer, *, variant, block_tokens=16, num_splits=16,
                     num_warps=4, num_stages=2, interpret=False):
    b, hkv, g, d = q.shape
    k = chunks.shape[-1]
    block_tokens, per_split, splits, k_pad = plan(k, C, block_tokens, num_splits)
    qp, gp = pad_groups(q)
    chunks_p = jnp.pad(chunks, ((0, 0), (0, 0), (0, k_pad - k)))
    kernel = functools.partial(_variant_kernel, variant=variant, num_selected=k, chunk_size=C,
                               block_tokens=block_tokens, blocks_per_split=per_split,
                               rank_parts=tuple(_pow2_parts(a.shape[-1])), k_pad=k_pad)
    out = pl.pallas_call(kernel, out_shape=partials_shape(b, hkv, splits, gp, d), grid=(b, hkv, splits),
                         interpret=interpret, compiler_params=compiler_params(interpret, num_warps, num_stages),
                         name=f"variant_{variant}")(jnp.reshape(layer, (1,)).astype(jnp.int32), qp, a, w,
                                                     _rotate_half(w), chunks_p, inv_freq, values)
    return out[0][:, :, :, :g], out[1][:, :, :, :g], out[2][:, :, :, :g]


def timed_loop(fn, args, n=32, repeats=5):
    def run(q, a, w, sels, v, inv):
        def body(i, acc):
            out = fn(q, a, w, sels[i % sels.shape[0]], v, inv, i % a.shape[0])
            return acc + out[0][0, 0, 0, 0, 0]
        return jax.lax.fori_loop(0, n, body, jnp.float32(0))
    run = jax.jit(run)
    return 1e3 * statistics.median(wall_times(lambda: run(*args), repeats)) / n


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--context", type=int, default=122880)
    p.add_argument("--layers", type=int, default=4, help="distinct layers the loop cycles through")
    p.add_argument("--budget", type=int, default=2048)
    p.add_argument("--variants", nargs="+", default=["base", "no_trig", "no_values", "prefetch", "chunk_trig", "both"])
    p.add_argument("--launches", nargs="+", default=["16/16/4", "4/32/8", "8/16/4", "32/16/4"],
                   help="splits/block_tokens/warps")
    p.add_argument("--calls", type=int, default=32, help="kernel calls per timed loop (as many as layers)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of the loop (median)")
    p.add_argument("--interpret", action="store_true", help="on the CPU: check that the variants run")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    interp = {"interpret": True} if args.interpret else {}
    inv = jnp.asarray(rope_inv_freq_full(1.0 / (500000.0 ** (np.arange(0, D, 2) / D))))
    rng = np.random.default_rng(0)
    b, n_c, k = args.batch, args.context // C, args.budget // C

    def data(b, n_c, layers):
        a = (jax.random.normal(jax.random.key(0), (layers, b, n_c * C, RANK), jnp.float32) / np.sqrt(RANK)
             ).astype(jnp.bfloat16)
        w = jax.random.normal(jax.random.key(1), (b, HKV, RANK, D), jnp.bfloat16)
        q = (jax.random.normal(jax.random.key(2), (b, HKV, G, D), jnp.float32) / np.sqrt(D)).astype(jnp.bfloat16)
        v = jax.random.normal(jax.random.key(3), (layers, b, HKV, n_c, C, D), jnp.bfloat16)
        sels = jnp.asarray(np.stack([np.sort(rng.random((b, HKV, n_c)).argsort(-1)[..., :k], -1)
                                     for _ in range(4)]), jnp.int32)
        return q, a, w, sels, v

    rows = []
    # checks on a small case whose positions still reach 100K (the trig's large-argument range)
    q, a, w, sels, v = data(2, args.context // C, 1)
    empty = [(jnp.zeros((2, HKV, 1, D), q.dtype),) * 2 + (jnp.zeros((2, 1, 1), bool),)]
    ref = np.asarray(combine(sparse_attention_partials_reference(q, a, w, sels[0], v, inv, 0, chunk_size=C), q, empty))
    for variant in [x for x in args.variants if x in EXACT]:
        got = np.asarray(combine(variant_partials(q, a, w, sels[0], v, inv, 0, variant=variant, **interp), q, empty))
        err = float(np.abs(got - ref).max())
        rows.append({"check": variant, "max_abs_err": err})
        print(json.dumps(rows[-1]), flush=True)
    del q, a, w, sels, v
    q, a, w, sels, v = data(b, n_c, args.layers)
    for launch in args.launches:
        splits, block, warps = map(int, launch.split("/"))
        for variant in args.variants:
            fn = functools.partial(variant_partials, variant=variant, block_tokens=block, num_splits=splits,
                                   num_warps=warps, **interp)
            ms = timed_loop(fn, (q, a, w, sels, v, inv), args.calls, args.repeats)
            rows.append({"variant": variant, "launch": launch, "ms_per_layer": ms})
            print(json.dumps(rows[-1]), flush=True)
    save_json(args.json, {"meta": run_meta(), "rows": rows})
    print("\n| variant | " + " | ".join(args.launches) + f" |   (ms per layer, batch {b}, context {args.context})")
    for variant in args.variants:
        ms = {r["launch"]: r["ms_per_layer"] for r in rows if r.get("variant") == variant}
        print(f"| {variant} | " + " | ".join(f"{ms.get(x, float('nan')):.3f}" for x in args.launches) + " |")
    for r in rows:
        if "check" in r:
            print(f"check {r['check']}: max abs err {r['max_abs_err']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
