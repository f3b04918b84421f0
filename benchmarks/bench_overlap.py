"""Can the selected values' PCIe reads overlap the weights' HBM reads on a second GPU stream?

A ShadowKV step at 122,880 tokens is a chain of HBM-bound work (weights, landmark scores) and a
PCIe-bound kernel (values in pinned host memory), run one after the other on one stream. This probe
times, over a `lax.scan` of L layers with Llama-3.1-8B shapes and `--batch` sequences:

  attention: the fused gather-reconstruct kernel alone (every chunk a miss: values from host memory);
  weights:   one layer's GEMMs ([b, E] through wq|wk|wv, wo, gate|up, down) alone;
  serial:    both in one body, independent of each other (one stream);
  streamed:  the same body with the kernel under `compute_on("gpu_stream:1")` (XLA's stream annotation);
  streamed_gemms: the same with the GEMMs on stream 1 instead;
  pipelined: two chains of `--batch` sequences each, as in shadowkv/pipeline.py: per layer, chain A runs
             the kernel then the GEMMs (which depend on it), chain B the GEMMs then the kernel; nothing
             flows between the chains. Ideal with overlap: about 2 x max(attention, weights); serial:
             2 x (attention + weights).
  pipelined_ordered: the same, each kernel passed the other chain's last result as `after`, so the two
             chains' kernels run one after the other instead of splitting PCIe.

`streamed` near max(attention, weights) rather than their sum means the two overlap. Run with
XLA_FLAGS=--xla_gpu_command_buffer_scheduling_mode=CONCURRENT to let the command buffers overlap
independent kernels (the JSON records XLA_FLAGS). GPU only.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

DECODE_OPTIONS = {"xla_gpu_enable_triton_gemm": False}


def on_gpu_stream(fn, stream: int, api=None, inner_jit: bool = True):
    """fn run as one async call on XLA GPU stream `stream`. JAX 0.10's `compute_on` is a context manager
    around a jitted call; 0.11's takes the function and the outputs' memory spaces (0.10's `compute_on2`)."""
    from jax.experimental import compute_on as co

    kind, inner = f"gpu_stream:{stream}", (jax.jit(fn) if inner_jit else fn)
    api = api or getattr(co, "compute_on2", None) or co.compute_on
    if "out_memory_spaces" not in inspect.signature(api).parameters:
        return api(kind)(inner)

    def wrapped(*args):
        spaces = jax.tree.map(lambda _: jax.memory.Space.Device, jax.eval_shape(inner, *args))
        return api(inner, compute_type=kind, out_memory_spaces=spaces)(*args)
    return wrapped


def main(argv=None):
    from shadowkv_jax.kernels.sparse_attention import sparse_attention_partials
    from shadowkv_jax.throughput import wall_times

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=7)
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--host-chunks", type=int, default=2048, help="chunks per sequence in host memory")
    p.add_argument("--selected", type=int, default=256)
    p.add_argument("--splits", type=int, nargs="+", default=[4, 1])
    p.add_argument("--warps", type=int, nargs="+", default=[8, 4])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--kinds", nargs="+",
                   default=["attention", "weights", "serial", "pipelined", "pipelined_ordered", "streamed_gemms", "streamed"])
    p.add_argument("--python-loop", action="store_true", help="layers as straight-line code, not a lax.scan")
    p.add_argument("--no-command-buffer", action="store_true", help="xla_gpu_enable_command_buffer=''")
    p.add_argument("--no-inner-jit", action="store_true", help="compute_on traces the function, not a jit of it")
    p.add_argument("--tiny", action="store_true", help="small model dims, kernel interpreted (CPU smoke run)")
    p.add_argument("--json")
    a = p.parse_args(argv)

    L, b, E, F, Hq, Hkv, D, r, c = a.layers, a.batch, 4096, 14336, 32, 8, 128, 160, 8
    if a.tiny:
        E, F, Hq, Hkv, D, r = 64, 128, 4, 2, 16, 16
    n_c, k = a.host_chunks, a.selected
    dev = jax.devices()[0]
    bf = jnp.bfloat16
    key = iter(jax.random.split(jax.random.key(0), 16))
    rnd = lambda shape, s=0.02: jax.random.normal(next(key), shape, bf) * s
    weights = {"wqkv": rnd((L, E, (Hq + 2 * Hkv) * D)), "wo": rnd((L, Hq * D, E)),
               "wgu": rnd((L, E, 2 * F)), "wdown": rnd((L, F, E))}
    A = rnd((L, b, n_c * c, r), 1.0)
    W = rnd((b, Hkv, r, D), 0.1)
    values = rnd((L, b, Hkv, n_c, c, D), 1.0)
    if dev.platform == "gpu":
        values = jax.device_put(values, jax.sharding.SingleDeviceSharding(dev, memory_kind="pinned_host"))
    chunks = jnp.argsort(jax.random.uniform(next(key), (L, b, Hkv, n_c)), axis=-1)[..., :k].astype(jnp.int32)
    q = rnd((b, Hkv, Hq // Hkv, D), 1.0)
    x0 = rnd((b, E), 1.0)
    half = 1.0 / 500000.0 ** (np.arange(0, D, 2) / D)
    inv = jnp.asarray(np.concatenate([half, half]), jnp.float32)

    def layer_gemms(x, w):
        h = x @ w["wqkv"]
        x = x + h[:, :Hq * D] @ w["wo"]
        gu = x @ w["wgu"]
        return x + (jax.nn.silu(gu[:, :F]) * gu[:, F:]) @ w["wdown"]

    def make(kind, splits, warps):
        # every array is an argument: closed-over arrays would be embedded in the program as constants
        def attn(l, ch, q, A, W, values, inv, after=None):
            acc, m, s = sparse_attention_partials(q, A, W, ch, values, inv, l, chunk_size=c, num_splits=splits,
                                                  num_warps=warps, interpret=a.tiny, after=after)
            return jnp.sum(acc[..., 0, :]) + jnp.sum(m) + jnp.sum(s)  # a scalar the body depends on

        streamed_attn = on_gpu_stream(attn, 1, inner_jit=not a.no_inner_jit)
        streamed_gemms = on_gpu_stream(layer_gemms, 1, inner_jit=not a.no_inner_jit)

        def run(x, w, ch, *kv):
            def body(carry, xs):
                if kind.startswith("pipelined"):
                    return pipelined_body(carry, xs, kind == "pipelined_ordered"), None
                x, tot = carry
                w, ch, l = xs
                if kind in ("weights", "serial", "streamed"):
                    x = layer_gemms(x, w)
                if kind == "streamed_gemms":
                    x = streamed_gemms(x, w)
                if kind in ("attention", "serial", "streamed_gemms"):
                    tot = tot + attn(l, ch, *kv)
                if kind == "streamed":
                    tot = tot + streamed_attn(l, ch, *kv)
                return (x, tot), None

            def pipelined_body(carry, xs, ordered):
                (xa, ta), (xb, tb) = carry
                w, ch, l = xs
                q, *rest = kv
                # A: values, then GEMMs using them (ordered: after B's last values)
                ta = ta + attn(l, ch, q + xa[0, 0].astype(q.dtype), *rest, after=tb if ordered else None)
                xa = layer_gemms(xa + ta.astype(xa.dtype), w)
                xb = layer_gemms(xb + tb.astype(xb.dtype), w)  # B: GEMMs, then values that use them
                tb = tb + attn(l, ch, q + xb[0, 0].astype(q.dtype), *rest, after=ta if ordered else None)
                return (xa, ta), (xb, tb)

            carry, idx = (x, jnp.float32(0)), jnp.arange(L, dtype=jnp.int32)
            if kind.startswith("pipelined"):
                carry = (carry, (x + 1, jnp.float32(0)))
            if a.python_loop:
                for l in range(L):
                    carry, _ = body(carry, jax.tree.map(lambda t: t[l], (w, ch, idx)))
            else:
                carry, _ = jax.lax.scan(body, carry, (w, ch, idx))
            return carry

        opts = dict(DECODE_OPTIONS)
        if a.no_command_buffer:
            opts["xla_gpu_enable_command_buffer"] = ""
        if kind.startswith("streamed"):
            opts["xla_gpu_experimental_stream_annotation"] = True
        return jax.jit(run, compiler_options=opts)

    args = (x0, weights, chunks, q, A, W, values, inv)
    pcie = L * b * Hkv * k * c * D * 2
    wbytes = sum(v.nbytes for v in weights.values())
    rows = []
    for splits in a.splits:
        for warps in a.warps:
            row = {"splits": splits, "warps": warps}
            for kind in a.kinds:
                fn = make(kind, splits, warps)
                try:
                    if kind.startswith("streamed"):
                        text = fn.lower(*args).compile().as_text()
                        row[kind + "_async_calls"] = text.count("call-start")
                    row[kind + "_ms"] = 1e3 * min(wall_times(lambda: fn(*args), a.repeats))
                    print(kind, f"{row[kind + '_ms']:.2f} ms", flush=True)
                except Exception as e:  # report and go on: the flag is experimental
                    row[kind + "_error"] = f"{type(e).__name__}: {str(e)[:300]}"
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = {"xla_flags": os.environ.get("XLA_FLAGS", ""), "inner_jit": not a.no_inner_jit, "python_loop": a.python_loop, "no_command_buffer": a.no_command_buffer, "device": dev.device_kind, "jax": jax.__version__, "batch": b, "layers": L, "selected": k,
           "pcie_bytes": pcie, "weight_bytes": wbytes, "rows": rows}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    print(f"python loop {a.python_loop}, command buffers off {a.no_command_buffer}: PCIe {pcie / 1e9:.2f} GB, weights {wbytes / 1e9:.2f} GB per pass")
    print(f"{'splits':>6} {'warps':>5} {'attention':>10} {'weights':>8} {'serial':>8} {'pipelined':>9} "
          f"{'ordered':>8} {'str.kernel':>10} {'str.gemms':>10}  async calls")
    for r_ in rows:
        f = lambda n: f"{r_[n]:.2f}" if n in r_ else ("-" if n.split("_ms")[0] not in a.kinds else "err")
        print(f"{r_['splits']:>6} {r_['warps']:>5} {f('attention_ms'):>10} {f('weights_ms'):>8} {f('serial_ms'):>8} "
              f"{f('pipelined_ms'):>9} {f('pipelined_ordered_ms'):>8} {f('streamed_ms'):>10} {f('streamed_gemms_ms'):>10}  "
              f"{r_.get('streamed_async_calls', '-')}/{r_.get('streamed_gemms_async_calls', '-')}")


if __name__ == "__main__":
    main()
