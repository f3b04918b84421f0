"""Probe which ways of reading selected value chunks from `pinned_host` memory work under jit on this
JAX/GPU, and how fast: (a) an XLA host computation (`compute_on("device_host")`, shadowkv_jax's jnp
route) that gathers and then transfers, (b) a Pallas (Triton) gather kernel reading the host array directly, top-level and
(c) inside a `lax.scan` over layers. Prints one line per probe; JSON to --json.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

L, B, H, NC, C, D, K = 4, 2, 8, 4096, 8, 128, 256  # 256 MiB of bf16 values; 256 chunks selected


def gather_kernel(layer_ref, ids_ref, vals_ref, out_ref, *, k: int):
    # vals_ref [L, B, H, NC, C, D] (host), ids_ref [B, H, K], out_ref [B, H, K, C, D]
    b, h = pl.program_id(0), pl.program_id(1)
    layer = layer_ref[0]

    def body(j, carry):
        cid = ids_ref[b, h, j]
        out_ref[b, h, j] = vals_ref[layer, b, h, cid]
        return carry

    jax.lax.fori_loop(0, k, body, 0)


def pallas_gather(layer, ids, vals, interpret=False):
    from jax.experimental.pallas import triton as plt

    return pl.pallas_call(
        lambda *r: gather_kernel(*r, k=ids.shape[-1]),
        out_shape=jax.ShapeDtypeStruct((B, H, ids.shape[-1], C, D), vals.dtype),
        grid=(B, H), interpret=interpret, name="probe_host_gather",
        compiler_params=None if interpret else plt.CompilerParams(num_warps=4, num_stages=1),
    )(layer, ids, vals)


def timeit(fn, *args, n=20):
    jax.block_until_ready(fn(*args))
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--json", default=None)
    args = p.parse_args()
    dev = jax.devices()[0]
    out = {"device": dev.device_kind, "jax": jax.__version__, "probes": {}}
    rng = np.random.default_rng(0)
    vals_np = rng.standard_normal((L, B, H, NC, C, D), np.float32).astype(jnp.bfloat16)
    ids_np = np.stack([[rng.choice(NC, K, replace=False) for _ in range(H)] for _ in range(B)]).astype(np.int32)
    want = vals_np[2][np.arange(B)[:, None, None], np.arange(H)[None, :, None], ids_np]
    host = jax.sharding.SingleDeviceSharding(dev, memory_kind="pinned_host")
    vals_h = jax.device_put(vals_np, host)
    ids = jnp.asarray(ids_np)
    layer = jnp.asarray([2], jnp.int32)
    sel_bytes = B * H * K * C * D * 2
    out["selected_bytes"] = sel_bytes

    def record(name, fn):
        try:
            got, t = fn()
            ok = bool(np.array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32)))
            out["probes"][name] = {"ok": ok, "ms": 1e3 * t, "GB_per_s": sel_bytes / t / 1e9}
        except Exception as e:
            out["probes"][name] = {"ok": False, "error": f"{type(e).__name__}: {str(e)[:400]}"}
            traceback.print_exc()
        print(name, out["probes"][name], flush=True)

    def a():  # the jnp reference route of shadowkv_jax (a host computation, then a transfer)
        from shadowkv_jax.shadowkv.values import gather_values

        f = jax.jit(lambda vals, ids, layer: gather_values(vals, layer[0], ids, "host"))
        return f(vals_h, ids, layer), timeit(f, vals_h, ids, layer)

    def b():
        f = jax.jit(pallas_gather)
        return f(layer, ids, vals_h), timeit(f, layer, ids, vals_h)

    def c():
        @jax.jit
        def f(layer, ids, vals):
            def body(acc, i):
                g = pallas_gather(jnp.reshape(i, (1,)), ids, vals)
                return acc, g
            _, gs = jax.lax.scan(body, 0, jnp.arange(L, dtype=jnp.int32))
            return gs[2]
        return f(layer, ids, vals_h), timeit(f, layer, ids, vals_h) / L

    def d():  # the device-resident baseline
        vals_d = jax.device_put(vals_np, dev)
        f = jax.jit(pallas_gather)
        return f(layer, ids, vals_d), timeit(f, layer, ids, vals_d)

    def e():  # whole-array host->device copy rate, for reference
        x = jax.device_put(np.ones((256, 1024, 1024), np.uint8), host)
        f = jax.jit(lambda x: jax.device_put(x, jax.memory.Space.Device) + 0)
        t = timeit(f, x, n=5)
        out["h2d_copy_GB_per_s"] = x.nbytes / t / 1e9
        return want, t

    for name, fn in [("compute_on_host_gather", a), ("pallas_host_gather", b),
                     ("pallas_host_gather_in_scan", c), ("pallas_device_gather", d), ("h2d_copy", e)]:
        record(name, fn)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
