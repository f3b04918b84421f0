"""Full-attention prefill and decode throughput of a model at a given context and batch.

    python benchmarks/bench_dense.py [--model PATH] --context 2048 --batch 1 8 [--dtype float32]
                                     [--decode-steps 64] [--json OUT]

Prefill tokens/s = batch * context / prefill time; decode tokens/s = batch * steps / time of a
jit-compiled `lax.scan` of `steps` decode steps after the prompt. Each figure is the median of
`--repeats` runs after a compile-and-warm-up run. Prompts are random token ids (speed does not
depend on them).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import shadowkv_jax as sk
from common import run_meta, save_json
from shadowkv_jax.decoding import decode_loop, prefill


def bench_one(model, context: int, batch: int, steps: int, repeats: int) -> dict:
    cfg = model.config
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(3, cfg.vocab_size, (batch, context)), jnp.int32)
    lengths = jnp.full((batch,), context, jnp.int32)
    capacity = context + steps
    no_eos = jnp.zeros((0,), jnp.int32)
    key = jax.random.key(0)

    t0 = time.perf_counter()
    pre = prefill.lower(model.params, tokens, lengths, config=cfg, capacity=capacity).compile()
    logits, cache = pre(model.params, tokens, lengths)
    first = jnp.argmax(logits, -1).astype(jnp.int32)
    loop = decode_loop.lower(model.params, cache, first, key, no_eos, config=cfg, sampler=sk.Greedy(),
                             num_steps=steps).compile()
    jax.block_until_ready(loop(model.params, cache, first, key, no_eos))
    compile_s = time.perf_counter() - t0

    pre_t, dec_t = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        logits, cache = pre(model.params, tokens, lengths)
        jax.block_until_ready(logits)
        pre_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        out, _, _ = loop(model.params, cache, first, key, no_eos)  # donates (consumes) this cache
        jax.block_until_ready(out)
        dec_t.append(time.perf_counter() - t0)
    pre_s, dec_s = statistics.median(pre_t), statistics.median(dec_t)
    return {"context": context, "batch": batch, "decode_steps": steps, "dtype": cfg.dtype,
            "prefill_s": pre_s, "prefill_tokens_per_s": batch * context / pre_s,
            "decode_s": dec_s, "decode_tokens_per_s": batch * steps / dec_s,
            "decode_ms_per_step": 1e3 * dec_s / steps, "compile_and_warmup_s": compile_s}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None)
    p.add_argument("--context", type=int, nargs="+", default=[2048])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--dtype", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    p.add_argument("--decode-steps", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    meta = run_meta()
    rows = []
    for dtype in args.dtype:
        model = sk.load_model(args.model, dtype=dtype)
        meta["model"] = model.source.rsplit("/", 1)[-1]
        for context in args.context:
            for batch in args.batch:
                row = bench_one(model, context, batch, args.decode_steps, args.repeats)
                rows.append(row)
                print(json.dumps(row), flush=True)
    save_json(args.json, {"meta": meta, "rows": rows})
    print(f"\n{meta['model']} on {meta['device']} ({meta['platform']}), jax {meta['jax']}, {meta['date']}")
    print("| dtype | context | batch | prefill tok/s | decode tok/s | decode ms/step |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dtype']} | {r['context']} | {r['batch']} | {r['prefill_tokens_per_s']:.0f} | "
              f"{r['decode_tokens_per_s']:.1f} | {r['decode_ms_per_step']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
