"""Where a kernel's warps waited, from Nsight Compute's SASS page (stall samples per instruction).

    ncu -i REPORT.ncu-rep --page source --csv --print-source sass -k regex:NAME > sass.csv
    python benchmarks/ncu_sass_phases.py sass.csv [--window 60]

Prints the samples by how often an instruction ran (one count per code region: a loop body runs more often
than its program's set-up), then the hottest region in windows of --window instructions, each with its
commonest opcodes and stall reasons. A warp's samples are where it waited, so with one warp per scheduler they
are also where the time went.
"""

from __future__ import annotations

import argparse
import collections
import csv
import sys


def load(path: str):
    rows = list(csv.reader(open(path, newline="")))
    start = next(i for i, r in enumerate(rows) if r and r[0] == "Address")
    header, data = rows[start], [r for r in rows[start + 1:] if len(r) > 2]
    return header, data


def opcode(sass: str) -> str:
    parts = sass.split()
    if not parts:
        return ""
    op = parts[1] if parts[0].startswith("@") and len(parts) > 1 else parts[0]
    return op.split(".")[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("csv")
    p.add_argument("--window", type=int, default=60)
    args = p.parse_args(argv)
    header, data = load(args.csv)
    ran, samples = header.index("Instructions Executed"), header.index("Warp Stall Sampling (All Samples)")
    reasons = [(h[len("stall_"):], header.index(h)) for h in header if h.startswith("stall_") and "Not Issued" not in h]
    count = lambda r, i: int(r[i].replace(",", "") or 0)
    total = sum(count(r, samples) for r in data)
    print(f"{len(data)} instructions, {total} samples")
    groups = collections.defaultdict(lambda: [0, 0])
    for r in data:
        g = groups[count(r, ran)]
        g[0] += count(r, samples)
        g[1] += 1
    print("| times run | instructions | samples | share |\n|---|---|---|---|")
    for times, (s, n) in sorted(groups.items(), key=lambda x: -x[1][0])[:8]:
        print(f"| {times} | {n} | {s} | {100 * s / max(total, 1):.1f}% |")
    hot = max(groups, key=lambda t: groups[t][0])
    lines = [i for i, r in enumerate(data) if count(r, ran) == hot]
    print(f"\nregion run {hot} times, in windows of {args.window} instructions:")
    print("| from | samples | share | opcodes | stall reasons |\n|---|---|---|---|---|")
    for a in range(lines[0], lines[-1] + 1, args.window):
        seg = [i for i in range(a, min(a + args.window, lines[-1] + 1)) if count(data[i], ran) == hot]
        s = sum(count(data[i], samples) for i in seg)
        ops = collections.Counter(opcode(data[i][1]) for i in seg)
        why = collections.Counter()
        for i in seg:
            for name, col in reasons:
                why[name] += count(data[i], col)
        print(f"| {a} | {s} | {100 * s / max(total, 1):.1f}% | {' '.join(f'{o}:{n}' for o, n in ops.most_common(3))} | "
              f"{', '.join(f'{k} {v}' for k, v in why.most_common(2) if v)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
