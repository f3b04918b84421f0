"""Frozen model configuration, built from an HF `config.json` dict or GGUF metadata.

Letters used across the package: B batch, T query length, S key length, L layers, Hq query heads,
Hkv KV heads, G = Hq / Hkv (group size), D head dim, E hidden size, F MLP size, V vocab.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "GlmForCausalLM")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


class ConfigError(ValueError):
    """A model configuration that cannot describe a supported model."""


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """Llama-3.1 ("llama3") frequency scaling of RoPE."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    vocab_size: int  # V
    hidden_size: int  # E
    intermediate_size: int  # F, SwiGLU width
    num_layers: int  # L
    num_heads: int  # Hq
    num_kv_heads: int  # Hkv; Hq must be a multiple
    head_dim: int  # D
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    dtype: str = "float32"  # compute and parameter dtype: "float32" | "bfloat16" | "float16"
    architecture: str = "LlamaForCausalLM"
    attention_bias: bool = False  # biases on the q, k, v projections (Qwen2, GLM)
    partial_rotary_factor: float = 1.0  # RoPE rotates the first head_dim * factor dims (GLM: 0.5)

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                     "num_kv_heads", "head_dim", "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}={value!r} must be a positive integer")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}")
        if self.head_dim % 2:
            raise ConfigError(f"head_dim={self.head_dim} must be even for RoPE")
        if not 0 < self.partial_rotary_factor <= 1 or self.rotary_dim % 2:
            raise ConfigError(f"partial_rotary_factor={self.partial_rotary_factor} must be in (0, 1] and give an "
                              f"even number of rotary dims (head_dim={self.head_dim})")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype={self.dtype!r} is not one of {sorted(DTYPES)}")
        if self.architecture not in SUPPORTED_ARCHITECTURES:
            raise ConfigError(
                f"architecture={self.architecture!r} is not supported; supported: {SUPPORTED_ARCHITECTURES}")

    @property
    def group_size(self) -> int:  # G
        return self.num_heads // self.num_kv_heads

    @property
    def rotary_dim(self) -> int:
        return int(round(self.head_dim * self.partial_rotary_factor))

    @property
    def jnp_dtype(self):
        return DTYPES[self.dtype]

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
        """Inverse of `to_dict` (used by our own checkpoints)."""
        d = dict(d)
        if d.get("rope_scaling") is not None:
            d["rope_scaling"] = RopeScaling(**d["rope_scaling"])
        return cls(**d)

    # ------------------------------------------------------------------ HF config.json
    @classmethod
    def from_hf(cls, hf: Mapping[str, Any], dtype: str | None = None) -> "ModelConfig":
        """From an HF `config.json` dict; both `rope_theta`/`rope_scaling` and `rope_parameters`."""
        archs = hf.get("architectures") or [hf.get("model_type", "<missing>")]
        arch = archs[0]
        if arch not in SUPPORTED_ARCHITECTURES:
            raise ConfigError(f"architecture={arch!r} in config.json is not supported; "
                              f"supported: {SUPPORTED_ARCHITECTURES}")
        try:
            hidden, heads = int(hf["hidden_size"]), int(hf["num_attention_heads"])
            kv_heads = int(hf.get("num_key_value_heads") or heads)
            head_dim = int(hf.get("head_dim") or hidden // heads)
            theta, scaling = _hf_rope(hf)
            if hf.get("use_sliding_window"):
                raise ConfigError("use_sliding_window=True is not supported (full attention only)")
            rope_params = hf.get("rope_parameters") or {}
            partial = hf.get("partial_rotary_factor", rope_params.get("partial_rotary_factor"))
            if partial is None:
                partial = 0.5 if arch == "GlmForCausalLM" else 1.0
            if dtype is None:
                dtype = str(hf.get("torch_dtype") or hf.get("dtype") or "float32")
                dtype = dtype if dtype in DTYPES else "float32"
            return cls(
                vocab_size=int(hf["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(hf["intermediate_size"]),
                num_layers=int(hf["num_hidden_layers"]),
                num_heads=heads,
                num_kv_heads=kv_heads,
                head_dim=head_dim,
                rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
                rope_theta=theta,
                rope_scaling=scaling,
                max_position_embeddings=int(hf.get("max_position_embeddings", 4096)),
                tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
                dtype=dtype,
                architecture=arch,
                attention_bias=bool(hf.get("attention_bias", arch == "Qwen2ForCausalLM")),
                partial_rotary_factor=float(partial),
            )
        except KeyError as e:
            raise ConfigError(f"config.json lacks the required field {e.args[0]!r}") from None

    # ------------------------------------------------------------------ GGUF metadata
    @classmethod
    def from_gguf(cls, meta: Mapping[str, Any], *, vocab_size: int, tied: bool,
                  dtype: str = "float32") -> "ModelConfig":
        arch = meta.get("general.architecture")
        if arch != "llama":
            raise ConfigError(f"GGUF general.architecture={arch!r} is not supported; supported: ['llama']")

        def get(key, default=None):
            full = f"llama.{key}"
            if full not in meta:
                if default is None:
                    raise ConfigError(f"GGUF metadata lacks the required key {full!r}")
                return default
            return meta[full]

        hidden, heads = int(get("embedding_length")), int(get("attention.head_count"))
        head_dim = int(get("attention.key_length", hidden // heads))
        scaling = None
        if meta.get("llama.rope.scaling.type") == "llama3" or "llama.rope.scaling.low_freq_factor" in meta:
            scaling = RopeScaling(
                factor=float(get("rope.scaling.factor")),
                low_freq_factor=float(get("rope.scaling.low_freq_factor", 1.0)),
                high_freq_factor=float(get("rope.scaling.high_freq_factor", 4.0)),
                original_max_position_embeddings=int(get("rope.scaling.original_context_length", 8192)),
            )
        return cls(
            vocab_size=vocab_size,
            hidden_size=hidden,
            intermediate_size=int(get("feed_forward_length")),
            num_layers=int(get("block_count")),
            num_heads=heads,
            num_kv_heads=int(get("attention.head_count_kv", heads)),
            head_dim=head_dim,
            rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
            rope_theta=float(get("rope.freq_base", 10000.0)),
            rope_scaling=scaling,
            max_position_embeddings=int(get("context_length", 4096)),
            tie_word_embeddings=tied,
            dtype=dtype,
        )


def _hf_rope(hf: Mapping[str, Any]) -> tuple[float, RopeScaling | None]:
    """(theta, scaling) from either spelling: older `rope_theta` + `rope_scaling`, newer `rope_parameters`."""
    params = hf.get("rope_parameters")
    if params is not None:
        theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
        scaling_d = params
    else:
        theta = float(hf.get("rope_theta", 10000.0))
        scaling_d = hf.get("rope_scaling") or {}
    kind = scaling_d.get("rope_type", scaling_d.get("type", "default"))
    if kind in (None, "default"):
        return theta, None
    if kind != "llama3":
        raise ConfigError(f"rope type {kind!r} is not supported; supported: 'default', 'llama3'")
    try:
        return theta, RopeScaling(
            factor=float(scaling_d["factor"]),
            low_freq_factor=float(scaling_d["low_freq_factor"]),
            high_freq_factor=float(scaling_d["high_freq_factor"]),
            original_max_position_embeddings=int(scaling_d["original_max_position_embeddings"]),
        )
    except KeyError as e:
        raise ConfigError(f"llama3 rope scaling lacks the field {e.args[0]!r}") from None
