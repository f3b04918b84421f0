"""Shared helpers for weight loaders: HF-layout tensors -> our stacked params pytree."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..config import ModelConfig


class WeightsError(ValueError):
    """A weights file that is missing, corrupt, or does not match its config."""


# our per-layer name -> (HF name suffix, transpose to [in, out])
HF_LAYER_NAMES = {
    "attn_norm": ("input_layernorm.weight", False),
    "wq": ("self_attn.q_proj.weight", True),
    "wk": ("self_attn.k_proj.weight", True),
    "wv": ("self_attn.v_proj.weight", True),
    "wo": ("self_attn.o_proj.weight", True),
    "mlp_norm": ("post_attention_layernorm.weight", False),
    "w_gate": ("mlp.gate_proj.weight", True),
    "w_up": ("mlp.up_proj.weight", True),
    "w_down": ("mlp.down_proj.weight", True),
}


def numpy_dtype(name: str) -> np.dtype:
    """numpy dtype for a config dtype name (bfloat16 comes from ml_dtypes, a JAX dependency)."""
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


HF_BIAS_NAMES = {"bq": "self_attn.q_proj.bias", "bk": "self_attn.k_proj.bias", "bv": "self_attn.v_proj.bias"}


def layer_names(config: ModelConfig) -> dict[str, tuple[str, bool]]:
    """Our per-layer name -> (HF name suffix, transpose) for this config (biases when it has them)."""
    names = dict(HF_LAYER_NAMES)
    if config.attention_bias:
        names.update({k: (v, False) for k, v in HF_BIAS_NAMES.items()})
    return names


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Per-layer shapes in our [in, out] layout."""
    e, d, f = config.hidden_size, config.head_dim, config.intermediate_size
    hq, hkv = config.num_heads, config.num_kv_heads
    shapes = {"attn_norm": (e,), "wq": (e, hq * d), "wk": (e, hkv * d), "wv": (e, hkv * d),
              "wo": (hq * d, e), "mlp_norm": (e,), "w_gate": (e, f), "w_up": (e, f), "w_down": (f, e)}
    if config.attention_bias:
        shapes.update({"bq": (hq * d,), "bk": (hkv * d,), "bv": (hkv * d,)})
    return shapes


def check_shape(name: str, array: np.ndarray, expected: tuple[int, ...], source: str) -> None:
    if tuple(array.shape) != tuple(expected):
        raise WeightsError(f"{source}: tensor {name!r} has shape {tuple(array.shape)}, "
                           f"but the config implies {tuple(expected)}")


def assemble_params(config: ModelConfig, get: Callable[[str], np.ndarray], source: str,
                    layer_name: Callable[[int, str], str], embed_name: str, norm_name: str,
                    head_name: str | None) -> dict:
    """Build the stacked params pytree (numpy, config dtype) from a name -> array getter.

    `get` returns HF-layout arrays ([out, in] for projections) as float32 numpy.
    """
    dt = numpy_dtype(config.dtype)
    shapes = expected_shapes(config)
    layers = {}
    for ours, (_, transpose) in layer_names(config).items():
        stacked = np.empty((config.num_layers, *shapes[ours]), dt)
        for i in range(config.num_layers):
            name = layer_name(i, ours)
            a = get(name)
            a = a.T if transpose else a
            check_shape(name, a, shapes[ours], source)
            stacked[i] = a.astype(dt)
        layers[ours] = stacked
    emb = get(embed_name)
    check_shape(embed_name, emb, (config.vocab_size, config.hidden_size), source)
    norm = get(norm_name)
    check_shape(norm_name, norm, (config.hidden_size,), source)
    params = {"embed": emb.astype(dt), "final_norm": norm.astype(dt), "layers": layers}
    if not config.tie_word_embeddings:
        head = get(head_name).T
        check_shape(head_name, head, (config.hidden_size, config.vocab_size), source)
        params["lm_head"] = head.astype(dt)
    return params
