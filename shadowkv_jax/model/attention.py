"""Attention back-ends plugged into each decoder layer.

A back-end is a small frozen (hashable) dataclass called once per layer as

    out, carry = backend(q, k, v, k_pre, carry=carry, layer=i, positions=pos, lengths=lens,
                         consts=consts)

with q [B, T, Hq, D] and k, v, k_pre [B, T, Hkv, D] (k post-RoPE, k_pre before RoPE). `carry` is
whatever state the back-end keeps across layers and steps (the dense `KVCache` here; ShadowKV's
state later) and `layer` the traced layer index inside the scan over layers. `consts` is read-only
state that is not carried (ShadowKV's offloaded values), so it is never copied or donated. Exposing k_pre is what
lets a ShadowKV prefill factor the pre-RoPE keys during the model's ordinary prefill.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from ..cache import KVCache

NEG_INF = -1e30  # finite, so a fully masked row would give a uniform softmax instead of NaN


def grouped_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """Exact softmax attention for GQA.

    q [B, T, Hq, D]; k, v [B, S, Hkv, D]; mask [B, T, S] (True = attend). Returns [B, T, Hq, D].
    Scores and softmax in fp32.
    """
    b, t, hq, d = q.shape
    hkv = k.shape[2]
    qg = q.reshape(b, t, hkv, hq // hkv, d)
    scores = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32)
    scores = scores / math.sqrt(d)
    scores = jnp.where(mask[:, None, None], scores, NEG_INF)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v, preferred_element_type=jnp.float32)
    return out.reshape(b, t, hq, d).astype(q.dtype)


def flash_supported(dtype, head_dim: int, platform: str | None = None) -> bool:
    """cuDNN's fused (flash) attention: GPU, bf16/fp16, head_dim a multiple of 8 up to 128."""
    platform = platform or jax.default_backend()
    return (platform == "gpu" and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16)
            and head_dim % 8 == 0 and head_dim <= 128)


def flash_available(q: jax.Array) -> bool:
    return flash_supported(q.dtype, q.shape[-1])


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, lengths: jax.Array,
                     block: int = 512) -> jax.Array:
    """Causal attention over a prompt with bounded memory.

    On GPU in bf16/fp16, cuDNN's flash attention (scores never materialised); elsewhere exact jnp
    in query blocks, so scores never exceed [B, Hq, block, T]. q [B, T, Hq, D]; k, v [B, T, Hkv, D];
    lengths [B] hide padding keys. Returns [B, T, Hq, D].
    """
    b, t = q.shape[:2]
    if flash_available(q):
        # padded query rows still see the valid keys before them, so they stay finite
        return jax.nn.dot_product_attention(q, k, v, is_causal=True, key_value_seq_lengths=lengths,
                                            implementation="cudnn")
    if t <= block:
        return grouped_attention(q, k, v, prompt_mask(t, lengths))
    pad = -t % block
    qp = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0)))
    nb = (t + pad) // block
    qb = jnp.moveaxis(qp.reshape(b, nb, block, *q.shape[2:]), 1, 0)  # [nb, B, block, Hq, D]
    key_idx = jnp.arange(t)

    def one(args):
        i, qi = args
        rows = i * block + jnp.arange(block)
        mask = (key_idx[None, :] <= rows[:, None])[None] & (key_idx[None, None, :] < lengths[:, None, None])
        return grouped_attention(qi, k, v, mask)

    out = jax.lax.map(one, (jnp.arange(nb), qb))  # [nb, B, block, Hq, D]
    return jnp.moveaxis(out, 0, 1).reshape(b, nb * block, *q.shape[2:])[:, :t]


def prompt_mask(t: int, lengths: jax.Array) -> jax.Array:
    """Causal mask [B, T, T] that also hides padding keys at or past each sequence's length."""
    idx = jnp.arange(t)
    causal = idx[None, :] <= idx[:, None]
    return causal[None] & (idx[None, None, :] < lengths[:, None, None])


@dataclasses.dataclass(frozen=True)
class CausalAttention:
    """Full causal attention over the given tokens, no cache (the plain forward pass)."""

    def __call__(self, q, k, v, k_pre, *, carry, layer, positions, lengths, consts=None):
        return causal_attention(q, k, v, lengths), carry


@dataclasses.dataclass(frozen=True)
class DensePrefill:
    """Causal attention over the prompt; writes its K/V to cache slots [0, T) of batch rows
    [row, row + B), where `row` is `consts` (0 if None): a batch can be prefilled a few rows at a time."""

    def __call__(self, q, k, v, k_pre, *, carry: KVCache, layer, positions, lengths, consts=None):
        out = causal_attention(q, k, v, lengths)
        # [B, T, Hkv, D] -> [1, B, Hkv, T, D] written at (layer, row, 0, 0, 0)
        kk = jnp.swapaxes(k, 1, 2)[None].astype(carry.k.dtype)
        vv = jnp.swapaxes(v, 1, 2)[None].astype(carry.v.dtype)
        start = (layer, 0 if consts is None else consts, 0, 0, 0)
        carry = dataclasses.replace(
            carry,
            k=jax.lax.dynamic_update_slice(carry.k, kk, start),
            v=jax.lax.dynamic_update_slice(carry.v, vv, start))
        return out, carry


DECODE_KERNEL_BLOCK = 64


@dataclasses.dataclass(frozen=True)
class DenseDecode:
    """One new token per sequence: write it at slot lengths[b], attend to slots [0, lengths[b]].

    implementation "pallas" reads K/V straight from the stacked cache with a flash-decoding kernel
    (kernels/decode_attention.py; `interpret` runs it on CPU); "xla" slices the layer and uses
    einsums; "auto" takes the kernel on GPU when the shapes allow it.
    """

    implementation: str = "auto"
    interpret: bool = False

    def resolved(self, head_dim: int = 128, capacity: int = DECODE_KERNEL_BLOCK) -> str:
        if self.implementation not in ("auto", "xla", "pallas"):
            raise ValueError(f"implementation={self.implementation!r} is not one of ('auto', 'xla', 'pallas')")
        fits = not head_dim & (head_dim - 1) and capacity % DECODE_KERNEL_BLOCK == 0
        if self.implementation == "pallas":
            if not fits:
                raise ValueError(f"implementation='pallas' needs a power-of-two head_dim (got {head_dim}) and a cache "
                                 f"capacity that is a multiple of {DECODE_KERNEL_BLOCK} (got {capacity})")
            return "pallas"
        if self.implementation == "auto" and jax.default_backend() == "gpu" and fits:
            return "pallas"
        return "xla"

    def __call__(self, q, k, v, k_pre, *, carry: KVCache, layer, positions, lengths, consts=None):
        b = q.shape[0]
        rows = jnp.arange(b)
        # advanced indices (layer, rows, lengths) -> the scattered slab is [B, Hkv, D]
        ck = carry.k.at[layer, rows, :, lengths].set(k[:, 0].astype(carry.k.dtype))
        cv = carry.v.at[layer, rows, :, lengths].set(v[:, 0].astype(carry.v.dtype))
        carry = dataclasses.replace(carry, k=ck, v=cv)
        if self.resolved(q.shape[-1], ck.shape[3]) == "pallas":
            from ..kernels.common import scaled_query_groups
            from ..kernels.decode_attention import combine_splits, decode_attention_partials

            hq, d = q.shape[2], q.shape[3]
            qs = scaled_query_groups(q[:, 0], ck.shape[2])
            partials = decode_attention_partials(qs, ck, cv, lengths + 1, layer, block=DECODE_KERNEL_BLOCK,
                                                 interpret=self.interpret)
            out = combine_splits(partials).reshape(b, hq, d).astype(q.dtype)
            return out[:, None], carry
        k_layer = jax.lax.dynamic_index_in_dim(ck, layer, 0, keepdims=False)  # [B, Hkv, S, D]
        v_layer = jax.lax.dynamic_index_in_dim(cv, layer, 0, keepdims=False)
        out = decode_attention(q[:, 0], k_layer, v_layer, lengths + 1)
        return out[:, None], carry


def decode_attention(q: jax.Array, k: jax.Array, v: jax.Array, valid: jax.Array) -> jax.Array:
    """q [B, Hq, D]; k, v [B, Hkv, S, D]; valid [B] keys per sequence. Returns [B, Hq, D]."""
    b, hq, d = q.shape
    hkv, s = k.shape[1], k.shape[2]
    qg = q.reshape(b, hkv, hq // hkv, d)
    scores = jnp.einsum("bkgd,bksd->bkgs", qg, k, preferred_element_type=jnp.float32) / math.sqrt(d)
    mask = jnp.arange(s)[None, :] < valid[:, None]  # [B, S]
    scores = jnp.where(mask[:, None, None], scores, NEG_INF)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgs,bksd->bkgd", probs, v, preferred_element_type=jnp.float32)
    return out.reshape(b, hq, d).astype(q.dtype)
