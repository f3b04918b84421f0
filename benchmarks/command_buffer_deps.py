"""Which kernels of a loop body a command buffer must order, and why: data or a reused buffer.

In `xla_gpu_command_buffer_scheduling_mode=CONCURRENT`, XLA orders two commands of a CUDA graph when their
buffer slices conflict (one writes what the other reads or writes). Buffer assignment packs the body's
temporaries into one allocation and reuses a slice once its value is dead in the sequential schedule, so two
computations with no data between them can still be ordered: a later kernel writes a slice that an earlier
one read. This script rebuilds those orderings from XLA's dump (`--xla_dump_to=DIR --xla_dump_hlo_as_text`
gives `*after_optimizations.txt` and `*after_optimizations-buffer-assignment.txt`):

    python benchmarks/command_buffer_deps.py --dump DIR --source pallas_call.120 [--body NAME] [--json OUT]

and prints every instruction of the body that must wait for `--source` (directly or through others), with
the named scope of each (e.g. the pipeline's micro_batch_a / micro_batch_b) and the edges that order it:
"data" (it reads the other's result), "reuse" (a slice of a dead value, reused), "control" (an HLO
control edge). It models the dependency rule, not XLA's code: a check on what a profile shows.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import re

NO_KERNEL = {"parameter", "get-tuple-element", "tuple", "bitcast", "constant", "opt-barrier"}


def buffer_slices(assignment: str) -> dict:
    """(instruction, shape index "{i}" or "{}") -> [(allocation, start, end)] from a buffer-assignment dump."""
    out, alloc = collections.defaultdict(list), None
    for line in assignment.splitlines():
        m = re.match(r"allocation (\d+): size (\d+)", line)
        if m:
            alloc = int(m.group(1))
            continue
        m = re.match(r"\s*value: <\d+ ([\w.\-]+)(\{[\d,]*\})?.*?> \(size=(\d+),offset=(\d+)\)", line)
        if m and alloc is not None:
            start = int(m.group(4))
            out[(m.group(1), m.group(2) or "{}")].append((alloc, start, start + int(m.group(3))))
    return out


def computation(hlo: str, name: str) -> list[dict]:
    """The instructions of computation `name` in schedule order: name, op, operands [(name, index)],
    op_name, control predecessors."""
    lines = hlo.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith(f"%{name} ") or l.startswith(f"ENTRY %{name} "))
    out = []
    for line in lines[start + 1:]:
        if line.strip() == "}":
            break
        m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = .*? ([\w\-]+)\((.*?)\)(?:, |$)", line)
        if not m:
            continue
        op_name = re.search(r'op_name="([^"]*)"', line)
        ctrl = re.search(r"control-predecessors=\{([^}]*)\}", line)
        out.append({"name": m.group(1), "op": m.group(2),
                    "operands": re.findall(r"%([\w.\-]+)(?:#(\d+))?", m.group(3)),
                    "op_name": op_name.group(1) if op_name else "",
                    "control": re.findall(r"%([\w.\-]+)", ctrl.group(1)) if ctrl else []})
    return out


def body_holding(hlo: str, source: str) -> str:
    """The while-loop body that holds instruction `source`."""
    for body in sorted(set(re.findall(r"while\(.*?body=%([\w.\-]+)", hlo))):
        if any(i["name"] == source for i in computation(hlo, body)):
            return body
    raise ValueError(f"no while-loop body holds {source!r}: pass --body")


def orderings(instrs: list[dict], slices: dict) -> dict:
    """name -> [(earlier instruction, "data" | "reuse" | "control")] for every pair a command buffer orders."""
    by_name = {i["name"]: i for i in instrs}

    def owner(name, index):  # bitcasts share their operand's buffer
        i = by_name.get(name)
        if i and i["op"] == "bitcast":
            return owner(*i["operands"][0])
        return name, "{%s}" % index if index else "{}"

    def buffers(name, index):
        key = owner(name, index)
        found = slices.get(key)
        if found is None and key[1] == "{}":  # a whole tuple: all of its elements
            found = [s for k, v in slices.items() if k[0] == key[0] for s in v]
        return found or []

    cmds = []
    for i in instrs:
        if i["op"] in NO_KERNEL:
            continue
        reads = [s for n, idx in i["operands"] for s in buffers(n, idx)]
        writes = [s for k, v in slices.items() if k[0] == i["name"] for s in v]
        cmds.append(dict(i, reads=reads, writes=writes, sources={owner(n, idx)[0] for n, idx in i["operands"]}))
    overlap = lambda a, b: a[0] == b[0] and a[1] < b[2] and b[1] < a[2]
    edges = collections.defaultdict(list)
    for j, y in enumerate(cmds):
        for x in cmds[:j]:
            raw = any(overlap(r, w) for r in y["reads"] for w in x["writes"])
            war = any(overlap(w, s) for w in y["writes"] for s in x["reads"] + x["writes"])
            if raw or war:
                edges[y["name"]].append((x["name"], "data" if x["name"] in y["sources"] else "reuse"))
        edges[y["name"]] += [(p, "control") for p in y["control"]]
    return {"order": [c["name"] for c in cmds], "edges": dict(edges),
            "op_name": {c["name"]: c["op_name"] for c in cmds}}


def waiting_for(graph: dict, source: str) -> list[dict]:
    """Every command after `source` that must wait for it, with the edges that order it."""
    if source not in graph["order"]:
        raise ValueError(f"--source {source!r} is not a command of the body")
    reach = {source}
    out = []
    for name in graph["order"][graph["order"].index(source) + 1:]:
        via = [(p, kind) for p, kind in graph["edges"].get(name, []) if p in reach]
        if via:
            reach.add(name)
            out.append({"name": name, "op_name": graph["op_name"][name], "via": via})
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dump", required=True, help="XLA's dump folder")
    p.add_argument("--module", default="", help="a substring of the module's file name (default: the first)")
    p.add_argument("--source", required=True, help="the instruction to start from, e.g. a pallas_call")
    p.add_argument("--body", help="the computation (default: the while-loop body that holds --source)")
    p.add_argument("--scopes", nargs="*", default=["micro_batch_a", "micro_batch_b"])
    p.add_argument("--json")
    a = p.parse_args(argv)
    found = [f for f in sorted(glob.glob(f"{a.dump}/*after_optimizations.txt")) if a.module in f]
    if not found:
        raise SystemExit(f"no *after_optimizations.txt matching --module {a.module!r} in --dump {a.dump} "
                         "(dump with --xla_dump_to=DIR --xla_dump_hlo_as_text)")
    hlo_path = found[0]
    hlo = open(hlo_path).read()
    slices = buffer_slices(open(hlo_path.replace(".txt", "-buffer-assignment.txt")).read())
    body = a.body or body_holding(hlo, a.source)
    graph = orderings(computation(hlo, body), slices)
    waits = waiting_for(graph, a.source)
    scope = lambda op_name: next((s for s in a.scopes if s in op_name.split("/")), "-")
    kinds = collections.Counter(kind for w in waits for _, kind in w["via"])
    for w in waits:
        via = ", ".join(f"{n} ({k})" for n, k in w["via"][:3])
        print(f"{scope(w['op_name']):<14} {w['name']:<34} {'/'.join(w['op_name'].split('/')[-2:])[:40]:<40} <- {via}")
    by_scope = collections.Counter(scope(w["op_name"]) for w in waits)
    print(f"{body}: {len(graph['order'])} commands, {len(waits)} wait for {a.source} "
          f"({dict(by_scope)}); ordering edges among them: {dict(kinds)}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"module": hlo_path, "body": body, "source": a.source, "waiting": waits,
                       "by_scope": by_scope, "edge_kinds": kinds}, f, indent=1)


if __name__ == "__main__":
    main()
