"""A decode step that interleaves two micro-batches so one's value reads overlap the other's HBM work.

Per layer, a ShadowKV step is HBM-bound work (the weights' GEMMs, the landmark scores) then a PCIe-bound
kernel (the selected values from pinned host memory), one after the other. Here the batch is two
independent states A and B, and B runs half a layer behind A. Each iteration of the layer scan holds

    A:  attend(A, l) -> out(A, l) -> qkv + select(A, l + 1)
    B:  out(B, l - 1) -> qkv + select(B, l) -> attend(B, l)

with no data flowing between the two chains, so while A reads values over PCIe, B runs its GEMMs and
selection, and the other way round. The chains only run side by side where the executable's command
buffers leave independent kernels unordered (`xla_gpu_command_buffer_scheduling_mode=CONCURRENT`, set in
decoding.DECODE_COMPILER_OPTIONS); in a serial schedule this step does the same work as two plain steps
plus a second read of the weights. Each micro-batch reads the weights once per layer, so a step reads
them twice: the price of the overlap, paid in HBM time that the value reads hide.

Four measures let the chains run side by side: `value_stream` launches each attention kernel as its own
XLA call on a second GPU stream (kernels/common.on_stream); without it, XLA's buffer assignment handed the
slices that A's kernel read to B's GEMMs, selection and kernel, the command buffer ordered all of those
after A's kernel (benchmarks/command_buffer_deps.py) and the step was 10% slower than the plain one. The
kernel runs with `kernel_splits` (1) rather than 4, which filled every SM and left none to the other chain's
GEMMs. And each kernel takes the previous one's output as `after` (A, B, A, B, ...), so the two do not split
PCIe while A's GEMMs wait at the end of the iteration (PCIe serves one at a time anyway). That `after`
also carries the operands prepared for the previous kernel (ShadowKVDecode.attend's `done`), so they stay
allocated until this one: at 65,536 tokens XLA had put B's q/k/v in the memory of A's padded query, freed
right after A's kernel, and B's whole layer waited for A's value reads.

Measured (H200, Llama-3.1-8B shape, BENCHMARKS.md): with the kernels on stream 1, 122,880 tokens x 13 runs
at 257.0-259.7 tokens/s (1 or 2 splits; 269.4 with XLA's latency-hiding scheduler) against 233.1 for the
plain step, with 24 of the kernels' 41 ms per step beside other kernels; at 65,536 x 25 the plain step is
still faster (451.0 vs 423.6; 431.6 with the operands held). XLA schedules each call's done right after its
start; the overlap comes from the command buffer's concurrent mode.

`schedule_groups` (experimental) asks XLA to place each chain's HBM work between the other chain's kernel
start and done: the kernel call and that work form one XLA scheduling group, which XLA's latency-hiding
scheduler is meant to schedule as one block. On an H200 it compiles and computes the same, but the done
still follows its start at once and the step runs as fast as without it. It takes effect only where the lowered
module is compiled by `compile_grouped` (throughput.compile_decode does); on a GPU a plain jit of it fails in
XLA (see SCHEDULE_GROUP_COMPILER_OPTIONS), off the GPU the groups are ignored and the step computes the same.

A and B give the same logits as one ShadowKVDecode step over their concatenation (tests; 1e-7 in fp32,
compiled on an H100; with the kernels on stream 1, 1e-4 with values in pinned host memory on an H200).
With split values (some rows' values on the GPU) the halves are the host rows and the device rows
(throughput.micro_batch_sizes); on the H200 that ran as fast as the plain split step at 122,880 x 19 (323.1 vs
326.0 tokens/s) and slower at 65,536 x 38 (574.9 vs 607.1).

`bench --micro-batches 2 [--value-stream 1]` runs it; nothing else uses it by default.
"""

from __future__ import annotations

import dataclasses
import itertools
from functools import partial

import jax
import jax.numpy as jnp
from jax.experimental.xla_metadata import set_xla_metadata

from ..config import ModelConfig
from ..decoding import DECODE_COMPILER_OPTIONS
from ..model.llama import embed, layer_out, layer_params, layer_qkv, lm_head, step_rope
from .decode import ShadowKVDecode
from .state import ARRAY_FIELDS, ShadowKVState

# The decode options with XLA's latency-hiding scheduler, which reads the groups. XLA's
# dynamic-slice-copy-fusion-async-wrapper turns grouped scatters and cache updates into fusion-start/done pairs
# and carries the group onto the done only; legalize-scheduling-annotations then refuses the module ("Done
# instruction's start operand is not annotated with the same id", H200, JAX 0.11.2), so that pass is off.
SCHEDULE_GROUP_COMPILER_OPTIONS = {
    **DECODE_COMPILER_OPTIONS,
    "xla_gpu_enable_latency_hiding_scheduler": True,
    "xla_disable_hlo_passes": DECODE_COMPILER_OPTIONS["xla_disable_hlo_passes"]
    + ",dynamic-slice-copy-fusion-async-wrapper"}


def compile_grouped(lowered: jax.stages.Lowered) -> jax.stages.Compiled:
    """Compile a lowered decode whose attention is PipelinedShadowKV(schedule_groups=True): each kernel call
    joins its group (kernels/common.group_stream_calls) and XLA's latency-hiding scheduler reads the groups."""
    from ..kernels.common import group_stream_calls

    group_stream_calls(lowered.compiler_ir("stablehlo"))
    return lowered.compile(SCHEDULE_GROUP_COMPILER_OPTIONS)


@partial(jax.tree_util.register_dataclass, data_fields=("parts",), meta_fields=())
@dataclasses.dataclass(frozen=True)
class MicroBatches:
    """Decode states of consecutive row ranges of one batch (A = parts[0], B = parts[1])."""

    parts: tuple

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(p.lengths.shape[0] for p in self.parts)

    @property
    def lengths(self) -> jax.Array:
        return jnp.concatenate([p.lengths for p in self.parts])

    @property
    def step_metrics(self) -> dict:
        """Each part's metrics weighted by its rows: the batch's means."""
        n = sum(self.sizes)
        return jax.tree.map(lambda *m: sum(x * s / n for x, s in zip(m, self.sizes)),
                            *[p.step_metrics for p in self.parts])


def split_state(state: ShadowKVState, sizes) -> MicroBatches:
    """A state's rows as micro-batches of `sizes` rows, without the values: the parts read the one value
    array of the batch (`consts`), each from its first row. (Copies the device fields: for tests and small
    states; the bench builds each part on its own.)"""
    if sum(sizes) != state.lengths.shape[0] or len(sizes) != 2 or min(sizes) < 1:
        raise ValueError(f"micro-batch sizes={tuple(sizes)} must be two positive sizes summing to the batch "
                         f"{state.lengths.shape[0]}")
    parts, start = [], 0
    for n in sizes:
        def rows(x, name):
            if name == "step_metrics":  # per layer, not per row: each part gets its own copy
                return jax.tree.map(jnp.copy, x)
            return jax.lax.slice_in_dim(x, start, start + n, axis=0 if x.ndim == 1 else 1)
        fields = {f: rows(getattr(state, f), f) for f in ARRAY_FIELDS if f != "values"}
        parts.append(dataclasses.replace(state, **fields, values=None))
        start += n
    return MicroBatches(tuple(parts))


@dataclasses.dataclass(frozen=True)
class PipelinedShadowKV:
    """The decode back-end for a `MicroBatches` carry of two parts; consts: the batch's values, A's rows
    first. `decoding.decode_step` / `decode_loop` call `decode_step` instead of their own layer scan."""

    decode: ShadowKVDecode
    kernel_splits: int | None = 1
    value_stream: int | None = None  # None: the kernels in line (where the chains did not overlap)
    schedule_groups: bool = False  # experimental: see the module's docstring

    def __post_init__(self):
        if self.schedule_groups and self.value_stream is None:
            raise ValueError("schedule_groups=True needs value_stream (the kernel calls it places are async)")

    def decode_step(self, params, config: ModelConfig, carry: MicroBatches, tokens, consts):
        """tokens [B] (A's rows first) -> (logits [B, V] fp32, carry with every length + 1)."""
        if len(carry.parts) != 2:
            raise ValueError(f"PipelinedShadowKV runs 2 micro-batches, got {len(carry.parts)}")
        (sa, sb), values = carry.parts, consts
        na = sa.lengths.shape[0]
        decode_a = dataclasses.replace(self.decode, kernel_splits=self.kernel_splits,
                                       value_stream=self.value_stream)
        decode_b = dataclasses.replace(decode_a, value_row=self.decode.value_row + na)  # B's rows follow A's
        xa, xb = embed(params, tokens[:na, None]), embed(params, tokens[na:, None])
        L = config.num_layers

        # RoPE's cos and sin at each micro-batch's positions, once for all layers (model/llama.step_rope)
        rope_a, rope_b = (step_rope(s.lengths[:, None], config) for s in (sa, sb))

        def pre(x, st, layer, rope):  # qkv and selection: HBM work
            q, k, v, _ = layer_qkv(layer_params(params, layer), x, st.lengths[:, None], config, rope)
            chunks, st = self.decode.prepare(q, k, v, carry=st, layer=layer, lengths=st.lengths)
            return (q, chunks), st

        def attend(decode, qc, st, layer, after):  # the value reads, after the other chain's last ones
            return decode.attend(qc[0], qc[1], carry=st, layer=layer, lengths=st.lengths, consts=values,
                                 after=after)

        def post(x, attn, layer):
            return layer_out(layer_params(params, layer), x, attn, config)

        groups = itertools.count(1)

        def group():  # a new XLA scheduling group for what the block traces
            return set_xla_metadata(_scheduling_group_id=str(next(groups)))

        def iteration(c, layer, first: bool, last: bool):
            # A enters with layer `layer` selected; B with layer - 1 attended (or, first, nothing done)
            xa, qca, sa, xb, attn_b, sb, done_b = c

            def a_rest(xa, qca, sa, attn_a):  # A's output and MLP, then its next layer's qkv and selection
                with jax.named_scope("micro_batch_a"):
                    xa = post(xa, attn_a, layer)
                    if not last:
                        qca, sa = pre(xa, sa, layer + 1, rope_a)
                return xa, qca, sa

            def b_head(xb, sb):  # B's previous layer's output and MLP, then this layer's qkv and selection
                with jax.named_scope("micro_batch_b"):
                    if not first:
                        xb = post(xb, attn_b, layer - 1)
                    qcb, sb = pre(xb, sb, layer, rope_b)
                return xb, qcb, sb

            def attend_a(sa):
                with jax.named_scope("micro_batch_a"):
                    return attend(decode_a, qca, sa, layer, done_b)

            def attend_b(qcb, sb, done_a):
                with jax.named_scope("micro_batch_b"):
                    return attend(decode_b, qcb, sb, layer, done_a)

            if self.schedule_groups:  # [A's kernel call with B's HBM work] [B's kernel call with A's]
                with group():
                    attn_a, sa, done_a = attend_a(sa)
                    xb, qcb, sb = b_head(xb, sb)
                with group():
                    attn_b, sb, done_b = attend_b(qcb, sb, done_a)
                    xa, qca, sa = a_rest(xa, qca, sa, attn_a)
            else:  # A's chain, then B's
                attn_a, sa, done_a = attend_a(sa)
                xa, qca, sa = a_rest(xa, qca, sa, attn_a)
                xb, qcb, sb = b_head(xb, sb)
                attn_b, sb, done_b = attend_b(qcb, sb, done_a)
            return xa, qca, sa, xb, attn_b, sb, done_b

        qca, sa = pre(xa, sa, jnp.int32(0), rope_a)
        c = iteration((xa, qca, sa, xb, None, sb, None), jnp.int32(0), True, L == 1)
        if L > 2:
            # the layer index is the loop counter (not read from an array of indices): XLA then reads each
            # layer's weights in place for cuBLAS, as the plain layer scan does; with indices read from
            # scan inputs it copied the weights of every layer and step (10+ ms per step on an H100)
            c = jax.lax.fori_loop(1, L - 1, lambda l, c: iteration(c, l, False, False), c)
        if L > 1:
            c = iteration(c, jnp.int32(L - 1), False, True)
        xa, _, sa, xb, attn_b, sb, _ = c
        xb = post(xb, attn_b, jnp.int32(L - 1))
        logits = lm_head(params, config, jnp.concatenate([xa, xb])[:, 0])
        parts = tuple(dataclasses.replace(s, lengths=s.lengths + 1) for s in (sa, sb))
        return logits, MicroBatches(parts)
