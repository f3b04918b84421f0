"""One ShadowKV decode layer's three kernels at Llama-3.1-8B shapes, for a hardware-counter profiler (ncu).

    ncu --clock-control none -k regex:shadowkv --launch-skip 3 --launch-count 3 --set full -o OUT \\
        python benchmarks/kernel_anatomy.py [--batch 10] [--context 122880] [--calls 3]

Runs the landmark scores, the chunk selection and the gather-reconstruct attention kernel (with its three exact
segments: local, outliers, generated) as the decode step calls them: the stacked state read in place at a layer,
the device-values launch (kernels/sparse_attention.device_values_launch), the bench's default ShadowKV config
(budget 1,920 tokens in chunks of 8, 45 outlier chunks, 4 local chunks). Each of --calls calls is one jit with the
three kernels, so `--launch-skip 3` skips the first call's (warm-up). Without a profiler it prints each call's
wall time, which includes a launch and a sync: the kernels' own times come from the profiler.

    ncu --clock-control none -k regex:gather --section LaunchStats --section Occupancy --section SpeedOfLight \
        python benchmarks/kernel_anatomy.py --launches 8/64/4/2/0 8/64/4/2/1 ...

runs the attention kernel alone, once per launch (splits/block tokens/warps/stages/W once), on the selection of
one call of the three kernels, in the order given: what each launch asks of the SM (registers, shared memory,
so how many programs fit) beside its time.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from shadowkv_jax.kernels.sparse_attention import (device_values_launch, rope_inv_freq_full,
                                                   sparse_attention_partials)
from shadowkv_jax.shadowkv.decode import select_chunks

HKV, G, D, RANK, C = 8, 4, 128, 160, 8
BUDGET, OUTLIER_CHUNKS, LOCAL_CHUNKS, GENERATED = 1920, 45, 4, 66


def inputs(batch: int, context: int, layers: int = 2):
    """The stacked state's arrays a layer reads (random values: the kernels' time does not depend on them)."""
    n_c = context // C
    n_sel = n_c - OUTLIER_CHUNKS - LOCAL_CHUNKS
    keys = iter(jax.random.split(jax.random.key(0), 16))
    normal = lambda shape, scale=1.0: (scale * jax.random.normal(next(keys), shape, jnp.float32)).astype(jnp.bfloat16)
    state = {
        "q": normal((batch, HKV, G, D), 1 / math.sqrt(D)),
        "landmarks": normal((layers, batch, HKV, n_sel, D)),
        "chunk_ids": jnp.broadcast_to(jnp.arange(n_sel, dtype=jnp.int32), (layers, batch, HKV, n_sel)),
        "num_chunks": jnp.full((batch,), n_c, jnp.int32),
        "a": normal((layers, batch, context, RANK), 1 / math.sqrt(RANK)),
        "w": normal((layers, batch, HKV, RANK, D)),
        "values": normal((layers, batch, HKV, n_c, C, D)),
    }
    for name, rows in (("local", LOCAL_CHUNKS * C), ("outlier", OUTLIER_CHUNKS * C), ("gen", GENERATED)):
        state[name + "_k"] = normal((layers, batch, HKV, rows, D))
        state[name + "_v"] = normal((layers, batch, HKV, rows, D))
    return state


def selection(st, layer, interpret=False):
    """Landmark scores -> chunk ids [B, Hkv, k]: the step's own select_chunks (its two kernels)."""
    b = st["q"].shape[0]
    return select_chunks(st["q"].reshape(b, HKV * G, D), st["landmarks"], st["chunk_ids"], st["num_chunks"],
                         BUDGET // C, top_k="pallas", interpret=interpret, layer=layer)


def attention(st, layer, chunks, interpret=False, launch=None):
    """The attention partials over `chunks` and the three exact segments, as _kernel_attention calls the kernel."""
    inv = rope_inv_freq_full(1.0 / (500000.0 ** (np.arange(0, D, 2) / D)), D)
    batch = st["q"].shape[0]
    exact = ((st["local_k"], st["local_v"], jnp.full((batch,), LOCAL_CHUNKS * C, jnp.int32)),
             (st["outlier_k"], st["outlier_v"], None),
             (st["gen_k"], st["gen_v"], jnp.full((batch,), GENERATED // 2, jnp.int32)))
    return sparse_attention_partials(st["q"], st["a"], st["w"], chunks, st["values"], inv, layer,
                                     chunk_size=C, exact=exact, interpret=interpret,
                                     **(device_values_launch(chunks.shape[-1], C) if launch is None else launch))


def layer_kernels(st, layer, interpret=False):
    """Landmark scores -> selection -> attention partials: one decode layer's kernels."""
    return attention(st, layer, selection(st, layer, interpret), interpret)


def parse_launch(text: str) -> dict:
    """'splits/block/warps/stages/w_once' -> sparse_attention_partials' launch options."""
    splits, block, warps, stages, once = (int(x) for x in text.split("/"))
    return {"num_splits": splits, "block_tokens": block, "num_warps": warps, "num_stages": stages,
            "w_once": bool(once)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--context", type=int, default=122880)
    p.add_argument("--calls", type=int, default=3)
    p.add_argument("--interpret", action="store_true", help="run the kernels interpreted (a CPU check)")
    p.add_argument("--launches", nargs="+", default=None,
                   help="only the attention kernel, once per launch splits/block/warps/stages/w_once")
    args = p.parse_args(argv)
    st = inputs(args.batch, args.context)
    if args.launches:
        chunks = jax.jit(lambda st: selection(st, jnp.int32(0), args.interpret))(st)
        for text in args.launches:
            run = jax.jit(lambda st, chunks, kw=parse_launch(text): attention(st, jnp.int32(0), chunks,
                                                                              args.interpret, kw))
            try:
                jax.block_until_ready(run(st, chunks))
                print(f"launch {text}: ran", flush=True)
            except Exception as e:  # e.g. tiles over the shared memory: say so, go on
                print(f"launch {text}: {type(e).__name__}: {str(e)[:200]}", flush=True)
        return 0
    run = jax.jit(lambda st, layer: layer_kernels(st, layer, args.interpret))
    for i in range(args.calls):
        t0 = time.perf_counter()
        jax.block_until_ready(run(st, jnp.int32(i % 2)))
        print(f"call {i}: {1e3 * (time.perf_counter() - t0):.3f} ms (with launch and sync)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
