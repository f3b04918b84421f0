"""Is a cache write in place? For each way of allocating the full-attention cache, write one block into
K with `write_block` (donated) and report whether the result reuses K's buffer and how much the peak
device memory rose.

    python benchmarks/check_donation.py --gib 2
"""

from __future__ import annotations

import argparse
import dataclasses
from functools import partial

import jax
import jax.numpy as jnp

from shadowkv_jax.cache import KVCache, write_block
from shadowkv_jax.shapes import LLAMA_3_1_8B


def _peak() -> int:
    return (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use", 0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--gib", type=float, default=2.0, help="size of one cache array")
    args = p.parse_args()
    cfg = dataclasses.replace(LLAMA_3_1_8B, num_layers=4)
    per_slot = cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * 2
    capacity = int(args.gib * 2**30 / per_slot) // 128 * 128
    ways = {"one jit returning K and V (KVCache.zeros)": lambda: jax.jit(partial(KVCache.zeros, cfg, 1, capacity))(),
            "one computation per array (KVCache.allocate)": lambda: KVCache.allocate(cfg, 1, capacity)}
    block = jnp.ones((1, 1, cfg.num_kv_heads, 128, cfg.head_dim), cfg.jnp_dtype)
    abstract = jax.eval_shape(partial(KVCache.zeros, cfg, 1, capacity))
    i32 = jax.ShapeDtypeStruct((), jnp.int32)
    writers = {"jit": write_block,
               "compiled ahead from shapes": write_block.lower(abstract.k, block, i32, i32).compile()}
    for name, make in ways.items():
        for how, write in writers.items():
            cache = jax.block_until_ready(make())
            shared = cache.k.unsafe_buffer_pointer() == cache.v.unsafe_buffer_pointer()
            before_ptr, before_peak = cache.k.unsafe_buffer_pointer(), _peak()
            k = jax.block_until_ready(write(cache.k, block, jnp.int32(1), jnp.int32(0)))
            print(f"{name}, write {how}: K and V share a buffer: {shared}; in place: "
                  f"{k.unsafe_buffer_pointer() == before_ptr}; peak rose {(_peak() - before_peak) / 2**30:.2f} GiB "
                  f"(one array {cache.v.nbytes / 2**30:.2f} GiB)")
            del cache, k


if __name__ == "__main__":
    main()
