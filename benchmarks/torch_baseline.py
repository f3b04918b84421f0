"""PyTorch / transformers full-attention decode throughput: the baseline for our JAX decode.

    python benchmarks/torch_baseline.py --shape llama-3.1-8b --context 32768 --batch 1 4 \
        --steps 32 --warmup 4 --compile both --json OUT.json

Random weights of the real architecture (speed does not depend on the values), built directly on the
device in bf16, transformers' SDPA attention and a `StaticCache`. No prefill is run: each layer's static
key/value tensors get random data for positions [0, context) and the cache length is set to `context`, so
decode starts as if a `context`-token prompt had been read. Each step feeds [batch, 1] token ids (greedy
argmax of the previous step) at the next position. ms/step and tokens/s = batch * steps / time cover
`steps` steps after `warmup` steps, timed with a device sync before and after the loop.

Variants: `eager` and `reduce-overhead` (torch.compile of the step, mode="reduce-overhead" i.e. CUDA
graphs, fullgraph=True); a compile failure or OOM is recorded in its row and the run goes on.

Note: with a StaticCache, SDPA attends over the whole capacity (max_cache_len) under a mask, so each step
reads the full allocated K/V, not only the filled part; capacity = context + warmup + steps (+1).

Imports no JAX (benchmarks/common.run_meta does), so it runs in a torch-only environment.
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import platform
import sys
import time

import torch
import transformers
from transformers import GlmForCausalLM, LlamaForCausalLM, StaticCache

COMPILED = "reduce-overhead"
MIN_COMPILED_WARMUP = 3  # call 1 compiles, calls 2-3 record the CUDA graph; keep all of them untimed


def _llama3_rope(theta: float) -> dict:
    return {"rope_type": "llama3", "rope_theta": theta, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


# name -> (model class, config kwargs). RoPE goes in `rope_parameters` (the transformers 5.x spelling).
SHAPES = {
    "llama-3.1-8b": (LlamaForCausalLM, dict(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-5,
        rope_parameters=_llama3_rope(500000.0), max_position_embeddings=131072)),
    # GLM-4-9B(-1M) as transformers' GlmForCausalLM: q/k/v biases, half-rotary RoPE, 2 KV heads
    "glm-4-9b": (GlmForCausalLM, dict(
        vocab_size=151552, hidden_size=4096, intermediate_size=13696, num_hidden_layers=40,
        num_attention_heads=32, num_key_value_heads=2, head_dim=128, attention_bias=True,
        rms_norm_eps=1.5625e-7, max_position_embeddings=1048576,
        rope_parameters={"rope_type": "default", "rope_theta": 5e6, "partial_rotary_factor": 0.5})),
}
# small models of both families for CPU tests: the real configs with small sizes
_SMALL = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16)
for _small, _real in (("tiny", "llama-3.1-8b"), ("tiny-glm", "glm-4-9b")):
    SHAPES[_small] = (SHAPES[_real][0], {**SHAPES[_real][1], **_SMALL})
SMALL_SHAPES = ("tiny", "tiny-glm")


def build_model(shape: str, device: str, dtype: torch.dtype, seed: int = 0):
    """Random-weight model of `shape`, created directly on `device` in `dtype` (no CPU copy, no cast)."""
    cls, kwargs = SHAPES[shape]
    # pad_token_id=None: GLM's default pad id lies outside the tiny vocab; padding plays no part here
    config = cls.config_class(**kwargs, pad_token_id=None, tie_word_embeddings=False,
                              attn_implementation="sdpa")
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = cls(config)
    finally:
        torch.set_default_dtype(old)
    # Refill every parameter ourselves (seeded, on device), so values never depend on how a given
    # transformers version initialises (or skips initialising) weights.
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and "norm" in name:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=gen)
    return model.eval()


def make_forward(model, cache):
    """fwd(ids [B, 1], pos [B, 1]) -> logits [B, vocab]: one decode forward through `cache`.

    The signature is inspected once, here, not per step (and not under torch.compile):
    transformers 5.17 names the cache argument `past_key_values`, 5.24 renamed it `cache` (the old name
    is deprecated there). Neither takes `cache_position` (a StaticCache layer writes at its own
    `cumulative_length`); older versions did, so pass it when the signature has it.
    """
    params = inspect.signature(model.forward).parameters
    kw = {("cache" if "cache" in params else "past_key_values"): cache, "use_cache": True}
    with_cache_position = "cache_position" in params

    def fwd(ids, pos):
        extra = {"cache_position": pos[0]} if with_cache_position else {}
        return model(input_ids=ids, position_ids=pos, **kw, **extra).logits[:, -1]
    return fwd


def filled_cache(model, batch: int, context: int, capacity: int, seed: int = 0) -> StaticCache:
    """StaticCache of `capacity` whose positions [0, context) hold random K/V; the next write goes to `context`."""
    assert 1 <= context < capacity
    cache = StaticCache(config=model.config, max_cache_len=capacity)
    dev = model.device
    # The layers allocate their [B, Hkv, capacity, D] tensors lazily, on the first update: one 1-token
    # forward allocates them (its K/V at position 0 is overwritten below).
    zeros = torch.zeros(batch, 1, dtype=torch.long, device=dev)
    make_forward(model, cache)(zeros, zeros)
    layers = getattr(cache, "layers", None)
    if not layers or getattr(layers[0], "keys", None) is None:
        raise RuntimeError(f"transformers {transformers.__version__}: StaticCache has no "
                           "`layers[i].keys/values`; this script does not know how to fill it")
    gen = torch.Generator(device=dev).manual_seed(seed)
    for layer in layers:
        k, v = layer.keys, layer.values  # [B, Hkv, capacity, D]; fill in place: the addresses are static
        k.zero_()
        v.zero_()
        k[:, :, :context].normal_(generator=gen)
        v[:, :, :context].normal_(generator=gen)
        if hasattr(layer, "cumulative_length"):  # where the next update writes, and the mask's query offset
            layer.cumulative_length.fill_(context)
        elif "cache_position" not in inspect.signature(model.forward).parameters:
            raise RuntimeError(f"transformers {transformers.__version__}: StaticCache layer has no "
                               "`cumulative_length` and forward takes no `cache_position`")
    return cache


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bench_variant(model, variant: str, batch: int, context: int, steps: int, warmup: int,
                  device: str) -> dict:
    """Decode `warmup` + `steps` steps from a freshly filled cache; time the last `steps`."""
    if variant == COMPILED:
        warmup = max(warmup, MIN_COMPILED_WARMUP)
    capacity = context + warmup + steps
    row = {"batch": batch, "variant": variant, "warmup": warmup, "steps": steps, "capacity": capacity}
    cache = filled_cache(model, batch, context, capacity)
    # position ids of every step, made up front so the timed loop does no host->device copies
    positions = torch.arange(context, capacity, device=device).view(-1, 1, 1).expand(-1, batch, 1).contiguous()

    fwd = make_forward(model, cache)

    def step(ids, pos):
        logits = fwd(ids, pos)
        return logits.argmax(-1, keepdim=True), logits

    fn = step
    if variant == COMPILED:
        torch._dynamo.reset()  # a clean, static-shape compile for each batch size
        fn = torch.compile(step, mode="reduce-overhead", fullgraph=True, dynamic=False)
    mark_step = getattr(torch.compiler, "cudagraph_mark_step_begin", None) if variant == COMPILED else None

    def run(ids, i):
        if mark_step is not None:
            mark_step()
        nxt, logits = fn(ids, positions[i])
        return nxt.clone(), logits  # clone: a CUDA-graph output is overwritten by the next replay

    ids = torch.randint(0, model.config.vocab_size, (batch, 1), device=device,
                        generator=torch.Generator(device=device).manual_seed(1))
    t0 = time.perf_counter()
    for i in range(warmup):
        ids, _ = run(ids, i)
        _sync(device)
        if i == 0:
            row["first_call_s"] = time.perf_counter() - t0  # includes dynamo + inductor compile
    row["warmup_s"] = time.perf_counter() - t0

    _sync(device)
    t0 = time.perf_counter()
    for i in range(warmup, warmup + steps):
        ids, logits = run(ids, i)
    _sync(device)
    elapsed = time.perf_counter() - t0
    row.update(status="ok", time_s=elapsed, ms_per_step=1e3 * elapsed / steps,
               tokens_per_s=batch * steps / elapsed, logits_finite=bool(torch.isfinite(logits).all()))
    return row


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", required=True, help=" | ".join(SHAPES))
    p.add_argument("--context", type=int, required=True, help="filled cache positions before decoding")
    p.add_argument("--batch", type=int, nargs="+", default=[1])
    p.add_argument("--steps", type=int, default=32, help="timed decode steps")
    p.add_argument("--warmup", type=int, default=4, help=f"untimed steps first (compiled: at least "
                                                         f"{MIN_COMPILED_WARMUP})")
    p.add_argument("--compile", default="both", choices=["none", COMPILED, "both"])
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    p.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32"],
                   help="auto: bfloat16 on cuda, float32 on cpu")
    p.add_argument("--json", default=None, help="write rows + meta here")
    args = p.parse_args(argv)

    if args.shape not in SHAPES:
        p.error(f"unknown --shape {args.shape!r}; choose one of {', '.join(SHAPES)}")
    if args.context < 1:
        p.error(f"--context must be >= 1, got {args.context}")
    if any(b < 1 for b in args.batch):
        p.error(f"--batch sizes must be >= 1, got {args.batch}")
    if args.steps < 1:
        p.error(f"--steps must be >= 1, got {args.steps}")
    if args.warmup < 0:
        p.error(f"--warmup must be >= 0, got {args.warmup}")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    elif args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch sees no CUDA device")
    if args.device == "cpu" and args.shape not in SMALL_SHAPES:
        p.error(f"--shape {args.shape} needs a GPU (no CUDA device here); use --shape tiny on CPU")
    if args.dtype == "auto":
        args.dtype = "bfloat16" if args.device == "cuda" else "float32"
    max_pos = SHAPES[args.shape][1]["max_position_embeddings"]
    needed = args.context + max(args.warmup, MIN_COMPILED_WARMUP) + args.steps
    if needed > max_pos:
        p.error(f"context + warmup + steps = {needed} exceeds {args.shape}'s "
                f"max_position_embeddings {max_pos}")
    return args


def meta_dict(args, build_s: float) -> dict:
    cuda = args.device == "cuda"
    return {
        "device": torch.cuda.get_device_name() if cuda else (platform.processor() or platform.machine()),
        "platform": args.device, "torch": torch.__version__, "transformers": transformers.__version__,
        "cuda": torch.version.cuda if cuda else None, "python": platform.python_version(),
        "date": datetime.date.today().isoformat(), "command": " ".join(sys.argv),
        "shape": args.shape, "context": args.context, "dtype": args.dtype, "attn_implementation": "sdpa",
        "model_build_s": build_s,
        "note": ("Random weights, no prefill: the StaticCache holds random K/V at positions [0, context). "
                 "SDPA with a StaticCache attends over the whole capacity (max_cache_len = context + "
                 "warmup + steps) under a mask, so every step reads the full allocated K/V. Because a mask is "
                 "passed, GQA does not use SDPA's enable_gqa: transformers 5.17 repeats K/V to every query head "
                 "(repeat_kv) each step; 5.24 does so under torch.compile, and packs query heads instead in "
                 "eager decode. "
                 "tokens_per_s = batch * steps / time of the timed loop (device-synced before and after)."),
    }


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    variants = {"none": ["eager"], COMPILED: [COMPILED], "both": ["eager", COMPILED]}[args.compile]
    dtype = getattr(torch, args.dtype)
    cuda = args.device == "cuda"

    t0 = time.perf_counter()
    model = build_model(args.shape, args.device, dtype)
    _sync(args.device)
    meta = meta_dict(args, time.perf_counter() - t0)

    rows = []
    with torch.inference_mode():
        for batch in args.batch:
            for variant in variants:
                base = {"shape": args.shape, "context": args.context, "batch": batch, "variant": variant}
                if cuda:
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                try:
                    row = {**base, **bench_variant(model, variant, batch, args.context, args.steps,
                                                   args.warmup, args.device)}
                except Exception as e:  # noqa: BLE001 -- record it and go on with the next row
                    status = "oom" if _is_oom(e) else ("compile_error" if variant == COMPILED else "error")
                    row = {**base, "status": status, "error": f"{type(e).__name__}: {e}"[:2000]}
                if cuda:
                    row["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
                rows.append(row)
                print(json.dumps(row), flush=True)
                if variant == COMPILED:
                    torch._dynamo.reset()  # drop graphs (and their CUDA-graph memory) before the next row

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print(f"\ntorch {meta['torch']}, transformers {meta['transformers']}, {meta['device']}, {meta['dtype']}")
    print("| shape | context | batch | variant | ms/step | tok/s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ok = r["status"] == "ok"
        ms, tps = (f"{r['ms_per_step']:.2f}", f"{r['tokens_per_s']:.1f}") if ok else (r["status"], "-")
        print(f"| {r['shape']} | {r['context']} | {r['batch']} | {r['variant']} | {ms} | {tps} |")
    return rows


if __name__ == "__main__":
    sys.exit(0 if any(r["status"] == "ok" for r in main()) else 1)
