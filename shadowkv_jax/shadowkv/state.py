"""ShadowKVState: everything a ShadowKV decode needs, as one registered dataclass pytree.

Shapes (L layers, B batch, Hkv KV heads, D head dim, r rank, c chunk size, n_c chunk slots,
n_sel = n_c - n_out selectable chunks rounded up to a multiple of SELECT_ALIGN, k selected chunks,
W_loc local slots, N_gen generated slots):

    a             [L, B, n_c * c, r]       low-rank left factor, one row per chunked token
    w             [L, B, Hkv, r, D]        right factor viewed per head (basis shared by all heads)
    landmarks     [L, B, Hkv, n_sel, D]    mean post-RoPE key of each selectable chunk
    chunk_ids     [L, B, Hkv, n_sel]       chunk index of each landmark (outliers removed; n_c in the
                                           alignment slots, which are never valid and never selected)
    outlier_k/v   [L, B, Hkv, n_out * c, D] exact post-RoPE keys / values of the outlier chunks
    local_k/v     [L, B, Hkv, W_loc, D]    exact local window (last n_loc chunks + remainder)
    values        [L, B, Hkv, n_c, c, D]   values of every chunk, chunk-contiguous, at `placement`: one array
                                           ("host": pinned host memory, "device"), or "split": a SplitValues,
                                           the first rows on the host and the last ones on the device
    gen_k/v       [L, B, Hkv, N_gen, D]    generated tokens, exact (always attended)
    prompt_lengths, lengths, num_chunks, local_lengths  [B] int32
    prev_selection [L, B, Hkv, k]          chunk ids selected at the previous step (-1 before)
    value_cache   [L, B, Hkv, k, c, D]     their values, slot for slot (value_reuse; 0 slots without):
                                           chunks selected again are read from here, not from `values`
    step_metrics  {"hit_rate": [L]}         this step's fraction of selected chunks that were hits

Ragged batches: every sequence starts at position 0, so chunk j covers positions [j c, (j+1) c)
for all sequences; chunks at or past `num_chunks[b]` are padding and are never selected.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp

from ..config import ModelConfig
from ..kernels.common import SplitValues
from .config import ShadowKVConfig

# The selection's score product q . landmarks has the selectable-chunk axis as its N dimension. XLA pads a
# bf16 GEMM operand whose dimensions are not multiples of 8 (for the tensor cores) by copying it whole: at
# 122,880 tokens x batch 13 that was a 408 MB copy of every layer's landmarks, 9 ms of a 69 ms step on an
# H100 (profiled, BENCHMARKS.md). The state keeps the axis a multiple of 16 instead.
SELECT_ALIGN = 16


def selectable_slots(cfg: ShadowKVConfig, chunk_slots: int) -> int:
    """n_sel: the landmark slots of a state with `chunk_slots` chunks (n_c - n_out, aligned)."""
    n = chunk_slots - cfg.outlier_chunks
    return -(-n // SELECT_ALIGN) * SELECT_ALIGN

ARRAY_FIELDS = ("a", "w", "landmarks", "chunk_ids", "outlier_k", "outlier_v", "local_k", "local_v",
                "values", "gen_k", "gen_v", "prompt_lengths", "lengths", "num_chunks", "local_lengths",
                "prev_selection", "value_cache", "step_metrics")
STATIC_FIELDS = ("config", "placement")


@partial(jax.tree_util.register_dataclass, data_fields=ARRAY_FIELDS, meta_fields=STATIC_FIELDS)
@dataclasses.dataclass(frozen=True)
class ShadowKVState:
    a: jax.Array
    w: jax.Array
    landmarks: jax.Array
    chunk_ids: jax.Array
    outlier_k: jax.Array
    outlier_v: jax.Array
    local_k: jax.Array
    local_v: jax.Array
    values: jax.Array | SplitValues | None
    gen_k: jax.Array
    gen_v: jax.Array
    prompt_lengths: jax.Array
    lengths: jax.Array
    num_chunks: jax.Array
    local_lengths: jax.Array
    prev_selection: jax.Array
    value_cache: jax.Array
    step_metrics: dict
    config: ShadowKVConfig  # static
    placement: str  # static: where `values` lives, "host", "device" or "split" (SplitValues)

    def without_values(self) -> "ShadowKVState":
        """The part that decoding updates (values are read-only and travel separately)."""
        return dataclasses.replace(self, values=None)

    def nbytes_by_placement(self) -> dict[str, int]:
        """Bytes of this state on the accelerator ("device") and in host memory ("host")."""
        out = {"device": 0, "host": 0}
        for name in ARRAY_FIELDS:
            x = getattr(self, name)
            if name == "values" and isinstance(x, SplitValues):
                parts = [("host", x.host), ("device", x.device)]
            else:
                parts = [(self.placement if name == "values" else "device", leaf)
                         for leaf in jax.tree_util.tree_leaves(x)]
            for where, leaf in parts:
                out[where] += leaf.size * leaf.dtype.itemsize
        return out


def state_shapes(model: ModelConfig, cfg: ShadowKVConfig, batch: int, chunk_slots: int) -> dict:
    """name -> (shape, dtype) of every array field; the single declaration the rest derives from."""
    L, B, H, D = model.num_layers, batch, model.num_kv_heads, model.head_dim
    c, r, n_c = cfg.chunk_size, cfg.rank, chunk_slots
    n_out, k = cfg.outlier_chunks, cfg.selected_chunks
    n_sel = selectable_slots(cfg, n_c)
    dt, i32 = model.jnp_dtype, jnp.int32
    return {
        "a": ((L, B, n_c * c, r), dt),
        "w": ((L, B, H, r, D), dt),
        "landmarks": ((L, B, H, n_sel, D), dt),
        "chunk_ids": ((L, B, H, n_sel), i32),
        "outlier_k": ((L, B, H, n_out * c, D), dt),
        "outlier_v": ((L, B, H, n_out * c, D), dt),
        "local_k": ((L, B, H, cfg.local_capacity, D), dt),
        "local_v": ((L, B, H, cfg.local_capacity, D), dt),
        "values": ((L, B, H, n_c, c, D), dt),
        "gen_k": ((L, B, H, cfg.max_new_tokens, D), dt),
        "gen_v": ((L, B, H, cfg.max_new_tokens, D), dt),
        "prompt_lengths": ((B,), i32),
        "lengths": ((B,), i32),
        "num_chunks": ((B,), i32),
        "local_lengths": ((B,), i32),
        "prev_selection": ((L, B, H, k), i32),
        "value_cache": ((L, B, H, k if cfg.value_reuse else 0, c, D), dt),
        "step_metrics": {"hit_rate": ((L,), jnp.float32)},
    }


def empty_state(model: ModelConfig, cfg: ShadowKVConfig, batch: int, chunk_slots: int,
                placement: str = "device") -> ShadowKVState:
    """A zero-filled state (prev_selection = -1) of the right shapes, values on the device."""
    shapes = state_shapes(model, cfg, batch, chunk_slots)

    def make(name, spec):
        if name == "step_metrics":
            return {k: jnp.zeros(*v) for k, v in spec.items()}
        fill = -1 if name == "prev_selection" else 0
        return jnp.full(spec[0], fill, spec[1])

    return ShadowKVState(**{n: make(n, s) for n, s in shapes.items()}, config=cfg, placement=placement)


def host_sharding(device=None):
    device = device or jax.devices()[0]
    return jax.sharding.SingleDeviceSharding(device, memory_kind="pinned_host")


def value_array(values) -> jax.Array:
    """The batch's values as one array (a SplitValues' parts joined, on the device)."""
    if isinstance(values, SplitValues):
        dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        return jnp.concatenate([jax.device_put(values.host, dev), values.device], axis=1)
    return values


def device_value_rows(state: ShadowKVState) -> int:
    """How many of the batch's rows keep their values on the device."""
    if state.placement == "split":
        return state.values.device.shape[1]
    return state.values.shape[1] if state.placement == "device" else 0


def resolve_split(placement: str, batch: int, device_rows: int | None) -> tuple[str, int]:
    """(placement, device rows) as the values will be held: a "split" of no device rows is "host", of every row
    "device" (SplitValues has two non-empty parts); device_rows only with "split"."""
    if placement not in ("host", "device", "split"):
        raise ValueError(f"placement={placement!r} must be 'host', 'device' or 'split'")
    if placement != "split":
        if device_rows is not None:
            raise ValueError(f"device_rows={device_rows!r} is for placement='split' only (got {placement!r})")
        return placement, batch if placement == "device" else 0
    if not isinstance(device_rows, int) or not 0 <= device_rows <= batch:
        raise ValueError(f"device_rows={device_rows!r} must be an integer in [0, batch={batch}] for "
                         f"placement='split'")
    return {0: "host", batch: "device"}.get(device_rows, "split"), device_rows


def place_values(state: ShadowKVState, placement: str, device_rows: int | None = None) -> ShadowKVState:
    """Move `values` to pinned host memory ("host"), the accelerator ("device"), or "split": the last
    `device_rows` rows of the batch on the device, the others on the host (0 rows: "host"; every row:
    "device")."""
    values = value_array(state.values)
    batch = values.shape[1]
    placement, device_rows = resolve_split(placement, batch, device_rows)
    dev = jax.devices()[0]
    on_device = jax.sharding.SingleDeviceSharding(dev)
    if placement == "split":
        host_rows = batch - device_rows
        values = SplitValues(jax.device_put(values[:, :host_rows], host_sharding(dev)),
                             jax.device_put(values[:, host_rows:], on_device))
    else:
        values = jax.device_put(values, host_sharding(dev) if placement == "host" else on_device)
    return dataclasses.replace(state, values=values, placement=placement)
