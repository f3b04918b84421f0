"""Where a decode step's device time goes: kernel times from a `jax.profiler` trace, by named scope.

`profile_kernels(fn, hlo_text)` runs fn once under the profiler, reads the trace back with
`jax.profiler.ProfileData` (no TensorBoard needed) and sums the device's kernel time per kernel and
per scope. The compiled HLO gives each instruction's `op_name`, which carries the `jax.named_scope`s of
the model (qkv, attention, select, gather_reconstruct_attention, combine, mlp, ...). A kernel event
names its HLO instruction (`hlo_op`), except inside command buffers (CUDA graphs, which XLA uses for
loop bodies), where it is the kernel's own name: XLA's fusion kernels are named after their
instruction ("loop_pad_fusion_2" runs "loop_pad_fusion.2") and Pallas kernels after the pallas_call,
which the custom call's line in the HLO mentions. cuBLAS kernels inside command buffers stay
unattributed ("other"). `concurrency` says how the kernels sat in time: idle gaps, kernels side by side
(command buffers in CONCURRENT mode spread a graph's kernels over many streams), and `window_ops` gives the
op_name and result shape of every kernel in its time window. Off the GPU the trace has no device kernels and
the result is empty.
"""

from __future__ import annotations

import glob
import re
import tempfile
import time
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
        # a Pallas kernel: the custom call that carries its name. XLA tells launches of one kernel apart
        # by a suffix ("shadowkv_landmark_scores__1"), which the HLO does not carry; such a kernel takes
        # the first custom call of that name (of the same scope when the copies are one kernel's)
        name = re.sub(r"__\d+$", "", kernel)
        for line in hlo_text.splitlines():
            if name in line and "custom-call" in line:
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
                                "start_ns": ev.start_ns, "line": line.name})
    return out


def _counted(ev) -> bool:
    """Kernel lines only: derived lines (XLA ops, modules, steps, memcpy summaries) repeat the kernels' time."""
    return not ev["line"].lower().startswith(("memcpy", "xla ops", "xla modules", "steps", "launch"))


def _union_ns(intervals) -> int:
    total, end = 0, None
    for s, e in sorted(intervals):
        if end is None or s > end:
            total, end = total + (e - s), e
        elif e > end:
            total, end = total + (e - end), e
    return total


def concurrency(events: list[dict], per: int = 1, focus: str = "gather_reconstruct_attention",
                window_ms: float = 4.0) -> dict:
    """How the kernels sat in time (ms per `per`): span (first start to last end), busy (time with any
    kernel running), idle = span - busy (launch gaps, host waits), concurrent (time with two or more),
    and how much of the `focus` kernels' time other kernels ran beside them. `window`: every kernel of
    `window_ms` from the middle of the middle step (of `per` steps, taken as equally long), as (start ms
    from the window's start, ms, stream, kernel)."""
    evs = [e for e in events if _counted(e) and "start_ns" in e]
    if not evs:
        return {}
    iv = [(e["start_ns"], e["start_ns"] + e["ns"]) for e in evs]
    t0, t1 = min(s for s, _ in iv), max(e for _, e in iv)
    busy = _union_ns(iv)
    # time covered by at least two kernels: sweep the start/end points
    points = sorted([(s, 1) for s, _ in iv] + [(e, -1) for _, e in iv])
    depth, last, two = 0, t0, 0
    for t, d in points:
        if depth >= 2:
            two += t - last
        depth, last = depth + d, t
    is_focus = [focus in e["name"] for e in evs]
    focus_busy = _union_ns([i for i, f in zip(iv, is_focus) if f])
    other_busy = _union_ns([i for i, f in zip(iv, is_focus) if not f])
    beside = focus_busy + other_busy - busy  # |focus ∩ others|: busy is their union
    mid = t0 + int((per // 2 + 0.5) * (t1 - t0) / per)
    w_end = mid + int(window_ms * 1e6)
    window = sorted((round((s - mid) / 1e6, 4), round((e - s) / 1e6, 4), ev["line"].split("(")[0].strip(),
                     ev["name"][:60]) for (s, e), ev in zip(iv, evs) if mid <= s < w_end)
    ms = lambda ns: ns / 1e6 / per
    return {"span_ms": ms(t1 - t0), "busy_ms": ms(busy), "idle_ms": ms(t1 - t0 - busy),
            "concurrent_ms": ms(two), "focus": focus, "focus_ms": ms(focus_busy),
            "focus_beside_others_ms": ms(beside), "streams": len({e["line"] for e in evs}), "window": window}


def summarize(events: list[dict], hlo_text: str, per: int = 1, top: int = 15) -> dict:
    """Kernel time per scope and the `top` kernels, in ms per `per` (e.g. decode steps)."""
    names = op_names(hlo_text)
    by_scope, by_kernel, counts, op_name = defaultdict(float), defaultdict(float), defaultdict(int), {}
    for ev in events:
        if not _counted(ev):
            continue
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
    conc = concurrency(events, per)
    # what each kernel of the time window is (the top list names only the longest): tells apart the small
    # fusions that sit between two kernels of the critical path
    window_ops = {}
    for *_, name in conc.get("window", []):
        if name not in window_ops:
            window_ops[name] = {"op_name": op_name_of("", name, names, hlo_text)[-160:],
                                "shape": result_shape("", name, hlo_text)}
    return {"total_ms": sum(by_scope.values()), "by_scope_ms": dict(by_scope), "kernels": kernels,
            "lines": sorted({ev["line"] for ev in events}), "concurrency": conc, "window_ops": window_ops}


def profile_kernels(fn, hlo_text: str, per: int = 1, trace_dir: str | None = None):
    """Run fn() once under the profiler, block on its result; returns (summary, fn's result)."""
    trace_dir = trace_dir or tempfile.mkdtemp(prefix="shadowkv_trace_")
    with jax.profiler.trace(trace_dir):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        wall = time.perf_counter() - t0
    summary = summarize(device_events(trace_dir), hlo_text, per)
    summary["wall_ms"] = 1e3 * wall / per  # the call's wall time, to set beside the kernels' span
    return summary, out
