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

from .common import NEG_INF, block_size, compiler_params, fast_exp
from .top_k import INT_MIN, sortable, take_slots, threshold

# The largest row held in registers; longer rows run in tiles of this many slots.
MAX_TILE = 16384

# Score rows may be padded to a multiple of this many columns (landmark_scores' `width`): 16 fp32 columns keep every
# row's start 16-byte aligned, so the kernel loads them as vectors.
ROW_ALIGN = 16


def padded_width(n: int) -> int:
    """The width of n-column score rows padded for the selection kernel's vector loads."""
    return -(-n // ROW_ALIGN) * ROW_ALIGN


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
            e = fast_exp(e - jnp.max(e))
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
                out.append((m_new, l * fast_exp(m - m_new) + jnp.sum(fast_exp(x - m_new))))
            return tuple(out)

        init = tuple((jnp.float32(NEG_INF), jnp.float32(0.0)) for _ in range(groups))
        stats = jax.lax.fori_loop(0, n_tiles, add_tile, init)

        def stage(i, _):
            v = valid(i)
            score = jnp.full((tile,), -1.0, jnp.float32)
            for g, (m, l) in enumerate(stats):
                score = jnp.maximum(score, fast_exp(logits(i, g, v) - m) * (1.0 / l))
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
    tile = min(tile, block_size(n))
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


# The decode step's rule for the split selection (shadowkv/decode.select_chunks): below SPLIT_BELOW_ROWS (b, h)
# rows, each row over a power of two of slices so that the rows fill SELECTION_PROGRAMS programs; one program a
# row (select_top_chunks) from there on. At 122,880 tokens on an H200 (bench_select, landmark scores with the
# selection, ms a layer, 2026-12-03): 40 rows (x 5) 0.0900 one program a row, 0.0803 in 4 slices; 80 rows (x 10)
# 0.1321 against 0.1470 in 2 slices and 0.1314 in 8. The step at 122,880 x 5: on an H100 (2026-12-07, device stage
# h100d) 10.41 and 10.43 ms against 10.50 and 10.46 with one program a row; on an H200 at most 1.2% faster.
SELECTION_PROGRAMS = 128
SPLIT_BELOW_ROWS = 64


def selection_splits(rows: int, programs: int = SELECTION_PROGRAMS, below: int = SPLIT_BELOW_ROWS) -> int:
    """Slices a row of the selection for `rows` (b, h) pairs: 1 (the one-kernel selection) from `below` rows
    on, else the smallest power of two with which the rows fill `programs`."""
    splits = 1
    while rows < below and rows * splits < programs:
        splits *= 2
    return splits


def _split_kernel(layer_ref, num_ref, s_ref, m_ref, l_ref, ids_ref, key_ref, cand_ref, *, k: int, n: int,
                  groups: int, width: int, parts: int):
    # phase 1 of the split selection, program (b, h, j): the top k of slots [j * width, (j + 1) * width) of the
    # row, by the same scores as _kernel with the row's softmax statistics combined from the landmark kernel's
    # parts (m_ref, l_ref [B, Hkv, G, P]). Writes their keys and chunk ids in slot order to key_ref, cand_ref
    # [B, Hkv, S, k], and INT_MIN keys past them when the slice holds fewer than k slots of the row.
    from jax.experimental.pallas import triton as plt

    b, h, j = pl.program_id(0), pl.program_id(1), pl.program_id(2)
    layer, num = layer_ref[0], num_ref[b]
    slots = j * width + jax.lax.broadcasted_iota(jnp.int32, (width,), 0)
    in_row = slots < n
    ids = plt.load(ids_ref.at[layer, b, h, slots], mask=in_row, other=0)
    valid = in_row & (ids < num)
    part = jax.lax.broadcasted_iota(jnp.int32, (parts,), 0)
    in_parts = part < m_ref.shape[-1]
    score = jnp.full((width,), -1.0, jnp.float32)
    for g in range(groups):
        m_p = plt.load(m_ref.at[b, h, g, part], mask=in_parts, other=NEG_INF)
        l_p = plt.load(l_ref.at[b, h, g, part], mask=in_parts, other=0.0)
        m = jnp.max(m_p)
        inv_l = 1.0 / jnp.sum(l_p * fast_exp(m_p - m))
        x = plt.load(s_ref.at[b, h, g, slots], mask=slots < s_ref.shape[-1], other=NEG_INF)
        score = jnp.maximum(score, fast_exp(jnp.where(valid, x, NEG_INF) - m) * inv_l)
    key = jnp.where(in_row, sortable(jnp.where(valid, score, -1.0)), INT_MIN)
    t, ties_wanted = threshold(lambda i: key, 1, k)
    slot, take, taken, _ = take_slots(key, in_row, t, ties_wanted, jnp.int32(0), jnp.int32(0))
    at = jnp.where(take, slot, k)  # lanes not taken: masked (dropped as out of bounds when interpreted)
    plt.store(key_ref.at[b, h, j, at], key, mask=take)
    plt.store(cand_ref.at[b, h, j, at], ids, mask=take)
    rest = jax.lax.broadcasted_iota(jnp.int32, (block_size(k),), 0)  # positions [taken, k): none of the row's slots
    plt.store(key_ref.at[b, h, j, rest], jnp.full(rest.shape, INT_MIN, jnp.int32), mask=(rest >= taken) & (rest < k))


def _merge_kernel(key_ref, cand_ref, out_ref, *, k: int, size: int):
    # phase 2, program (b, h): the top k of the S * k candidates (key_ref, cand_ref [B, Hkv, S * k], in slot
    # order: slices in order, each in slot order, so ties still go to the lower slot), their chunk ids to out_ref
    from jax.experimental.pallas import triton as plt

    b, h = pl.program_id(0), pl.program_id(1)
    pos = jax.lax.broadcasted_iota(jnp.int32, (size,), 0)
    real = pos < key_ref.shape[-1]
    key = plt.load(key_ref.at[b, h, pos], mask=real, other=INT_MIN)
    t, ties_wanted = threshold(lambda i: key, 1, k)
    slot, take, _, _ = take_slots(key, real, t, ties_wanted, jnp.int32(0), jnp.int32(0))
    ids = plt.load(cand_ref.at[b, h, pos], mask=real, other=0)
    plt.store(out_ref.at[b, h, jnp.where(take, slot, k)], ids, mask=take)


def split_slice_width(n: int, splits: int, k: int) -> int:
    """The slots a program of the split selection takes: a power of two of at least k, at most MAX_TILE,
    with `splits` of them covering the N slots where that fits those bounds."""
    return min(MAX_TILE, max(block_size(-(-n // splits)), block_size(k)))


@functools.partial(jax.jit, static_argnames=("k", "splits", "num_warps", "merge_warps", "interpret"))
def select_top_chunks_split(s: jax.Array, stats: tuple, chunk_ids: jax.Array, num_chunks: jax.Array, k: int,
                            layer=0, *, splits: int, num_warps: int = 8, merge_warps: int = 4,
                            interpret: bool = False) -> jax.Array:
    """select_top_chunks in two kernels for rows spread over more programs than (b, h) pairs: the row's `splits`
    slices' top k each (the global top k is within their union: a slot outside its slice's top k has k slots
    of its slice at or above it), then the top k of those S * k candidates. The softmax statistics come in
    parts from the landmark kernel (`stats` = (m, l) [B, Hkv, G, P], landmark_scores(stats=...)), so neither
    kernel reads a whole row of scores. Same shapes, result and order as select_top_chunks."""
    b, hkv, g, width_s = s.shape
    n = chunk_ids.shape[-1]
    m, l = stats
    if chunk_ids.ndim != 4 or chunk_ids.shape[1:3] != (b, hkv) or not n <= width_s < n + ROW_ALIGN:
        raise ValueError(f"chunk_ids shape {chunk_ids.shape} does not match scores {s.shape}: expected "
                         f"[L, {b}, {hkv}, N] with N the scores' width, or less by under {ROW_ALIGN} (padded rows)")
    if m.shape != l.shape or m.shape[:3] != (b, hkv, g):
        raise ValueError(f"stats' shapes {m.shape}, {l.shape} do not match scores {s.shape}: "
                         f"expected [{b}, {hkv}, {g}, P]")
    if not 0 < k <= n:
        raise ValueError(f"k={k} must be in [1, {n}] (the selectable chunks)")
    if splits < 1:
        raise ValueError(f"splits={splits} must be at least 1")
    width = split_slice_width(n, splits, k)
    parts = -(-n // width)  # slices with slots of the row
    layer = jnp.reshape(layer, (1,)).astype(jnp.int32)
    keys, cands = pl.pallas_call(
        functools.partial(_split_kernel, k=k, n=n, groups=g, width=width, parts=block_size(m.shape[-1])),
        out_shape=[jax.ShapeDtypeStruct((b, hkv, parts, k), jnp.int32)] * 2, grid=(b, hkv, parts),
        interpret=interpret, compiler_params=compiler_params(interpret, num_warps, 1),
        name="shadowkv_chunk_selection_split")(layer, num_chunks.astype(jnp.int32), s.astype(jnp.float32),
                                               m.astype(jnp.float32), l.astype(jnp.float32),
                                               chunk_ids.astype(jnp.int32))
    flat = lambda x: x.reshape(b, hkv, parts * k)
    return pl.pallas_call(
        functools.partial(_merge_kernel, k=k, size=block_size(parts * k)),
        out_shape=jax.ShapeDtypeStruct((b, hkv, k), jnp.int32), grid=(b, hkv), interpret=interpret,
        compiler_params=compiler_params(interpret, merge_warps, 1),
        name="shadowkv_chunk_selection_merge")(flat(keys), flat(cands))


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
