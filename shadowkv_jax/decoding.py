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

from .cache import KVCache
from .config import ModelConfig
from .model.attention import DenseDecode, DensePrefill
from .model.llama import embed, lm_head, run_layers


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


@partial(jax.jit, static_argnames=("config",), donate_argnames=("cache",))
def prefill_rows(params, cache: KVCache, tokens: jax.Array, lengths: jax.Array, row, *, config: ModelConfig):
    """Prefill tokens [b, T] into batch rows [row, row + b) of an existing cache (donated, updated in
    place), so a large batch of long prompts is prefilled a few rows at a time with activations of
    b prompts only. Returns (next-token logits [b, V], cache)."""
    b, t = tokens.shape
    if cache.capacity < t:
        raise ValueError(f"cache capacity={cache.capacity} must be >= the padded prompt length {t}")
    positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    x, cache = run_layers(params, config, DensePrefill(), embed(params, tokens), positions, lengths, cache,
                          jnp.asarray(row, jnp.int32))
    last = x[jnp.arange(b), lengths - 1]
    new_lengths = jax.lax.dynamic_update_slice(cache.lengths, lengths.astype(jnp.int32), (row,))
    return lm_head(params, config, last), dataclasses.replace(cache, lengths=new_lengths)


def _step(params, config, attention, carry, tokens, consts=None, unroll: int = 1):
    """One token per sequence through all layers. tokens [B] -> (logits [B, V], carry)."""
    lengths = carry.lengths
    x, carry = run_layers(params, config, attention, embed(params, tokens[:, None]),
                          lengths[:, None], lengths, carry, consts, unroll=unroll)
    logits = lm_head(params, config, x[:, 0])
    return logits, dataclasses.replace(carry, lengths=lengths + 1)


@partial(jax.jit, static_argnames=("config", "attention"), donate_argnames=("carry",))
def decode_step(params, carry, tokens: jax.Array, consts=None, *, config: ModelConfig,
                attention=DenseDecode()):
    """The streaming step: feed tokens [B] (written at slot lengths[b]) -> (logits [B, V], carry).

    `consts` is read-only state for the attention back-end (not donated, not returned).
    """
    return _step(params, config, attention, carry, tokens, consts)


@partial(jax.jit, static_argnames=("config", "sampler", "num_steps", "attention", "return_logits",
                                   "layer_unroll"),
         donate_argnames=("carry",))
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
