"""Top-k of each row without sorting, and the threshold search the chunk selection kernel shares.

XLA's `lax.top_k` for k = 240 of 15,315 landmark scores sorts every row (bitonic, several passes over
memory per layer). Only the set of winners matters to a decode step, not their order, so this kernel finds
a threshold at the k-th largest value of a row by building it two bits at a time (kth_largest_key: a counting
pass over the row for each, held in one program's registers up to 16,384 elements, in tiles beyond), then gives every
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
INT_MAX = 2 ** 31 - 1


def sortable(x: jax.Array) -> jax.Array:
    """fp32 -> int32 with the same order (for non-NaN values)."""
    bits = jax.lax.bitcast_convert_type(x, jnp.int32)
    return jnp.where(bits < 0, bits ^ jnp.int32(0x7FFFFFFF), bits)


# A counting pass of the threshold search counts three candidates at once, in 10-bit fields of one int32 sum,
# once fewer than this many keys are left in the search's interval.
PACKED_BELOW = 1 << 10


def kth_largest_key(count, n: int, k: int, lowest: jax.Array, upper: jax.Array):
    """(t, ties_wanted) for the top k of a row of n keys (int32), given `count(f)` = sum over the row of f(key)
    (an int32 per key), its lowest key and a key `upper` at or above its highest.

    Radix search from the top bit down, over the interval [p, p + 2^pos) that holds the k-th largest key:
    it starts as the bits `lowest` and `upper` share (no pass spent on bits every key has), and each pass counts the
    keys at or above 1, 2 and 3 quarters of it (two bits a pass; a bit a pass while the interval still holds
    PACKED_BELOW keys or more, the counts then too wide for the 10-bit fields). Counts of keys are kept
    relative to the interval: m_p keys are >= p, m_hi >= its top, and m_hi < k <= m_p throughout. The search stops
    once exactly k keys reach p (the top k are then the keys >= p, whatever the lower bits) or at the last bit.
    For k = 240 of 15,360 max-over-4 softmax scores of N(0, s^2) logits that takes 9-11 passes on average
    for s from 0.58 to 3 (a numpy model of it, 100 rows each), against 17-20 one bit a pass from the sign.

    Returns t and ties_wanted such that the top k are the keys above t and the first ties_wanted keys equal
    to it: on an early stop t = p - 1 with no ties; otherwise t is the k-th largest key itself."""
    if k == n:  # every key: no search (and p - 1 below cannot wrap)
        return jnp.int32(INT_MIN), k - count(lambda key: (key > INT_MIN).astype(jnp.int32))
    pos = 32 - jax.lax.clz(lowest ^ upper)  # 32: the two differ in sign, nothing shared
    shift = jnp.minimum(pos, 31)  # shifts of 32 bits are undefined in the Triton lowering
    p = jnp.where(pos == 32, jnp.int32(INT_MIN), jnp.left_shift(jnp.right_shift(lowest, shift), shift))

    def step(carry):
        pos, p, m_p, m_hi = carry
        two = (m_p - m_hi < PACKED_BELOW) & (pos >= 2) & (pos < 32)
        width = 1 + two.astype(jnp.int32)
        s = pos - width  # the digit is bits [s, pos)
        top = jnp.minimum(pos, 31)
        sign = pos == 32  # the first bit of the whole range: the digit is 1 for keys >= 0

        def quarters(key):
            inside = sign | (jnp.right_shift(key, top) == jnp.right_shift(p, top))
            digit = jnp.where(sign, (key >= 0).astype(jnp.int32),
                              jnp.right_shift(key, s) & (jnp.left_shift(1, width) - 1))
            packed = ((digit >= 1).astype(jnp.int32) + jnp.left_shift((digit >= 2).astype(jnp.int32), 10)
                      + jnp.left_shift((digit >= 3).astype(jnp.int32), 20))
            return jnp.where(inside, packed, 0)

        total = count(quarters)
        mask = PACKED_BELOW - 1
        field = lambda j: jnp.where(two, jnp.right_shift(total, 10 * j) & mask, total if j == 0 else 0)
        m = [m_p] + [m_hi + field(j) for j in range(3)] + [m_hi]  # keys >= p + j quarters (m[4]: the top)
        digit = sum((m[j] >= k).astype(jnp.int32) for j in (1, 2, 3))
        pick = lambda j: functools.reduce(lambda acc, i: jnp.where(digit == i, m[i + j], acc), range(4), m[j])
        p = jnp.where(sign, jnp.where(digit == 1, 0, jnp.int32(INT_MIN)), p | jnp.left_shift(digit, s))
        return s, p, pick(0), pick(1)

    more = lambda carry: (carry[0] > 0) & (carry[2] != k)
    _, p, m_p, m_hi = jax.lax.while_loop(more, step, (pos, p, jnp.int32(n), jnp.int32(0)))
    early = m_p == k
    return jnp.where(early, p - 1, p), jnp.where(early, 0, k - m_hi)


def threshold(keys, n_tiles: int, k: int, n: int, in_row=None, upper=None) -> tuple:
    """(t, ties_wanted) of a row of n keys whose tile i has sortable keys keys(i) (and in_row(i): which of its
    lanes are in the row; None: all of them): the top k are the keys above t and the first ties_wanted keys
    equal to it. `upper`: a key at or above every key of the row (None: the row's highest, one more reduction).
    One tile: the row stays in registers and each counting pass is a reduction, no reload; more: each pass
    reloads the tiles."""
    inside = (lambda i: True) if in_row is None else in_row

    def reduce(op, combine, init, f):  # op over the row of f(i), tile by tile
        if n_tiles == 1:
            return op(f(0))
        return jax.lax.fori_loop(0, n_tiles, lambda i, acc: combine(acc, op(f(i))), init)

    lowest = reduce(jnp.min, jnp.minimum, jnp.int32(INT_MAX), lambda i: jnp.where(inside(i), keys(i), INT_MAX))
    if upper is None:
        upper = reduce(jnp.max, jnp.maximum, jnp.int32(INT_MIN), lambda i: jnp.where(inside(i), keys(i), INT_MIN))
    count = lambda f: reduce(jnp.sum, jnp.add, jnp.int32(0), lambda i: jnp.where(inside(i), f(keys(i)), 0))
    return kth_largest_key(count, n, k, lowest, upper)


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

    in_row = lambda i: i * tile + lane < n
    t, ties_wanted = threshold(keys, n_tiles, k, n, in_row)

    def place(i, carry):
        slot, take, *carry = take_slots(keys(i), in_row(i), t, ties_wanted, *carry)
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
