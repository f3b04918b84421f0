"""ShadowKV decode with the Pallas kernel vs the jnp reference path: agreement and step time.

    python benchmarks/bench_shadowkv_decode.py --model smollm2 --context 4096 --batch 4
    python benchmarks/bench_shadowkv_decode.py --model llama-3.1-8b --context 32768 --batch 2

`llama-3.1-8b` and `glm-4-9b` are random bf16 models of the real architectures (shadowkv_jax/shapes.py;
speed does not depend on the weights). Both implementations decode the same prefilled state (restored
from one prefill, so prompts and selections match); reported: max |dlogit| between them, whether the
greedy tokens agree, and decode ms/step (decode-only, after compilation).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import jax
import numpy as np

import shadowkv_jax as sk
from common import run_meta, save_json
from shadowkv_jax.model.llama import init_params

from shadowkv_jax.shapes import NAMED_SHAPES


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2", help="smollm2 | llama-3.1-8b | glm-4-9b | PATH")
    p.add_argument("--context", type=int, default=4096)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--placement", default="host", choices=["host", "device"])
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.model in NAMED_SHAPES:
        shape = NAMED_SHAPES[args.model]
        model = sk.Model(shape, init_params(shape, jax.random.key(0)), None, f"{args.model} (random bf16)")
    else:
        model = sk.load_model(None if args.model == "smollm2" else args.model)
    rng = np.random.default_rng(0)
    prompts = [list(rng.integers(3, model.config.vocab_size, args.context - 13 * i)) for i in range(args.batch)]
    base = sk.ShadowKVConfig.for_model(model, args.context, value_placement=args.placement,
                                       max_new_tokens=args.steps + 1)
    out = {}
    for impl in ("reference", "pallas"):
        cfg = dataclasses.replace(base, implementation=impl)
        sk.generate(model, prompts, method=cfg, max_new_tokens=args.steps)  # compile + warm-up
        [*res] = sk.generate(model, prompts, method=cfg, max_new_tokens=args.steps, return_logits=True)
        out[impl] = res
    ref, ker = out["reference"], out["pallas"]
    # compare logits only while both fed the same tokens (after a divergence the inputs differ)
    def agree_steps(r, k):
        n = next((i for i, (x, y) in enumerate(zip(r.token_ids, k.token_ids)) if x != y),
                 min(len(r.token_ids), len(k.token_ids)))
        return n + 1  # logits row i predicts token i; rows 0..n were computed from equal inputs
    err = max(float(np.abs(r.stats["logits"][:agree_steps(r, k)] - k.stats["logits"][:agree_steps(r, k)]).max())
              for r, k in zip(ref, ker))
    first_step = max(float(np.abs(r.stats["logits"][1] - k.stats["logits"][1]).max()) for r, k in zip(ref, ker))
    scale = max(float(np.abs(r.stats["logits"]).max()) for r in ref)
    same = all(r.token_ids == k.token_ids for r, k in zip(ref, ker))
    step = {impl: 1e3 * out[impl][0].stats["decode_s"] / (args.steps - 1) for impl in out}
    row = {**run_meta(), "model": model.source.rsplit("/", 1)[-1], "context": args.context, "batch": args.batch,
           "placement": args.placement, "config": dataclasses.asdict(base), "max_abs_dlogit": err,
           "logit_scale": scale, "same_tokens": same, "first_decode_step_max_abs_dlogit": first_step, "ms_per_step": step,
           "hit_rate": ker[0].stats.get("hit_rate")}
    print(json.dumps(row))
    print(f"| {row['model']} | {args.context} | {args.batch} | {args.placement} | jnp {step['reference']:.2f} ms | "
          f"pallas {step['pallas']:.2f} ms | max dlogit {err:.2e} (first step {first_step:.2e}; scale {scale:.1f}) | same tokens {same} |")
    save_json(args.json, row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
