"""SVD vs Gram-eigendecomposition factorization of pre-RoPE keys: speed and subspace agreement.

    python benchmarks/bench_factorization.py --tokens 32768 --dims 1024 --rank 160 [--json OUT]

Keys are synthetic with a decaying spectrum (as real pre-RoPE keys have); both routes run in fp32
under jit, timed as the median of --repeats runs after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp

from common import run_meta, save_json
from shadowkv_jax.shadowkv.factorize import factorize, subspace_agreement


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=32768)
    p.add_argument("--dims", type=int, default=1024, help="Hkv * D (1024 for Llama-3.1-8B)")
    p.add_argument("--rank", type=int, default=160)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    key = jax.random.key(0)
    spectrum = jnp.geomspace(30.0, 0.05, args.dims)
    k = (jax.random.normal(key, (1, args.tokens, args.dims)) * spectrum) @ jnp.linalg.qr(
        jax.random.normal(jax.random.key(1), (args.dims, args.dims)))[0]
    k = jax.block_until_ready(k)
    times, factors = {}, {}
    for method in ("svd", "gram"):
        f = jax.jit(lambda x, m=method: factorize(x, args.rank, m))
        factors[method] = jax.block_until_ready(f(k))
        ts = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(f(k))
            ts.append(time.perf_counter() - t0)
        times[method] = statistics.median(ts)
    agree = float(subspace_agreement(factors["svd"][1][0], factors["gram"][1][0]))
    err = {m: float(jnp.linalg.norm(k[0] - a[0] @ w[0]) / jnp.linalg.norm(k[0])) for m, (a, w) in factors.items()}
    out = run_meta(tokens=args.tokens, dims=args.dims, rank=args.rank, seconds=times, relative_error=err,
                   subspace_agreement=agree)
    save_json(args.json, out)
    print(json.dumps(out))
    print(f"| {out['device']} | {args.tokens} x {args.dims}, r={args.rank} | svd {times['svd']:.3f} s | "
          f"gram {times['gram']:.3f} s | agreement {agree:.6f} | rel. err svd {err['svd']:.4f} / "
          f"gram {err['gram']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
