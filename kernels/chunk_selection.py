"""The chunk selection of a ShadowKV decode step in one kernel: softmax, group max, top-k, chunk ids (Pallas, Triton).

Given the landmark scores s [B, Hkv, G, N] (kernels/landmark_scores.py) of the N selectable slots, per (b, h):
  score[n] = max over the G query heads g of softmax(s[b, h, g, :])[n], with slots whose chunk id is past the
             sequence's chunk count masked out of the softmax and scored -1 (padding never wins);
  the k highest scores (kernels/top_k.py's threshold, ties to the lower slot), written as chunk ids
  chunk_ids[b, h, slot] in increasing slot order.

Why one kernel: in XLA the softmax and group max (0.81 ms of an 18.7 ms step at 122,880 tokens x 10 on an H200),
the top-k kernel's padded copy of its input row and the scatter of its slots (0.41 ms), and the gather of chunk
ids each wrote and read the rows again. Here a program reads its G score rows once: when the row fits one tile
(N <= 16,384, i.e. up to 131,072 tokens at c = 8) the softmax statistics, the score and the counting passes all
run in registers. Longer rows go tile by tile, the keys staged in a scratch output.

Shapes: s [B, Hkv, G, N'] f32, N' = N or the rows padded (landmark_scores' `width`: columns past N are never
used, whatever they hold); chunk_ids [L, B, Hkv, N] int32 (the stacked state's, read in place at `layer`);
num_chunks [B] int32 -> [B, Hkv, k] int32.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from .common import NEG_INF, compiler_params
from .top_k import INT_MIN, sortable, take_slots, threshold

# The largest row held in registers; longer rows run in tiles of this many slots.
MAX_TILE = 16384

# Score rows may be padded to a multiple of this many columns (landmark_scores' `width`): 16 fp32 columns keep every
# row's start 16-byte aligned, so the kernel loads them as vectors.
ROW_ALIGN = 16


def padded_width(n: int) -> int:
    """The width of n-column score rows padded for the selection kernel's vector loads."""
    return -(-n // ROW_ALIGN) * ROW_ALIGN


LOG2E = 1.4426950408889634


def _exp(x: jax.Array) -> jax.Array:
    """exp as one exp2 of x * log2(e): the Triton lowering takes jnp.exp to libdevice's expf (range reduction
    around the hardware exp2), and a program runs 65,536 of them a layer at G = 4 and 15,312 slots."""
    return jnp.exp2(x * LOG2E)


def _kernel(layer_ref, num_ref, s_ref, ids_ref, out_ref, *scratch, k: int, n: int, groups: int, tile: int):
    # layer_ref [1] int32; num_ref [B] int32; s_ref [B, Hkv, G, N] f32; ids_ref [L, B, Hkv, N] int32;
    # out_ref [B, Hkv, k] int32; scratch (rows of more than one tile): keys_ref [B, Hkv, N_pad] int32
    from jax.experimental.pallas import triton as plt

    b, h = pl.program_id(0), pl.program_id(1)
    layer, num = layer_ref[0], num_ref[b]
    n_tiles = -(-n // tile)
    lane = jax.lax.broadcasted_iota(jnp.int32, (tile,), 0)
    slots = lambda i: i * tile + lane
    in_row = lambda i: slots(i) < n

    def ids(i):
        return plt.load(ids_ref.at[layer, b, h, slots(i)], mask=in_row(i), other=0)

    def valid(i):  # slots of the row whose chunk is within the sequence
        return in_row(i) & (ids(i) < num)

    def logits(i, g, valid):
        # loaded up to the padded row's width (padded_width: 16-byte vector loads), the padding then masked
        x = plt.load(s_ref.at[b, h, g, slots(i)], mask=slots(i) < s_ref.shape[-1], other=NEG_INF)
        return jnp.where(valid, x, NEG_INF)

    def keys_from(i, score, valid):
        """Sortable keys of tile i from its scores: -1 on padding chunks, INT_MIN past the row."""
        return jnp.where(in_row(i), sortable(jnp.where(valid, score, -1.0)), INT_MIN)

    if n_tiles == 1:  # one load of each row: statistics, score and keys in registers
        v = valid(0)
        score = jnp.full((tile,), -1.0, jnp.float32)
        for g in range(groups):
            e = logits(0, g, v)
            e = _exp(e - jnp.max(e))
            score = jnp.maximum(score, e * (1.0 / jnp.sum(e)))  # one divide a row, not one a slot
        row = keys_from(0, score, v)
        keys = lambda i: row
    else:  # online softmax statistics over the tiles, then the keys staged in the scratch output
        (keys_ref,) = scratch

        def add_tile(i, stats):
            v = valid(i)
            out = []
            for g, (m, l) in enumerate(stats):
                x = logits(i, g, v)
                m_new = jnp.maximum(m, jnp.max(x))
                out.append((m_new, l * _exp(m - m_new) + jnp.sum(_exp(x - m_new))))
            return tuple(out)

        init = tuple((jnp.float32(NEG_INF), jnp.float32(0.0)) for _ in range(groups))
        stats = jax.lax.fori_loop(0, n_tiles, add_tile, init)

        def stage(i, _):
            v = valid(i)
            score = jnp.full((tile,), -1.0, jnp.float32)
            for g, (m, l) in enumerate(stats):
                score = jnp.maximum(score, _exp(logits(i, g, v) - m) * (1.0 / l))
            keys_ref[b, h, pl.ds(i * tile, tile)] = keys_from(i, score, v)
            return 0

        jax.lax.fori_loop(0, n_tiles, stage, 0)
        keys = lambda i: keys_ref[b, h, pl.ds(i * tile, tile)]

    t, ties_wanted = threshold(keys, n_tiles, k)

    def place(i, carry):
        slot, take, *carry = take_slots(keys(i), in_row(i), t, ties_wanted, *carry)
        # lanes not taken are masked: no write on the GPU, out of bounds (dropped) when interpreted
        plt.store(out_ref.at[b, h, jnp.where(take, slot, k)], ids(i), mask=take)
        return tuple(carry)

    jax.lax.fori_loop(0, n_tiles, place, (jnp.int32(0), jnp.int32(0)))


@functools.partial(jax.jit, static_argnames=("k", "tile", "num_warps", "interpret"))
def select_top_chunks(s: jax.Array, chunk_ids: jax.Array, num_chunks: jax.Array, k: int, layer=0, *,
                      tile: int = MAX_TILE, num_warps: int = 16, interpret: bool = False) -> jax.Array:
    """s [B, Hkv, G, N] landmark scores (or rows padded past N to padded_width(N), columns never used),
    chunk_ids [L, B, Hkv, N] (read at `layer`), num_chunks [B] -> the chunk ids [B, Hkv, k] of the k slots with
    the highest max-over-group softmax, in increasing slot order."""
    b, hkv, g, width = s.shape
    n = chunk_ids.shape[-1]
    if chunk_ids.ndim != 4 or chunk_ids.shape[1:3] != (b, hkv) or not n <= width < n + ROW_ALIGN:
        raise ValueError(f"chunk_ids shape {chunk_ids.shape} does not match scores {s.shape}: expected "
                         f"[L, {b}, {hkv}, N] with N the scores' width, or less by under {ROW_ALIGN} (padded rows)")
    if not 0 < k <= n:
        raise ValueError(f"k={k} must be in [1, {n}] (the selectable chunks)")
    if tile & (tile - 1):
        raise ValueError(f"tile={tile} must be a power of two")
    tile = min(tile, max(16, 1 << (n - 1).bit_length()))  # Triton blocks are powers of two
    n_tiles = -(-n // tile)
    out_shape = [jax.ShapeDtypeStruct((b, hkv, k), jnp.int32)]
    if n_tiles > 1:
        out_shape.append(jax.ShapeDtypeStruct((b, hkv, n_tiles * tile), jnp.int32))  # staged keys
    layer = jnp.reshape(layer, (1,)).astype(jnp.int32)
    out = pl.pallas_call(functools.partial(_kernel, k=k, n=n, groups=g, tile=tile), out_shape=out_shape,
                         grid=(b, hkv), interpret=interpret, compiler_params=compiler_params(interpret, num_warps, 1),
                         name="shadowkv_chunk_selection")(layer, num_chunks.astype(jnp.int32), s.astype(jnp.float32),
                                                          chunk_ids.astype(jnp.int32))
    return out[0]


def max_group_softmax(s: jax.Array, chunk_ids: jax.Array, num_chunks: jax.Array) -> jax.Array:
    """What the selection ranks, in jnp: s [B, Hkv, G, N], chunk_ids [B, Hkv, N] -> [B, Hkv, N], the max over the
    group of each head's softmax over the chunks within the sequence; -1 (below any probability) elsewhere."""
    valid = chunk_ids < num_chunks[:, None, None]
    s = jnp.where(valid[:, :, None], s, NEG_INF)
    return jnp.where(valid, jnp.max(jax.nn.softmax(s, axis=-1), axis=2), -1.0)


def select_top_chunks_reference(s: jax.Array, chunk_ids: jax.Array, num_chunks: jax.Array, k: int,
                                layer=0) -> jax.Array:
    """The same selection in jnp (max_group_softmax, lax.top_k), chunk ids in increasing slot order."""
    ids = jax.lax.dynamic_index_in_dim(chunk_ids, layer, 0, keepdims=False)
    score = max_group_softmax(s, ids, num_chunks)
    return jnp.take_along_axis(ids, jnp.sort(jax.lax.top_k(score, k)[1], axis=-1), axis=-1)
