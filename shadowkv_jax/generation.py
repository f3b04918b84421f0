"""Generation: prefill a batch of prompts with a method ("full" or a ShadowKVConfig), then decode
with one jit-compiled `lax.scan`. `generate` = `prefill_prompts` + `decode_prefilled`; keeping the
two apart lets a prefilled ShadowKV state be saved and decoded many times (ablations).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from .api import GenerationError, Model, _round_up, encode_prompts, pad_batch
from .config import ModelConfig
from .decoding import decode_loop, decode_step, prefill
from .model.attention import DenseDecode
from .sampling import Greedy
from .shadowkv.config import ShadowKVConfig, ShadowKVConfigError
from .shadowkv.decode import ShadowKVDecode, resolve_implementation
from .shadowkv.prefill import chunk_slots_for, padded_prompt_length, shadowkv_prefill
from .shadowkv.state import ShadowKVState, place_values

PROMPT_BUCKET = 64
CACHE_BUCKET = 128


@dataclasses.dataclass(frozen=True)
class GenerationResult:
    text: str
    token_ids: list[int]  # generated ids, up to and excluding the first EOS
    prompt_ids: list[int]
    stats: dict


@dataclasses.dataclass(frozen=True, eq=False)
class Prefilled:
    """What a prefill leaves for decoding: the cache or ShadowKV state and the next-token logits."""

    method: Any  # "full" or a ShadowKVConfig
    state: Any  # KVCache or ShadowKVState (values included)
    next_logits: jax.Array  # [B, V]
    prompt_ids: list[list[int]]
    stats: dict


def _check_method(method) -> None:
    if method != "full" and not isinstance(method, ShadowKVConfig):
        raise GenerationError(f"method={method!r} is not supported; use 'full' or a ShadowKVConfig")


def _check_lengths(config: ModelConfig, id_lists, max_new_tokens: int) -> None:
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise GenerationError(f"max_new_tokens={max_new_tokens!r} must be a positive integer")
    longest = max(len(x) for x in id_lists)
    if longest + max_new_tokens > config.max_position_embeddings:
        raise GenerationError(
            f"prompt of {longest} tokens + max_new_tokens={max_new_tokens} exceeds the model's context of "
            f"{config.max_position_embeddings} tokens")


def _check_capacity(method: ShadowKVConfig, max_new_tokens: int) -> None:
    if max_new_tokens > method.max_new_tokens:
        raise GenerationError(
            f"max_new_tokens={max_new_tokens} exceeds ShadowKVConfig.max_new_tokens={method.max_new_tokens}, "
            "the capacity of the state's generated-token buffers; raise it in the config")


_COMPILED: dict = {}


def _compiled(fn, *args, **static):
    """AOT-compile `fn` for these argument shapes (and memory kinds) once; reuse across calls."""
    def sig(x):
        if not hasattr(x, "shape"):
            return repr(x)
        kind = getattr(getattr(x, "sharding", None), "memory_kind", None)
        return tuple(x.shape), str(x.dtype), kind
    key = (fn, tuple(sig(x) for x in jax.tree.leaves(args)), jax.tree.structure(args),
           tuple(sorted(static.items(), key=lambda kv: kv[0])))
    if key not in _COMPILED:
        _COMPILED[key] = fn.lower(*args, **static).compile()
    return _COMPILED[key]


def prefill_prompts(model: Model, prompts, *, method="full", max_new_tokens: int | None = None,
                    chat: bool | None = None) -> Prefilled:
    """Encode and prefill a batch. For "full", the cache holds prompt + max_new_tokens slots
    (default 64); for ShadowKV, the state's generated-token buffers hold `method.max_new_tokens`
    (the default here)."""
    _check_method(method)
    if max_new_tokens is None:
        max_new_tokens = 64 if method == "full" else method.max_new_tokens
    id_lists = encode_prompts(model, prompts, chat)
    _check_lengths(model.config, id_lists, max_new_tokens)
    cfg, lens = model.config, [len(x) for x in id_lists]
    tokens, lengths = pad_batch(id_lists, PROMPT_BUCKET)
    if method == "full":
        capacity = max(_round_up(max(lens) + max_new_tokens, CACHE_BUCKET), tokens.shape[1])
        fn, static = prefill, dict(config=cfg, capacity=capacity)
    else:
        try:
            method.validate(cfg, lens)
        except ShadowKVConfigError as e:
            raise GenerationError(str(e)) from None
        _check_capacity(method, max_new_tokens)
        t_pad = padded_prompt_length(method, max(lens), PROMPT_BUCKET)
        tokens = jnp.pad(tokens, ((0, 0), (0, t_pad - tokens.shape[1])))
        fn, static = shadowkv_prefill, dict(config=cfg, sk_config=method,
                                            chunk_slots=chunk_slots_for(method, lens))
    t0 = time.perf_counter()
    compiled = _compiled(fn, model.params, tokens, lengths, **static)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    logits, state = compiled(model.params, tokens, lengths)
    # "split" keeps every row's values on the device here: the prefill held them all there, so all have room
    # (a split matters where a batch is built in parts: the throughput bench, planner.split_plan)
    if method != "full" and method.resolved_placement(jax.devices()[0].platform) == "host":
        state = place_values(state, "host")
    jax.block_until_ready((logits, state))  # the host copy of the values counts as prefill time
    prefill_s = time.perf_counter() - t0
    stats = {"compile_prefill_s": compile_s, "prefill_s": prefill_s,
             "prefill_tokens_per_s": sum(lens) / prefill_s}
    return Prefilled(method, state, logits, id_lists, stats)


def decode_prefilled(model: Model, pre: Prefilled, *, max_new_tokens: int = 64, sampler=Greedy(),
                     seed: int = 0, return_logits: bool = False) -> list[GenerationResult]:
    """Sample the first token from the prefill logits, then decode under one `lax.scan`.

    The prefilled state is consumed (its buffers are donated); prefill again or restore a saved
    state to decode once more.
    """
    cfg, method = model.config, pre.method
    _check_lengths(cfg, pre.prompt_ids, max_new_tokens)
    if isinstance(method, ShadowKVConfig):
        _check_capacity(method, max_new_tokens)
    if method == "full" and pre.state.capacity < max(len(x) for x in pre.prompt_ids) + max_new_tokens:
        raise GenerationError(f"max_new_tokens={max_new_tokens} exceeds the cache prefilled for this batch")
    eos = jnp.asarray(model.tokenizer.eos_ids if model.tokenizer else [], jnp.int32)
    key_first, key_loop = jax.random.split(jax.random.key(seed))
    steps = max_new_tokens - 1
    batch = len(pre.prompt_ids)

    if isinstance(method, ShadowKVConfig):
        st: ShadowKVState = pre.state
        carry, consts = st.without_values(), st.values
        platform = jax.devices()[0].platform
        try:
            impl = resolve_implementation(cfg, method, platform)
        except ValueError as e:
            raise GenerationError(str(e)) from None
        attention = ShadowKVDecode(method, cfg, st.placement, impl, interpret=platform != "gpu")
    else:
        carry, consts, attention = pre.state, None, DenseDecode()

    first = sampler(pre.next_logits, key_first)
    t0 = time.perf_counter()
    loop = None
    if steps:
        loop = _compiled(decode_loop, model.params, carry, first, key_loop, eos, consts, config=cfg,
                         sampler=sampler, num_steps=steps, attention=attention, return_logits=return_logits)
    compile_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    extras: dict = {}
    if steps:
        rest, _, extras = loop(model.params, carry, first, key_loop, eos, consts)
        rest = jax.block_until_ready(rest)
    else:
        rest = jnp.zeros((batch, 0), jnp.int32)
    decode_s = time.perf_counter() - t0

    all_tokens = np.concatenate([np.asarray(first)[:, None], np.asarray(rest)], axis=1)
    stats = dict(pre.stats, method="full" if method == "full" else "shadowkv", batch=batch,
                 implementation=attention.implementation if method != "full" else "xla",
                 compile_decode_s=compile_s, decode_s=decode_s,
                 decode_tokens_per_s=(batch * steps / decode_s) if steps else float("nan"),
                 device=jax.devices()[0].device_kind)
    stats["compile_s"] = stats["compile_prefill_s"] + compile_s
    if extras.get("metrics") is not None:
        hit = np.asarray(extras["metrics"]["hit_rate"])  # [steps, L]
        stats["hit_rate_per_layer"] = hit[1:].mean(axis=0).tolist() if steps > 1 else []
        stats["hit_rate"] = float(hit[1:].mean()) if steps > 1 else float("nan")
    eos_set = set(int(e) for e in np.asarray(eos))
    results = []
    for b, ids in enumerate(pre.prompt_ids):
        gen = [int(t) for t in all_tokens[b]]
        cut = next((i for i, t in enumerate(gen) if t in eos_set), len(gen))
        gen = gen[:cut]
        text = model.tokenizer.decode(gen) if model.tokenizer else ""
        row = dict(stats, prompt_tokens=len(ids), generated_tokens=len(gen))
        if return_logits:
            parts = [np.asarray(pre.next_logits[b])[None]]
            if steps:
                parts.append(np.asarray(extras["logits"][:, b]))
            row["logits"] = np.concatenate(parts)
        results.append(GenerationResult(text, gen, list(ids), row))
    return results


def generate(model: Model, prompts, *, method="full", max_new_tokens: int = 64, sampler=Greedy(),
             chat: bool | None = None, seed: int = 0, return_logits: bool = False):
    """Generate for one prompt or a batch (prompts of any lengths). One `GenerationResult` each.

    prompts: a string, a list of strings, or token-id lists. Chat models get their chat template
    unless `chat=False`. method: "full" (exact attention) or a `ShadowKVConfig`. Decoding runs as
    one jit-compiled `lax.scan`. Stats hold compile, prefill and decode wall times (separately),
    tokens/s, and for ShadowKV the mean hit rate (overall and per layer).
    """
    pre = prefill_prompts(model, prompts, method=method, max_new_tokens=max_new_tokens, chat=chat)
    return decode_prefilled(model, pre, max_new_tokens=max_new_tokens, sampler=sampler, seed=seed,
                            return_logits=return_logits)


def stream(model: Model, prompt, *, max_new_tokens: int = 64, sampler=Greedy(), chat: bool | None = None,
           seed: int = 0) -> Iterator[str]:
    """Yield text pieces as they are generated (full attention; one jit-compiled step per token)."""
    id_lists = encode_prompts(model, prompt, chat)
    if len(id_lists) != 1:
        raise GenerationError("stream() takes a single prompt")
    _check_lengths(model.config, id_lists, max_new_tokens)
    cfg = model.config
    tokens, lengths = pad_batch(id_lists, PROMPT_BUCKET)
    capacity = max(_round_up(len(id_lists[0]) + max_new_tokens, CACHE_BUCKET), tokens.shape[1])
    logits, cache = prefill(model.params, tokens, lengths, config=cfg, capacity=capacity)
    eos = set(model.tokenizer.eos_ids) if model.tokenizer else set()
    key = jax.random.key(seed)
    generated: list[int] = []
    shown = ""
    for _ in range(max_new_tokens):
        key, sub = jax.random.split(key)
        tok = sampler(logits, sub)
        t = int(tok[0])
        if t in eos:
            break
        generated.append(t)
        text = model.tokenizer.decode(generated)
        if not text.endswith("\ufffd"):  # hold back half a multi-byte character
            yield text[len(shown):]
            shown = text
        if len(generated) == max_new_tokens:
            break
        logits, cache = decode_step(model.params, cache, tok, config=cfg)
