"""Stateless building blocks: RMSNorm, RoPE (default and Llama-3.1 "llama3" scaling), SwiGLU.

RoPE uses the "rotate half" layout of HF Llama checkpoints; interleaved layouts (GGUF q/k rows, GLM)
are permuted into it at load time (`weights/`), which leaves every q.k product unchanged, so one RoPE
serves every weight format.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ..config import ModelConfig


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    """Normalise in fp32, cast back, then scale (the order HF Llama uses)."""
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return scale * x32.astype(x.dtype)


def rope_inv_freq(config: ModelConfig) -> np.ndarray:
    """Inverse frequencies [R/2] (R = rotary dims) in float64 numpy, llama3 scaling applied."""
    d = config.rotary_dim
    inv = 1.0 / (config.rope_theta ** (np.arange(0, d, 2, dtype=np.float64) / d))
    s = config.rope_scaling
    if s is None:
        return inv
    low_wavelen = s.original_max_position_embeddings / s.low_freq_factor
    high_wavelen = s.original_max_position_embeddings / s.high_freq_factor
    wavelen = 2 * math.pi / inv
    scaled = np.where(wavelen > low_wavelen, inv / s.factor, inv)
    smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
        s.high_freq_factor - s.low_freq_factor)
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return np.where(medium, smoothed, scaled)


def rope_cos_sin(positions: jax.Array, config: ModelConfig) -> tuple[jax.Array, jax.Array]:
    """cos, sin of shape positions.shape + [R] (fp32; R = rotary dims), for true token positions."""
    inv = jnp.asarray(rope_inv_freq(config), jnp.float32)
    angles = positions.astype(jnp.float32)[..., None] * inv  # [..., D/2]
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x [..., H, D] rotated by cos/sin [..., R] (broadcast over heads) on its first R dims; fp32 math.

    R < D is partial rotary (GLM): the remaining dims pass through unrotated.
    """
    r = cos.shape[-1]
    x32 = x.astype(jnp.float32)
    xr, xp = x32[..., :r], x32[..., r:]
    half = r // 2
    rotated = jnp.concatenate([-xr[..., half:], xr[..., :half]], axis=-1)
    out = jnp.concatenate([xr * cos[..., None, :] + rotated * sin[..., None, :], xp], axis=-1)
    return out.astype(x.dtype)


def swiglu(x: jax.Array, w_gate: jax.Array, w_up: jax.Array, w_down: jax.Array) -> jax.Array:
    return (jax.nn.silu(x @ w_gate) * (x @ w_up)) @ w_down
