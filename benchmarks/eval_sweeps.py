"""Rank and chunk-size sweeps of ShadowKV around the scaled default config, with a full-attention line.

    python benchmarks/eval_sweeps.py [--model PATH] --length 4096 --samples 8
        --tasks niah_single niah_multikey niah_multivalue --ranks 8 16 32 48 96 192
        --chunk-sizes 4 8 16 32 [--batch-size B] [--placement auto|host|device]
        --json OUT.json --plot OUT.png
    python benchmarks/eval_sweeps.py --from-json OUT.json --plot OUT.png     # re-plot a saved result

Two one-dimensional sweeps over the same RULER-style samples (`ruler.make_sample`, seeds 0..N-1 per
task), both around `ShadowKVConfig.for_model(model, length)` (the reference's defaults scaled to the
model: rank 48 and chunk size 8 for SmolLM2-135M at 4K):

* rank sweep: every rank at the default chunk size; all other fields at their defaults;
* chunk-size sweep: every chunk size at the default rank, holding the *token* counts fixed, not the
  chunk counts: the sparse budget stays at the default number of tokens and the outlier and local
  windows keep (about) the default number of exact tokens, so the share of attention that is exact
  does not change with the chunk size and the sweep isolates the granularity of chunk selection.
  For chunk size c: sparse_budget = c * max(1, round(budget / c)) (a multiple of c, as required;
  exact when c divides the budget, e.g. 128 tokens at 4K for c in 4..32); outlier_chunks =
  round(outlier tokens / c) (ties up, at least 1 unless the default has none); local_chunks =
  round(local tokens / c) (ties up, at least 1). When c does not divide those token counts the
  windows grow or shrink by up to c / 2 tokens; every row records the tokens it really used
  (`sparse_budget`, `outlier_tokens`, `local_tokens`).

The default point (default rank at the default chunk size) is one config shared by both sweeps and
is evaluated once. Each point is `sweep.sweep` (mean accuracy, attention-output error at the first
decode step on the first sample, hit rate, bytes per token). Full attention runs on the same samples
as the reference line. Every configuration recompiles (prefill and decode); all samples of one
configuration go through `generate` in as few calls as possible (`--batch-size`, default: all at
once), so a run compiles about four programs per ShadowKV point plus three for full attention. The
defaults (24 samples of 4K, batch 24: 9 ShadowKV points + full attention = 10 generate calls) took
4 minutes on an H100 with JAX 0.11.2. The attention-output error is `sweep`'s: first decode step of
the first sample only. Rank 8 is not a multiple of 16, so on GPU it decodes with the jnp reference
instead of the Pallas kernel (`decode_implementation` in each row).

Writes JSON (run metadata, the policy above, both sweeps' rows, full-attention accuracy), a 2x2
figure (`plots.sweep_plot`) and prints a markdown table last.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # `common` when imported from elsewhere

import shadowkv_jax as sk  # noqa: E402
from common import run_meta, save_json  # noqa: E402
from shadowkv_jax.eval import ruler  # noqa: E402

DEFAULT_TASKS = ["niah_single", "niah_multikey", "niah_multivalue"]
DEFAULT_RANKS = [8, 16, 32, 48, 96, 192]
DEFAULT_CHUNK_SIZES = [4, 8, 16, 32]
POLICY = ("rank sweep: each rank at the default chunk size, other fields default. chunk-size sweep: each "
          "chunk size at the default rank with the token counts held: sparse_budget = c*max(1, round(budget/c)); "
          "outlier_chunks = round(outlier_tokens/c) (ties up, >= 1 unless the default has 0); "
          "local_chunks = round(local_tokens/c) (ties up, >= 1); rows record the tokens really used")


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def config_for_chunk_size(base: sk.ShadowKVConfig, chunk_size: int) -> sk.ShadowKVConfig:
    """`base` at another chunk size, keeping its budget, outlier and local windows in tokens."""
    c = chunk_size
    budget = c * max(1, _round_half_up(base.sparse_budget / c))
    outlier_tokens = base.outlier_chunks * base.chunk_size
    outliers = _round_half_up(outlier_tokens / c)
    if base.outlier_chunks:
        outliers = max(1, outliers)
    local = max(1, _round_half_up(base.local_chunks * base.chunk_size / c))
    return dataclasses.replace(base, chunk_size=c, sparse_budget=budget, outlier_chunks=outliers,
                               local_chunks=local)


def sweep_configs(model, length: int, ranks, chunk_sizes, **overrides):
    """(base, [(rank, cfg)], [(chunk_size, cfg)]): the configs of both sweeps around the scaled default.

    `model` is a Model or a ModelConfig; `overrides` (e.g. value_placement, max_new_tokens) go to
    `ShadowKVConfig.for_model`. Ranks above Hkv * D are an error (the keys have no more dimensions).
    """
    mc = getattr(model, "config", model)
    hd = mc.num_kv_heads * mc.head_dim
    bad = [r for r in ranks if r > hd or r < 1]
    if bad:
        raise ValueError(f"ranks {bad} are outside 1..num_kv_heads * head_dim = {hd}")
    base = sk.ShadowKVConfig.for_model(model, length, **overrides)
    rank_cfgs = [(r, dataclasses.replace(base, rank=r)) for r in ranks]
    chunk_cfgs = [(c, config_for_chunk_size(base, c)) for c in chunk_sizes]
    return base, rank_cfgs, chunk_cfgs


def _row_extras(cfg: sk.ShadowKVConfig, model, platform: str) -> dict:
    from shadowkv_jax.shadowkv.decode import resolve_implementation

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        impl = resolve_implementation(model.config, cfg, platform)
    return {"rank": cfg.rank, "chunk_size": cfg.chunk_size, "sparse_budget": cfg.sparse_budget,
            "outlier_chunks": cfg.outlier_chunks, "outlier_tokens": cfg.outlier_chunks * cfg.chunk_size,
            "local_chunks": cfg.local_chunks, "local_tokens": cfg.local_chunks * cfg.chunk_size,
            "decode_implementation": impl}


def full_attention(model, samples, *, batch_size: int, max_new_tokens: int) -> dict:
    """Accuracy of exact attention on the same samples (overall and per task), scored like `sweep`."""
    from shadowkv_jax.eval.sweep import _score
    from shadowkv_jax.generation import generate

    scores, calls = [], 0
    for i in range(0, len(samples), batch_size):
        group = samples[i: i + batch_size]
        outs = generate(model, [list(s.prompt_ids) for s in group], method="full", max_new_tokens=max_new_tokens)
        calls += 1
        scores += [_score(s, o.text) for s, o in zip(group, outs)]
    per_task: dict = {}
    for s, v in zip(samples, scores):
        per_task.setdefault(getattr(s, "task", "?"), []).append(v)
    return {"accuracy": sum(scores) / len(scores), "per_task": {t: sum(v) / len(v) for t, v in per_task.items()},
            "scores": scores, "generate_calls": calls}


def markdown(rank_rows, chunk_rows, full: dict | None, defaults: dict) -> str:
    lines = ["| sweep | rank | chunk | budget | outlier tok | local tok | accuracy | attn err mean | "
             "attn err max layer | hit rate | GPU B/tok | host B/tok |", "|---" * 12 + "|"]
    for name, rows in (("rank", rank_rows), ("chunk_size", chunk_rows)):
        for r in rows:
            mark = " (default)" if r["rank"] == defaults["rank"] and r["chunk_size"] == defaults["chunk_size"] else ""
            lines.append(f"| {name}{mark} | {r['rank']} | {r['chunk_size']} | {r['sparse_budget']} | "
                         f"{r['outlier_tokens']} | {r['local_tokens']} | {r['accuracy']:.3f} | "
                         f"{r['attention_error']:.4f} | {r['attention_error_max_layer']:.4f} | {r['hit_rate']:.3f} | "
                         f"{r['gpu_bytes_per_token']:.0f} | {r['host_bytes_per_token']:.0f} |")
    if full is not None:
        lines.append(f"| full attention | - | - | - | - | - | {full['accuracy']:.3f} | 0 | 0 | - | - | - |")
    return "\n".join(lines)


def _plot(path: str | None, out: dict) -> None:
    """The 2x2 figure of a result (as written to --json); without matplotlib, says so and goes on."""
    if not path:
        return
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        print(f"matplotlib is not installed (extra `plots`): no {path}; plot later with --from-json",
              file=sys.stderr)
        return
    from shadowkv_jax.eval.plots import sweep_plot

    full = out.get("full_attention")
    n = out["samples_per_task"] * len(out["tasks"])
    sweep_plot(out["rank_sweep"], out["chunk_size_sweep"], full_accuracy=full["accuracy"] if full else None,
               defaults=out["defaults"], path=path,
               title=f"ShadowKV sweeps: {os.path.basename(out['model'])}, ~{out['length']} tokens, {n} samples "
                     f"({', '.join(out['tasks'])})\n{out['device']}, jax {out['jax']}, {out.get('date', '')}")


def main(argv=None, model=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model path (default: the embedded SmolLM2-135M)")
    p.add_argument("--length", type=int, default=4096, help="target prompt tokens of every sample")
    p.add_argument("--samples", type=int, default=8, help="samples per task")
    p.add_argument("--tasks", nargs="+", default=DEFAULT_TASKS, choices=ruler.TASKS)
    p.add_argument("--ranks", type=int, nargs="+", default=DEFAULT_RANKS)
    p.add_argument("--chunk-sizes", type=int, nargs="+", default=DEFAULT_CHUNK_SIZES)
    p.add_argument("--batch-size", type=int, default=0, help="prompts per generate call (0: all at once)")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--placement", default="auto", choices=["auto", "host", "device"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-full", action="store_true", help="skip the full-attention reference")
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None, help="PNG of the 2x2 figure (needs matplotlib)")
    p.add_argument("--from-json", default=None, metavar="IN",
                   help="run nothing: re-plot (--plot) and print the table of a saved --json result")
    args = p.parse_args(argv)
    if args.from_json:
        with open(args.from_json) as f:
            out = json.load(f)
        _plot(args.plot, out)
        print(out["markdown"])
        return 0

    import jax

    from shadowkv_jax.eval.sweep import sweep

    t_start = time.perf_counter()
    model = model if model is not None else sk.load_model(args.model)
    try:
        base, rank_cfgs, chunk_cfgs = sweep_configs(model, args.length, args.ranks, args.chunk_sizes,
                                                    value_placement=args.placement,
                                                    max_new_tokens=args.max_new_tokens)
    except (ValueError, sk.ShadowKVConfigError) as e:
        p.error(str(e))
    samples = [ruler.make_sample(model.tokenizer, t, args.length, args.seed + i)
               for t in args.tasks for i in range(args.samples)]
    batch = args.batch_size or len(samples)
    lens = [len(s.prompt_ids) for s in samples]
    for cfg in [c for _, c in rank_cfgs + chunk_cfgs]:
        try:
            cfg.validate(model.config, lens)
        except sk.ShadowKVConfigError as e:
            p.error(f"--length {args.length} is too short for a sweep point: {e}")
    platform = jax.devices()[0].platform
    defaults = {"rank": base.rank, "chunk_size": base.chunk_size}
    calls_per_config = -(-len(samples) // batch)

    done: dict = {}  # config -> row (the default point is shared by both sweeps)
    todo = list(dict.fromkeys(c for _, c in rank_cfgs + chunk_cfgs))

    def evaluate(cfg):
        if cfg not in done:
            t0 = time.perf_counter()
            [row] = sweep(model, samples, cfg, max_new_tokens=args.max_new_tokens, batch_size=batch)
            row.update(_row_extras(cfg, model, platform), seconds=time.perf_counter() - t0)
            done[cfg] = row
            print(f"[{len(done)}/{len(todo)}] rank {cfg.rank:4d} chunk {cfg.chunk_size:3d}: accuracy "
                  f"{row['accuracy']:.3f} attention error {row['attention_error']:.4f} ({row['seconds']:.0f} s)",
                  file=sys.stderr, flush=True)
        return dict(done[cfg])

    rank_rows = [dict(evaluate(cfg), sweep="rank") for _, cfg in rank_cfgs]
    chunk_rows = [dict(evaluate(cfg), sweep="chunk_size") for _, cfg in chunk_cfgs]
    full = None
    if not args.no_full:
        t0 = time.perf_counter()
        full = full_attention(model, samples, batch_size=batch, max_new_tokens=args.max_new_tokens)
        full["seconds"] = time.perf_counter() - t0
        print(f"full attention: accuracy {full['accuracy']:.3f} ({full['seconds']:.0f} s)", file=sys.stderr, flush=True)

    table = markdown(rank_rows, chunk_rows, full, defaults)
    out = run_meta(
        model=model.source, length=args.length, tasks=args.tasks, samples_per_task=args.samples,
        prompt_tokens={"min": min(lens), "max": max(lens)}, max_new_tokens=args.max_new_tokens,
        batch_size=batch, placement=base.resolved_placement(platform), defaults=defaults,
        default_config=dataclasses.asdict(base), policy=POLICY,
        generate_calls=len(done) * calls_per_config + (full["generate_calls"] if full else 0),
        distinct_configs=len(done), full_attention=full, rank_sweep=rank_rows, chunk_size_sweep=chunk_rows,
        seconds=time.perf_counter() - t_start, markdown=table)
    save_json(args.json, out)
    _plot(args.plot, out)
    print(f"\nShadowKV sweeps on {out['device']} ({out['platform']}), jax {out['jax']}, {out['date']}: "
          f"{len(samples)} samples of ~{args.length} tokens; {out['generate_calls']} generate calls")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
