"""Rewrite kernels/sparse_attention.DEVICE_VALUES_LAUNCH to the fastest in-loop launch of a bench_kernels JSON
(device values), for a device stage that sweeps the launch and then runs the decode with the winner; with
--landmark, kernels/landmark_scores.DECODE_LAUNCH to the fastest "dot" launch of a landmark_variants JSON.

    python benchmarks/pick_launch.py KERNELS_JSON [--file kernels/sparse_attention.py]
    python benchmarks/pick_launch.py --landmark LANDMARK_JSON [--file kernels/landmark_scores.py]
"""

from __future__ import annotations

import argparse
import json
import re
import sys


def fastest(rows: list[dict]) -> dict:
    timed = [r for r in rows if r.get("placement") == "device" and "ms_in_loop" in r]
    if not timed:
        raise SystemExit("no device rows with an in-loop time in the JSON")
    return min(timed, key=lambda r: r["ms_in_loop"])


def launch_line(r: dict) -> str:
    return (f'DEVICE_VALUES_LAUNCH = {{"block_tokens": {r["block_tokens"]}, "num_splits": {r["splits"]}, '
            f'"num_warps": {r["warps"]}, "num_stages": {r["stages"]}, "w_once": {bool(r.get("w_once", False))}}}')


def landmark_line(r: dict) -> str:
    block, warps, *looped = (int(x) for x in r["launch"].split("/")[1:])
    blocks, stages = looped if looped else (1, 1)
    return f'DECODE_LAUNCH = {{"block": {block}, "blocks": {blocks}, "num_warps": {warps}, "num_stages": {stages}}}'


def rewrite(path: str, name: str, line: str) -> None:
    src = open(path).read()
    new, n = re.subn(rf"^{name} = \{{.*\}}$", line, src, flags=re.M)
    if n != 1:
        raise SystemExit(f"expected one {name} line in {path}, found {n}")
    open(path, "w").write(new)


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("json")
    p.add_argument("--landmark", action="store_true", help="a landmark_variants JSON: set the landmark launch")
    p.add_argument("--file", default=None)
    args = p.parse_args(argv)
    rows = json.load(open(args.json))["rows"]
    if args.landmark:
        best = min((r for r in rows if r["launch"].startswith("dot/")), key=lambda r: r["ms_per_layer"])
        line = landmark_line(best)
        rewrite(args.file or "kernels/landmark_scores.py", "DECODE_LAUNCH", line)
        print(f"fastest landmark launch: {best['ms_per_layer']:.4f} ms per layer -> {line}")
        return 0
    best = fastest(rows)
    rewrite(args.file or "kernels/sparse_attention.py", "DEVICE_VALUES_LAUNCH", launch_line(best))
    print(f"fastest in the loop: {best['ms_in_loop']:.3f} ms per layer -> {launch_line(best)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
