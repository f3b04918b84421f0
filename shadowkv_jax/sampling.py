"""Samplers: tiny frozen dataclasses with one method, `(logits [B, V], key) -> tokens [B] int32`."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Greedy:
    def __call__(self, logits: jax.Array, key: jax.Array) -> jax.Array:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class Temperature:
    temperature: float = 1.0

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature!r} must be > 0 (use Greedy() for argmax)")

    def __call__(self, logits, key):
        return jax.random.categorical(key, logits.astype(jnp.float32) / self.temperature).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class TopP:
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches `p`."""

    p: float = 0.9
    temperature: float = 1.0

    def __post_init__(self):
        if not 0 < self.p <= 1:
            raise ValueError(f"p={self.p!r} must be in (0, 1]")
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature!r} must be > 0")

    def __call__(self, logits, key):
        logits = logits.astype(jnp.float32) / self.temperature
        sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
        cum = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
        # number of tokens kept: those whose preceding mass is < p (always at least one)
        keep = jnp.sum(cum - jax.nn.softmax(sorted_logits, axis=-1) < self.p, axis=-1, keepdims=True)
        threshold = jnp.take_along_axis(sorted_logits, keep - 1, axis=-1)
        masked = jnp.where(logits >= threshold, logits, -jnp.inf)
        return jax.random.categorical(key, masked).astype(jnp.int32)
