"""ShadowKV prefill: the model's ordinary exact prefill, building the shadow state layer by layer.

Inside each layer the attention back-end receives pre-RoPE keys, post-RoPE keys and values; it
attends exactly (causal) and, from the same tensors, writes this layer's slice of the state:
low-rank factors of the chunked pre-RoPE keys, chunk landmarks, outlier chunks, the exact local
window and the chunk-contiguous values. No second pass over the prompt.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp

from ..config import ModelConfig
from ..model.attention import causal_attention
from ..model.llama import embed, lm_head, run_layers
from .config import ShadowKVConfig
from .factorize import factorize
from .state import ShadowKVState, empty_state, selectable_slots

COS_EPS = 1e-6  # guards the cosine of zero-norm keys / landmarks


def _heads_first(x: jax.Array) -> jax.Array:
    return jnp.swapaxes(x, 1, 2)  # [B, T, Hkv, D] -> [B, Hkv, T, D]


def chunk_outlier_scores(chunk_keys: jax.Array, landmarks: jax.Array) -> jax.Array:
    """min over a chunk's tokens of cos(k_i, landmark). chunk_keys [..., c, D], landmarks [..., D]."""
    k32, l32 = chunk_keys.astype(jnp.float32), landmarks.astype(jnp.float32)
    dots = jnp.einsum("...cd,...d->...c", k32, l32)
    norms = jnp.linalg.norm(k32, axis=-1) * jnp.linalg.norm(l32, axis=-1)[..., None]
    return jnp.min(dots / jnp.maximum(norms, COS_EPS), axis=-1)


def build_layer(cfg: ShadowKVConfig, k_pre, k, v, lengths, chunk_slots: int):
    """This layer's state slices from k_pre, k, v [B, T, Hkv, D] and lengths [B]. Returns a dict."""
    b, t, h, d = k.shape
    c, n_c, n_out = cfg.chunk_size, chunk_slots, cfg.outlier_chunks
    n_tok = n_c * c
    num_chunks = (lengths - cfg.local_chunks * c) // c  # [B]
    token_valid = jnp.arange(n_tok)[None, :] < (num_chunks * c)[:, None]  # [B, n_c*c]

    # low-rank keys: one basis for all heads, padding rows zeroed so they do not shape it
    kp = jnp.where(token_valid[..., None], k_pre[:, :n_tok].reshape(b, n_tok, h * d), 0)
    a, w = factorize(kp, cfg.rank, cfg.factorization)  # [B, n_c*c, r], [B, r, Hkv*D]
    w = jnp.swapaxes(w.reshape(b, cfg.rank, h, d), 1, 2)  # [B, Hkv, r, D]

    kc = _heads_first(k[:, :n_tok]).reshape(b, h, n_c, c, d)
    vc = _heads_first(v[:, :n_tok]).reshape(b, h, n_c, c, d)
    landmarks = jnp.mean(kc.astype(jnp.float32), axis=3)  # [B, Hkv, n_c, D]

    chunk_valid = (jnp.arange(n_c)[None, :] < num_chunks[:, None])[:, None, :]  # [B, 1, n_c]
    scores = jnp.where(chunk_valid, chunk_outlier_scores(kc, landmarks), jnp.inf)
    if n_out:
        _, outlier_ids = jax.lax.top_k(-scores, n_out)  # lowest cosine first, [B, Hkv, n_out]
        is_outlier = jnp.any(jnp.arange(n_c)[:, None] == outlier_ids[..., None, :], axis=-1)
        gather = partial(jnp.take_along_axis, indices=outlier_ids[..., None, None], axis=2)
        outlier_k = gather(kc).reshape(b, h, n_out * c, d)
        outlier_v = gather(vc).reshape(b, h, n_out * c, d)
    else:
        is_outlier = jnp.zeros((b, h, n_c), bool)
        outlier_k = outlier_v = jnp.zeros((b, h, 0, d), k.dtype)
    # selectable chunks: the non-outliers, ascending (a stable sort puts outliers last)
    chunk_ids = jnp.argsort(is_outlier, axis=-1, stable=True)[..., : n_c - n_out].astype(jnp.int32)
    sel_landmarks = jnp.take_along_axis(landmarks, chunk_ids[..., None], axis=2)
    # alignment slots (state.SELECT_ALIGN): id n_c is past every sequence's chunks, so never valid
    align = selectable_slots(cfg, n_c) - (n_c - n_out)
    chunk_ids = jnp.pad(chunk_ids, ((0, 0), (0, 0), (0, align)), constant_values=n_c)
    sel_landmarks = jnp.pad(sel_landmarks, ((0, 0), (0, 0), (0, align), (0, 0)))

    # local window: tokens [num_chunks * c, length), at most n_loc * c + c - 1 of them
    starts = num_chunks * c
    window = lambda x, s: jax.lax.dynamic_slice_in_dim(x, s, cfg.local_capacity, axis=0)
    local_k = _heads_first(jax.vmap(window)(k, starts))
    local_v = _heads_first(jax.vmap(window)(v, starts))

    dt = k.dtype
    return {"a": a.astype(dt), "w": w.astype(dt), "landmarks": sel_landmarks.astype(dt),
            "chunk_ids": chunk_ids, "outlier_k": outlier_k, "outlier_v": outlier_v,
            "local_k": local_k, "local_v": local_v, "values": vc}


@dataclasses.dataclass(frozen=True)
class ShadowKVPrefill:
    """Exact causal attention; writes this layer's shadow-state slices into the carry."""

    config: ShadowKVConfig
    chunk_slots: int

    def __call__(self, q, k, v, k_pre, *, carry: ShadowKVState, layer, positions, lengths, consts=None):
        out = causal_attention(q, k, v, lengths)
        parts = build_layer(self.config, k_pre, k, v, lengths, self.chunk_slots)
        updates = {}
        for name, x in parts.items():
            full = getattr(carry, name)
            x = x.astype(full.dtype)[None]
            updates[name] = jax.lax.dynamic_update_slice(full, x, (layer,) + (0,) * (x.ndim - 1))
        return out, dataclasses.replace(carry, **updates)


def chunk_slots_for(cfg: ShadowKVConfig, prompt_lengths) -> int:
    """n_c: chunk slots for the longest prompt of a batch (a static shape)."""
    return cfg.num_chunks(int(max(prompt_lengths)))


def padded_prompt_length(cfg: ShadowKVConfig, longest: int, bucket: int) -> int:
    """Padded T: room for the local-window slice of the longest prompt (+ c - 1), bucketed."""
    need = longest + cfg.chunk_size - 1
    return -(-need // bucket) * bucket


@partial(jax.jit, static_argnames=("config", "sk_config", "chunk_slots"))
def shadowkv_prefill(params, tokens: jax.Array, lengths: jax.Array, *, config: ModelConfig,
                     sk_config: ShadowKVConfig, chunk_slots: int):
    """tokens [B, T] right-padded, lengths [B] -> (next-token logits [B, V], ShadowKVState).

    Values come back on the device; `place_values` moves them to host memory afterwards.
    """
    b, t = tokens.shape
    state = empty_state(config, sk_config, b, chunk_slots)
    positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    backend = ShadowKVPrefill(sk_config, chunk_slots)
    x, state = run_layers(params, config, backend, embed(params, tokens), positions, lengths, state)
    logits = lm_head(params, config, x[jnp.arange(b), lengths - 1])
    c = sk_config.chunk_size
    num_chunks = (lengths - sk_config.local_chunks * c) // c
    state = dataclasses.replace(state, prompt_lengths=lengths, lengths=lengths, num_chunks=num_chunks,
                                local_lengths=lengths - num_chunks * c)
    return logits, state
