"""Temp memory XLA plans for the bench's decode executables (compiled from shapes only, nothing allocated).

    python benchmarks/compile_memory.py --model llama-3.1-8b --context 122880 --batch 3
    python benchmarks/compile_memory.py --method shadowkv --placement device --context 122880 --batch 10

A temp as large as one cache (or value) array means XLA copies it inside that executable. With
XLA_FLAGS="--xla_dump_to=DIR --xla_dump_hlo_as_text" the buffer assignment says which instruction it is.
"""

from __future__ import annotations

import argparse
import dataclasses
from functools import partial

import jax
import jax.numpy as jnp

from shadowkv_jax.cache import KVCache, write_block
from shadowkv_jax.decoding import _prefill_layer, decode_loop
from shadowkv_jax.model.attention import DenseDecode
from shadowkv_jax.model.llama import abstract_params
from shadowkv_jax.sampling import Greedy
from shadowkv_jax.shapes import NAMED_SHAPES

GIB = 2 ** 30


def full_attention_executables(cfg, context: int, batch: int) -> dict:
    params = abstract_params(cfg)
    cap = -(-(context + 66) // 128) * 128
    cache = jax.eval_shape(partial(KVCache.zeros, cfg, batch, cap))
    print(f"one cache array: {cache.k.size * cache.k.dtype.itemsize / GIB:.2f} GiB")
    lens = jax.ShapeDtypeStruct((1,), jnp.int32)
    x = jax.ShapeDtypeStruct((1, context, cfg.hidden_size), cfg.jnp_dtype)
    i32 = jax.ShapeDtypeStruct((), jnp.int32)
    layer_kv = jax.ShapeDtypeStruct((1, 1, cfg.num_kv_heads, context, cfg.head_dim), cache.k.dtype)
    exes = {"prefill_layer": _prefill_layer.lower(params, x, lens, i32, config=cfg),
            "write_block": write_block.lower(cache.k, layer_kv, i32, i32)}
    for impl in (("pallas", "xla") if jax.default_backend() == "gpu" else ("xla",)):
        exes[f"decode_{impl}"] = decode_loop.lower(params, cache, jax.ShapeDtypeStruct((batch,), jnp.int32),
                                                   jax.random.key(0), jnp.zeros((0,), jnp.int32), None, config=cfg,
                                                   sampler=Greedy(), num_steps=4, attention=DenseDecode(impl))
    return exes


def shadowkv_executables(cfg, context: int, batch: int, placement: str, device_rows: int) -> dict:
    """The bench's own ShadowKV decode loop (throughput.compile_decode), from the same abstract state."""
    from shadowkv_jax.api import Model
    from shadowkv_jax.shadowkv import ShadowKVConfig
    from shadowkv_jax.shadowkv.decode import ShadowKVDecode, resolve_implementation
    from shadowkv_jax.shadowkv.prefill import chunk_slots_for
    from shadowkv_jax.shadowkv.state import resolve_split
    from shadowkv_jax.throughput import abstract_decode_state, compile_decode

    sk = dataclasses.replace(ShadowKVConfig.for_model(cfg, context), max_new_tokens=64, value_placement=placement)
    placement, device_rows = resolve_split(placement, batch, device_rows if placement == "split" else None)
    state, values = abstract_decode_state(cfg, sk, batch, chunk_slots_for(sk, [context]), placement, device_rows)
    n = sum(v.size * v.dtype.itemsize for v in jax.tree.leaves(values))
    print(f"values ({placement}, {device_rows if placement == 'split' else batch} rows there): {n / GIB:.2f} GiB")
    attention = ShadowKVDecode(sk, cfg, placement, resolve_implementation(cfg, sk, jax.default_backend()))
    model = Model(cfg, abstract_params(cfg), None, "abstract")
    exe, _ = compile_decode(model, state, batch, values, attention, steps=4, unroll=1)
    return {f"decode_shadowkv_{placement}": exe}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="llama-3.1-8b")
    p.add_argument("--context", type=int, default=122880)
    p.add_argument("--batch", type=int, default=3)
    p.add_argument("--method", choices=["full", "shadowkv"], default="full")
    p.add_argument("--placement", choices=["device", "host", "split"], default="device")
    p.add_argument("--device-rows", type=int, default=0, help="with --placement split")
    p.add_argument("--layers", type=int, default=None, help="fewer layers than the model (a faster compile)")
    args = p.parse_args()
    cfg = NAMED_SHAPES[args.model]
    if args.layers:
        cfg = dataclasses.replace(cfg, num_layers=args.layers)
    exes = (full_attention_executables(cfg, args.context, args.batch) if args.method == "full" else
            shadowkv_executables(cfg, args.context, args.batch, args.placement, args.device_rows))
    for name, exe in exes.items():  # lowered (compiled here) or already compiled
        m = (exe.compile() if isinstance(exe, jax.stages.Lowered) else exe).memory_analysis()
        print(f"{name}: temp {m.temp_size_in_bytes / GIB:.2f} GiB, alias {m.alias_size_in_bytes / GIB:.2f} GiB, "
              f"args {m.argument_size_in_bytes / GIB:.2f} GiB")


if __name__ == "__main__":
    main()
