"""Decode throughput at long context, full attention vs ShadowKV (`python -m shadowkv_jax bench`).

For each batch size of a (model, context, method):

1. plan: GPU and host bytes from the planner (`planner.py`); "auto" takes the largest batch that
   fits; a batch that does not fit is refused before anything is allocated;
2. prefill ONE prompt of `context` distinct random tokens (timed apart from its compilation). Full:
   into row 0 of the batch's cache; ShadowKV: its prefill, which builds the shadow state in the same
   pass (its share of the prefill = ShadowKV prefill time - dense prefill time);
3. fill the other rows by copying row 0 (decode time does not depend on what the rows hold; every
   row keeps its own memory, so every byte a real batch reads is read);
4. decode: a `lax.scan` of `steps` steps is compiled, run once as warm-up, then timed:
   tokens/s = batch * steps / time. Optionally (`breakdown`) the same loop with attention replaced
   by nothing (the weights' share) and, for ShadowKV, by chunk selection alone;
5. bytes per step (HBM and PCIe) and the roofline max(HBM bytes / HBM rate, PCIe bytes / PCIe rate)
   with both rates measured on this machine, and planned vs measured device memory.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from .api import Model, _round_up, load_model
from .cache import KVCache, write_block
from .config import ModelConfig
from .decoding import RowPrefill, decode_loop
from .kernels.common import SplitValues
from .model.attention import DenseDecode
from .model.llama import init_params
from .profiling import profile_kernels
from .planner import Limits, Plan, best_plan, max_batch, require_fits, splits_values, weight_bytes
from .sampling import Greedy
from .shadowkv.config import ShadowKVConfig
from .shadowkv.decode import ShadowKVDecode, resolve_implementation, resolved_top_k, select_layer
from .shadowkv.pipeline import MicroBatches, PipelinedShadowKV
from .shadowkv.prefill import chunk_slots_for, padded_prompt_length, shadowkv_prefill
from .shadowkv.state import ShadowKVState, empty_state, host_sharding, resolve_split, selectable_slots
from .shapes import NAMED_SHAPES

RANDOM_WEIGHTS_NOTE = ("random bf16 weights of the real architecture: decode speed does not depend on weight "
                       "values (hit rates and accuracy do; measure those with real weights)")
CACHE_BUCKET = 128


def new_tokens(steps: int) -> int:
    """Generated-token room a run needs: the first token, a warm-up run and the timed run."""
    return 2 * steps + 2


def bench_model(name_or_path: str, seed: int = 0) -> tuple[Model, str]:
    """A named shape (random weights, made on the device) or a model path (real weights)."""
    if name_or_path in NAMED_SHAPES:
        config = NAMED_SHAPES[name_or_path]
        params = jax.jit(partial(init_params, config))(jax.random.key(seed))
        return Model(config, params, None, name_or_path), RANDOM_WEIGHTS_NOTE
    return load_model(name_or_path), "real weights"


def wall_times(fn, repeats: int) -> list[float]:
    """Seconds of `repeats` calls of fn, each waited for, after one untimed call."""
    jax.block_until_ready(fn())
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        out.append(time.perf_counter() - t0)
    return out


def hbm_read_probe(x: jax.Array) -> jax.Array:
    """The read-bound kernel whose rate the roofline divides by: a sum of x in fp32."""
    return jnp.sum(x, dtype=jnp.float32)


def measure_bandwidths(gib: float | None = None, repeats: int = 30, calls: int | None = None,
                       warmup_s: float | None = None) -> dict:
    """HBM read rate (a reduction over `gib` GiB; 4 on GPU, 0.25 elsewhere) and host->device rate (copy
    of a pinned_host array), each the best of `repeats` timed runs: the ceiling a roofline divides by
    (single runs on the H100 ranged 1.6-2.6 TB/s; on an H200 the best of 10 ranged 3.40-3.85 TB/s between
    processes while the full-attention decode read at up to 3.95, hence 30). Medians are reported beside them.

    A timed HBM run queues `calls` reductions back to back (8 on GPU) and waits for the last, after `warmup_s`
    seconds of untimed runs (1 on GPU): one reduction (~1 ms) timed alone also timed its dispatch and the wait, and
    a GPU fresh from idle read slower: on one H200, single calls read 3.74-3.96 TB/s (best of 30) in three fresh
    processes, 8 queued calls after the warm-up 4.37-4.46 (stage fin52)."""
    dev = jax.devices()[0]
    on_gpu = dev.platform == "gpu"
    gib = gib or (4.0 if on_gpu else 0.25)
    calls = (8 if on_gpu else 1) if calls is None else calls
    warmup_s = (1.0 if on_gpu else 0.0) if warmup_s is None else warmup_s
    if calls < 1:
        raise ValueError(f"calls={calls}: a timed run queues at least 1 reduction")
    x = jnp.ones((int(gib * (1 << 30)) // 2,), jnp.bfloat16)
    total = jax.jit(hbm_read_probe)

    def run():  # queued on one stream: they run one after another
        return [total(x) for _ in range(calls)][-1]

    end = time.perf_counter() + warmup_s
    while time.perf_counter() < end:
        jax.block_until_ready(run())
    hbm = wall_times(run, repeats)
    read = calls * x.nbytes
    out = {"hbm_read_bytes_per_s": read / min(hbm), "hbm_read_median_bytes_per_s": read / statistics.median(hbm),
           "h2d_bytes_per_s": None, "probe_bytes": x.nbytes, "probe_calls": calls, "probe_warmup_s": warmup_s}
    if on_gpu:
        xh = jax.device_put(x, host_sharding(dev))
        on_device = jax.sharding.SingleDeviceSharding(dev)
        h2d = wall_times(lambda: jax.device_put(xh, on_device), repeats)
        out["h2d_bytes_per_s"] = x.nbytes / min(h2d)
        out["h2d_median_bytes_per_s"] = x.nbytes / statistics.median(h2d)
    return out


def after_probe(limits: Limits, rates: dict) -> Limits:
    """The limits less the probe's buffers: XLA's allocators keep freed regions reserved, so the probe's
    4 GiB stay counted against each memory it used (a GLM-4-9B batch planned to the last GiB of pinned
    host memory failed without this)."""
    probe = rates.get("probe_bytes", 0)  # rates given by hand carry no probe
    host = probe if rates.get("h2d_bytes_per_s") else 0
    return dataclasses.replace(limits, gpu_bytes=limits.gpu_bytes - probe, host_bytes=limits.host_bytes - host)


def step_bytes(config: ModelConfig, method, batch: int, context: int, capacity: int,
               hit_rate: float | None = None, placement: str = "host", device_rows: int = 0) -> dict:
    """Bytes one decode step must move: HBM (weights, caches or shadow state) and PCIe (values: those of
    the host rows; with placement "split", `device_rows` of the rows read theirs from HBM)."""
    it = np.dtype(config.jnp_dtype).itemsize
    L, B, H, D = config.num_layers, batch, config.num_kv_heads, config.head_dim
    embed = config.vocab_size * config.hidden_size * it
    hbm = weight_bytes(config) - (0 if config.tie_word_embeddings else embed) + B * config.hidden_size * it
    pcie = 0
    if method == "full":
        hbm += 2 * L * B * H * capacity * D * it  # the whole K and V of the batch
    else:
        cfg: ShadowKVConfig = method
        c, r, k = cfg.chunk_size, cfg.rank, cfg.selected_chunks
        n_sel = selectable_slots(cfg, cfg.num_chunks(context))
        per_head = (n_sel * D * it + n_sel * 4  # landmarks + chunk ids (selection)
                    + k * c * r * it + r * D * it  # A rows; W
                    + 2 * (cfg.local_capacity + cfg.outlier_chunks * c + capacity) * D * it)  # exact K/V
        values = L * B * H * k * c * D * it
        reused = hit_rate if (cfg.value_reuse and hit_rate is not None) else 0.0
        hbm += L * B * H * per_head
        if cfg.value_reuse:
            hbm += values * (1 + reused)  # write this step's cache, read the hits
        on_device = {"host": 0, "device": B, "split": device_rows}[placement]
        pcie = values * (1 - reused) * (B - on_device) / B
        hbm += values * (1 - reused) * on_device / B
    return {"hbm": int(hbm), "pcie": int(pcie)}


def roofline_s(bytes_: dict, rates: dict) -> float:
    t = bytes_["hbm"] / rates["hbm_read_bytes_per_s"]
    if bytes_["pcie"]:
        if not rates.get("h2d_bytes_per_s"):
            raise ValueError("PCIe bytes need a measured host->device rate")
        t = max(t, bytes_["pcie"] / rates["h2d_bytes_per_s"])
    return t


def run_meta(**extra) -> dict:
    """Device, platform, JAX version and date, plus any extra fields (every benchmark records these)."""
    import datetime

    dev = jax.devices()[0]
    return {"device": dev.device_kind, "platform": dev.platform, "jax": jax.__version__,
            "date": datetime.date.today().isoformat(), **extra}


# --- attention stand-ins for the step-time breakdown -------------------------------------------------

@dataclasses.dataclass(frozen=True)
class NoAttention:
    """Attention replaced by zeros: what is left of a step is the weights' share."""

    def __call__(self, q, k, v, k_pre, *, carry, layer, positions, lengths, consts=None):
        return jnp.zeros_like(q), carry


@dataclasses.dataclass(frozen=True)
class SelectOnly:
    """ShadowKV's chunk selection alone. Its ids are stored in the carry, as the real step stores them;
    an output that only pretended to use them (ids * 0) let XLA delete the whole selection."""

    config: ShadowKVConfig
    implementation: str = "reference"  # the attention's, which "auto" top-k follows
    interpret: bool = False

    def __call__(self, q, k, v, k_pre, *, carry, layer, positions, lengths, consts=None):
        chunks = select_layer(q[:, 0], carry, layer, self.config, self.implementation, self.interpret)
        return jnp.zeros_like(q), dataclasses.replace(carry, prev_selection=carry.prev_selection.at[layer].set(chunks))


# --- building a batch from one prefilled prompt --------------------------------------------------------

def _copy_row0(cache: KVCache, *, batch: int) -> KVCache:
    """Rows 1..B-1 of every layer := row 0, in place, one layer's row at a time: row 0's slices are
    separate small arrays, and each write is `write_block` (a donated update and nothing else)."""
    k, v = cache.k, cache.v
    for layer in range(k.shape[0]):
        k0, v0 = k[layer:layer + 1, :1], v[layer:layer + 1, :1]  # separate small arrays
        for b in range(1, batch):
            k = write_block(k, k0, layer, b)
            v = write_block(v, v0, layer, b)
    return dataclasses.replace(cache, k=k, v=v, lengths=jnp.broadcast_to(cache.lengths[:1], cache.lengths.shape))


_BATCH_AXIS0 = ("prompt_lengths", "lengths", "num_chunks", "local_lengths")


def _tile_device_fields(one: ShadowKVState, *, batch: int) -> ShadowKVState:
    """The device fields of `one` (batch 1) repeated to `batch` rows: zeros first, then one in-place row
    write at a time, so no large fused copy (and no autotuning) runs next to the growing state."""
    fields = {}
    for f in dataclasses.fields(ShadowKVState):
        x = getattr(one, f.name)
        if f.name in ("config", "placement", "values", "step_metrics") or x is None:
            continue
        if f.name in _BATCH_AXIS0:
            fields[f.name] = jnp.repeat(x, batch, axis=0)
            continue
        fields[f.name] = _tiled_rows(x, batch)
    return dataclasses.replace(one, **fields)


def _tiled_rows(x, batch: int) -> jax.Array:
    """[L, 1, ...] -> [L, batch, ...] on the device, each row a copy of x's: zeros, then one donated row
    write at a time. (An eager jnp.repeat held a temporary as large as the result: 122,880 tokens x 10 rows
    of values ran out of memory on a 141 GB GPU.) x may be a numpy array (staged values, `stage_values`):
    it then comes to the device one layer at a time."""
    out = jax.jit(partial(jnp.zeros, (x.shape[0], batch) + x.shape[2:], x.dtype))()
    if isinstance(x, np.ndarray):
        for layer in range(x.shape[0]):
            src = jax.device_put(x[layer:layer + 1])
            for b in range(batch):
                out = write_block(out, src, layer, b)
            del src
        return out
    for b in range(batch):
        out = write_block(out, x, 0, b)
    return out


def _host_values(row, batch: int) -> jax.Array:
    """values [L, 1, ...] (device, or numpy: `stage_values`) -> [L, batch, ...] in pinned host memory, each row
    a copy of `row`.

    The host array starts as untouched zero pages (np.zeros) copied in once; then each (layer, row)
    block is moved to the host inside a donated dynamic_update_slice (XLA's offloading pattern: an
    in-place device->host copy into the slice), so host memory never holds more than the batch."""
    sharding = host_sharding()
    shape = (row.shape[0], batch) + row.shape[2:]
    big = jax.device_put(np.zeros(shape, row.dtype), sharding)
    to_host = jax.memory.Space.Host
    insert = jax.jit(lambda dst, x, l, b: jax.lax.dynamic_update_slice(
        dst, jax.device_put(x, to_host)[None, None], (l, b) + (0,) * (dst.ndim - 2)),
        donate_argnums=0, out_shardings=sharding)
    for layer in range(row.shape[0]):
        src = jax.device_put(row[layer, 0]) if isinstance(row, np.ndarray) else row[layer, 0]
        for b in range(batch):
            t0 = time.perf_counter()
            big = jax.block_until_ready(insert(big, src, jnp.int32(layer), jnp.int32(b)))
            if layer == 0 and b == 1 and time.perf_counter() - t0 > 2.0:
                raise RuntimeError(f"writing one {src.nbytes / 2**20:.0f} MiB row into the host value array took "
                                   f"{time.perf_counter() - t0:.1f} s: the update is not in place on this backend")
        del src
    return big


def stage_values(one: ShadowKVState) -> tuple[ShadowKVState, np.ndarray]:
    """(one without values, its values in ordinary host memory), the device copy deleted.

    The batch is then built with no whole prompt's values on the device beside it, only one layer's
    (`_tiled_rows`): at 122,880 tokens they are 8 GB, the difference between 4 and 5 rows under 80 GB."""
    staged = np.asarray(one.values)
    one.values.delete()
    return dataclasses.replace(one, values=None), staged


def replicate_device_fields(one: ShadowKVState, batch: int, placement: str) -> ShadowKVState:
    """A batch-`batch` state without values (they will live at `placement`) whose rows are copies of the
    batch-1 state `one`."""
    st = _tile_device_fields(one, batch=batch)
    return dataclasses.replace(st, values=None, placement=placement,
                               step_metrics=jax.tree.map(jnp.copy, one.step_metrics))


def replicate_values(values, batch: int, placement: str, device_rows: int = 0):
    """One row's values [L, 1, ...] (on the device, or staged in numpy: `stage_values`) repeated to `batch`
    rows at `placement` ("split": SplitValues whose last `device_rows` rows are on the device)."""
    if placement == "split":
        return SplitValues(_host_values(values, batch - device_rows), _tiled_rows(values, device_rows))
    return _host_values(values, batch) if placement == "host" else _tiled_rows(values, batch)


def replicate_state(one: ShadowKVState, batch: int, placement: str, device_rows: int = 0) -> ShadowKVState:
    """A batch-`batch` state whose rows are copies of the batch-1 state `one` (values on device)."""
    values = replicate_values(one.values, batch, placement, device_rows)
    return dataclasses.replace(replicate_device_fields(one, batch, placement), values=values)


# --- one run ----------------------------------------------------------------------------------------------

def abstract_decode_state(cfg: ModelConfig, sk: ShadowKVConfig, batch: int, slots: int, placement: str,
                          device_rows: int = 0):
    """(state without values, values) as shapes with shardings: what a ShadowKV decode loop is compiled
    from, taken from the one declaration the state is built from ("split": SplitValues of two shapes)."""
    state_abs = jax.eval_shape(partial(empty_state, cfg, sk, batch, slots, placement))
    dev = jax.devices()[0]
    v = state_abs.values
    shape = lambda rows, sharding: jax.ShapeDtypeStruct(v.shape[:1] + (rows,) + v.shape[2:], v.dtype,
                                                        sharding=sharding)
    on_device = jax.sharding.SingleDeviceSharding(dev)
    if placement == "split":
        return state_abs.without_values(), SplitValues(shape(batch - device_rows, host_sharding(dev)),
                                                       shape(device_rows, on_device))
    return state_abs.without_values(), shape(batch, host_sharding(dev) if placement == "host" else on_device)


def _device_memory() -> dict:
    stats = jax.devices()[0].memory_stats() or {}
    return {k: stats.get(k) for k in ("bytes_in_use", "peak_bytes_in_use", "bytes_limit")}


def compile_decode(model: Model, carry, batch: int, consts, attention, steps: int, unroll: int):
    """AOT-compile a `steps`-step decode loop from abstract arguments (so autotuning runs while the
    cache is not yet allocated). Returns (executable, seconds)."""
    t0 = time.perf_counter()
    first = jax.ShapeDtypeStruct((batch,), jnp.int32)
    lowered = decode_loop.lower(model.params, carry, first, jax.random.key(0), jnp.zeros((0,), jnp.int32), consts,
                                config=model.config, sampler=Greedy(), num_steps=steps, attention=attention,
                                layer_unroll=unroll)
    if getattr(attention, "schedule_groups", False):  # the micro-batched step's groups (shadowkv/pipeline.py)
        from .shadowkv.pipeline import compile_grouped

        return compile_grouped(lowered), time.perf_counter() - t0
    return lowered.compile(), time.perf_counter() - t0


def _run(model: Model, loop, carry, first, consts):
    """One call of a compiled decode loop (no EOS, fixed key): (tokens, carry, extras)."""
    return loop(model.params, carry, first, jax.random.key(0), jnp.zeros((0,), jnp.int32), consts)


def _timed(model: Model, loop, carry, first, consts, calls: int = 1) -> tuple[float, object, dict, list[float]]:
    """Run a compiled decode loop once (warm-up), then time `calls` more runs, each from where the last one
    stopped. Returns (the first timed run's seconds, carry, its extras, seconds of every run, warm-up first)."""
    times, extras0 = [], None
    for i in range(calls + 1):
        t0 = time.perf_counter()
        toks, carry, extras = _run(model, loop, carry, first, consts)
        jax.block_until_ready((toks, carry))
        times.append(time.perf_counter() - t0)
        first = toks[:, -1]
        extras0 = extras if i == 1 else extras0
    return times[1], carry, extras0, times


@dataclasses.dataclass(frozen=True)
class ShadowKVStep:
    """How the bench runs ShadowKV's decode step (full-attention rows ignore it).

    micro_batches: 1, or 2 (two halves whose layers interleave: shadowkv/pipeline.py), with the attention
    kernel on XLA GPU stream `value_stream` (None: in line) in `kernel_splits` splits (None: 1), and with
    `schedule_groups` (experimental) each kernel call grouped with the other half's HBM work.
    emulated_reuse: 0, or the fraction of each step's chunk slots kept from the previous step
    (EmulatedReuse): throughput only, at the value reuse that real weights show."""

    micro_batches: int = 1
    value_stream: int | None = None
    kernel_splits: int | None = None
    emulated_reuse: float = 0.0
    schedule_groups: bool = False

    def __post_init__(self):
        if self.micro_batches not in (1, 2):
            raise ValueError(f"micro_batches={self.micro_batches} must be 1 or 2")
        for name in ("value_stream", "kernel_splits"):
            v = getattr(self, name)
            if v is not None and (self.micro_batches != 2 or v < 1):
                raise ValueError(f"{name}={v} needs micro_batches=2 and a value >= 1 (stream 0 is XLA's main one)")
        if self.schedule_groups and self.value_stream is None:
            raise ValueError("schedule_groups=True needs value_stream (the kernel calls it places are async)")
        if not 0 <= self.emulated_reuse < 1:
            raise ValueError(f"emulated_reuse={self.emulated_reuse} must be in [0, 1)")


@dataclasses.dataclass(frozen=True)
class EmulatedReuse(ShadowKVDecode):
    """ShadowKV's step with each step's first `round(reuse * k)` chunk slots per KV head taken from the
    previous step's (where it had any), the rest from this step's top-k: the value reuse of real weights
    (SmolLM2 keeps 0.69 of its chunks from step to step; random weights 0.04) on a model with random
    weights. Every part of the step runs as in the real one (scores, top-k, kernel, reuse cache); only
    which chunks are read changes, so the outputs are not ShadowKV's attention. For throughput only."""

    reuse: float = 0.0

    def prepare(self, q, k, v, *, carry, layer, lengths):
        chunks, st = super().prepare(q, k, v, carry=carry, layer=layer, lengths=lengths)
        keep = round(self.reuse * chunks.shape[-1])
        if keep:
            prev = jax.lax.dynamic_index_in_dim(st.prev_selection, layer, 0, keepdims=False)[..., :keep]
            chunks = jnp.concatenate([jnp.where(prev >= 0, prev, chunks[..., :keep]), chunks[..., keep:]], -1)
        return chunks, st


def micro_batch_sizes(batch: int, micro_batches: int, device_rows: int = 0) -> tuple[int, ...]:
    """Rows per micro-batch: (batch,), or two near-equal halves (the larger first). With split values
    (0 < device_rows < batch) the halves are the host rows and the device rows: one chain's kernel then reads
    PCIe while the other chain runs from HBM alone (equal halves gave one chain most of the PCIe reads and
    ran slower than the plain step on an H200)."""
    if micro_batches not in (1, 2):
        raise ValueError(f"micro_batches={micro_batches} must be 1 or 2")
    if micro_batches == 2 and batch < 2:
        raise ValueError(f"micro_batches=2 needs a batch of at least 2, got batch={batch}")
    if micro_batches == 1:
        return (batch,)
    if 0 < device_rows < batch:
        return (batch - device_rows, device_rows)
    return ((batch + 1) // 2, batch // 2)


def run_one(model: Model, method, context: int, batch: int, steps: int, *, rates: dict,
            breakdown: bool = False, seed: int = 0, unroll: int = 1, full_attention: str = "auto",
            profile: bool = False, step: ShadowKVStep = ShadowKVStep(), device_rows: int = 0,
            timed_calls: int = 1) -> dict:
    """Prefill one prompt, build a batch of `batch` rows, time decoding. Returns one result row.

    The decode loop runs once to warm up, then `timed_calls` times; the first timed call gives the row's
    figures and every call's seconds are kept (`decode_calls_s`, warm-up first).

    `step` says how ShadowKV's step runs (ShadowKVStep); the step-time stand-ins (`breakdown`) stand in for
    the plain step only. `device_rows`: with value_placement "split", the rows whose values stay on the
    device (the planner's `Plan.device_value_rows`).

    Every executable is compiled from abstract shapes first: XLA's autotuner allocates scratch copies
    of operands, which would not fit next to a full-size cache."""
    if breakdown and step.micro_batches > 1:
        raise ValueError("breakdown=True times stand-ins of the plain step; it cannot run with micro_batches=2")
    cfg = model.config
    platform = jax.devices()[0].platform
    interpret = platform != "gpu"  # kernels run interpreted off the GPU
    rng = np.random.default_rng(seed)
    new = new_tokens(steps)
    ids = rng.integers(3, cfg.vocab_size, context, dtype=np.int32)
    row = {"context": context, "batch": batch, "steps": steps, "layer_unroll": unroll}
    lengths = jnp.asarray([context], jnp.int32)
    stand_ins = {"no_attention": NoAttention()} if breakdown else {}
    if method == "full":
        capacity = _round_up(context + new, CACHE_BUCKET)
        tokens = jnp.asarray(ids)[None]
        make_cache = jax.jit(partial(KVCache.zeros, cfg, batch, capacity))
        cache_abs = jax.eval_shape(make_cache)
        attention = DenseDecode(full_attention, interpret=interpret)
        t0 = time.perf_counter()
        fill = RowPrefill(cfg).compile(model.params, cache_abs, tokens, lengths)
        row["compile_prefill_s"] = time.perf_counter() - t0
        loops = {name: compile_decode(model, cache_abs, batch, None, a, steps, unroll)
                 for name, a in {"decode": attention, **stand_ins}.items()}
        cache = make_cache()
        where = cache.k.unsafe_buffer_pointer() if platform == "gpu" else None
        t0 = time.perf_counter()
        logits, cache = fill(model.params, cache, tokens, lengths, 0)
        jax.block_until_ready(cache)
        row["prefill_s"] = time.perf_counter() - t0
        row["memory_after_prefill"] = _device_memory()
        if where is not None:
            row["prefill_in_place"] = cache.k.unsafe_buffer_pointer() == where
        cache = jax.block_until_ready(_copy_row0(cache, batch=batch)) if batch > 1 else cache
        carry, consts = cache, None
        row.update(method="full", implementation=attention.resolved(cfg.head_dim, capacity), capacity=capacity)
        placement = "device"
    else:
        sk: ShadowKVConfig = dataclasses.replace(method, max_new_tokens=new)
        placement = sk.resolved_placement(platform)
        placement, device_rows = resolve_split(placement, batch, device_rows if placement == "split" else None)
        impl = resolve_implementation(cfg, sk, platform)
        t_pad = padded_prompt_length(sk, context, 64)
        tokens = jnp.asarray(np.pad(ids, (0, t_pad - context)))[None]
        slots = chunk_slots_for(sk, [context])
        t0 = time.perf_counter()
        fill = shadowkv_prefill.lower(model.params, tokens, lengths, config=cfg, sk_config=sk,
                                      chunk_slots=slots).compile()
        row["compile_prefill_s"] = time.perf_counter() - t0
        if step.emulated_reuse and not sk.value_reuse:
            raise ValueError(f"emulated_reuse={step.emulated_reuse} needs the config's value_reuse (it is off)")
        extra = {"reuse": step.emulated_reuse} if step.emulated_reuse else {}
        attention = (EmulatedReuse if extra else ShadowKVDecode)(sk, cfg, placement, impl, interpret=interpret, **extra)
        sizes = micro_batch_sizes(batch, step.micro_batches, device_rows if placement == "split" else 0)
        if len(sizes) == 1:
            state_abs, values_abs = abstract_decode_state(cfg, sk, batch, slots, placement, device_rows)
            if breakdown:
                stand_ins["select_only"] = SelectOnly(sk, impl, interpret=interpret)
        else:  # the parts' device fields, and the whole batch's values
            state_abs = MicroBatches(tuple(abstract_decode_state(cfg, sk, n, slots, placement)[0] for n in sizes))
            values_abs = abstract_decode_state(cfg, sk, batch, slots, placement, device_rows)[1]
            attention = PipelinedShadowKV(attention, kernel_splits=step.kernel_splits or 1,
                                          value_stream=step.value_stream, schedule_groups=step.schedule_groups)
        loops = {name: compile_decode(model, state_abs, batch, values_abs, a, steps, unroll)
                 for name, a in {"decode": attention, **stand_ins}.items()}
        t0 = time.perf_counter()
        logits, one = fill(model.params, tokens, lengths)
        jax.block_until_ready(one)
        row["prefill_s"] = time.perf_counter() - t0
        row["memory_after_prefill"] = _device_memory()  # its peak: weights + one prompt's prefill
        t0 = time.perf_counter()
        one, staged = stage_values(one)  # what the planner counts: no second copy of one prompt's values
        # the values stay one array for all parts: XLA's pinned-host allocator rounded a first part's
        # array (52.5 GiB at 122,880 x 7) up to a 64 GiB region and then had no room for the second
        consts = replicate_values(staged, batch, placement, device_rows)
        del staged
        parts = [replicate_device_fields(one, n, placement) for n in sizes]
        row["build_batch_s"] = time.perf_counter() - t0
        del one
        carry = parts[0] if len(sizes) == 1 else MicroBatches(tuple(parts))
        del parts
        row["micro_batches"] = list(sizes)
        if len(sizes) > 1:
            row.update(value_stream=step.value_stream, kernel_splits=attention.kernel_splits,
                       schedule_groups=step.schedule_groups)
        if step.emulated_reuse:
            row["emulated_reuse"] = step.emulated_reuse
        capacity = new
        row.update(method="shadowkv", implementation=impl, placement=placement, device_value_rows=device_rows,
                   top_k=resolved_top_k(sk.top_k, impl, interpret),
                   config=dataclasses.asdict(sk))
        method = sk
    first = jnp.broadcast_to(jnp.argmax(logits[0]).astype(jnp.int32), (batch,))
    row["compile_decode_s"] = sum(t for _, t in loops.values())
    row["memory_before_decode"] = _device_memory()
    elapsed, carry, extras, calls = _timed(model, loops["decode"][0], carry, first, consts, timed_calls)
    row["decode_calls_s"] = calls  # warm-up first: the spread says how far one timed call can be trusted
    row["memory_after_decode"] = _device_memory()
    row.update(decode_s=elapsed, step_ms=1e3 * elapsed / steps, tokens_per_s=batch * steps / elapsed)
    metrics = extras.get("metrics")
    hit = float(np.asarray(metrics["hit_rate"]).mean()) if metrics is not None else None
    row["hit_rate"] = hit
    for name in stand_ins:
        t, carry, _, _ = _timed(model, loops[name][0], carry, first, consts)
        row[f"{name}_step_ms"] = 1e3 * t / steps
    if profile:  # one more run of the decode loop under the profiler: kernel time per scope, per step
        loop = loops["decode"][0]
        row["profile"], (_, carry, _) = profile_kernels(lambda: _run(model, loop, carry, first, consts),
                                                        loop.as_text(), per=steps)
    b = step_bytes(cfg, method, batch, context, capacity, hit, placement, device_rows)  # ignored by "full"
    row["bytes_per_step"] = b
    row["roofline_step_ms"] = 1e3 * roofline_s(b, rates)
    row["roofline_fraction"] = row["roofline_step_ms"] / row["step_ms"]
    del carry, consts
    return row


def planned(config: ModelConfig, method, context: int, batch, steps: int, limits: Limits) -> Plan:
    """The plan of `batch` ("auto" = the largest that fits), refused with the numbers if it cannot fit."""
    new = new_tokens(steps)
    if batch == "auto":
        return max_batch(config, method, context, limits, max_new_tokens=new, replicated=True)
    return require_fits(best_plan(config, method, int(batch), context, limits, max_new_tokens=new, replicated=True),
                        limits)


def default_limits(gpu_gib: float | None = None, host_gib: float | None = None, margin: float = 0.10) -> Limits:
    """GPU: the device's allocator limit (or `gpu_gib`); host: XLA's pinned-host cap (or `host_gib`)."""
    gib = 1 << 30
    if gpu_gib is None:
        stats = jax.devices()[0].memory_stats() or {}
        if "bytes_limit" not in stats:
            raise ValueError("this device reports no memory limit; pass --gpu-memory-gb")
        gpu = stats["bytes_limit"]
    else:
        gpu = int(gpu_gib * gib)
    limits = Limits.host_default(gpu, margin)
    if host_gib is not None:
        limits = dataclasses.replace(limits, host_bytes=int(host_gib * gib))
    return limits


def bench(model: Model, contexts, methods, batches, steps: int, limits: Limits, *, breakdown: bool = False,
          rates: dict | None = None, progress=print, on_row=None, unroll: int = 1,
          full_attention: str = "auto", profile: bool = False, step: ShadowKVStep = ShadowKVStep(),
          timed_calls: int = 1) -> dict:
    """Every (context, method, batch). `methods`: "full" and/or ShadowKVConfig factories
    (callables context -> ShadowKVConfig). `on_row(rows)` runs after each row (e.g. to save partial
    results). `step` applies to the ShadowKV rows. Returns {"rates", "rows"}."""
    rates = rates or measure_bandwidths()
    limits = after_probe(limits, rates)  # a probe in this process keeps its buffers reserved
    rows = []
    for context in contexts:
        for method in methods:
            m = method(context) if callable(method) else method
            for batch in batches:
                p = planned(model.config, m, context, batch, steps, limits)
                split = f", values of {p.device_value_rows} of its rows on the GPU" if splits_values(m) else ""
                progress(f"{'full' if m == 'full' else 'shadowkv'} context={context} batch={p.batch}{split} "
                         f"(planned GPU {p.gpu_total / 2**30:.1f} GiB, host {p.host_total / 2**30:.1f} GiB)")
                r = run_one(model, m, context, p.batch, steps, rates=rates, breakdown=breakdown, unroll=unroll,
                            full_attention=full_attention, profile=profile,
                            step=ShadowKVStep() if m == "full" else step, device_rows=p.device_value_rows,
                            timed_calls=timed_calls)
                r["plan"] = {"gpu": p.gpu, "host": p.host, "gpu_total": p.gpu_total, "host_total": p.host_total,
                             "requested_batch": batch, "limits": dataclasses.asdict(limits),
                             "bound_by": bound_by(model.config, m, context, p, limits, steps)}
                rows.append(r)
                if on_row:
                    on_row(rows)
                calls = ", ".join(f"{1e3 * t / steps:.2f}" for t in r["decode_calls_s"])
                progress(f"  {r['tokens_per_s']:.1f} tokens/s, {r['step_ms']:.2f} ms/step "
                         f"(roofline {r['roofline_step_ms']:.2f} ms; ms/step of each call, warm-up first: {calls})")
                if r.get("profile", {}).get("kernels"):
                    progress(profile_table(r["profile"]))
    return {"rates": rates, "rows": rows}


def profile_table(prof: dict) -> str:
    """Kernel ms per step by scope, then the largest kernels."""
    scopes = ", ".join(f"{k} {v:.2f}" for k, v in sorted(prof["by_scope_ms"].items(), key=lambda kv: -kv[1]))
    lines = [f"  kernels {prof['total_ms']:.2f} ms/step: {scopes}"]
    c = prof.get("concurrency")
    if c:
        lines.append(f"  in time, ms/step: span {c['span_ms']:.2f}, busy {c['busy_ms']:.2f}, idle {c['idle_ms']:.2f}, "
                     f"2+ kernels {c['concurrent_ms']:.2f}; {c['focus']} {c['focus_ms']:.2f}, "
                     f"{c['focus_beside_others_ms']:.2f} of it beside other kernels ({c['streams']} streams); "
                     f"wall {prof.get('wall_ms', float('nan')):.2f}")
    for k in prof["kernels"][:12]:
        lines.append(f"    {k['ms']:7.3f} ms {k['launches']:5.0f}x  {k['scope']:<28} {k['hlo_op'][:40]}  {k['kernel'][:50]}")
    return "\n".join(lines)


def bound_by(config, method, context, p: Plan, limits: Limits, steps: int) -> str:
    """Which memory stops the next batch size: "gpu" or "host" ("gpu+host" for split values: the next batch's
    best split leaves more rows to the host than it holds, because the GPU is full)."""
    nxt = best_plan(config, method, p.batch + 1, context, limits, max_new_tokens=new_tokens(steps), replicated=True)
    if splits_values(method):
        return "none" if nxt.check(limits) is None else "gpu+host"
    if not nxt.gpu_fits(limits):
        return "gpu"
    if nxt.host_total > limits.host_bytes * (1 - limits.margin):
        return "host"
    return "none"


def method_label(row) -> str:
    """The row's method with how its step ran: "shadowkv, micro-batches 7+6, stream 1, emulated reuse 0.6"
    (values in pinned host memory unless the label says where)."""
    label, sizes = row["method"], row.get("micro_batches") or []
    if row.get("placement") == "device" and row["method"] == "shadowkv":
        label += ", values on the device"
    if row.get("config", {}).get("value_reuse") is False:
        label += ", no value reuse"
    if row.get("placement") == "split":
        n = row["device_value_rows"]
        label += f", values of {n} row{'s' if n != 1 else ''} on the GPU"
    if len(sizes) > 1:
        label += f", micro-batches {'+'.join(map(str, sizes))}"
        if row.get("value_stream") is not None:
            label += f", stream {row['value_stream']}"
        if row.get("kernel_splits", 1) != 1:
            label += f", {row['kernel_splits']} splits"
        if row.get("schedule_groups"):
            label += ", scheduling groups"
    if row.get("emulated_reuse"):
        label += f", emulated reuse {row['emulated_reuse']:g}"
    return label


def markdown(rows) -> str:
    head = ("| method | context | batch | tokens/s | ms/step | roofline ms | % of roofline | hit rate | "
            "PCIe MB/step | prefill s |\n|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        hit = "–" if r.get("hit_rate") is None else f"{r['hit_rate']:.2f}"
        lines.append(f"| {method_label(r)} | {r['context']:,} | {r['batch']} | {r['tokens_per_s']:,.1f} | "
                     f"{r['step_ms']:.2f} | {r['roofline_step_ms']:.2f} | {100 * r['roofline_fraction']:.0f}% | "
                     f"{hit} | {r['bytes_per_step']['pcie'] / 1e6:,.0f} | {r['prefill_s']:.2f} |")
    return "\n".join(lines)


def prefill_shares(rows) -> list[dict]:
    """Per context: one prompt's prefill time for each method and the share of ShadowKV's prefill spent
    building the shadow state (factorization, landmarks, outliers, values), i.e. 1 - full / ShadowKV."""
    out = []
    for context in sorted({r["context"] for r in rows}):
        t = {m: min((r["prefill_s"] for r in rows if r["context"] == context and r["method"] == m), default=None)
             for m in ("full", "shadowkv")}
        if t["full"] and t["shadowkv"]:
            out.append({"context": context, "full_prefill_s": t["full"], "shadowkv_prefill_s": t["shadowkv"],
                        "state_build_share": 1 - t["full"] / t["shadowkv"]})
    return out


def speedups(rows) -> list[dict]:
    """Per context and ShadowKV step setting (method_label: plain, micro-batched, emulated reuse): its best
    tokens/s over the best full-attention tokens/s."""
    out = []
    for context in sorted({r["context"] for r in rows}):
        at = [r for r in rows if r["context"] == context]
        full = max((r for r in at if r["method"] == "full"), key=lambda r: r["tokens_per_s"], default=None)
        if full is None:
            continue
        for label in sorted({method_label(r) for r in at if r["method"] == "shadowkv"}):
            best = max((r for r in at if r["method"] == "shadowkv" and method_label(r) == label),
                       key=lambda r: r["tokens_per_s"])
            out.append({"context": context, "full_batch": full["batch"], "full_tokens_per_s": full["tokens_per_s"],
                        "shadowkv": label, "shadowkv_batch": best["batch"],
                        "shadowkv_tokens_per_s": best["tokens_per_s"],
                        "ratio": best["tokens_per_s"] / full["tokens_per_s"]})
    return out


def plot(rows, path: str) -> str:
    """Throughput vs batch per method and context, and the step-time breakdown where measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    broken = [r for r in rows if "no_attention_step_ms" in r]
    fig, axes = plt.subplots(1, 2 if broken else 1, figsize=(12, 4.5) if broken else (8, 4.5), squeeze=False)
    ax = axes[0, 0]
    for (m, ctx) in sorted({(method_label(r), r["context"]) for r in rows}):
        rs = sorted((r for r in rows if method_label(r) == m and r["context"] == ctx), key=lambda r: r["batch"])
        ax.plot([r["batch"] for r in rs], [r["tokens_per_s"] for r in rs], "s--" if m == "full" else "o-",
                label=f"{m}, {ctx:,} tokens")
    ax.set_xlabel("batch"), ax.set_ylabel("decode tokens/s"), ax.set_title("decode throughput")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
    if broken:
        _breakdown_bars(axes[0, 1], broken)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _breakdown_bars(bx, rows) -> None:
    """Stacked bars per row: weights (attention removed), selection, attention, and the roofline."""
    labels = []
    for i, r in enumerate(rows):
        weights = r["no_attention_step_ms"]
        select = r.get("select_only_step_ms", weights) - weights
        attn = r["step_ms"] - weights - select
        bx.bar(i, weights, color="#888", label="weights (no attention)" if i == 0 else None)
        bx.bar(i, select, bottom=weights, color="#e8a33d", label="selection" if i == 0 else None)
        bx.bar(i, attn, bottom=weights + select, color="#3d7be8", label="attention" if i == 0 else None)
        bx.plot([i - 0.4, i + 0.4], [r["roofline_step_ms"]] * 2, "k:", label="roofline" if i == 0 else None)
        labels.append(f"{r['method']}\n{r['context'] // 1024}K b{r['batch']}")
    bx.set_xticks(range(len(rows)), labels, fontsize=7)
    bx.set_ylabel("ms per step"), bx.set_title("step-time breakdown")
    bx.legend(fontsize=8)


def shadowkv_factory(config: ModelConfig, **overrides):
    """context -> the scaled default ShadowKVConfig for this model, with overrides."""
    return lambda context: ShadowKVConfig.for_model(config, context, **overrides)


__all__ = ["EmulatedReuse", "ShadowKVStep", "abstract_decode_state", "bench", "bench_model", "compile_decode",
           "default_limits", "hbm_read_probe", "markdown", "measure_bandwidths", "method_label", "plot", "planned",
           "prefill_shares", "replicate_state", "roofline_s", "run_one", "shadowkv_factory", "speedups", "stage_values",
           "step_bytes"]
