"""Is a cache write in place? Allocate one full-attention K array of the bench's shape, write blocks of
several sizes into it with `write_block` (donated), and report whether each result reuses the buffer;
with --flow-context, first run the bench's row prefill into a cache and report the same for K and V.

    python benchmarks/check_donation.py --flow-context 122880 --batch 3 --block-slots 122880

Written while an out-of-memory error at 122,880 x 3 looked like a copied cache; every write was in place
(BENCHMARKS.md), and the cause was the GPU allocator's regions (run throughput with preallocation on).
"""

from __future__ import annotations

import argparse
from functools import partial

import jax
import jax.numpy as jnp

from shadowkv_jax.cache import KVCache, write_block
from shadowkv_jax.decoding import RowPrefill
from shadowkv_jax.shapes import NAMED_SHAPES
from shadowkv_jax.throughput import bench_model


def _in_use() -> int:
    return (jax.devices()[0].memory_stats() or {}).get("bytes_in_use", 0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="llama-3.1-8b")
    p.add_argument("--batch", type=int, default=3)
    p.add_argument("--capacity", type=int, default=122944)
    p.add_argument("--block-slots", type=int, nargs="+", default=[128, 8192, 122880])
    p.add_argument("--flow-context", type=int, default=0,
                   help="first run the bench's row prefill (random weights) at this context and batch")
    args = p.parse_args()
    cfg = NAMED_SHAPES[args.model]
    if args.flow_context:
        model, _ = bench_model(args.model)
        cap = args.flow_context + 128
        cache = jax.jit(partial(KVCache.zeros, cfg, args.batch, cap))()
        tokens = jnp.zeros((1, args.flow_context), jnp.int32) + 7
        lengths = jnp.asarray([args.flow_context], jnp.int32)
        for compiled in (True, False):
            fill = RowPrefill(cfg)
            if compiled:
                fill = fill.compile(model.params, jax.eval_shape(partial(KVCache.zeros, cfg, args.batch, cap)),
                                    tokens, lengths)
            ptr, used = (cache.k.unsafe_buffer_pointer(), cache.v.unsafe_buffer_pointer()), _in_use()
            _, cache = fill(model.params, cache, tokens, lengths, args.batch - 1)
            jax.block_until_ready(cache)
            print(f"row prefill ({'compiled ahead' if compiled else 'jit'}), {args.flow_context} tokens: K, V in place "
                  f"{(cache.k.unsafe_buffer_pointer(), cache.v.unsafe_buffer_pointer()) == ptr}; memory in use "
                  f"{(_in_use() - used) / 2**30:+.2f} GiB")
        del model, cache
    shape = (cfg.num_layers, args.batch, cfg.num_kv_heads, args.capacity, cfg.head_dim)
    k = jax.block_until_ready(jax.jit(partial(jnp.zeros, shape, cfg.jnp_dtype))())
    print(f"K {shape}: {k.nbytes / 2**30:.2f} GiB")
    for slots in args.block_slots:
        block = jnp.ones((1, 1, cfg.num_kv_heads, slots, cfg.head_dim), cfg.jnp_dtype)
        ptr, used = k.unsafe_buffer_pointer(), _in_use()
        try:
            k = jax.block_until_ready(write_block(k, block, jnp.int32(1), jnp.int32(args.batch - 1)))
        except Exception as e:  # noqa: BLE001 - report and stop
            print(f"block of {slots} slots: failed: {str(e)[:160]}")
            break
        print(f"block of {slots} slots: in place {k.unsafe_buffer_pointer() == ptr}; "
              f"memory in use {(_in_use() - used) / 2**30:+.2f} GiB")


if __name__ == "__main__":
    main()
