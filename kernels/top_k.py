"""Top-k of each row without sorting, and the threshold search the chunk selection kernel shares.

XLA's `lax.top_k` for k = 240 of 15,315 landmark scores sorts every row (bitonic, several passes over
memory per layer). Only the set of winners matters to a decode step, not their order, so this kernel finds
a threshold at the k-th largest value of a row by building it bit by bit (kth_largest_key: up to 32 counting
passes over the row, held in one program's registers up to 16,384 elements, in tiles beyond), then gives every
element its output slot (take_slots): elements above the threshold, and as many ties at it as still fit, lowest
index first (what `lax.top_k` keeps). A scatter in XLA places the indices. The result is the same set of indices
as `lax.top_k`, in increasing index order. The decode step uses the same search inside
kernels/chunk_selection.py, which also computes the scores it ranks and writes chunk ids itself.

Floats are compared through their "sortable" int32 images (sign-magnitude to two's complement), so
negative scores (e.g. -1 for padding chunks) rank correctly.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from .common import compiler_params

INT_MIN = -(2 ** 31)


def sortable(x: jax.Array) -> jax.Array:
    """fp32 -> int32 with the same order (for non-NaN values)."""
    bits = jax.lax.bitcast_convert_type(x, jnp.int32)
    return jnp.where(bits < 0, bits ^ jnp.int32(0x7FFFFFFF), bits)


def kth_largest_key(count_at_least, k: int) -> jax.Array:
    """A threshold key t of a row for its top k, given count_at_least(c) = how many of its keys are >= c:
    count(keys > t) <= k <= count(keys >= t), so the top k are the keys above t and the first ties at t.

    Built bit by bit: the sign first, then bits 30..0, each kept if at least k keys reach the candidate. The
    search stops as soon as exactly k keys reach the prefix (the top k are then the keys >= it, whatever the
    lower bits): on distinct scores, once the bits that separate the k-th largest key from the next are set.
    For k = 240 of 15,311 max-over-4 softmax scores of N(0, 0.58^2) logits (the bench's random weights) that
    took 12-25 of the 31 passes, 18 on average (a numpy model of the search, 200 rows). Ties across the k-th key
    run every pass, and t is then the k-th largest key itself."""
    at_zero = count_at_least(jnp.int32(0))
    reaches = at_zero >= k
    prefix = jnp.where(reaches, jnp.int32(0), jnp.int32(INT_MIN))
    count = jnp.where(reaches, at_zero, -1)  # below zero: not counted, never k (the search goes on)

    def add_bit(carry):
        j, p, n = carry
        cand = p | jnp.left_shift(jnp.int32(1), 30 - j)
        m = count_at_least(cand)
        keep = m >= k
        return j + 1, jnp.where(keep, cand, p), jnp.where(keep, m, n)

    def more(carry):
        j, _, n = carry
        return (j < 31) & (n != k)

    return jax.lax.while_loop(more, add_bit, (jnp.int32(0), prefix, count))[1]


def threshold(keys, n_tiles: int, k: int) -> tuple:
    """(t, ties_wanted) of a row whose sortable keys tile i has as keys(i): t from kth_largest_key, ties_wanted
    how many keys equal to t the top k takes (every one of them when the search stopped early). One tile: the
    row stays in registers and each counting pass is a reduction, no reload; more: each pass reloads the tiles."""
    if n_tiles == 1:
        row = keys(0)
        count = lambda pred: jnp.sum(pred(row).astype(jnp.int32))
    else:
        count = lambda pred: jax.lax.fori_loop(
            0, n_tiles, lambda i, acc: acc + jnp.sum(pred(keys(i)).astype(jnp.int32)), jnp.int32(0))
    t = kth_largest_key(lambda c: count(lambda key: key >= c), k)
    return t, k - count(lambda key: key > t)


def take_slots(key, in_row, t, ties_wanted, taken, ties):
    """Output slots of one tile's keys, given the threshold t: keys above it, then ties at it, lowest index
    first, while `ties_wanted` remain. Returns (slot [tile], take [tile], taken, ties) with the running counts
    of slots used and ties seen updated for the next tile.

    One prefix sum counts both the keys above t (low 16 bits) and the ties (high bits), so a tile holds fewer
    than 32,768 keys (the kernels' tiles hold at most 16,384). With a prefix sum for each, the slots took about a
    quarter of the selection kernel's samples (ncu, H200); with one, the landmark scores and the selection took
    0.1292 against 0.1328 ms a layer at 122,880 x 10 (bench_select, stage sel38)."""
    if key.shape[-1] >= 1 << 15:
        raise ValueError(f"a tile of {key.shape[-1]} keys is over the 32,767 that the packed prefix sum counts")
    tie = (key == t) & in_row
    above = key > t
    packed = above.astype(jnp.int32) + jnp.left_shift(tie.astype(jnp.int32), 16)
    running = jnp.cumsum(packed)  # inclusive: keys above t and ties up to each lane, within the tile
    above_upto, ties_upto = running & 0xFFFF, jnp.right_shift(running, 16)
    ties_taken = lambda seen: jnp.minimum(seen, ties_wanted)  # ties are taken lowest index first
    take = above | (tie & (ties + ties_upto <= ties_wanted))
    slot = taken + above_upto + ties_taken(ties + ties_upto) - ties_taken(ties) - 1
    total = jnp.sum(packed)
    above_all, ties_all = total & 0xFFFF, jnp.right_shift(total, 16)
    return slot, take, taken + above_all + ties_taken(ties + ties_all) - ties_taken(ties), ties + ties_all


def _kernel(x_ref, slot_ref, *, k: int, n: int, tile: int):
    # x_ref [1, N_pad] f32: one row, padded past n; slot_ref [1, N_pad] int32: each element's output slot, or k
    n_tiles = x_ref.shape[1] // tile
    lane = jax.lax.broadcasted_iota(jnp.int32, (tile,), 0)

    def keys(i):
        key = sortable(x_ref[0, pl.ds(i * tile, tile)].astype(jnp.float32))
        return jnp.where(i * tile + lane < n, key, INT_MIN)  # padding never outranks a real element

    t, ties_wanted = threshold(keys, n_tiles, k)

    def place(i, carry):
        slot, take, *carry = take_slots(keys(i), i * tile + lane < n, t, ties_wanted, *carry)
        slot_ref[0, pl.ds(i * tile, tile)] = jnp.where(take, slot, k)
        return tuple(carry)

    jax.lax.fori_loop(0, n_tiles, place, (jnp.int32(0), jnp.int32(0)))


@functools.partial(jax.jit, static_argnames=("k", "tile", "num_warps", "interpret"))
def top_k_indices(x: jax.Array, k: int, *, tile: int = 16384, num_warps: int = 8,
                  interpret: bool = False) -> jax.Array:
    """x [..., N] -> indices [..., k] of the k largest of each row (the set `lax.top_k` picks, ties to the
    lower index), in increasing index order."""
    *lead, n = x.shape
    if not 0 < k <= n:
        raise ValueError(f"k={k} must be in [1, {n}] (the row length)")
    rows = x.reshape(-1, n)
    r = rows.shape[0]
    n_pad = max(16, 1 << (n - 1).bit_length())  # Triton blocks are powers of two
    tile = min(tile, n_pad)
    rows = jnp.pad(rows.astype(jnp.float32), ((0, 0), (0, n_pad - n)))
    slots = pl.pallas_call(
        functools.partial(_kernel, k=k, n=n, tile=tile),
        out_shape=jax.ShapeDtypeStruct((r, n_pad), jnp.int32),
        grid=(r,),
        in_specs=[pl.BlockSpec((1, n_pad), lambda i: (i, 0))],
        out_specs=pl.BlockSpec((1, n_pad), lambda i: (i, 0)),
        interpret=interpret, compiler_params=compiler_params(interpret, num_warps, 1),
        name="shadowkv_top_k")(rows)
    # every row has exactly k slots taken; slot k collects the rest and is dropped
    out = jnp.zeros((r, k + 1), jnp.int32).at[jnp.arange(r)[:, None], slots].set(
        jnp.broadcast_to(jnp.arange(n_pad, dtype=jnp.int32), (r, n_pad)))
    return out[:, :k].reshape(*lead, k)


def top_k_indices_reference(x: jax.Array, k: int) -> jax.Array:
    """The same set from `lax.top_k`, in increasing index order."""
    return jnp.sort(jax.lax.top_k(x, k)[1], axis=-1)
