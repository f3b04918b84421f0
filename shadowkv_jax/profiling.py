"""Where a decode step's device time goes: kernel times from a `jax.profiler` trace, by named scope.

`profile_kernels(fn, hlo_text)` runs fn once under the profiler, reads the trace back with
`jax.profiler.ProfileData` (no TensorBoard needed) and sums the device's kernel time per kernel and
per scope. The compiled HLO gives each instruction's `op_name`, which carries the `jax.named_scope`s of
the model (qkv, attention, select, gather_reconstruct_attention, combine, mlp, ...). A kernel event
names its HLO instruction (`hlo_op`), except inside command buffers (CUDA graphs, which XLA uses for
loop bodies), where it is the kernel's own name: XLA's fusion kernels are named after their
instruction ("loop_pad_fusion_2" runs "loop_pad_fusion.2") and Pallas kernels after the pallas_call,
which the custom call's line in the HLO mentions. cuBLAS kernels inside command buffers stay
unattributed ("other"). Off the GPU the trace has no device kernels and the result is empty.
"""

from __future__ import annotations

import glob
import re
import tempfile
from collections import defaultdict

import jax

# scopes a decode step is split into, most specific first (the first one found in an op_name wins)
SCOPES = ("select", "gather_reconstruct_attention", "combine", "reconstruct", "fetch_values", "sparse_attention",
          "qkv", "attention", "mlp")
_INSTR = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name=\"([^\"]*)\"")


def op_names(hlo_text: str) -> dict[str, str]:
    """HLO instruction name -> the op_name JAX recorded for it (fusions: their own metadata)."""
    out = {}
    for line in hlo_text.splitlines():
        m = _INSTR.match(line)
        if m:
            out.setdefault(m.group(1), m.group(2))
    return out


def _instruction_names(hlo_op: str, kernel: str) -> tuple[str, ...]:
    """Names the HLO instruction behind a kernel event may have: the event's hlo_op, or the kernel's name
    (XLA's fusion kernel "loop_pad_fusion_2" runs instruction "loop_pad_fusion.2")."""
    return tuple(c for c in (hlo_op, kernel, re.sub(r"_(\d+)$", r".\1", kernel)) if c)


def op_name_of(hlo_op: str, kernel: str, names: dict[str, str], hlo_text: str) -> str:
    """The op_name behind a kernel event: by its HLO instruction, else by the kernel's name."""
    for cand in _instruction_names(hlo_op, kernel):
        if cand in names:
            return names[cand]
    if kernel and not kernel.startswith(("nvjet", "sm90", "cutlass", "ampere", "memcpy")):
        for line in hlo_text.splitlines():  # a Pallas kernel: the custom call that carries its name
            if kernel in line and "custom-call" in line:
                m = re.search(r'op_name="([^"]*)"', line)
                if m:
                    return m.group(1)
    return ""


def result_shape(hlo_op: str, kernel: str, hlo_text: str) -> str:
    """The result shape of the HLO instruction behind a kernel ("" if not found): says what a copy copies."""
    for cand in _instruction_names(hlo_op, kernel):
        m = re.search(rf"^\s*(?:ROOT )?%?{re.escape(cand)} = (\S+)", hlo_text, re.M)
        if m:
            return m.group(1)
    return ""


def scope_of(op_name: str, scopes=SCOPES) -> str:
    parts = op_name.split("/")
    for s in scopes:
        if s in parts:
            return s
    return "other"


def device_events(trace_dir: str) -> list[dict]:
    """Kernel (and memcpy) events of every GPU plane: name, hlo_op, duration in ns."""
    from jax.profiler import ProfileData

    out = []
    for path in glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True):
        data = ProfileData.from_file(path)
        for plane in data.planes:
            if not plane.name.startswith("/device:GPU"):
                continue
            for line in plane.lines:
                for ev in line.events:
                    stats = dict(ev.stats)
                    out.append({"name": ev.name, "hlo_op": str(stats.get("hlo_op", "")), "ns": ev.duration_ns,
                                "line": line.name})
    return out


def summarize(events: list[dict], hlo_text: str, per: int = 1, top: int = 15) -> dict:
    """Kernel time per scope and the `top` kernels, in ms per `per` (e.g. decode steps)."""
    names = op_names(hlo_text)
    by_scope, by_kernel, counts, op_name = defaultdict(float), defaultdict(float), defaultdict(int), {}
    for ev in events:
        if ev["line"].lower().startswith(("memcpy", "xla ops", "xla modules", "steps", "launch")):
            continue  # derived lines repeat the kernels' time
        ms = ev["ns"] / 1e6 / per
        key = (ev["hlo_op"] or ev["name"], ev["name"][:80])
        if key not in op_name:
            op_name[key] = op_name_of(ev["hlo_op"], ev["name"], names, hlo_text)
        by_scope[scope_of(op_name[key])] += ms
        by_kernel[key] += ms
        counts[key] += 1
    kernels = [{"hlo_op": op, "kernel": k, "ms": ms, "launches": counts[(op, k)] / per,
                "scope": scope_of(op_name[(op, k)]), "op_name": op_name[(op, k)][-160:],
                "shape": result_shape(op, k, hlo_text)}
               for (op, k), ms in sorted(by_kernel.items(), key=lambda kv: -kv[1])[:top]]
    return {"total_ms": sum(by_scope.values()), "by_scope_ms": dict(by_scope), "kernels": kernels,
            "lines": sorted({ev["line"] for ev in events})}


def profile_kernels(fn, hlo_text: str, per: int = 1, trace_dir: str | None = None):
    """Run fn() once under the profiler, block on its result; returns (summary, fn's result)."""
    trace_dir = trace_dir or tempfile.mkdtemp(prefix="shadowkv_trace_")
    with jax.profiler.trace(trace_dir):
        out = jax.block_until_ready(fn())
    return summarize(device_events(trace_dir), hlo_text, per), out
