"""Full-attention decoding: prefill, one decode step, and a `lax.scan` decode loop.

All three are jit-compiled with the model config, attention back-end and sampler as static
arguments (frozen dataclasses, so hashable and never stale); the cache is donated so each step
updates it in place. Sequences in a batch may have different prompt lengths: prompts are
right-padded, each sequence writes its next token at slot `lengths[b]`, and slots at or past a
sequence's length are never attended.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp

from .cache import KVCache, write_block
from .config import ModelConfig
from .model.attention import DenseDecode, DensePrefill
from .model.llama import DecoderLayer, embed, layer_params, lm_head, run_layers


@partial(jax.jit, static_argnames=("config", "capacity"))
def prefill(params, tokens: jax.Array, lengths: jax.Array, *, config: ModelConfig, capacity: int):
    """tokens [B, T] right-padded, lengths [B] -> (next-token logits [B, V] fp32, KVCache)."""
    b, t = tokens.shape
    if capacity < t:
        raise ValueError(f"capacity={capacity} must be >= the padded prompt length {t}")
    cache = KVCache.zeros(config, b, capacity)
    positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    x, cache = run_layers(params, config, DensePrefill(), embed(params, tokens), positions, lengths, cache)
    last = x[jnp.arange(b), lengths - 1]  # [B, E]: only the last real token needs the LM head
    return lm_head(params, config, last), dataclasses.replace(cache, lengths=lengths)


@partial(jax.jit, static_argnames=("config",))
def _prefill_layer(params, x, lengths, layer, *, config: ModelConfig):
    """One layer over prompts x [b, T, E] -> (x, this layer's K and V [1, b, Hkv, T, D]).

    The K/V come back as small arrays that `write_block` stores into the big cache, so this
    executable never holds the cache (its memory is the layer's activations alone)."""
    b, t = x.shape[:2]
    positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    layer_kv = KVCache.zeros(config, b, t, num_layers=1)  # fully overwritten: XLA keeps only the update
    x, layer_kv = DecoderLayer(config, DensePrefill()).apply({"params": layer_params(params, layer)}, x, positions,
                                                             lengths, layer_kv, jnp.int32(0), jnp.int32(0))
    return x, layer_kv.k, layer_kv.v


@partial(jax.jit, static_argnames=("config",))
def _last_logits(params, x, lengths, *, config: ModelConfig):
    return lm_head(params, config, x[jnp.arange(x.shape[0]), lengths - 1])


@jax.jit
def _set_lengths(all_lengths, lengths, row):
    # the lengths only: K and V never pass through a computation that does not write them
    return jax.lax.dynamic_update_slice(all_lengths, lengths, (row,))


class RowPrefill:
    """Prefill prompts [b, T] into batch rows [row, row + b) of an existing cache, one jit call per layer.

    Each layer's K/V are computed as small arrays and stored by `write_block`, a jit whose only work is
    a dynamic_update_slice of the donated cache array, which XLA does in place (checked on an H100 at
    122,880 tokens x batch 3 by benchmarks/check_donation.py). (Carried through a scan over layers,
    the cache was copied: XLA planned a 25.2 GiB temporary for that executable on the H100.) A large
    batch of long prompts is thus prefilled a few rows at a time with the activations of those rows
    only. `compile` builds the layer executables from shapes, before the cache exists (XLA's
    autotuner needs room for scratch); the writes need no autotuning and go through jit.
    """

    def __init__(self, config: ModelConfig):
        self.config = config
        # uncompiled: the jitted functions themselves (jit caches them across calls and instances)
        self._exe = (embed_tokens, partial(_prefill_layer, config=config), partial(_last_logits, config=config),
                     _set_lengths)

    def compile(self, params, cache, tokens, lengths) -> "RowPrefill":
        cfg = self.config
        b, t = tokens.shape
        x = jax.ShapeDtypeStruct((b, t, cfg.hidden_size), cfg.jnp_dtype)
        i32 = jax.ShapeDtypeStruct((), jnp.int32)
        self._exe = (embed_tokens.lower(params, tokens).compile(),
                     _prefill_layer.lower(params, x, lengths, i32, config=cfg).compile(),
                     _last_logits.lower(params, x, lengths, config=cfg).compile(),
                     _set_lengths.lower(cache.lengths, lengths, i32).compile())
        return self

    def __call__(self, params, cache: KVCache, tokens, lengths, row):
        """-> (next-token logits [b, V], cache)."""
        b, t = tokens.shape
        if cache.capacity < t:
            raise ValueError(f"cache capacity={cache.capacity} must be >= the padded prompt length {t}")
        emb, layer_fn, head, set_lengths = self._exe
        row = jnp.int32(row)
        x = emb(params, tokens)
        k, v, all_lengths = cache.k, cache.v, cache.lengths
        del cache  # k and v are donated below
        for layer in range(self.config.num_layers):
            x, k_new, v_new = layer_fn(params, x, lengths, jnp.int32(layer))
            k = write_block(k, k_new, jnp.int32(layer), row)
            v = write_block(v, v_new, jnp.int32(layer), row)
        return head(params, x, lengths), KVCache(k, v, set_lengths(all_lengths, lengths.astype(jnp.int32), row))


@jax.jit
def embed_tokens(params, tokens):
    return embed(params, tokens)


def prefill_rows(params, cache: KVCache, tokens, lengths, row, *, config: ModelConfig):
    """`RowPrefill(config)(params, cache, tokens, lengths, row)`: the cache is donated (updated in place)."""
    return RowPrefill(config)(params, cache, tokens, lengths, row)


def _step(params, config, attention, carry, tokens, consts=None, unroll: int = 1):
    """One token per sequence through all layers. tokens [B] -> (logits [B, V], carry)."""
    if hasattr(attention, "decode_step"):  # a back-end with its own layer schedule (shadowkv/pipeline.py)
        return attention.decode_step(params, config, carry, tokens, consts)
    lengths = carry.lengths
    x, carry = run_layers(params, config, attention, embed(params, tokens[:, None]),
                          lengths[:, None], lengths, carry, consts, unroll=unroll)
    logits = lm_head(params, config, x[:, 0])
    return logits, dataclasses.replace(carry, lengths=lengths + 1)


# A decode step multiplies [B, E] activations by weights sliced from the stacked [L, ...] arrays inside
# the layer scan. XLA's Triton GEMM fuses that slice into a kernel that read Llama-3.1-8B's weights at
# ~40% of HBM bandwidth on an H100 (13.5 ms/step at batch 13), while cuBLAS reads the slice in place
# at the roofline (5.5 ms; benchmarks/bench_linear.py, BENCHMARKS.md). Decode executables use cuBLAS;
# prefill's large GEMMs keep XLA's own choice.
# The layer scan's body runs as a command buffer (a CUDA graph). XLA's default schedule there orders every
# kernel after the one before; CONCURRENT leaves kernels that no data orders free to run side by side, which
# is what lets one micro-batch's value reads overlap another's GEMMs (shadowkv/pipeline.py): in
# benchmarks/bench_overlap.py, 20.6 ms of kernel and 6.0 ms of GEMMs took 26.1 ms in one body by default and
# 22.1 ms with CONCURRENT (H100). XLA's dot merger would fuse the q, k and v projections into one GEMM by
# concatenating wq|wk|wv into a new [E, (Hq+2Hkv)D] array in every layer of every step (1.1 ms per step at
# the Llama-3.1-8B shape, more than the GEMMs it saves): off, the three GEMMs read the weights in place.
# The GPU options are ignored off the GPU.
DECODE_COMPILER_OPTIONS = {"xla_gpu_enable_triton_gemm": False,
                           "xla_gpu_command_buffer_scheduling_mode": "CONCURRENT",
                           "xla_disable_hlo_passes": "dot-merger"}


@partial(jax.jit, static_argnames=("config", "attention"), donate_argnames=("carry",),
         compiler_options=DECODE_COMPILER_OPTIONS)
def decode_step(params, carry, tokens: jax.Array, consts=None, *, config: ModelConfig,
                attention=DenseDecode()):
    """The streaming step: feed tokens [B] (written at slot lengths[b]) -> (logits [B, V], carry).

    `consts` is read-only state for the attention back-end (not donated, not returned).
    """
    return _step(params, config, attention, carry, tokens, consts)


@partial(jax.jit, static_argnames=("config", "sampler", "num_steps", "attention", "return_logits",
                                   "layer_unroll"),
         donate_argnames=("carry",), compiler_options=DECODE_COMPILER_OPTIONS)
def decode_loop(params, carry, first_tokens: jax.Array, key: jax.Array, eos_ids: jax.Array,
                consts=None, *, config: ModelConfig, sampler, num_steps: int, attention=DenseDecode(),
                return_logits: bool = False, layer_unroll: int = 1):
    """Feed `first_tokens` [B] and sample `num_steps` more under `lax.scan`.

    Returns (tokens [B, num_steps], carry, extras) where extras maps "logits" to [num_steps, B, V]
    (if return_logits) and "metrics" to the carry's per-step `step_metrics` (if it has any). A
    sequence that has produced an id in `eos_ids` keeps emitting its first EOS id afterwards.
    `layer_unroll` unrolls the scan over layers that many times (True: fully).
    """
    eos_fill = eos_ids[0] if eos_ids.shape[0] else jnp.int32(0)

    def body(state, step_key):
        c, tok, done = state
        logits, c = _step(params, config, attention, c, tok, consts, layer_unroll)
        nxt = jnp.where(done, eos_fill, sampler(logits, step_key))
        done = done | jnp.isin(nxt, eos_ids)
        extras = {"metrics": getattr(c, "step_metrics", None)}
        if return_logits:
            extras["logits"] = logits
        return (c, nxt, done), (nxt, extras)

    done0 = jnp.isin(first_tokens, eos_ids)
    (carry, _, _), (tokens, extras) = jax.lax.scan(
        body, (carry, first_tokens.astype(jnp.int32), done0), jax.random.split(key, num_steps))
    return tokens.T, carry, extras
