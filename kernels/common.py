"""Pieces both Pallas kernels share: fp32-accumulated dots, query-group padding, Triton compiler
parameters and the shape of flash-decoding partials."""

from __future__ import annotations

import dataclasses
import math
from functools import partial

import jax
import jax.numpy as jnp

NEG_INF = -1e30  # finite, so a fully masked row gives zeros rather than NaN

LOG2E = 1.4426950408889634


def fast_exp(x: jax.Array) -> jax.Array:
    """exp as one exp2 of x * log2(e): the Triton lowering takes jnp.exp to libdevice's expf (range reduction
    around the hardware exp2), and the selection runs 65,536 of them a layer at G = 4 and 15,312 slots."""
    return jnp.exp2(x * LOG2E)


def dot(x, y):
    """fp32 accumulation; fp32 inputs get full fp32 products (no TF32), so fp32 results check tightly."""
    prec = jax.lax.Precision.HIGHEST if x.dtype == jnp.float32 else None
    return jnp.dot(x, y, preferred_element_type=jnp.float32, precision=prec)


def scaled_query_groups(q: jax.Array, kv_heads: int) -> jax.Array:
    """q [B, Hq, D] -> q / sqrt(D) as [B, Hkv, G, D] in q's dtype (scaled in fp32): the decode kernels'
    query layout, one row of G query heads per KV head."""
    b, hq, d = q.shape
    return (q.astype(jnp.float32) / math.sqrt(d)).astype(q.dtype).reshape(b, kv_heads, hq // kv_heads, d)


def block_size(x: int) -> int:
    """The smallest power of two >= x, at least 16: a Triton block that holds x."""
    return max(16, 1 << (x - 1).bit_length())


def padded_groups(g: int) -> int:
    """Rows of a query group as the kernels' dots take it: a power of two >= 16."""
    return block_size(g)


def pad_groups(q: jax.Array) -> tuple[jax.Array, int]:
    """q [B, Hkv, G, D] -> (q padded to Gp >= 16 rows, Gp): Triton dots need at least 16 rows."""
    g = q.shape[2]
    gp = padded_groups(g)
    return jnp.pad(q, ((0, 0), (0, 0), (0, gp - g), (0, 0))), gp


def load_query_group(q_ref, b, h, rows: int, cols: tuple[int, int] | None = None) -> jax.Array:
    """q_ref [B, Hkv, G, D] -> [rows, D] of (b, h), rows >= G zero: the padding Triton dots need (>= 16 rows),
    done in the load instead of an XLA pad before the launch (a kernel of its own on the step's critical path).
    cols = (offset, size): only those head dims, [rows, size]."""
    from jax.experimental.pallas import triton as plt

    off, size = (0, q_ref.shape[-1]) if cols is None else cols
    g = jax.lax.broadcasted_iota(jnp.int32, (rows, 1), 0)
    col = off + jax.lax.broadcasted_iota(jnp.int32, (1, size), 1)
    return plt.load(q_ref.at[b, h, g, col], mask=g < q_ref.shape[2], other=0)


def compiler_params(interpret: bool, num_warps: int, num_stages: int):
    """The Triton lowering's parameters (which also makes Pallas pick Triton, not Mosaic GPU)."""
    if interpret:
        return None
    from jax.experimental.pallas import triton as plt

    return plt.CompilerParams(num_warps=num_warps, num_stages=num_stages)


def partials_shape(b: int, hkv: int, splits: int, gp: int, d: int) -> tuple:
    """(acc [B, Hkv, S, Gp, D], m [B, Hkv, S, Gp], l [B, Hkv, S, Gp]), all fp32."""
    return (jax.ShapeDtypeStruct((b, hkv, splits, gp, d), jnp.float32),
            jax.ShapeDtypeStruct((b, hkv, splits, gp), jnp.float32),
            jax.ShapeDtypeStruct((b, hkv, splits, gp), jnp.float32))


@partial(jax.tree_util.register_dataclass, data_fields=("host", "device"), meta_fields=())
@dataclasses.dataclass(frozen=True)
class SplitValues:
    """A batch's values in two arrays, both [L, rows, Hkv, n_c, c, D]: rows [0, H) of the batch in `host`
    (pinned host memory on a GPU, read over PCIe), rows [H, B) in `device` (HBM). The GPU memory a ShadowKV
    state leaves free holds whole sequences' values, so host RAM no longer bounds the batch alone and those
    rows cost no PCIe bytes. `shape` and `dtype` are the whole batch's, as if one array."""

    host: jax.Array
    device: jax.Array

    def __post_init__(self):
        h, d = self.host, self.device
        if isinstance(h, jax.Array) and isinstance(d, jax.Array):  # not when JAX rebuilds it from tracers etc.
            if h.ndim != 6 or h.shape[:1] + h.shape[2:] != d.shape[:1] + d.shape[2:] or h.dtype != d.dtype:
                raise ValueError(f"SplitValues parts must match but for their rows: host {h.shape} {h.dtype}, "
                                 f"device {d.shape} {d.dtype}")

    @property
    def host_rows(self) -> int:
        return self.host.shape[1]

    @property
    def shape(self) -> tuple:
        h = self.host.shape
        return h[:1] + (h[1] + self.device.shape[1],) + h[2:]

    @property
    def ndim(self) -> int:
        return 6

    @property
    def dtype(self):
        return self.host.dtype


def value_parts(values) -> tuple:
    """(arrays, rows in the first): (values,), None for one array; (host, device), H for SplitValues."""
    if isinstance(values, SplitValues):
        return (values.host, values.device), values.host_rows
    return (values,), None


def row_pieces(values, row: int, batch: int) -> list[tuple]:
    """Where batch rows [row, row + batch) live: (array, its first row, sequences lo, hi) per array that holds
    some of them, in sequence order (one piece for one array; one or two for SplitValues)."""
    arrays, host_rows = value_parts(values)
    if host_rows is None:
        return [(arrays[0], row, 0, batch)]
    cut = min(max(host_rows - row, 0), batch)  # sequences [0, cut) are host rows
    pieces = [(arrays[0], row, 0, cut)] if cut else []
    return pieces + ([(arrays[1], row + cut - host_rows, cut, batch)] if cut < batch else [])


def value_rows(values, layer, row: int, batch: int) -> jax.Array:
    """Layer `layer`'s values of batch rows [row, row + batch) as one [batch, Hkv, n_c, c, D] array (jnp; for
    references and device-resident values: a SplitValues' host part is read with ordinary indexing)."""
    at = lambda x, first, n: jax.lax.dynamic_index_in_dim(x, layer, 0, keepdims=False)[first:first + n]
    parts = [at(x, first, hi - lo) for x, first, lo, hi in row_pieces(values, row, batch)]
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=0)


def check_value_rows(values, batch: int, kv_heads: int, value_row: int) -> None:
    """values [L, >= value_row + batch, kv_heads, n_c, c, D] (an array or SplitValues): rows value_row.. hold
    the batch's sequences."""
    if values.ndim != 6 or values.shape[2] != kv_heads or not 0 <= value_row <= values.shape[1] - batch:
        raise ValueError(f"values shape {values.shape} with value_row={value_row} does not hold {batch} sequences "
                         f"of {kv_heads} KV heads: expected [L, >= value_row + {batch}, {kv_heads}, n_c, c, D]")


def on_stream(f, stream: int):
    """f as one XLA call on GPU stream `stream` (its outputs in device memory; positional arguments only).
    XLA makes it an async start/done pair on that stream, so kernels that do not wait for it may run beside
    it. JAX 0.10 names this form of `compute_on` `compute_on2`; 0.11 renamed it `compute_on`."""
    from jax.experimental import compute_on as co

    wrap = getattr(co, "compute_on2", None) or co.compute_on
    return wrap(f, compute_type=f"gpu_stream:{stream}", out_memory_spaces=jax.memory.Space.Device)


def group_stream_calls(module) -> int:
    """Give each stream call (`on_stream`) of a lowered module the XLA scheduling group of the ops that take
    its results. JAX's compute_on lowering replaces the call's own frontend attributes, so a group set with
    `jax.experimental.xla_metadata.set_xla_metadata` reaches the ops around the call but not the call.
    Calls inside a stream call's function (an interpreted kernel's) are left alone. Edits `module`
    (`jax.stages.Lowered.compiler_ir("stablehlo")`) in place; returns the calls it grouped."""
    from jax._src.lib.mlir import ir

    def attrs(op):
        if "mhlo.frontend_attributes" not in op.attributes:
            return {}
        return {a.name: a.attr for a in ir.DictAttr(op.attributes["mhlo.frontend_attributes"])}

    def callee(call):
        return ir.FlatSymbolRefAttr(call.attributes["callee"]).value

    calls, callees = [], {}  # stream calls with their function's name; function -> the functions it calls

    def visit(op, func):
        if op.name == "func.func":
            func = ir.StringAttr(op.attributes["sym_name"]).value
        elif op.name == "func.call":
            callees.setdefault(func, set()).add(callee(op))
            if "_xla_stream_annotation" in attrs(op):
                calls.append((op, func))
        for region in op.regions:
            for block in region.blocks:
                for inner in block.operations:
                    visit(inner.operation, func)

    grouped = 0
    with module.context:
        visit(module.operation, None)
        inside, todo = set(), [callee(c) for c, _ in calls]
        while todo:  # every function a stream call reaches
            f = todo.pop()
            if f not in inside:
                inside.add(f)
                todo.extend(callees.get(f, ()))
        for call, func in calls:
            groups = {attrs(use.owner).get("_scheduling_group_id") for r in call.results for use in r.uses}
            groups.discard(None)
            if func not in inside and len(groups) == 1:
                call.attributes["mhlo.frontend_attributes"] = ir.DictAttr.get(
                    {**attrs(call), "_scheduling_group_id": groups.pop()})
                grouped += 1
    return grouped
