"""GGUF (llama.cpp) files: metadata -> ModelConfig, tensors dequantized with the `gguf` package.

llama.cpp's converter permutes the rows of attn_q / attn_k so that RoPE can rotate interleaved
pairs (x0, x1), (x2, x3), ...; we undo that permutation here and use the HF "rotate half" RoPE.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..config import ConfigError, ModelConfig
from .common import WeightsError, assemble_params

GGUF_LAYER_NAMES = {
    "attn_norm": "attn_norm", "wq": "attn_q", "wk": "attn_k", "wv": "attn_v", "wo": "attn_output",
    "mlp_norm": "ffn_norm", "w_gate": "ffn_gate", "w_up": "ffn_up", "w_down": "ffn_down",
}


def open_gguf(path: str):
    """A `gguf.GGUFReader` with missing and corrupt files turned into clear errors."""
    if not os.path.isfile(path):
        raise WeightsError(f"GGUF file not found: {path!r}")
    from gguf import GGUFReader

    try:
        return GGUFReader(path)
    except Exception as e:  # the reader raises assorted errors on truncated or foreign files
        raise WeightsError(f"{path!r} is not a readable GGUF file ({type(e).__name__}: {e})") from None


def read_metadata(reader) -> dict[str, Any]:
    """All scalar and string metadata; large arrays (vocab, merges) are left to the tokenizer."""
    meta = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer.ggml.") and key.endswith(("tokens", "merges", "token_type", "scores")):
            continue
        try:
            meta[key] = field.contents()
        except Exception:  # exotic field types are not needed for loading
            continue
    return meta


def unpermute_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation. w [n_heads * D, E] (rows = output features)."""
    d_half = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, d_half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def load_gguf(path: str, dtype: str = "float32") -> tuple[ModelConfig, dict]:
    """(config, params) from a GGUF file; params are numpy arrays in `dtype`."""
    from gguf import quants

    reader = open_gguf(path)
    meta = read_metadata(reader)
    tensors = {t.name: t for t in reader.tensors}
    if "token_embd.weight" not in tensors:
        raise WeightsError(f"{path!r}: no 'token_embd.weight' tensor; not a Llama-family GGUF")
    vocab = int(tensors["token_embd.weight"].shape[-1])
    try:
        config = ModelConfig.from_gguf(meta, vocab_size=vocab, tied="output.weight" not in tensors,
                                       dtype=dtype)
    except ConfigError as e:
        raise ConfigError(f"{path!r}: {e}") from None

    def get(name: str) -> np.ndarray:
        if name not in tensors:
            raise WeightsError(f"{path!r}: missing tensor {name!r}")
        t = tensors[name]
        a = np.asarray(quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        if name.endswith("attn_q.weight"):
            a = unpermute_rope_rows(a, config.num_heads)
        elif name.endswith("attn_k.weight"):
            a = unpermute_rope_rows(a, config.num_kv_heads)
        return a

    params = assemble_params(
        config, get, path,
        layer_name=lambda i, ours: f"blk.{i}.{GGUF_LAYER_NAMES[ours]}.weight",
        embed_name="token_embd.weight", norm_name="output_norm.weight", head_name="output.weight")
    return config, params
