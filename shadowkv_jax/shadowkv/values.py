"""Gathering the selected value chunks, wherever the values live (the jnp reference route).

Values are [L, B, Hkv, n_c, c, D], chunk-contiguous, so a selection is a gather of whole
[c, D] blocks. On the device this is a plain gather. In `pinned_host` memory, XLA will not run a
device gather over a host operand, so the gather runs as a host computation
(`compute_on("device_host")`) and only the selected blocks cross to the device.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _gather(layer_values: jax.Array, chunk_ids: jax.Array) -> jax.Array:
    # layer_values [B, Hkv, n_c, c, D], chunk_ids [B, Hkv, k] -> [B, Hkv, k, c, D]
    return jnp.take_along_axis(layer_values, chunk_ids[..., None, None], axis=2,
                               mode="promise_in_bounds")


def gather_values(values: jax.Array, layer, chunk_ids: jax.Array, placement: str) -> jax.Array:
    """values [L, B, Hkv, n_c, c, D] at `placement`, chunk_ids [B, Hkv, k] -> [B, Hkv, k, c, D] on device."""
    if placement == "device":
        return _gather(jax.lax.dynamic_index_in_dim(values, layer, 0, keepdims=False), chunk_ids)
    from jax.experimental.compute_on import compute_on

    host = jax.memory.Space.Host
    ids_h, layer_h = jax.device_put(chunk_ids, host), jax.device_put(layer, host)
    with compute_on("device_host"):
        picked = _gather(jax.lax.dynamic_index_in_dim(values, layer_h, 0, keepdims=False), ids_h)
    return jax.device_put(picked, jax.memory.Space.Device)
