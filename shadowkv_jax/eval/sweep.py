"""Ablation sweeps over ShadowKV's knobs: accuracy, attention-output error, hit rate, bytes per token.

    rows = sweep(model, samples, base_config, rank=[16, 48, 192], chunk_size=[4, 8])

`samples` are RULER samples or NIAH cases (anything with `prompt_ids` and a `score(text)` or an
`answer`). For each configuration in the grid: mean accuracy over the samples, the relative error
of every layer's attention output against full attention at the first decode step (each layer fed
the same exact inputs, so errors do not compound), the mean hit rate, and the GPU and host bytes of
the state per prompt token. One row per configuration (a tidy table: a list of dicts).
"""

from __future__ import annotations

import dataclasses
import itertools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from ..model.attention import DenseDecode
from ..model.llama import embed, run_layers
from ..shadowkv.config import ShadowKVConfig
from ..shadowkv.decode import ShadowKVDecode
from ..shadowkv.memory import state_bytes


@partial(jax.tree_util.register_dataclass, data_fields=("shadow", "dense", "lengths", "errors"), meta_fields=())
@dataclasses.dataclass(frozen=True)
class _Pair:
    shadow: object
    dense: object
    lengths: jax.Array
    errors: jax.Array  # [L]


@dataclasses.dataclass(frozen=True)
class _CompareDecode:
    """Runs ShadowKV and full attention on the same q/k/v; passes the exact output on."""

    shadow: ShadowKVDecode

    def __call__(self, q, k, v, k_pre, *, carry: _Pair, layer, positions, lengths, consts):
        out_s, st = self.shadow(q, k, v, k_pre, carry=carry.shadow, layer=layer, positions=positions,
                                lengths=lengths, consts=consts)
        out_d, cache = DenseDecode()(q, k, v, k_pre, carry=carry.dense, layer=layer, positions=positions,
                                     lengths=lengths)
        d32, s32 = out_d.astype(jnp.float32), out_s.astype(jnp.float32)
        err = jnp.linalg.norm(s32 - d32) / jnp.maximum(jnp.linalg.norm(d32), 1e-12)
        return out_d, dataclasses.replace(carry, shadow=st, dense=cache, errors=carry.errors.at[layer].set(err))


def attention_output_error(model, prompt_ids, cfg: ShadowKVConfig) -> np.ndarray:
    """Per-layer relative error ||o_shadowkv - o_full|| / ||o_full|| at the first decode step [L]."""
    from ..generation import prefill_prompts

    mc = model.config
    shadow = prefill_prompts(model, [list(prompt_ids)], method=cfg)
    dense = prefill_prompts(model, [list(prompt_ids)], method="full", max_new_tokens=1)
    st = shadow.state
    lengths = st.lengths
    first = jnp.argmax(shadow.next_logits, -1).astype(jnp.int32)
    pair = _Pair(st.without_values(), dense.state, lengths, jnp.zeros((mc.num_layers,), jnp.float32))
    backend = _CompareDecode(ShadowKVDecode(cfg, mc, st.placement))
    _, pair = run_layers(model.params, mc, backend, embed(model.params, first[:, None]), lengths[:, None],
                         lengths, pair, st.values)
    return np.asarray(pair.errors)


def _score(sample, text: str) -> float:
    if hasattr(sample, "score"):
        return float(sample.score(text))
    return float(sample.answer in text)


def sweep(model, samples, base: ShadowKVConfig, *, max_new_tokens: int = 24, batch_size: int = 4,
          **grid) -> list[dict]:
    """Evaluate every combination of the given field values (e.g. rank=[...], chunk_size=[...])."""
    from ..generation import generate

    for name in grid:
        if name not in {f.name for f in dataclasses.fields(ShadowKVConfig)}:
            raise ValueError(f"{name!r} is not a ShadowKVConfig field")
    names = list(grid)
    context = min(len(s.prompt_ids) for s in samples)
    rows = []
    for values in itertools.product(*(grid[n] for n in names)):
        cfg = dataclasses.replace(base, max_new_tokens=max_new_tokens, **dict(zip(names, values)))
        scores, hits = [], []
        for i in range(0, len(samples), batch_size):
            group = samples[i: i + batch_size]
            outs = generate(model, [list(s.prompt_ids) for s in group], method=cfg, max_new_tokens=max_new_tokens)
            scores += [_score(s, o.text) for s, o in zip(group, outs)]
            hits.append(outs[0].stats.get("hit_rate", float("nan")))
        err = attention_output_error(model, samples[0].prompt_ids, cfg)
        mem = state_bytes(model.config, cfg, context, placement="host")
        rows.append({**dict(zip(names, values)), "accuracy": float(np.mean(scores)),
                     "attention_error": float(err.mean()), "attention_error_max_layer": float(err.max()),
                     "hit_rate": float(np.nanmean(hits)), "gpu_bytes_per_token": mem["device"] / context,
                     "host_bytes_per_token": mem["host"] / context, "config": dataclasses.asdict(cfg)})
    return rows
