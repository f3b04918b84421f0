"""Bytes of a ShadowKV state, from the same shape declaration the state is built from.

GPU: A [n_c c, r] and W [Hkv, r, D] factors, landmarks, exact local + outlier + generated K/V,
small index arrays. Host (with value_placement "host"): the values of every chunk; "split": those of the
rows that are not on the device.
"""

from __future__ import annotations

import math

import numpy as np

from ..config import ModelConfig
from .config import ShadowKVConfig
from .state import state_shapes


def state_bytes(model: ModelConfig, cfg: ShadowKVConfig, context_len: int, batch: int = 1,
                placement: str = "host", device_rows: int = 0) -> dict:
    """{"device": bytes, "host": bytes, "by_field": {...}} of a state for `batch` prompts of
    `context_len` tokens. Divide by `batch` for per-sequence figures (all fields scale with B).
    placement "split": the values of `device_rows` of the rows on the device, the others on the host."""
    if placement not in ("host", "device", "split"):
        raise ValueError(f"placement={placement!r} must be 'host', 'device' or 'split'")
    if placement != "split":
        device_rows = batch if placement == "device" else 0
    elif not 0 <= device_rows <= batch:
        raise ValueError(f"device_rows={device_rows} must be in [0, batch={batch}]")
    shapes = state_shapes(model, cfg, batch, cfg.num_chunks(context_len))
    by_field = {}
    for name, spec in shapes.items():
        specs = spec.values() if isinstance(spec, dict) else [spec]
        by_field[name] = sum(math.prod(s) * np.dtype(d).itemsize for s, d in specs)
    host = by_field["values"] // batch * (batch - device_rows)  # every row's values are the same size
    return {"device": sum(by_field.values()) - host, "host": host, "by_field": by_field}


def full_attention_kv_bytes(model: ModelConfig, context_len: int, batch: int = 1) -> int:
    """Dense K and V of every layer, for comparison."""
    return (2 * model.num_layers * batch * model.num_kv_heads * context_len * model.head_dim
            * np.dtype(model.jnp_dtype).itemsize)
