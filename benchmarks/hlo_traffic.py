"""Data movement XLA adds to a decode step: large slices and copies in the compiled loop bodies.

    python benchmarks/hlo_traffic.py --model llama-3.1-8b --context 122880 --batch 13 --method shadowkv

Compiles the bench's decode loop from shapes only (nothing is allocated) and reads the optimised HLO.
A layer's slice of a stacked [L, ...] array (weights, landmarks, caches) that feeds a custom kernel, or
an op XLA cannot fuse it into, is materialised as a separate copy first: the bytes are written and read
again on top of the read the consumer needs. (cuBLAS GEMMs read such slices in place through XLA's
dynamic-slice fusions; those are not copies and are not listed.) Lists every slice/copy producing at
least --min-mib, with its source (the op name JAX recorded) and what consumes it, and the sum per
computation.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from collections import defaultdict

import jax

from common import save_json
from shadowkv_jax.api import Model, _round_up
from shadowkv_jax.cache import KVCache
from shadowkv_jax.generation import CACHE_BUCKET
from shadowkv_jax.model.attention import DenseDecode
from shadowkv_jax.model.llama import abstract_params
from shadowkv_jax.shadowkv.config import ShadowKVConfig
from shadowkv_jax.shadowkv.decode import ShadowKVDecode, resolve_implementation
from shadowkv_jax.shadowkv.prefill import chunk_slots_for
from shadowkv_jax.shapes import NAMED_SHAPES
from shadowkv_jax.throughput import abstract_decode_state, compile_decode, new_tokens

# "pad": XLA pads bf16 GEMM operands whose dimensions are not multiples of 8 by copying them (this is how
# the landmarks' 408 MB per layer copy first showed up in a profile, not in this listing)
MOVES = {"dynamic-slice", "slice", "copy", "transpose", "concatenate", "pad"}
DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "f32": 4, "s32": 4, "u32": 4,
               "f64": 8, "s64": 8}
_HEADER = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) \(.*\) -> .* \{$")
_INSTR = re.compile(r"^\s*(ROOT )?%?([\w.\-]+) = (\S+?)(?:\{[^}]*\})? ([\w\-]+)\((.*)$")


def shape_bytes(shape: str) -> int:
    """bf16[13,8,128]{...} -> bytes (tuples count 0: they alias their parts)."""
    m = re.match(r"(\w+)\[([\d,]*)\]", shape)
    if not m or m.group(1) not in DTYPE_BYTES:
        return 0
    n = 1
    for d in filter(None, m.group(2).split(",")):
        n *= int(d)
    return n * DTYPE_BYTES[m.group(1)]


def parse(text: str) -> dict:
    """computation name -> list of (name, shape, opcode, rest-of-line, is_root)."""
    comps, cur = {}, None
    for line in text.splitlines():
        h = _HEADER.match(line)
        if h:
            cur = comps.setdefault(h.group(1), [])
            continue
        m = _INSTR.match(line)
        if m and cur is not None:
            cur.append((m.group(2), m.group(3), m.group(4), m.group(5), bool(m.group(1))))
    return comps


def fused_root(comps: dict, name: str) -> tuple[str, str]:
    """(opcode, rest of line) of what a fused computation does at its root, looking through bitcasts."""
    body = {n: (op, rest) for n, _, op, rest, _ in comps.get(name, [])}
    root = next((i for i in comps.get(name, []) if i[4]), None)
    if root is None:
        return "?", ""
    op, rest = root[2], root[3]
    for _ in range(8):
        if op not in ("bitcast", "reshape"):
            break
        arg = re.match(r"%?([\w.\-]+)", rest).group(1)
        if arg not in body:
            break
        op, rest = body[arg]
    return op, rest


def movements(text: str, min_bytes: int) -> list[dict]:
    comps = parse(text)
    # bodies of fusions (including cuBLAS "dynamic-slice-fusion"s, whose slices are address arithmetic, and
    # Triton fusions) are part of their fusion instruction, which is judged by its root
    fused = {c for instrs in comps.values() for _, _, op, rest, _ in instrs if op == "fusion"
             for c in re.findall(r"calls=%?([\w.\-]+)", rest)}
    users = defaultdict(list)
    for comp, instrs in comps.items():
        for name, _, op, rest, _ in instrs:
            target = re.search(r'custom_call_target="([^"]+)"', rest)
            label = target.group(1) if target else op
            for arg in re.findall(r"%([\w.\-]+)", rest.split("),")[0]):
                users[(comp, arg)].append(label)
    rows = []
    for comp, instrs in comps.items():
        if comp in fused:
            continue
        for name, shape, op, rest, _ in instrs:
            kind, inner = op, ""
            if op == "fusion":
                called = re.search(r"calls=%?([\w.\-]+)", rest)
                kind, inner = fused_root(comps, called.group(1)) if called else ("?", "")
            nbytes = shape_bytes(shape)
            if kind not in MOVES or nbytes < min_bytes:
                continue
            src = re.search(r'op_name="([^"]+)"', rest) or re.search(r'op_name="([^"]+)"', inner)
            rows.append({"computation": comp, "kind": kind, "shape": shape.split("{")[0], "mib": nbytes / 2**20,
                         "source": src.group(1)[-90:] if src else "", "users": sorted(set(users[(comp, name)]))})
    return rows


def compile_loop(cfg, method: str, context: int, batch: int, steps: int):
    params = abstract_params(cfg)
    platform = jax.devices()[0].platform
    interpret = platform != "gpu"
    new = new_tokens(steps)
    if method == "full":
        cap = _round_up(context + new, CACHE_BUCKET)  # as the bench sizes the cache
        carry, consts = jax.eval_shape(lambda: KVCache.zeros(cfg, batch, cap)), None
        attention = DenseDecode("auto", interpret=interpret)
    else:
        sk = dataclasses.replace(ShadowKVConfig.for_model(cfg, context), max_new_tokens=new)
        placement = sk.resolved_placement(platform)
        carry, consts = abstract_decode_state(cfg, sk, batch, chunk_slots_for(sk, [context]), placement)
        attention = ShadowKVDecode(sk, cfg, placement, resolve_implementation(cfg, sk, platform), interpret=interpret)
    return compile_decode(Model(cfg, params, None, "shapes only"), carry, batch, consts, attention, steps, unroll=1)[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="llama-3.1-8b", choices=sorted(NAMED_SHAPES))
    p.add_argument("--context", type=int, default=122880)
    p.add_argument("--batch", type=int, default=13)
    p.add_argument("--method", default="shadowkv", choices=["full", "shadowkv"])
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--min-mib", type=float, default=1.0)
    p.add_argument("--tiny", action="store_true", help="a small model (CPU smoke run)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    cfg = NAMED_SHAPES[args.model]
    if args.tiny:
        cfg = cfg.replace(vocab_size=512, hidden_size=128, intermediate_size=256, num_layers=2, num_heads=4,
                          num_kv_heads=2, head_dim=32)
    exe = compile_loop(cfg, args.method, args.context, args.batch, args.steps)
    rows = movements(exe.as_text(), int(args.min_mib * 2**20))
    per_comp = defaultdict(float)
    for r in rows:
        per_comp[r["computation"]] += r["mib"]
    save_json(args.json, {"args": vars(args), "rows": rows, "mib_per_computation": per_comp})
    print(f"| {args.method} b{args.batch} {args.context} | kind | MiB | shape | consumers | source |")
    print("|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: -r["mib"]):
        print(f"| {r['computation'][:24]} | {r['kind']} | {r['mib']:.1f} | {r['shape']} | "
              f"{','.join(r['users'])[:50]} | {r['source'][-60:]} |")
    for comp, mib in per_comp.items():
        print(f"total in {comp}: {mib:.1f} MiB per execution of that computation")
    return 0


if __name__ == "__main__":
    sys.exit(main())
