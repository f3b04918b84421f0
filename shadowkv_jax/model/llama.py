"""Llama-family decoder in Flax (linen), used functionally: Llama, Qwen2 (q/k/v biases) and GLM
(q/k/v biases, partial rotary) share it.

Parameters are one pytree with every layer's weights stacked on a leading L axis:

    {"embed": [V, E], "final_norm": [E], "lm_head": [E, V] (untied only),
     "layers": {"attn_norm": [L, E], "wq": [L, E, Hq*D], "wk": [L, E, Hkv*D], "wv": [L, E, Hkv*D],
                "wo": [L, Hq*D, E], "mlp_norm": [L, E], "w_gate": [L, E, F], "w_up": [L, E, F],
                "w_down": [L, F, E], "bq": [L, Hq*D], "bk"/"bv": [L, Hkv*D] (with attention_bias)}}

`run_layers` scans one `DecoderLayer` over L with `jax.lax.scan`, so compile time does not grow
with depth. Caches are never Flax variables: they travel as the `carry` of an attention back-end
(model/attention.py) and come back out, so the model is `(params, tokens, carry) -> (out, carry)`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..config import ModelConfig
from .attention import CausalAttention
from .layers import apply_rope, rms_norm, rope_cos_sin, swiglu

Params = dict[str, Any]
INIT_STD = 0.02
MLP_TOKEN_CHUNK = 4096  # long prompts run the MLP this many tokens at a time (bounded activations)


def in_token_chunks(fn, x: jax.Array, chunk: int = MLP_TOKEN_CHUNK) -> jax.Array:
    """fn applied row-wise to x [B, T, E], `chunk` tokens at a time when T is longer.

    The MLP's [B, T, F] intermediates are the largest prefill activations (7 GB at 122K tokens for
    Llama-3.1-8B); chunking the token axis bounds them at [B, chunk, F] and changes no value.
    """
    b, t, e = x.shape
    if t <= chunk:
        return fn(x)
    pad = -t % chunk
    xs = jnp.pad(x, ((0, 0), (0, pad), (0, 0))).reshape(b, (t + pad) // chunk, chunk, e)
    out = jax.lax.map(fn, jnp.moveaxis(xs, 1, 0))  # [n, B, chunk, E]
    return jnp.moveaxis(out, 0, 1).reshape(b, t + pad, e)[:, :t]


class DecoderLayer(nn.Module):
    config: ModelConfig
    attention: Any  # a frozen back-end from model/attention.py (or ShadowKV's)

    @nn.compact
    def __call__(self, x, positions, lengths, carry, layer, consts=None, rope=None):
        """x [B, T, E], positions [B, T] true token positions, lengths [B]; rope: (cos, sin) at the positions
        (rope_cos_sin), if the caller computed them once for every layer."""
        c = self.config
        e, d, hq, hkv = c.hidden_size, c.head_dim, c.num_heads, c.num_kv_heads
        dt = c.jnp_dtype
        w = nn.initializers.normal(INIT_STD)
        ones = nn.initializers.ones
        attn_norm = self.param("attn_norm", ones, (e,), dt)
        wq = self.param("wq", w, (e, hq * d), dt)
        wk = self.param("wk", w, (e, hkv * d), dt)
        wv = self.param("wv", w, (e, hkv * d), dt)
        wo = self.param("wo", w, (hq * d, e), dt)
        mlp_norm = self.param("mlp_norm", ones, (e,), dt)
        w_gate = self.param("w_gate", w, (e, c.intermediate_size), dt)
        w_up = self.param("w_up", w, (e, c.intermediate_size), dt)
        w_down = self.param("w_down", w, (c.intermediate_size, e), dt)
        if c.attention_bias:
            zeros = nn.initializers.zeros
            bq = self.param("bq", zeros, (hq * d,), dt)
            bk = self.param("bk", zeros, (hkv * d,), dt)
            bv = self.param("bv", zeros, (hkv * d,), dt)
        else:
            bq = bk = bv = 0
        p = dict(attn_norm=attn_norm, wq=wq, wk=wk, wv=wv, bq=bq, bk=bk, bv=bv, wo=wo, mlp_norm=mlp_norm,
                 w_gate=w_gate, w_up=w_up, w_down=w_down)
        q, k, v, k_pre = layer_qkv(p, x, positions, c, rope)
        rows = lengths.shape[0]  # x may carry padding rows past the batch (run_layers' decode_row_padding)
        if x.shape[0] > rows:
            q, k, v, k_pre = (y[:rows] for y in (q, k, v, k_pre))
        with jax.named_scope("attention"):
            attn, carry = self.attention(q, k, v, k_pre, carry=carry, layer=layer,
                                         positions=positions, lengths=lengths, consts=consts)
        if x.shape[0] > rows:
            attn = pad_rows(attn, x.shape[0] - rows)
        return layer_out(p, x, attn, c), carry


# The layer's math as functions of one layer's parameters (a dict with DecoderLayer's names; absent biases
# count as 0): DecoderLayer runs them around its attention back-end, and schedules that interleave the layers of
# several micro-batches (shadowkv/pipeline.py) run them directly.

def layer_qkv(p, x, positions, c: ModelConfig, rope=None):
    """x [B, T, E], positions [B, T] -> q [B, T, Hq, D], k and v [B, T, Hkv, D] (k after RoPE), k_pre.
    rope: (cos, sin) = rope_cos_sin(positions, c), when computed once for all layers."""
    b, t, _ = x.shape
    d, hq, hkv = c.head_dim, c.num_heads, c.num_kv_heads
    with jax.named_scope("qkv"):
        h = rms_norm(x, p["attn_norm"], c.rms_norm_eps)
        q = (h @ p["wq"] + p.get("bq", 0)).reshape(b, t, hq, d)
        k_pre = (h @ p["wk"] + p.get("bk", 0)).reshape(b, t, hkv, d)
        v = (h @ p["wv"] + p.get("bv", 0)).reshape(b, t, hkv, d)
        cos, sin = rope_cos_sin(positions, c) if rope is None else rope
        return apply_rope(q, cos, sin), apply_rope(k_pre, cos, sin), v, k_pre


def layer_out(p, x, attn, c: ModelConfig):
    """The residual stream after the attention output projection and the MLP: attn [B, T, Hq, D]."""
    b, t, _ = x.shape
    x = x + attn.reshape(b, t, c.num_heads * c.head_dim) @ p["wo"]
    with jax.named_scope("mlp"):
        mlp = lambda h: h + swiglu(rms_norm(h, p["mlp_norm"], c.rms_norm_eps), p["w_gate"], p["w_up"], p["w_down"])
        return in_token_chunks(mlp, x)


def layer_params(params: Params, layer) -> Params:
    """Layer `layer`'s parameters, sliced from the stacked [L, ...] arrays."""
    return jax.tree.map(lambda w: jax.lax.dynamic_index_in_dim(w, layer, 0, keepdims=False), params["layers"])


def init_params(config: ModelConfig, rng: jax.Array) -> Params:
    """Random parameters of the real shapes (tests, throughput benchmarks)."""
    k_embed, k_head, k_layers = jax.random.split(rng, 3)
    e, dt = config.hidden_size, config.jnp_dtype
    layer = DecoderLayer(config, CausalAttention())
    x = jnp.zeros((1, 1, e), dt)
    pos = jnp.zeros((1, 1), jnp.int32)
    lens = jnp.ones((1,), jnp.int32)

    def one(key):
        return layer.init(key, x, pos, lens, None, 0)["params"]

    params = {
        "embed": (jax.random.normal(k_embed, (config.vocab_size, e), jnp.float32) * INIT_STD).astype(dt),
        "final_norm": jnp.ones((e,), dt),
        "layers": jax.vmap(one)(jax.random.split(k_layers, config.num_layers)),
    }
    if not config.tie_word_embeddings:
        params["lm_head"] = (jax.random.normal(k_head, (e, config.vocab_size), jnp.float32)
                             * INIT_STD).astype(dt)
    return params


def abstract_params(config: ModelConfig) -> Params:
    """Shapes and dtypes of the parameters, without allocating them."""
    return jax.eval_shape(lambda: init_params(config, jax.random.key(0)))


def embed(params: Params, tokens: jax.Array) -> jax.Array:
    return jnp.take(params["embed"], tokens, axis=0)


def run_layers(params: Params, config: ModelConfig, attention, x, positions, lengths, carry,
               consts=None, unroll: int | bool = 1):
    """All decoder layers under one `lax.scan`. Returns (hidden [B, T, E], carry).

    `carry` is threaded through the layers (and may be updated in place); `consts` is read-only.
    A decode step's rows are padded to a multiple of DECODE_ROW_MULTIPLE for the layers' dense work (see there).
    """
    layer = DecoderLayer(config, attention)
    rope = step_rope(positions, config)
    b = x.shape[0]
    pad = decode_row_padding(b, x.shape[1])
    if pad:
        x, rope = pad_rows(x, pad), tuple(pad_rows(r, pad) for r in rope)

    def body(state, xs):
        h, c = state
        layer_params, i = xs
        h, c = layer.apply({"params": layer_params}, h, positions, lengths, c, i, consts, rope)
        return (h, c), None

    idx = jnp.arange(config.num_layers, dtype=jnp.int32)
    (x, carry), _ = jax.lax.scan(body, (x, carry), (params["layers"], idx), unroll=unroll)
    return x[:b], carry


# A decode step's GEMMs have the batch as M. On a GPU, XLA pads a bf16 GEMM's M to a multiple of 8 for the tensor
# cores and slices the result, so each of a layer's GEMM inputs that is not a multiple of 8 rows (batch 10 at
# 122,880 tokens) became a pad kernel of its own on the step's critical path. The step's rows are padded once
# instead and the zero rows ride through the dense work (norms of zero rows are zero); the attention back-end sees
# the batch. 16, not 8: at 8 rows (batch 5) cuBLAS ran the q, o and down projections as split-K GEMMs, each followed by
# a reduce kernel (~2-4 us), where at 16 it runs each in one kernel with the residual add fused: ShadowKV at 122,880 x 5
# took 8.45-8.49 ms per step against 8.56-8.62 (H200, stage row51). Per platform (None: no padding); one sequence is
# left alone (a vector product).
DECODE_ROW_MULTIPLE = {"gpu": 16}


def pad_rows(x: jax.Array, rows: int) -> jax.Array:
    """x with `rows` zero rows appended along its first axis."""
    return jnp.pad(x, ((0, rows),) + ((0, 0),) * (x.ndim - 1))


def decode_row_padding(batch: int, tokens: int) -> int:
    """Rows run_layers adds to a step of `tokens` tokens per sequence (0 for prompts and for one sequence)."""
    multiple = DECODE_ROW_MULTIPLE.get(jax.default_backend())
    if multiple is None or batch == 1 or tokens > ROPE_ONCE_MAX_TOKENS:
        return 0
    return -batch % multiple


# Up to this many tokens per sequence, run_layers computes RoPE's cos and sin once for all layers. XLA does not
# hoist them out of the layer loop by itself: it recomputed a decode step's in every layer, inside q's RoPE fusion
# (positions near 122K take sin and cos's slow range reduction). A long prompt's would be held across the layers
# instead (126 MB per sequence at 122,880 tokens), so prompts compute them per layer, as before.
ROPE_ONCE_MAX_TOKENS = 1


def step_rope(positions: jax.Array, config: ModelConfig):
    """rope_cos_sin(positions) for every layer when positions [B, T] are a step's few tokens, else None."""
    return rope_cos_sin(positions, config) if positions.shape[1] <= ROPE_ONCE_MAX_TOKENS else None


def lm_head(params: Params, config: ModelConfig, x: jax.Array) -> jax.Array:
    """Final norm and vocabulary projection; logits in fp32."""
    x = rms_norm(x, params["final_norm"], config.rms_norm_eps)
    w = params["embed"].T if config.tie_word_embeddings else params["lm_head"]
    return jnp.einsum("...e,ev->...v", x, w, preferred_element_type=jnp.float32)


def forward_logits(params: Params, config: ModelConfig, tokens: jax.Array,
                   lengths: jax.Array | None = None) -> jax.Array:
    """Plain forward over tokens [B, T] without a cache: logits [B, T, V] (fp32)."""
    b, t = tokens.shape
    if lengths is None:
        lengths = jnp.full((b,), t, jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    x, _ = run_layers(params, config, CausalAttention(), embed(params, tokens), positions, lengths, None)
    return lm_head(params, config, x)
