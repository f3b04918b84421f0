"""The ShadowKV decode step for one layer (the jnp reference path).

1. append the new token's exact K/V to the generated segment;
2. select: per query head, softmax over chunks of q . landmark / sqrt(D); per KV head, max over its
   G query heads; top-k chunks (outliers are not selectable; padding chunks never win). The kernel
   path computes the scores with kernels/landmark_scores.py and the rest with kernels/chunk_selection.py;
3. rebuild the selected keys: A rows of the selected tokens times W_h, RoPE at the true positions;
4. gather the selected values (device or pinned host memory); with value_reuse the chunks selected
   at the previous step too come from a device cache of last step's selection (the kernel reads
   only the misses from host memory; this reference path reads all and refreshes the cache);
5. one softmax per query head over [local | outliers | selected | generated] (the kernel path reads the
   exact segments in the same launch, one more program for all three, and merges its splits after).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from ..config import ModelConfig
from ..model.attention import NEG_INF
from ..model.layers import apply_rope, rope_cos_sin
from .config import ShadowKVConfig
from .state import ShadowKVState
from .values import gather_values


def select_chunks(q: jax.Array, landmarks: jax.Array, chunk_ids: jax.Array, num_chunks: jax.Array,
                  k: int, top_k: str = "xla", interpret: bool = False, layer=None) -> jax.Array:
    """q [B, Hq, D], landmarks [B, Hkv, n_sel, D], chunk_ids [B, Hkv, n_sel] -> chunk ids [B, Hkv, k].

    With `layer`, landmarks and chunk_ids are the whole stacked [L, ...] arrays and the scores come from
    kernels/landmark_scores.py, which reads the layer's landmarks in place (XLA copies the slice first).
    top_k "xla": softmax, group max and `lax.top_k` in XLA (winners by score); "pallas": the same set from
    kernels/chunk_selection.py, one kernel from the scores to the chunk ids (in increasing slot order; the
    step does not depend on the order)."""
    b, hq, d = q.shape
    hkv = landmarks.shape[-3]
    qg = q.reshape(b, hkv, hq // hkv, d)
    if layer is not None:
        from ..kernels.chunk_selection import padded_width, select_top_chunks_split, selection_splits
        from ..kernels.landmark_scores import DECODE_LAUNCH, landmark_scores

        # the selection kernel's rows padded: its loads of them are then 16-byte vectors
        width = padded_width(landmarks.shape[-2]) if top_k == "pallas" else None
        splits = selection_splits(b * hkv) if top_k == "pallas" else 1
        stats = (chunk_ids, num_chunks) if splits > 1 else None
        s = landmark_scores(qg, landmarks, layer, scale=1 / math.sqrt(d), interpret=interpret, width=width,
                            stats=stats, **DECODE_LAUNCH)
        if splits > 1:  # fewer than SPLIT_BELOW_ROWS (b, h) rows: each row over `splits` programs
            s, parts = s
            return select_top_chunks_split(s, parts, chunk_ids, num_chunks, k, layer, splits=splits,
                                           interpret=interpret)
    else:
        s = jnp.einsum("bhgd,bhnd->bhgn", qg, landmarks, preferred_element_type=jnp.float32) / math.sqrt(d)
    from ..kernels.chunk_selection import max_group_softmax, select_top_chunks

    if top_k == "pallas":
        stacked = chunk_ids if layer is not None else chunk_ids[None]
        return select_top_chunks(s, stacked, num_chunks, k, 0 if layer is None else layer, interpret=interpret)
    if layer is not None:
        chunk_ids = jax.lax.dynamic_index_in_dim(chunk_ids, layer, 0, keepdims=False)
    _, top = jax.lax.top_k(max_group_softmax(s, chunk_ids, num_chunks), k)
    return jnp.take_along_axis(chunk_ids, top, axis=-1)


def select_layer(q: jax.Array, st: ShadowKVState, layer, cfg: ShadowKVConfig, implementation: str,
                 interpret: bool) -> jax.Array:
    """This layer's chunk ids [B, Hkv, k] as the decode step selects them (q [B, Hq, D]): the kernel path
    reads the stacked landmarks and chunk ids in place, the jnp path takes the layer's slices."""
    at = lambda x: jax.lax.dynamic_index_in_dim(x, layer, 0, keepdims=False)
    if implementation == "pallas":
        return select_chunks(q, st.landmarks, st.chunk_ids, st.num_chunks, cfg.selected_chunks,
                             resolved_top_k(cfg.top_k, implementation, interpret), interpret, layer=layer)
    return select_chunks(q, at(st.landmarks), at(st.chunk_ids), st.num_chunks, cfg.selected_chunks,
                         resolved_top_k(cfg.top_k, implementation, interpret), interpret)


def resolved_top_k(top_k: str, implementation: str, interpret: bool) -> str:
    """"auto" -> the selection kernel where the attention kernel runs compiled (with the landmark scores, 0.148
    ms per layer against 0.285 for XLA's softmax and lax.top_k on an H200 at 122,880 tokens x batch 10), else
    XLA (interpreting the kernel on CPU is slow)."""
    if top_k == "auto":
        return "pallas" if implementation == "pallas" and not interpret else "xla"
    return top_k


def reconstruct_keys(a_layer: jax.Array, w_layer: jax.Array, chunks: jax.Array, chunk_size: int,
                     model: ModelConfig) -> jax.Array:
    """Post-RoPE keys of the selected chunks.

    a_layer [B, n_c*c, r], w_layer [B, Hkv, r, D], chunks [B, Hkv, k] -> [B, Hkv, k*c, D].
    """
    b, h, k = chunks.shape
    pos = (chunks[..., None] * chunk_size + jnp.arange(chunk_size)).reshape(b, h, k * chunk_size)
    rows = jax.vmap(lambda a, p: a[p])(a_layer, pos)  # [B, Hkv, k*c, r]
    k_pre = jnp.einsum("bhnr,bhrd->bhnd", rows, w_layer, preferred_element_type=jnp.float32)
    cos, sin = rope_cos_sin(pos, model)  # [B, Hkv, k*c, D]
    # apply_rope expects [..., heads, D] with cos [..., D]; treat tokens as the "heads" axis
    out = apply_rope(k_pre[..., None, :], cos, sin)[..., 0, :]
    return out.astype(a_layer.dtype)


def hit_rate(selected: jax.Array, previous: jax.Array) -> jax.Array:
    """Fraction of this step's chunks that were also selected at the previous step."""
    hits = jnp.any(selected[..., :, None] == previous[..., None, :], axis=-1)
    return jnp.mean(hits.astype(jnp.float32))


def sparse_attention(q, segments) -> jax.Array:
    """q [B, Hq, D]; segments: list of (k [B, Hkv, n, D], v [B, Hkv, n, D], mask [B, Hkv|1, n])."""
    b, hq, d = q.shape
    hkv = segments[0][0].shape[1]
    keys = jnp.concatenate([s[0] for s in segments], axis=2)
    vals = jnp.concatenate([s[1] for s in segments], axis=2)
    mask = jnp.concatenate([jnp.broadcast_to(s[2], (b, hkv, s[2].shape[-1])) for s in segments], axis=2)
    qg = q.reshape(b, hkv, hq // hkv, d)
    s = jnp.einsum("bhgd,bhnd->bhgn", qg, keys, preferred_element_type=jnp.float32) / math.sqrt(d)
    s = jnp.where(mask[:, :, None], s, NEG_INF)
    p = jax.nn.softmax(s, axis=-1).astype(vals.dtype)
    out = jnp.einsum("bhgn,bhnd->bhgd", p, vals, preferred_element_type=jnp.float32)
    return out.reshape(b, hq, d).astype(q.dtype)


def kernel_supported(model: ModelConfig, cfg: ShadowKVConfig) -> str | None:
    """None if the Pallas kernel handles these shapes, else the reason it does not."""
    d, c = model.head_dim, cfg.chunk_size
    if d & (d - 1):
        return f"head_dim={d} is not a power of two"
    if c & (c - 1):
        return f"chunk_size={c} is not a power of two"
    if cfg.rank % 16:
        return f"rank={cfg.rank} is not a multiple of 16"
    return None


def resolve_implementation(model: ModelConfig, cfg: ShadowKVConfig, platform: str) -> str:
    """"reference" or "pallas". "auto" picks the kernel on GPU when the shapes allow it; an explicit
    "pallas" with unsupported shapes is an error (it never falls back silently)."""
    reason = kernel_supported(model, cfg)
    if cfg.implementation == "pallas":
        if reason:
            raise ValueError(f"implementation='pallas' cannot run this config: {reason}")
        return "pallas"
    if cfg.implementation == "auto" and platform == "gpu":
        if reason is None:
            return "pallas"
        import warnings

        warnings.warn(f"ShadowKV uses the jnp reference decode on GPU because {reason}")
    return "reference"


@dataclasses.dataclass(frozen=True)
class ShadowKVDecode:
    """One new token per sequence; `consts` holds the values [L, B, Hkv, n_c, c, D].

    implementation "pallas" runs the fused gather-reconstruct kernel over the selected chunks
    (interpreted when `interpret`, e.g. on CPU) and merges it with the exact segments. `value_row`: the
    state's rows are rows value_row.. of `consts` (a micro-batch of a larger batch's values).
    `kernel_splits`: the kernel's splits per (sequence, KV head), i.e. how many SMs it occupies (None: its
    default, 4, or with device values kernels/sparse_attention.device_values_launch); the micro-batched step
    takes 1 to leave SMs to the other micro-batch's GEMMs.
    `value_stream`: run the kernel (the value reads) as its own XLA call on GPU stream N
    (`jax.experimental.compute_on`), so work that does not need its result can run beside it (the
    micro-batched step, shadowkv/pipeline.py). None: in line. Ignored off GPU.
    """

    config: ShadowKVConfig
    model: ModelConfig
    placement: str = "device"
    implementation: str = "reference"
    interpret: bool = False
    value_row: int = 0
    kernel_splits: int | None = None
    value_stream: int | None = None

    def __call__(self, q, k, v, k_pre, *, carry: ShadowKVState, layer, positions, lengths, consts):
        chunks, carry = self.prepare(q, k, v, carry=carry, layer=layer, lengths=lengths)
        out, carry, _ = self.attend(q, chunks, carry=carry, layer=layer, lengths=lengths, consts=consts)
        return out, carry

    def prepare(self, q, k, v, *, carry: ShadowKVState, layer, lengths):
        """Steps 1-2 (HBM work only): append the new token's K/V, select this layer's chunks [B, Hkv, k]."""
        st = carry
        rows = jnp.arange(q.shape[0])
        with jax.named_scope("select"):
            chunks = select_layer(q[:, 0], st, layer, self.config, self.implementation, self.interpret)
        gen_idx = lengths - st.prompt_lengths  # [B] slot of the new token
        gen_k = st.gen_k.at[layer, rows, :, gen_idx].set(k[:, 0].astype(st.gen_k.dtype))
        gen_v = st.gen_v.at[layer, rows, :, gen_idx].set(v[:, 0].astype(st.gen_v.dtype))
        return chunks, dataclasses.replace(st, gen_k=gen_k, gen_v=gen_v)

    def attend(self, q, chunks, *, carry: ShadowKVState, layer, lengths, consts, after=None):
        """Steps 3-5 (the value reads): attention over [local | outliers | chunks | generated] -> (out
        [B, 1, Hq, D], carry with this step's selection, value cache and hit rate, done).

        `done`: arrays to pass as another attend's `after`, whose kernel then waits for these value reads:
        what they write (the kernel's running maxima; the jnp path: the output) and, for the kernel, the
        operands prepared for it, held until that other kernel so that nothing scheduled in between
        reuses their memory (kernels/sparse_attention.sparse_attention_partials, return_prepared)."""
        cfg, st = self.config, carry
        c = cfg.chunk_size
        at = lambda x: jax.lax.dynamic_index_in_dim(x, layer, 0, keepdims=False)
        prev = at(st.prev_selection)
        gen_idx = lengths - st.prompt_lengths
        if self.implementation == "pallas":
            # the kernel reads the exact segments in place (whole stacked arrays, valid rows per sequence)
            segments = ((st.local_k, st.local_v, st.local_lengths), (st.outlier_k, st.outlier_v, None),
                        (st.gen_k, st.gen_v, gen_idx + 1))
            out, new_cache, done = self._kernel_attention(q[:, 0], st, consts, layer, chunks, prev, segments, after)
        else:
            loc_valid = (jnp.arange(cfg.local_capacity)[None, :] < st.local_lengths[:, None])[:, None]
            gen_valid = (jnp.arange(cfg.max_new_tokens)[None, :] <= gen_idx[:, None])[:, None]
            out_valid = jnp.ones((1, 1, st.outlier_k.shape[3]), bool)
            exact = [(at(st.local_k), at(st.local_v), loc_valid),
                     (at(st.outlier_k), at(st.outlier_v), out_valid),
                     (at(st.gen_k), at(st.gen_v), gen_valid)]
            with jax.named_scope("reconstruct"):
                sel_k = reconstruct_keys(at(st.a), at(st.w), chunks, c, self.model)
            with jax.named_scope("fetch_values"):
                gathered = gather_values(consts, layer, chunks, self.placement, self.value_row)  # [B, Hkv, k, c, D]
                sel_v = gathered.reshape(sel_k.shape).astype(sel_k.dtype)
            new_cache = gathered.astype(st.value_cache.dtype) if cfg.value_reuse else None
            sel_valid = jnp.repeat(chunks < st.num_chunks[:, None, None], c, axis=-1)
            with jax.named_scope("sparse_attention"):
                out = sparse_attention(q[:, 0], exact[:2] + [(sel_k, sel_v, sel_valid)] + exact[2:])
            done = out
        metrics = {"hit_rate": st.step_metrics["hit_rate"].at[layer].set(hit_rate(chunks, prev))}
        value_cache = st.value_cache
        if new_cache is not None:
            value_cache = jax.lax.dynamic_update_slice(value_cache, new_cache[None], (layer, 0, 0, 0, 0, 0))
        carry = dataclasses.replace(st, step_metrics=metrics, value_cache=value_cache,
                                    prev_selection=st.prev_selection.at[layer].set(chunks))
        return out[:, None], carry, done

    def _kernel_attention(self, q, st, values, layer, chunks, prev, exact, after=None):
        """Fused kernel over the selected chunks and the exact segments (`exact`: the kernel's argument of that
        name), then the merge of its splits.
        Returns (attention output, this step's value cache or None, done: see `attend`)."""
        from ..kernels.common import scaled_query_groups
        from ..kernels.decode_attention import combine_splits
        from ..kernels.sparse_attention import device_values_launch, rope_inv_freq_full, sparse_attention_partials
        from ..model.layers import rope_inv_freq

        b, hq, d = q.shape
        hkv = self.model.num_kv_heads
        qs = scaled_query_groups(q, hkv)
        inv = rope_inv_freq_full(rope_inv_freq(self.model), d)  # numpy: the kernel builds its RoPE tables once
        reuse = {}
        if self.config.value_reuse:
            reuse = dict(value_cache=jax.lax.dynamic_index_in_dim(st.value_cache, layer, 0, keepdims=False),
                         previous=prev)
        # values on the device: nothing waits on PCIe, so more and smaller programs (kernels/sparse_attention.py)
        launch = (device_values_launch(chunks.shape[-1], self.config.chunk_size)
                  if self.placement == "device" and self.kernel_splits is None else {"num_splits": self.kernel_splits})
        with jax.named_scope("gather_reconstruct_attention"):
            partials, prepared = sparse_attention_partials(
                qs, st.a, st.w, chunks, values, inv, layer, **reuse, chunk_size=self.config.chunk_size,
                interpret=self.interpret, rotary_dim=self.model.rotary_dim, value_row=self.value_row,
                after=after, stream=self.value_stream, return_prepared=True, exact=exact, **launch)
        with jax.named_scope("combine"):
            out = combine_splits(partials[:3])
        new_cache = partials[3] if reuse else None
        return out.reshape(b, hq, d).astype(q.dtype), new_cache, (partials[1], prepared)
