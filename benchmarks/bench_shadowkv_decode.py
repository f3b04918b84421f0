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
    p.add_argument("--dtype", default=None, choices=["bfloat16", "float32"],
                   help="named shapes only: parameter and compute dtype (default bf16); float32 separates "
                        "bf16 rounding from a kernel error")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.model in NAMED_SHAPES:
        shape = NAMED_SHAPES[args.model]
        if args.dtype:
            shape = shape.replace(dtype=args.dtype)
        model = sk.Model(shape, init_params(shape, jax.random.key(0)), None,
                         f"{args.model} (random {shape.dtype})")
    else:
        model = sk.load_model(None if args.model == "smollm2" else args.model)
    rng = np.random.default_rng(0)
    prompts = [list(rng.integers(3, model.config.vocab_size, args.context - 13 * i)) for i in range(args.batch)]
    base = sk.ShadowKVConfig.for_model(model, args.context, value_placement=args.placement,
                                       max_new_tokens=args.steps + 1)
    out = {}
    variants = {"reference": ("reference", "xla"), "pallas": ("pallas", "xla"), "pallas_top_k": ("pallas", "pallas")}
    for impl, (attention, top_k) in variants.items():
        cfg = dataclasses.replace(base, implementation=attention, top_k=top_k)
        sk.generate(model, prompts, method=cfg, max_new_tokens=args.steps)  # compile + warm-up
        [*res] = sk.generate(model, prompts, method=cfg, max_new_tokens=args.steps, return_logits=True)
        out[impl] = res
    ref = out["reference"]
    # compare logits only while both fed the same tokens (after a divergence the inputs differ)
    def agree_steps(r, k):
        n = next((i for i, (x, y) in enumerate(zip(r.token_ids, k.token_ids)) if x != y),
                 min(len(r.token_ids), len(k.token_ids)))
        return n + 1  # logits row i predicts token i; rows 0..n were computed from equal inputs
    step = {impl: 1e3 * out[impl][0].stats["decode_s"] / (args.steps - 1) for impl in out}
    scale = max(float(np.abs(r.stats["logits"]).max()) for r in ref)
    row = {**run_meta(), "model": model.source.rsplit("/", 1)[-1], "dtype": model.config.dtype,
           "context": args.context, "batch": args.batch,
           "placement": args.placement, "config": dataclasses.asdict(base), "logit_scale": scale,
           "ms_per_step": step, "variants": {}}
    for name in ("pallas", "pallas_top_k"):  # each against the jnp path
        ker = out[name]
        v = {"max_abs_dlogit": max(float(np.abs(r.stats["logits"][:agree_steps(r, k)]
                                                - k.stats["logits"][:agree_steps(r, k)]).max())
                                   for r, k in zip(ref, ker)),
             "first_decode_step_max_abs_dlogit": max(float(np.abs(r.stats["logits"][1] - k.stats["logits"][1]).max())
                                                     for r, k in zip(ref, ker)),
             "same_tokens": all(r.token_ids == k.token_ids for r, k in zip(ref, ker)),
             "hit_rate": ker[0].stats.get("hit_rate")}
        row["variants"][name] = v
    print(json.dumps(row))
    for name, v in row["variants"].items():
        print(f"| {row['model']} | {args.context} | {args.batch} | {args.placement} | jnp {step['reference']:.2f} ms | "
              f"{name} {step[name]:.2f} ms | max dlogit {v['max_abs_dlogit']:.2e} (first step "
              f"{v['first_decode_step_max_abs_dlogit']:.2e}; scale {scale:.1f}) | same tokens {v['same_tokens']} |")
    save_json(args.json, row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
