"""Our own checkpoints: converted params saved with orbax, plus config and tokenizer beside them.

Layout of a checkpoint directory (under `checkpoints/` by convention):
    shadowkv_model.json   marker + ModelConfig
    params/               orbax StandardCheckpointer
    tokenizer/            tokenizer files (either kind)
Loading one skips GGUF dequantization and safetensors conversion.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from ..config import ModelConfig
from .common import WeightsError

MARKER = "shadowkv_model.json"
FORMAT_VERSION = 1


def is_checkpoint(path: str) -> bool:
    return os.path.isfile(os.path.join(path, MARKER))


def save_checkpoint(directory: str, config: ModelConfig, params, tokenizer=None) -> str:
    import orbax.checkpoint as ocp

    directory = os.path.abspath(directory)
    os.makedirs(directory, exist_ok=True)
    params_dir = os.path.join(directory, "params")
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(params_dir, jax.tree.map(np.asarray, params), force=True)
    if tokenizer is not None:
        tokenizer.save(os.path.join(directory, "tokenizer"))
    with open(os.path.join(directory, MARKER), "w") as f:
        json.dump({"format_version": FORMAT_VERSION, "config": config.to_dict()}, f, indent=1)
    return directory


def load_checkpoint(directory: str) -> tuple[ModelConfig, dict, object]:
    """(config, params as jax arrays, tokenizer or None)."""
    import orbax.checkpoint as ocp

    from ..model.llama import abstract_params
    from ..tokenizer import load_saved_tokenizer

    directory = os.path.abspath(directory)
    try:
        with open(os.path.join(directory, MARKER)) as f:
            meta = json.load(f)
        config = ModelConfig.from_dict(meta["config"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise WeightsError(f"{directory!r} is not a readable shadowkv_jax checkpoint ({e})") from None
    target = abstract_params(config)
    try:
        with ocp.StandardCheckpointer() as ckptr:
            stored = ckptr.metadata(os.path.join(directory, "params"))
            stored_tree = getattr(stored, "item_metadata", stored)
            _check_tree(target, stored_tree, directory)
            params = ckptr.restore(os.path.join(directory, "params"), target)
    except WeightsError:
        raise
    except Exception as e:
        raise WeightsError(f"{directory!r}: could not restore params ({type(e).__name__}: {e})") from None
    tok_dir = os.path.join(directory, "tokenizer")
    tokenizer = load_saved_tokenizer(tok_dir) if os.path.isdir(tok_dir) else None
    return config, params, tokenizer


def _check_tree(target, stored, directory: str) -> None:
    """Refuse a checkpoint whose tensors do not match the shapes its config implies."""
    flat_t = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(target)[0]}
    try:
        flat_s = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(stored)[0]}
    except Exception:
        return
    for name, t in flat_t.items():
        s = flat_s.get(name)
        if s is None:
            raise WeightsError(f"{directory!r}: checkpoint lacks tensor {name}")
        shape = tuple(getattr(s, "shape", ()))
        if shape and shape != tuple(t.shape):
            raise WeightsError(f"{directory!r}: tensor {name} has shape {shape}, config implies {tuple(t.shape)}")
