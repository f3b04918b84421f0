"""Needle-in-a-haystack: full attention vs ShadowKV (scaled default config) on the same cases.

    python benchmarks/niah_run.py [--model PATH] --lengths 4096 7168 --depths 0.1 0.3 0.5 0.7 0.9
                                  --needles 2 [--placement auto|host|device] --json OUT

Prints per-case answers and a summary table; writes everything to --json.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time


import shadowkv_jax as sk
from common import run_meta, save_json
from shadowkv_jax.eval import niah


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None)
    p.add_argument("--lengths", type=int, nargs="+", default=[4096, 7168])
    p.add_argument("--depths", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.7, 0.9])
    p.add_argument("--needles", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=5)
    p.add_argument("--placement", default="auto", choices=["auto", "host", "device"])
    p.add_argument("--methods", nargs="+", default=["full", "shadowkv"])
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    model = sk.load_model(args.model)
    out = run_meta(runs=[])
    for length in args.lengths:
        cases = niah.make_cases(model.tokenizer, [length], args.depths, args.needles, seed=args.seed)
        for name in args.methods:
            method = "full"
            if name == "shadowkv":
                method = sk.ShadowKVConfig.for_model(model, length, value_placement=args.placement,
                                                     max_new_tokens=16)
            t0 = time.perf_counter()
            rows = niah.run_cases(model, cases, method, batch_size=args.batch)
            run = {"method": name, "length": length, "seconds": time.perf_counter() - t0,
                   "config": dataclasses.asdict(method) if name == "shadowkv" else None,
                   "accuracy": sum(r["found"] for r in rows) / len(rows), "cases": rows}
            out["runs"].append(run)
            print(f"{name:9s} {length:6d}  accuracy {run['accuracy']:.2f}  ({run['seconds']:.0f} s)", flush=True)
            for r in rows:
                print(f"   depth {r['depth']:.1f} {r['answer']} found={r['found']} {r['output']!r}")
    save_json(args.json, out)
    print(f"\nNIAH on {out['device']} ({out['platform']}), jax {out['jax']}, {out['date']}")
    print("| method | prompt tokens | cases | accuracy | budget | rank | outliers | mean hit rate |")
    print("|---|---|---|---|---|---|---|---|")
    for run in out["runs"]:
        c = run["config"] or {}
        hits = [r["hit_rate"] for r in run["cases"] if r["hit_rate"] is not None]
        print(f"| {run['method']} | {run['length']} | {len(run['cases'])} | {run['accuracy']:.2f} | "
              f"{c.get('sparse_budget', '-')} | {c.get('rank', '-')} | {c.get('outlier_chunks', '-')} | "
              f"{(sum(hits) / len(hits)) if hits else float('nan'):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
