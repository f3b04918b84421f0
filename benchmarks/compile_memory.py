"""Temp memory XLA plans for the full-attention bench's executables (compiled from shapes only).

    python benchmarks/compile_memory.py --model llama-3.1-8b --context 122880 --batch 3

A temp as large as one cache array means XLA copies the cache inside that executable.
"""

from __future__ import annotations

import argparse
from functools import partial

import jax
import jax.numpy as jnp

from shadowkv_jax.cache import KVCache, write_block
from shadowkv_jax.decoding import _prefill_layer, decode_loop
from shadowkv_jax.model.attention import DenseDecode
from shadowkv_jax.model.llama import abstract_params
from shadowkv_jax.sampling import Greedy
from shadowkv_jax.shapes import NAMED_SHAPES


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="llama-3.1-8b")
    p.add_argument("--context", type=int, default=122880)
    p.add_argument("--batch", type=int, default=3)
    args = p.parse_args()
    cfg = NAMED_SHAPES[args.model]
    params = abstract_params(cfg)
    cap = -(-(args.context + 66) // 128) * 128
    cache = jax.eval_shape(partial(KVCache.zeros, cfg, args.batch, cap))
    gib = 2 ** 30
    print(f"one cache array: {cache.k.size * cache.k.dtype.itemsize / gib:.2f} GiB")
    lens = jax.ShapeDtypeStruct((1,), jnp.int32)
    x = jax.ShapeDtypeStruct((1, args.context, cfg.hidden_size), cfg.jnp_dtype)
    i32 = jax.ShapeDtypeStruct((), jnp.int32)
    layer_kv = jax.ShapeDtypeStruct((1, 1, cfg.num_kv_heads, args.context, cfg.head_dim), cache.k.dtype)
    exes = {"prefill_layer": _prefill_layer.lower(params, x, lens, i32, config=cfg),
            "write_block": write_block.lower(cache.k, layer_kv, i32, i32)}
    for impl in (("pallas", "xla") if jax.default_backend() == "gpu" else ("xla",)):
        exes[f"decode_{impl}"] = decode_loop.lower(params, cache, jax.ShapeDtypeStruct((args.batch,), jnp.int32),
                                                   jax.random.key(0), jnp.zeros((0,), jnp.int32), None, config=cfg,
                                                   sampler=Greedy(), num_steps=4, attention=DenseDecode(impl))
    for name, low in exes.items():
        m = low.compile().memory_analysis()
        print(f"{name}: temp {m.temp_size_in_bytes / gib:.2f} GiB, alias {m.alias_size_in_bytes / gib:.2f} GiB, "
              f"args {m.argument_size_in_bytes / gib:.2f} GiB")


if __name__ == "__main__":
    main()
