"""`python -m shadowkv_jax eval ruler ...`: RULER-style accuracy of full attention and ShadowKV."""

from __future__ import annotations

import dataclasses
import datetime
import json
import sys
import time
from collections import defaultdict

from . import ruler


def run_ruler(model, tasks, lengths, samples: int, methods, *, sk_overrides: dict | None = None,
              batch_size: int = 4, max_new_tokens: int = 48, seed: int = 0, progress=True,
              haystack: str = "noise") -> dict:
    """Score every (method, task, length) over `samples` samples; returns a JSON-ready summary."""
    from ..generation import generate
    from ..shadowkv import ShadowKVConfig

    rows = []
    todo = [(t, n) for t in tasks for n in lengths]
    total = len(todo) * len(methods)
    done = 0
    t0 = time.perf_counter()
    for task, length in todo:
        batch = [ruler.make_sample(model.tokenizer, task, length, seed + i, haystack=haystack)
                 for i in range(samples)]
        for name in methods:
            method = "full"
            if name == "shadowkv":
                method = ShadowKVConfig.for_model(model, length, max_new_tokens=max_new_tokens,
                                                  **(sk_overrides or {}))
            scores = []
            for i in range(0, len(batch), batch_size):
                group = batch[i: i + batch_size]
                outs = generate(model, [list(s.prompt_ids) for s in group], method=method,
                                max_new_tokens=max_new_tokens)
                scores += [s.score(o.text) for s, o in zip(group, outs)]
            rows.append({"method": name, "task": task, "length": length, "samples": len(scores),
                         "score": 100 * sum(scores) / len(scores),
                         "config": dataclasses.asdict(method) if name == "shadowkv" else None})
            done += 1
            if progress:
                el = time.perf_counter() - t0
                print(f"\r[{done}/{total}] {task} {length} {name}: {rows[-1]['score']:.1f} "
                      f"({el:.0f} s, ~{el / done * (total - done):.0f} s left)", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return {"date": datetime.date.today().isoformat(), "rows": rows, "averages": _averages(rows),
            "haystack": haystack}


def _averages(rows) -> dict:
    acc = defaultdict(list)
    for r in rows:
        acc[(r["method"], r["length"])].append(r["score"])
    return {f"{m}@{n}": sum(v) / len(v) for (m, n), v in acc.items()}


def markdown(summary: dict) -> str:
    methods = sorted({r["method"] for r in summary["rows"]})
    lengths = sorted({r["length"] for r in summary["rows"]})
    tasks = list(dict.fromkeys(r["task"] for r in summary["rows"]))
    cols = [(m, n) for n in lengths for m in methods]
    lines = ["| task | " + " | ".join(f"{m} @ {n}" for m, n in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    get = {(r["task"], r["method"], r["length"]): r["score"] for r in summary["rows"]}
    for t in tasks:
        lines.append(f"| {t} | " + " | ".join(f"{get.get((t, m, n), float('nan')):.1f}" for m, n in cols) + " |")
    lines.append("| **average** | " + " | ".join(f"{summary['averages'].get(f'{m}@{n}', float('nan')):.1f}"
                                               for m, n in cols) + " |")
    return "\n".join(lines)


def main_ruler(args) -> int:
    from ..api import load_model

    model = load_model(args.model)
    overrides = {k: v for k, v in (("rank", args.rank), ("chunk_size", args.chunk_size),
                                   ("sparse_budget", args.sparse_budget), ("outlier_chunks", args.outlier_chunks),
                                   ("local_chunks", args.local_chunks)) if v is not None}
    summary = run_ruler(model, args.tasks, args.lengths, args.samples, args.method, sk_overrides=overrides,
                        batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, seed=args.seed,
                        haystack=args.haystack)
    summary["model"] = model.source
    summary["haystack"] = args.haystack
    table = markdown(summary)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(summary, markdown=table), f, indent=1)
    print(table)
    return 0
