"""Where the weights' share of a decode step goes (attention removed), Llama-3.1-8B shape, bf16.

    python benchmarks/bench_linear.py --batch 1 4 --steps 32

Variants, each a jit-compiled `lax.scan` of `steps` decode steps with attention replaced by nothing:
  scan      stacked weights, `lax.scan` over layers, XLA's default GEMM choice (Triton fusions);
  scan_cublas  the same compiled with the decode loop's options (cuBLAS GEMMs): the model as it runs;
  unrolled  the same with the layer scan fully unrolled;
  list      per-layer weight arrays (no stacked [L, ...] arrays, so no per-layer slice of them), the
            same norms and matmuls in a Python loop over layers.
Roofline: the bytes of all weights read once per step / the measured HBM read rate.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp

from common import run_meta, save_json
from shadowkv_jax.decoding import DECODE_COMPILER_OPTIONS
from shadowkv_jax.model.layers import rms_norm
from shadowkv_jax.model.llama import embed, init_params, lm_head, run_layers
from shadowkv_jax.shapes import LLAMA_3_1_8B
from shadowkv_jax.throughput import NoAttention, measure_bandwidths


def _time(fn, *args, repeats=3):
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--tiny", action="store_true", help="a small model (CPU smoke run)")
    p.add_argument("--json", default=None)
    p.add_argument("--hlo", default=None, help="write each variant's optimised HLO (last batch) under this folder")
    args = p.parse_args(argv)
    cfg = LLAMA_3_1_8B
    if args.tiny:
        cfg = cfg.replace(vocab_size=512, hidden_size=128, intermediate_size=256, num_layers=2, num_heads=4,
                          num_kv_heads=2, head_dim=32)
    params = jax.jit(lambda k: init_params(cfg, k))(jax.random.key(0))
    layers = [jax.tree.map(lambda x, i=i: x[i], params["layers"]) for i in range(cfg.num_layers)]
    weight_bytes = sum(x.nbytes for x in jax.tree.leaves(params)) - params["embed"].nbytes
    rates = measure_bandwidths()
    rows = []
    for b in args.batch:
        tok = jnp.zeros((b,), jnp.int32)

        def stepper(unroll, options=None):
            def run(params, tok):
                def body(t, _):
                    x, _ = run_layers(params, cfg, NoAttention(), embed(params, t[:, None]),
                                      jnp.zeros((b, 1), jnp.int32), jnp.ones((b,), jnp.int32), None, unroll=unroll)
                    return jnp.argmax(lm_head(params, cfg, x[:, 0]), -1).astype(jnp.int32), None
                return jax.lax.scan(body, tok, None, length=args.steps)[0]
            return jax.jit(run, compiler_options=options)

        def by_list(params, layers, tok):
            def body(t, _):
                x = embed(params, t[:, None])
                for lp in layers:
                    h = rms_norm(x, lp["attn_norm"], cfg.rms_norm_eps)
                    q = h @ lp["wq"]
                    x = x + (q + (h @ lp["wk"]).sum() * 0 + (h @ lp["wv"]).sum() * 0) @ lp["wo"]
                    h = rms_norm(x, lp["mlp_norm"], cfg.rms_norm_eps)
                    x = x + (jax.nn.silu(h @ lp["w_gate"]) * (h @ lp["w_up"])) @ lp["w_down"]
                return jnp.argmax(lm_head(params, cfg, x[:, 0]), -1).astype(jnp.int32), None
            return jax.lax.scan(body, tok, None, length=args.steps)[0]

        fns = {"scan": (stepper(1), (params, tok)), "unrolled": (stepper(True), (params, tok)),
               "scan_cublas": (stepper(1, DECODE_COMPILER_OPTIONS), (params, tok)),
               "list": (jax.jit(by_list), (params, layers, tok))}
        t = {name: _time(fn, *a) for name, (fn, a) in fns.items()}
        if args.hlo:
            os.makedirs(args.hlo, exist_ok=True)
            for name, (fn, a) in fns.items():
                with open(os.path.join(args.hlo, f"linear_{name}_b{b}.hlo.txt"), "w") as f:
                    f.write(fn.lower(*a).compile().as_text())
        roof = weight_bytes / rates["hbm_read_bytes_per_s"]
        for name, sec in t.items():
            rows.append({"batch": b, "variant": name, "step_ms": 1e3 * sec / args.steps, "roofline_ms": 1e3 * roof})
    save_json(args.json, {**run_meta(rates=rates), "rows": rows})
    print("| batch | variant | ms/step | weights roofline ms |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch']} | {r['variant']} | {r['step_ms']:.2f} | {r['roofline_ms']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
