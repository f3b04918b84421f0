"""Gathering the selected value chunks, wherever the values live (the jnp reference route).

Values are [L, B, Hkv, n_c, c, D], chunk-contiguous, so a selection is a gather of whole
[c, D] blocks. On the device this is a plain gather. In `pinned_host` memory, XLA will not run a
device gather over a host operand, so the gather runs as a host computation
(`compute_on("device_host")`) and only the selected blocks cross to the device.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp


def _gather(layer_values: jax.Array, chunk_ids: jax.Array) -> jax.Array:
    # layer_values [B, Hkv, n_c, c, D], chunk_ids [B, Hkv, k] -> [B, Hkv, k, c, D]
    return jnp.take_along_axis(layer_values, chunk_ids[..., None, None], axis=2,
                               mode="promise_in_bounds")


def _host_transform():
    """`compute_on` as a function transform: named `compute_on2` in jax 0.10, `compute_on` in 0.11."""
    from jax.experimental import compute_on as co

    return getattr(co, "compute_on2", None) or co.compute_on


def _gather_layer(values: jax.Array, layer, chunk_ids: jax.Array, row: int = 0) -> jax.Array:
    rows = jax.lax.dynamic_index_in_dim(values, layer, 0, keepdims=False)[row:row + chunk_ids.shape[0]]
    return _gather(rows, chunk_ids)


def gather_values(values, layer, chunk_ids: jax.Array, placement: str, row: int = 0) -> jax.Array:
    """values [L, >= row + B, Hkv, n_c, c, D] at `placement` ("host", "device", or "split": a SplitValues
    whose first rows are on the host), chunk_ids [B, Hkv, k] -> [B, Hkv, k, c, D] on device: sequence i's
    chunks from values row `row + i`."""
    from ..kernels.common import SplitValues, check_value_rows, row_pieces

    check_value_rows(values, chunk_ids.shape[0], chunk_ids.shape[1], row)
    if isinstance(values, SplitValues):  # each part gathers its own rows of the batch
        parts = [gather_values(x, layer, chunk_ids[lo:hi], "host" if x is values.host else "device", first)
                 for x, first, lo, hi in row_pieces(values, row, chunk_ids.shape[0])]
        return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=0)
    if placement == "device":
        return _gather_layer(values, layer, chunk_ids, row)
    host = jax.memory.Space.Host
    on_host = _host_transform()(partial(_gather_layer, row=row), compute_type="device_host",
                                out_memory_spaces=jax.memory.Space.Device)
    return on_host(values, jax.device_put(layer, host), jax.device_put(chunk_ids, host))
