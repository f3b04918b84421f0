"""Full-attention decode (one query token) straight from the stacked KV cache (Pallas, Triton lowering).

Flash-decoding: per (sequence b, KV head h, split s) a program walks its share of the cache in blocks
of T tokens, scores the G query heads of the group against each K block, keeps an online softmax and
accumulates V; `combine_splits` merges the splits. The kernel takes the whole cache [L, B, Hkv, S, D]
and the layer index, so no layer slice of the cache is ever copied; blocks at or past a sequence's
length are masked loads (no memory traffic), so a step reads each valid K/V byte once.
A split whose blocks are all past the length returns m = -1e30, l = 0 and weighs nothing.

Shapes: q [B, Hkv, G, D] (already scaled by 1/sqrt(D)); k, v [L, B, Hkv, S, D]; valid [B] (keys per
sequence). Limits of the Triton lowering: D a power of two, S a multiple of the block.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from .common import NEG_INF, compiler_params, dot as _dot, pad_groups, partials_shape

TARGET_PROGRAMS = 528  # ~4 programs per SM on an H100 (132 SMs)


def _kernel(layer_ref, valid_ref, q_ref, k_ref, v_ref, o_ref, m_ref, l_ref, *, block: int,
            blocks_per_split: int):
    from jax.experimental.pallas import triton as plt

    b, h, s = pl.program_id(0), pl.program_id(1), pl.program_id(2)
    layer = layer_ref[0]
    valid = valid_ref[b]
    q = q_ref[b, h]  # [Gp, D]
    gp, d = q.shape
    iota = jax.lax.broadcasted_iota(jnp.int32, (block,), 0)

    def body(i, carry):
        m, l, acc = carry
        start = (s * blocks_per_split + i) * block
        pos = start + iota
        live = pos < valid
        # masked loads: lanes past the sequence's length cost no memory traffic
        kb = plt.load(k_ref.at[layer, b, h, pl.ds(start, block), :], mask=live[:, None], other=0)
        vb = plt.load(v_ref.at[layer, b, h, pl.ds(start, block), :], mask=live[:, None], other=0)
        scores = jnp.where(live[None, :], _dot(q, kb.T), NEG_INF)  # [Gp, T]
        m_new = jnp.maximum(m, jnp.max(scores, axis=1))
        p = jnp.exp(scores - m_new[:, None])
        alpha = jnp.exp(m - m_new)
        acc = acc * alpha[:, None] + _dot(p.astype(vb.dtype), vb)
        return m_new, l * alpha + jnp.sum(p, axis=1), acc

    init = (jnp.full((gp,), NEG_INF, jnp.float32), jnp.zeros((gp,), jnp.float32), jnp.zeros((gp, d), jnp.float32))
    m, l, acc = jax.lax.fori_loop(0, blocks_per_split, body, init)
    o_ref[b, h, s] = acc
    m_ref[b, h, s] = m
    l_ref[b, h, s] = l


def plan(batch: int, kv_heads: int, capacity: int, block: int, num_splits: int | None = None) -> tuple[int, int]:
    """(num_splits, blocks_per_split): enough programs to fill the GPU, every split a whole number of blocks."""
    blocks = capacity // block
    if num_splits is None:
        num_splits = max(1, min(blocks, math.ceil(TARGET_PROGRAMS / (batch * kv_heads))))
    per = math.ceil(blocks / num_splits)
    return math.ceil(blocks / per), per


@functools.partial(jax.jit, static_argnames=("block", "num_splits", "num_warps", "num_stages", "interpret"))
def decode_attention_partials(q, k, v, valid, layer, *, block: int = 64, num_splits: int | None = None,
                              num_warps: int = 4, num_stages: int = 3, interpret: bool = False):
    """Partials (acc [B, Hkv, S, G, D], m [B, Hkv, S, G], l [B, Hkv, S, G]) of one decode step."""
    b, hkv, g, d = q.shape
    capacity = k.shape[3]
    if d & (d - 1):
        raise ValueError(f"head_dim={d} must be a power of two for the Pallas decode kernel")
    if capacity % block:
        raise ValueError(f"cache capacity={capacity} must be a multiple of block={block}")
    splits, per = plan(b, hkv, capacity, block, num_splits)
    qp, gp = pad_groups(q)
    kernel = functools.partial(_kernel, block=block, blocks_per_split=per)
    acc, m, l = pl.pallas_call(kernel, out_shape=partials_shape(b, hkv, splits, gp, d), grid=(b, hkv, splits),
                               interpret=interpret, compiler_params=compiler_params(interpret, num_warps, num_stages),
                               name="dense_decode_attention")(
        jnp.reshape(layer, (1,)).astype(jnp.int32), valid.astype(jnp.int32), qp, k, v)
    return acc[:, :, :, :g], m[:, :, :, :g], l[:, :, :, :g]


def combine_splits(partials) -> jax.Array:
    """acc, m, l over splits -> the normalised output [B, Hkv, G, D] (fp32)."""
    acc, m, l = partials
    top = jnp.max(m, axis=2, keepdims=True)
    scale = jnp.exp(m - top)  # splits with no valid key have m = -1e30 and weigh nothing
    num = jnp.sum(acc * scale[..., None], axis=2)
    den = jnp.sum(l * scale, axis=2)
    return num / den[..., None]


def decode_attention_reference(q, k, v, valid, layer, **unused) -> jax.Array:
    """Plain jnp of the same computation: [B, Hkv, G, D] (fp32)."""
    k_l = jax.lax.dynamic_index_in_dim(k, layer, 0, keepdims=False)  # [B, Hkv, S, D]
    v_l = jax.lax.dynamic_index_in_dim(v, layer, 0, keepdims=False)
    hi = jax.lax.Precision.HIGHEST
    s = jnp.einsum("bhgd,bhsd->bhgs", q, k_l, preferred_element_type=jnp.float32, precision=hi)
    live = jnp.arange(k.shape[3])[None, :] < valid[:, None]
    s = jnp.where(live[:, None, None], s, NEG_INF)
    p = jax.nn.softmax(s, axis=-1)
    return jnp.einsum("bhgs,bhsd->bhgd", p.astype(v.dtype), v_l, preferred_element_type=jnp.float32, precision=hi)
