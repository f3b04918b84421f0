"""Landmark scores of the chunk selection, read in place from the stacked landmarks (Pallas, Triton).

s[b, h, g, n] = scale * q[b, h, g] . landmarks[layer, b, h, n]   in fp32 (scale: 1/sqrt(D) in the selection,
applied in fp32 so q is not rounded again in bf16).

Why a kernel: inside the layer scan the layer's landmarks are a slice of the stacked [L, B, Hkv, n_sel, D]
array, and XLA copied that slice (408 MB per layer at 122,880 tokens x batch 13, first as a pad for the
tensor cores, then as a plain slice) before its batched GEMM: 9 ms of a 67 ms step on an H100. This
kernel takes the whole array and the layer index and reads each landmark once, in one tensor-core dot
per block of the query group (padded to 16 rows as it is loaded) against the block's landmarks. bf16 products are exact
in fp32 and accumulate in fp32; the scale is applied after, in fp32. An earlier form summed fp32
products row by row on the CUDA cores: 0.167 ms per layer at 122,880 tokens x 10 on an H200 against
0.110 for the dot (benchmarks/landmark_variants.py), which reads the 315 MB at the HBM rate.

Shapes: q [B, Hkv, G, D]; landmarks [L, B, Hkv, N, D]; layer int32 -> scores [B, Hkv, G, N] fp32 (or rows
padded past N, `width`, for the selection kernel's vector loads). A program may score several blocks in a
software-pipelined loop (`blocks`): with one block a program, each loaded its block and then waited for it.
Limits of the Triton lowering: D a power of two.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from .common import NEG_INF, compiler_params, dot, fast_exp, load_query_group, padded_groups


def _kernel(layer_ref, q_ref, lm_ref, *refs, n: int, block: int, blocks: int, groups_padded: int, scale: float,
            stats: bool):
    # layer_ref [1] int32; q_ref [B, Hkv, G, D] (loaded as Gp >= 16 rows); lm_ref [L, B, Hkv, N, D];
    # with stats: ids_ref [L, B, Hkv, N] int32, num_ref [B] int32 before the outputs, and m_ref, l_ref [B, Hkv, G, P]
    # after s_ref [B, Hkv, G, N] f32; program j scores rows [j * blocks * block, (j + 1) * blocks * block)
    from jax.experimental.pallas import triton as plt

    if stats:
        ids_ref, num_ref, s_ref, m_ref, l_ref = refs
    else:
        (s_ref,) = refs
    b, h, j = pl.program_id(0), pl.program_id(1), pl.program_id(2)
    layer = layer_ref[0]
    d = lm_ref.shape[-1]
    col = jax.lax.broadcasted_iota(jnp.int32, (1, d), 1)
    q = load_query_group(q_ref, b, h, groups_padded)  # [Gp, D], of the wider dtype of q and landmarks
    # padded query rows are masked: no write on the GPU, dropped as out of bounds when interpreted
    g = jax.lax.broadcasted_iota(jnp.int32, (groups_padded, 1), 0)
    real_g = g < q_ref.shape[2]

    def score_block(i, carry):
        rows = (j * blocks + i) * block + jax.lax.broadcasted_iota(jnp.int32, (block,), 0)
        in_row = rows < n
        lm = plt.load(lm_ref.at[layer, b, h, rows[:, None], col], mask=in_row[:, None], other=0)  # [T, D]
        s = dot(q, lm.astype(q.dtype).T) * scale  # [Gp, T] f32
        plt.store(s_ref.at[b, h, g, rows[None, :]], s, mask=real_g & in_row[None, :])
        if not stats:
            return carry
        # the softmax statistics over the slots whose chunk is within the sequence (the selection's mask), kept
        # per lane across the blocks and reduced once after them: no cross-thread reduction inside the loop
        m, l = carry
        ids = plt.load(ids_ref.at[layer, b, h, rows], mask=in_row, other=0)
        valid = (in_row & (ids < num_ref[b]))[None, :]
        m_new = jnp.maximum(m, jnp.where(valid, s, NEG_INF))
        e = jnp.where(valid, fast_exp(s - m_new), 0.0)
        return m_new, l * fast_exp(m - m_new) + e

    # without stats nothing is carried: the same loop as before the statistics existed
    init = (jnp.full((groups_padded, block), NEG_INF, jnp.float32),
            jnp.zeros((groups_padded, block), jnp.float32)) if stats else 0
    if blocks == 1:
        carry = score_block(0, init)
    else:  # a loop, so that the next blocks' loads are in flight (software-pipelined) during this block's dot
        carry = jax.lax.fori_loop(0, blocks, score_block, init)
    if stats:
        m_lane, l_lane = carry
        m = jnp.max(m_lane, axis=1, keepdims=True)
        l = jnp.sum(l_lane * fast_exp(m_lane - m), axis=1, keepdims=True)
        for ref, x in ((m_ref, m), (l_ref, l)):
            plt.store(ref.at[b, h, g, j + jnp.zeros((1, 1), jnp.int32)], x, mask=real_g)


# The decode step's launch (shadowkv/decode.select_chunks): programs of 4 blocks of 128 landmarks in a 2-stage
# pipelined loop, 4 warps. At 122,880 x 10 on an H200 (benchmarks/landmark_variants.py, 32 calls in a loop,
# 2026-12-02): 0.0897 ms per layer, against 0.0983 for one block per program (each program loaded its block, then
# waited for it: no load was in flight during its dot and store); 8 or 16 blocks in 3 stages 0.095-0.099.
DECODE_LAUNCH = {"block": 128, "blocks": 4, "num_warps": 4, "num_stages": 2}


@functools.partial(jax.jit, static_argnames=("scale", "block", "blocks", "num_warps", "num_stages", "width",
                                             "interpret"))
def landmark_scores(q: jax.Array, landmarks: jax.Array, layer, *, scale: float = 1.0, block: int = 128,
                    blocks: int = 1, num_warps: int = 4, num_stages: int = 1, width: int | None = None,
                    stats: tuple | None = None, interpret: bool = False):
    """q [B, Hkv, G, D], landmarks [L, B, Hkv, N, D], layer -> scale * q . landmarks [B, Hkv, G, width] fp32.

    `blocks`: blocks of `block` landmarks per program, in a loop of `num_stages` software-pipelining stages
    (1: one block per program, no loop). `width` (default N): the rows' width, N or more; columns past N are
    not written (e.g. rows padded to a multiple of 16, which the selection kernel then loads as vectors).
    `stats` = (chunk_ids [L, B, Hkv, N], num_chunks [B]): also each program's softmax statistics over its slots
    whose chunk is within the sequence, (m, l) [B, Hkv, G, P] with P the programs of a row (m the max, l the sum
    of exp(s - m); NEG_INF and 0 where a program has no such slot), returned as (scores, (m, l)): the split
    selection (kernels/chunk_selection.py) then needs no pass over a whole row for its softmax."""
    b, hkv, g, d = q.shape
    if landmarks.ndim != 5 or landmarks.shape[1:3] != (b, hkv) or landmarks.shape[-1] != d:
        raise ValueError(f"landmarks shape {landmarks.shape} does not match q {q.shape}: expected [L, {b}, {hkv}, N, {d}]")
    if d & (d - 1):
        raise ValueError(f"head_dim={d} must be a power of two for the Pallas kernel")
    n = landmarks.shape[3]
    width = n if width is None else width
    if width < n:
        raise ValueError(f"width={width} must be at least the landmarks' N={n}")
    layer = jnp.reshape(layer, (1,)).astype(jnp.int32)
    # the dot's operands share the wider of the two dtypes, so neither is rounded (landmarks cast per block)
    q = q.astype(jnp.promote_types(q.dtype, landmarks.dtype))
    if blocks < 1:
        raise ValueError(f"blocks={blocks} must be at least 1 (blocks of landmarks per program)")
    programs = pl.cdiv(n, block * blocks)
    out_shape = [jax.ShapeDtypeStruct((b, hkv, g, width), jnp.float32)]
    args = (layer, q, landmarks)
    if stats is not None:
        chunk_ids, num_chunks = stats
        if chunk_ids.shape != (landmarks.shape[0], b, hkv, n) or num_chunks.shape != (b,):
            raise ValueError(f"stats' chunk_ids {chunk_ids.shape} and num_chunks {num_chunks.shape} do not match the "
                             f"landmarks {landmarks.shape}: expected {(landmarks.shape[0], b, hkv, n)} and {(b,)}")
        out_shape += [jax.ShapeDtypeStruct((b, hkv, g, programs), jnp.float32)] * 2
        args += (chunk_ids.astype(jnp.int32), num_chunks.astype(jnp.int32))
    kernel = functools.partial(_kernel, n=n, block=block, blocks=blocks, groups_padded=padded_groups(g),
                               scale=float(scale), stats=stats is not None)
    out = pl.pallas_call(kernel, out_shape=out_shape, grid=(b, hkv, programs), interpret=interpret,
                         compiler_params=compiler_params(interpret, num_warps, num_stages),
                         name="shadowkv_landmark_scores")(*args)
    return out[0] if stats is None else (out[0], (out[1], out[2]))


def landmark_scores_reference(q: jax.Array, landmarks: jax.Array, layer, *, scale: float = 1.0) -> jax.Array:
    """The same scores with jnp: exact fp32 products of the layer's landmarks."""
    lm = jax.lax.dynamic_index_in_dim(landmarks, layer, 0, keepdims=False)
    return scale * jnp.einsum("bhgd,bhnd->bhgn", q.astype(jnp.float32), lm.astype(jnp.float32),
                              precision=jax.lax.Precision.HIGHEST)
