"""Check and time the fused gather-reconstruct attention kernel at Llama-3.1-8B layer shapes.

    python benchmarks/bench_kernels.py [--contexts 32768 131072] [--batches 1 4 8 16] [--json OUT]

One layer's kernel call (Hkv 8, G 4, D 128, rank 160, chunk 8, budget 2048 tokens = 256 chunks, or --budget) with
values on the device and in pinned host memory; with --exact, also the decode step's three exact segments (the
bench config's local and outlier chunks, its generated rows half full: kernel_anatomy's sizes) read in the same
launch, as the step calls it. Each configuration is first checked against the jnp reference on the GPU, then
timed (median of --repeats calls, selections rotated so caches do not flatter it). Roofline: device values -> bytes / HBM bandwidth; host values -> max(HBM part / HBM
bandwidth, value bytes / measured host->device bandwidth). Both bandwidths are measured here.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from common import run_meta, save_json
from kernel_anatomy import GENERATED, LOCAL_CHUNKS, OUTLIER_CHUNKS
from shadowkv_jax.kernels.decode_attention import combine_splits
from shadowkv_jax.kernels.sparse_attention import (expected_bytes, rope_inv_freq_full,
                                                   sparse_attention_partials,
                                                   sparse_attention_partials_reference)

HKV, G, D, RANK, C, BUDGET = 8, 4, 128, 160, 8, 2048
EXACT_ROWS = {"local": LOCAL_CHUNKS * C, "outliers": OUTLIER_CHUNKS * C, "generated": GENERATED}


def median_time(fn, args_list, repeats):
    jax.block_until_ready(fn(*args_list[0]))
    ts = []
    for i in range(repeats):
        args = args_list[i % len(args_list)]
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def in_loop(n, launch: dict, inv, layer):
    """n kernel calls (sparse_attention_partials' options `launch`) in one jit, cycling through the stacked
    selections; each call's output feeds a running sum, so none is dropped and they run one after another, as
    layers do. `exact`: the launch's exact segments, or ()."""
    def run(q, a, w, sels, v, exact):
        def body(i, acc):
            out = sparse_attention_partials(q, a, w, sels[i % sels.shape[0]], v, inv, layer, exact=exact, **launch)
            return acc + out[0][0, 0, 0, 0, 0]
        return jax.lax.fori_loop(0, n, body, jnp.float32(0))
    return jax.jit(run)


def measure_bandwidths():
    dev = jax.devices()[0]
    x = jnp.ones((1 << 28,), jnp.float32)  # 1 GiB
    copy = jax.jit(lambda x: x * 1.0001)
    t = median_time(copy, [(x,)], 10)
    hbm = 2 * x.nbytes / t
    host = jax.device_put(np.ones((1 << 28,), np.float32), jax.sharding.SingleDeviceSharding(dev, memory_kind="pinned_host"))
    to_dev = jax.jit(lambda h: jax.device_put(h, jax.memory.Space.Device))
    t = median_time(to_dev, [(host,)], 5)
    return hbm, host.nbytes / t


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--contexts", type=int, nargs="+", default=[32768, 131072])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16])
    p.add_argument("--placements", nargs="+", default=["device", "host"])
    p.add_argument("--splits", type=int, nargs="+", default=[4])
    p.add_argument("--block-tokens", type=int, nargs="+", default=[32])
    p.add_argument("--warps", type=int, nargs="+", default=[8])
    p.add_argument("--stages", type=int, nargs="+", default=[2], help="Triton software-pipelining stages")
    p.add_argument("--w-once", type=int, nargs="+", default=[0], choices=[0, 1],
                   help="1: the kernel loads W once per program (w_once), 0: in every block")
    p.add_argument("--launches", nargs="+", default=None,
                   help="splits/block/warps/stages/w_once launches, in place of the product of the options above")
    p.add_argument("--budget", type=int, default=BUDGET, help="selected tokens per KV head (the step's: 1920)")
    p.add_argument("--exact", action="store_true",
                   help="also read the step's three exact segments in the launch (EXACT_ROWS)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--in-loop", type=int, default=32,
                   help="also time this many calls inside one compiled loop (as in a decode step's layer scan), "
                        "which removes the per-call dispatch; 0 skips it")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    dev = jax.devices()[0]
    hbm_bw, pcie_bw = measure_bandwidths()
    print(f"measured HBM {hbm_bw / 1e12:.2f} TB/s, host->device {pcie_bw / 1e9:.1f} GB/s", flush=True)
    rng = np.random.default_rng(0)
    k = args.budget // C
    inv = jnp.asarray(rope_inv_freq_full(1.0 / (500000.0 ** (np.arange(0, D, 2) / D))))
    rows = []
    for ctx in args.contexts:
        n_c = ctx // C
        for b in args.batches:
            key = jax.random.key(b)
            a = (jax.random.normal(key, (1, b, n_c * C, RANK), jnp.float32) / np.sqrt(RANK)).astype(jnp.bfloat16)
            w = jax.random.normal(jax.random.key(1), (b, HKV, RANK, D), jnp.bfloat16)
            q = (jax.random.normal(jax.random.key(2), (b, HKV, G, D), jnp.float32) / np.sqrt(D)).astype(jnp.bfloat16)
            vals_dev = jax.random.normal(jax.random.key(3), (1, b, HKV, n_c, C, D), jnp.bfloat16)
            selections = [jnp.asarray(np.sort(rng.random((b, HKV, n_c)).argsort(-1)[..., :k], -1), jnp.int32)
                          for _ in range(4)]
            layer = jnp.int32(0)
            nbytes = expected_bytes(b, HKV, args.budget, RANK, D)
            exact = ()
            if args.exact:  # (k, v, valid rows) of each segment, stacked over one layer as the state holds them
                seg = lambda i, n: tuple(jax.random.normal(jax.random.key(10 + 2 * i + j), (1, b, HKV, n, D),
                                                           jnp.bfloat16) for j in range(2))
                seg_rows = list(EXACT_ROWS.values())
                exact = tuple(seg(i, n) + (jnp.full((b,), n if i < 2 else n // 2, jnp.int32),)
                              for i, n in enumerate(seg_rows))
                extra = sum(seg_rows[:2]) + seg_rows[2] // 2  # rows attended: their K and V are read
                nbytes = {**nbytes, "exact": b * HKV * extra * 2 * D * 2}
                nbytes["total"] += nbytes["exact"]
            for placement in args.placements:
                vals = vals_dev if placement == "device" else jax.device_put(
                    vals_dev, jax.sharding.SingleDeviceSharding(dev, memory_kind="pinned_host"))
                if placement == "device":
                    roof = nbytes["total"] / hbm_bw
                else:
                    roof = max((nbytes["total"] - nbytes["values"]) / hbm_bw, nbytes["values"] / pcie_bw)
                launches = ([tuple(int(x) for x in text.split("/")) for text in args.launches] if args.launches
                            else list(itertools.product(args.splits, args.block_tokens, args.warps, args.stages,
                                                        args.w_once)))
                for splits, block, warps, stages, once in launches:
                    once = bool(once)
                    launch = dict(chunk_size=C, block_tokens=block, num_splits=splits, num_warps=warps,
                                  num_stages=stages, w_once=once)
                    fn = jax.jit(lambda q, a, w, ch, v, ex, kw=launch:
                                 sparse_attention_partials(q, a, w, ch, v, inv, layer, exact=ex, **kw))
                    try:
                        got = fn(q, a, w, selections[0], vals, exact)
                    except Exception as e:  # e.g. a launch whose tiles overflow shared memory: say so, go on
                        row = {"context": ctx, "batch": b, "placement": placement, "splits": splits,
                               "block_tokens": block, "warps": warps, "stages": stages, "w_once": once,
                               "error": f"{type(e).__name__}: {str(e)[:300]}"}
                        rows.append(row)
                        print(json.dumps(row), flush=True)
                        continue
                    ref = sparse_attention_partials_reference(q, a, w, selections[0], vals_dev, inv, layer,
                                                              chunk_size=C, exact=exact)
                    err = float(np.abs(np.asarray(combine_splits(got)) - np.asarray(combine_splits(ref))).max())
                    t = median_time(fn, [(q, a, w, s, vals, exact) for s in selections], args.repeats)
                    row = {"context": ctx, "batch": b, "placement": placement, "splits": splits,
                           "block_tokens": block, "warps": warps, "stages": stages, "w_once": once,
                           "ms": 1e3 * t,
                           "roofline_ms": 1e3 * roof, "pct_of_roofline": 100 * roof / t,
                           "bytes": nbytes, "max_abs_err_vs_reference": err}
                    if args.in_loop:
                        looped = in_loop(args.in_loop, launch, inv, layer)
                        t_loop = median_time(looped, [(q, a, w, jnp.stack(selections), vals, exact)],
                                             max(3, args.repeats // 4)) / args.in_loop
                        row.update(ms_in_loop=1e3 * t_loop, pct_of_roofline_in_loop=100 * roof / t_loop)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                if placement == "device":
                    ref_fn = jax.jit(lambda q, a, w, ch, v, ex: sparse_attention_partials_reference(
                        q, a, w, ch, v, inv, layer, chunk_size=C, exact=ex))
                    t = median_time(ref_fn, [(q, a, w, s, vals, exact) for s in selections], args.repeats)
                    rows.append({"context": ctx, "batch": b, "placement": "device", "impl": "jnp-reference",
                                 "ms": 1e3 * t, "roofline_ms": 1e3 * roof, "pct_of_roofline": 100 * roof / t})
                    print(json.dumps(rows[-1]), flush=True)
                del vals
            del a, vals_dev
    meta = run_meta(hbm_bytes_per_s=hbm_bw, host_to_device_bytes_per_s=pcie_bw)
    save_json(args.json, {"meta": meta, "rows": rows})
    print(f"\n{meta['device']}, jax {meta['jax']}, {meta['date']}: HBM {hbm_bw / 1e12:.2f} TB/s, "
          f"host->device {pcie_bw / 1e9:.1f} GB/s (measured)")
    print("| context | batch | values | impl | splits/block/warps/stages/w_once | ms | roofline ms | % of roofline | max err "
          "| ms in loop | % in loop |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['context']} | {r['batch']} | {r['placement']} | pallas | {r['splits']}/{r['block_tokens']}/"
                  f"{r['warps']}/{r['stages']}/{int(r['w_once'])} | {r['error'][:60]} |")
            continue
        impl = r.get("impl", "pallas")
        cfg = (f"{r['splits']}/{r['block_tokens']}/{r['warps']}/{r['stages']}/{int(r['w_once'])}" if impl == "pallas"
               else "-")
        err = f"{r['max_abs_err_vs_reference']:.1e}" if "max_abs_err_vs_reference" in r else "-"
        print(f"| {r['context']} | {r['batch']} | {r['placement']} | {impl} | {cfg} | {r['ms']:.3f} | "
              f"{r['roofline_ms']:.3f} | {r['pct_of_roofline']:.0f}% | {err} | "
              + (f"{r['ms_in_loop']:.3f} | {r['pct_of_roofline_in_loop']:.0f}% |" if "ms_in_loop" in r else "- | - |"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
