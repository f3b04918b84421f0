"""Command line: `python -m shadowkv_jax generate|convert ...`."""

from __future__ import annotations

import argparse
import json
import sys


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m shadowkv_jax",
                                description="ShadowKV long-context decoding in JAX")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate text for one or more prompts")
    g.add_argument("--prompt", action="append", default=[], help="prompt text (repeat for a batch)")
    g.add_argument("--prompt-file", action="append", default=[], help="file whose text is one prompt")
    g.add_argument("--model", default=None,
                   help="GGUF file, HF directory or shadowkv_jax checkpoint (default: embedded SmolLM2)")
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--method", default="full", choices=["full", "shadowkv"])
    sk = g.add_argument_group("ShadowKV (with --method shadowkv; unset fields come from "
                              "ShadowKVConfig.for_model(model, prompt length))")
    sk.add_argument("--rank", type=int)
    sk.add_argument("--chunk-size", type=int)
    sk.add_argument("--sparse-budget", type=int, help="selected tokens per KV head and step")
    sk.add_argument("--outlier-chunks", type=int)
    sk.add_argument("--local-chunks", type=int)
    sk.add_argument("--factorization", choices=["svd", "gram"])
    sk.add_argument("--value-placement", choices=["auto", "host", "device"])
    g.add_argument("--no-chat", action="store_true", help="do not apply the chat template")
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    g.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass (with --temperature)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--dtype", default=None, choices=["float32", "bfloat16"])
    g.add_argument("--json", action="store_true", help="print one JSON object with text, counts and speeds")

    e = sub.add_parser("eval", help="accuracy evaluation (RULER-style tasks generated here)")
    esub = e.add_subparsers(dest="suite", required=True)
    r = esub.add_parser("ruler", help="RULER-style synthetic tasks at given prompt lengths")
    r.add_argument("--model", default=None)
    r.add_argument("--lengths", type=int, nargs="+", default=[4096])
    r.add_argument("--tasks", nargs="+", default=["niah_single", "niah_multikey", "niah_multivalue",
                                                   "niah_multiquery", "vt", "cwe", "fwe"])
    r.add_argument("--samples", type=int, default=20)
    r.add_argument("--method", nargs="+", default=["full", "shadowkv"], choices=["full", "shadowkv"])
    for flag in ("--rank", "--chunk-size", "--sparse-budget", "--outlier-chunks", "--local-chunks"):
        r.add_argument(flag, type=int)
    r.add_argument("--batch-size", type=int, default=4)
    r.add_argument("--max-new-tokens", type=int, default=48)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--json", default=None, help="write the summary (rows, averages, markdown table) here")

    c = sub.add_parser("convert", help="save a model as an orbax checkpoint (skips dequantization later)")
    c.add_argument("--model", default=None, help="GGUF file or HF directory (default: embedded SmolLM2)")
    c.add_argument("--out", required=True, help="output directory, e.g. checkpoints/smollm2-135m")
    c.add_argument("--dtype", default=None, choices=["float32", "bfloat16"])
    return p


def _sampler(args):
    from .sampling import Greedy, Temperature, TopP

    if args.top_p is not None:
        return TopP(p=args.top_p, temperature=args.temperature or 1.0)
    return Temperature(args.temperature) if args.temperature > 0 else Greedy()


def _method(args, model, id_lists):
    """"full", or a ShadowKVConfig scaled to the shortest prompt with the flags' overrides."""
    if args.method == "full":
        return "full"
    from .shadowkv import ShadowKVConfig

    shortest = min(len(ids) for ids in id_lists)
    names = ("rank", "chunk_size", "sparse_budget", "outlier_chunks", "local_chunks", "factorization",
             "value_placement")
    overrides = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    return ShadowKVConfig.for_model(model, shortest, max_new_tokens=args.max_new_tokens, **overrides)


def _generate(args) -> int:
    from . import generate, load_model

    prompts = list(args.prompt)
    for path in args.prompt_file:
        with open(path, encoding="utf-8") as f:
            prompts.append(f.read())
    if not prompts:
        print("error: give at least one --prompt or --prompt-file", file=sys.stderr)
        return 2
    from .api import encode_prompts

    model = load_model(args.model, dtype=args.dtype)
    id_lists = encode_prompts(model, prompts, chat=False if args.no_chat else None)  # tokenize once
    method = _method(args, model, id_lists)
    results = generate(model, id_lists, method=method, max_new_tokens=args.max_new_tokens,
                       sampler=_sampler(args), seed=args.seed)
    if args.json:
        out = [{"prompt": p, "text": r.text, "prompt_tokens": r.stats["prompt_tokens"],
                "generated_tokens": r.stats["generated_tokens"],
                "prefill_tokens_per_s": r.stats["prefill_tokens_per_s"],
                "decode_tokens_per_s": r.stats["decode_tokens_per_s"],
                "compile_s": r.stats["compile_s"], "method": r.stats["method"],
                "hit_rate": r.stats.get("hit_rate"), "device": r.stats["device"]}
               for p, r in zip(prompts, results)]
        if method != "full":
            import dataclasses

            for o in out:
                o["shadowkv_config"] = dataclasses.asdict(method)
        print(json.dumps(out[0] if len(out) == 1 else out, indent=1))
    else:
        for p, r in zip(prompts, results):
            if len(prompts) > 1:
                print(f"### {p[:60]!r}")
            print(r.text)
    return 0


def _convert(args) -> int:
    from . import convert, load_model

    out = convert(load_model(args.model, dtype=args.dtype), args.out)
    print(f"saved checkpoint to {out}")
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from . import (ConfigError, GenerationError, ModelNotFoundError, ShadowKVConfigError, TokenizerError,
                   WeightsError)

    try:
        if args.command == "eval":
            from .eval.run import main_ruler

            return main_ruler(args)
        return {"generate": _generate, "convert": _convert}[args.command](args)
    except (ConfigError, GenerationError, ModelNotFoundError, ShadowKVConfigError, TokenizerError,
            WeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
