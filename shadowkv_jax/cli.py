"""Command line: `python -m shadowkv_jax generate|eval|bench|convert ...`."""

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
    sk.add_argument("--value-placement", choices=["auto", "host", "device", "split"])
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
    r.add_argument("--haystack", choices=["noise", "natural"], default="noise",
                   help="NIAH/vt filler: RULER's noise sentences, or English prose from the standard library's "
                        "pydoc_data (the Python reference manual's topic texts)")
    r.add_argument("--method", nargs="+", default=["full", "shadowkv"], choices=["full", "shadowkv"])
    for flag in ("--rank", "--chunk-size", "--sparse-budget", "--outlier-chunks", "--local-chunks"):
        r.add_argument(flag, type=int)
    r.add_argument("--batch-size", type=int, default=4)
    r.add_argument("--max-new-tokens", type=int, default=48)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--json", default=None, help="write the summary (rows, averages, markdown table) here")

    bn = sub.add_parser("bench", help="decode throughput at long context: full attention vs ShadowKV",
                        description="Prefill one prompt of random tokens per run, copy it into every row of "
                        "the batch, time decoding. Named shapes use random bf16 weights (decode speed does not "
                        "depend on weight values); a PATH uses real weights. Set "
                        "XLA_PJRT_GPU_HOST_MEMORY_LIMIT_GB before starting when ShadowKV's values need more "
                        "pinned host memory than XLA's default cap (64 GiB).")
    bn.add_argument("--model", default="llama-3.1-8b", help="llama-3.1-8b | glm-4-9b | PATH (GGUF, HF dir)")
    bn.add_argument("--context", type=int, nargs="+", default=[65536, 122880])
    bn.add_argument("--method", nargs="+", default=["full", "shadowkv"], choices=["full", "shadowkv"])
    bn.add_argument("--batch", nargs="+", default=["auto"], help="batch sizes, or 'auto' (largest that fits)")
    bn.add_argument("--steps", type=int, default=32, help="timed decode steps (after as many warm-up steps)")
    bn.add_argument("--timed-calls", type=int, default=1,
                    help="timed calls of the decode loop after its warm-up (each call's seconds are kept in the JSON)")
    bn.add_argument("--breakdown", action="store_true",
                    help="also time the step without attention and with selection only")
    bn.add_argument("--gpu-memory-gb", type=float, default=None, help="default: the device's allocator limit")
    bn.add_argument("--host-memory-gb", type=float, default=None,
                    help="pinned host memory to plan with (default: $XLA_PJRT_GPU_HOST_MEMORY_LIMIT_GB or 64)")
    bn.add_argument("--margin", type=float, default=0.10, help="fraction of each memory kept free")
    bk = bn.add_argument_group("ShadowKV (unset fields come from ShadowKVConfig.for_model at each context)")
    bk.add_argument("--rank", type=int)
    bk.add_argument("--chunk-size", type=int)
    bk.add_argument("--sparse-budget", type=int)
    bk.add_argument("--factorization", choices=["svd", "gram"], default="gram",
                    help="gram (default here: ~9x faster prefill at long context, same subspace) or svd")
    bk.add_argument("--implementation", choices=["auto", "reference", "pallas"], default="auto")
    bk.add_argument("--no-value-reuse", action="store_true",
                    help="fetch every selected value from where the values live (the faster choice with "
                         "--value-placement device: a reuse cache there only adds writes)")
    bk.add_argument("--micro-batches", type=int, choices=[1, 2], default=1,
                    help="2: decode the batch as two halves whose layers interleave, so one half's value reads "
                         "overlap the other's GEMMs (shadowkv/pipeline.py)")
    bk.add_argument("--value-stream", type=int, default=None,
                    help="with --micro-batches 2: run the attention kernels on XLA GPU stream N (e.g. 1)")
    bk.add_argument("--kernel-splits", type=int, default=None,
                    help="with --micro-batches 2: the attention kernel's splits per (sequence, KV head) (default 1)")
    bk.add_argument("--schedule-groups", action="store_true",
                    help="experimental, with --value-stream: group each kernel call with the other half's HBM work "
                         "for XLA's latency-hiding scheduler (shadowkv/pipeline.py)")
    bk.add_argument("--emulate-reuse", type=float, default=0.0, metavar="F",
                    help="throughput only: keep a fraction F of each step's chunks from the previous step, the "
                         "value reuse real weights show (SmolLM2: 0.69; random weights: 0.04); outputs are then "
                         "not ShadowKV's, and the rows say so")
    bk.add_argument("--top-k", choices=["auto", "xla", "pallas"],
                    help="chunk selection after the scores: softmax and top-k in XLA, or one Pallas kernel "
                         "(default auto: the kernel on GPU)")
    bk.add_argument("--value-placement", choices=["auto", "host", "device", "split"],
                    help="where the values live (default auto: pinned host memory on GPU); split: the values of "
                         "as many sequences as the GPU has room for stay on it, the rest on the host")
    bn.add_argument("--full-implementation", choices=["auto", "xla", "pallas"], default="auto",
                    help="full-attention decode: the Pallas flash-decoding kernel (auto on GPU) or XLA einsums")
    bn.add_argument("--unroll-layers", type=int, default=1, help="unroll the decode step's scan over layers")
    bn.add_argument("--json", default=None, help="write rates, rows and speedups here")
    bn.add_argument("--profile", action="store_true",
                    help="run the decode loop once more under jax.profiler: GPU kernel ms per step by named scope")
    bn.add_argument("--plot", default=None, help="write the throughput / breakdown figure here (PNG)")

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


class UsageError(ValueError):
    """A command-line value that is out of range."""


def _batch_arg(text: str):
    if text == "auto":
        return "auto"
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise UsageError(f"--batch {text!r} must be a positive integer or 'auto'")
    return n


def _bench(args) -> int:
    from . import throughput as tp

    for c in args.context:
        if c < 1:
            raise UsageError(f"--context {c} must be a positive number of tokens")
    if args.steps < 1:
        raise UsageError(f"--steps {args.steps} must be >= 1")
    if args.timed_calls < 1:
        raise UsageError(f"--timed-calls {args.timed_calls} must be >= 1")
    if args.micro_batches > 1 and args.breakdown:
        raise UsageError("--breakdown times stand-ins of the plain step: it cannot run with --micro-batches 2")
    if args.kernel_splits is not None and (args.micro_batches != 2 or args.kernel_splits < 1):
        raise UsageError(f"--kernel-splits {args.kernel_splits} needs --micro-batches 2 and a positive number")
    if args.value_stream is not None and (args.micro_batches != 2 or args.value_stream < 1):
        raise UsageError(f"--value-stream {args.value_stream} needs --micro-batches 2 and a stream number >= 1 "
                         "(stream 0 is XLA's main stream)")
    if args.schedule_groups and args.value_stream is None:
        raise UsageError("--schedule-groups needs --value-stream (the kernel calls it places run on that stream)")
    if not 0 <= args.emulate_reuse < 1 or (args.emulate_reuse and args.no_value_reuse):
        raise UsageError(f"--emulate-reuse {args.emulate_reuse} must be in [0, 1) and needs value reuse "
                         "(no --no-value-reuse)")
    if args.value_placement in ("host", "split"):
        import jax

        if jax.devices()[0].platform != "gpu":  # neither decode path reads pinned host memory off a GPU here
            raise UsageError(f"--value-placement {args.value_placement} keeps values in pinned host memory, which "
                             f"the bench reads on a GPU only (this is {jax.devices()[0].platform}): use device or auto")
    batches = [_batch_arg(b) for b in args.batch]
    model, note = tp.bench_model(args.model)
    print(f"model: {args.model} ({note})")
    overrides = {k: v for k, v in dict(rank=args.rank, chunk_size=args.chunk_size, sparse_budget=args.sparse_budget,
                                       factorization=args.factorization, implementation=args.implementation,
                                       value_reuse=not args.no_value_reuse, top_k=args.top_k,
                                       value_placement=args.value_placement).items()
                 if v is not None}
    methods = ["full" if m == "full" else tp.shadowkv_factory(model.config, **overrides) for m in args.method]
    limits = tp.default_limits(args.gpu_memory_gb, args.host_memory_gb, args.margin)
    rates = tp.measure_bandwidths()
    h2d = rates["h2d_bytes_per_s"]
    print(f"measured: HBM read {rates['hbm_read_bytes_per_s'] / 1e12:.2f} TB/s, host->device "
          f"{'n/a' if h2d is None else f'{h2d / 1e9:.1f} GB/s'}")
    meta = tp.run_meta(model=args.model, weights=note, command=" ".join(sys.argv))

    def save(rows):  # after every row, so an interrupted run keeps what it measured
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"meta": meta, "rates": rates, "rows": rows, "speedups": tp.speedups(rows),
                           "prefill": tp.prefill_shares(rows), "markdown": tp.markdown(rows)}, f, indent=1)

    out = tp.bench(model, args.context, methods, batches, args.steps, limits, breakdown=args.breakdown, rates=rates,
                   on_row=save, unroll=args.unroll_layers, full_attention=args.full_implementation,
                   profile=args.profile, timed_calls=args.timed_calls,
                   step=tp.ShadowKVStep(micro_batches=args.micro_batches, value_stream=args.value_stream,
                                        kernel_splits=args.kernel_splits, emulated_reuse=args.emulate_reuse,
                                        schedule_groups=args.schedule_groups))
    out["speedups"] = tp.speedups(out["rows"])
    table = tp.markdown(out["rows"])
    if args.plot:
        tp.plot(out["rows"], args.plot)
    for s in tp.prefill_shares(out["rows"]):
        print(f"context {s['context']:,}: prefill of one prompt {s['full_prefill_s']:.2f} s full, "
              f"{s['shadowkv_prefill_s']:.2f} s ShadowKV ({100 * s['state_build_share']:.0f}% building the state)")
    for s in out["speedups"]:
        print(f"context {s['context']:,}: {s['shadowkv']} {s['shadowkv_tokens_per_s']:.1f} tok/s "
              f"(batch {s['shadowkv_batch']}) "
              f"/ full {s['full_tokens_per_s']:.1f} tok/s (batch {s['full_batch']}) = {s['ratio']:.2f}x")
    print(table)
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from . import (ConfigError, GenerationError, ModelNotFoundError, ShadowKVConfigError, TokenizerError,
                   WeightsError)
    from .planner import PlanError

    try:
        if args.command == "eval":
            from .eval.run import main_ruler

            return main_ruler(args)
        return {"generate": _generate, "convert": _convert, "bench": _bench}[args.command](args)
    except (ConfigError, GenerationError, ModelNotFoundError, ShadowKVConfigError, TokenizerError,
            WeightsError, PlanError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
