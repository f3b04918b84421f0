"""The dense (full-attention) KV cache: one registered dataclass pytree for all layers.

Layout [L, B, Hkv, S, D]: a decode step reads one layer's [B, Hkv, S, D] block contiguously.
`lengths[b]` counts the valid tokens of sequence b; slots at or past it are never attended.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp

from .config import ModelConfig


@partial(jax.tree_util.register_dataclass, data_fields=("k", "v", "lengths"), meta_fields=())
@dataclasses.dataclass(frozen=True)
class KVCache:
    k: jax.Array  # [L, B, Hkv, S, D] post-RoPE keys
    v: jax.Array  # [L, B, Hkv, S, D]
    lengths: jax.Array  # [B] int32, valid tokens per sequence

    @classmethod
    def zeros(cls, config: ModelConfig, batch: int, capacity: int, dtype=None, num_layers=None) -> "KVCache":
        dtype = dtype or config.jnp_dtype
        shape = (num_layers or config.num_layers, batch, config.num_kv_heads, capacity, config.head_dim)
        return cls(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((batch,), jnp.int32))

    @property
    def capacity(self) -> int:  # S
        return self.k.shape[3]

    def nbytes(self) -> int:
        return sum(x.nbytes for x in jax.tree_util.tree_leaves(self))


@partial(jax.jit, donate_argnums=0)
def write_block(x: jax.Array, block: jax.Array, *start) -> jax.Array:
    """x[start...] := block (same rank as x), in place: a jit whose only work is a dynamic_update_slice of
    a donated buffer, which XLA does in place."""
    return jax.lax.dynamic_update_slice(x, block, start + (0,) * (x.ndim - len(start)))
