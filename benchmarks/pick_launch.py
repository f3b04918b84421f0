"""Rewrite kernels/sparse_attention.DEVICE_VALUES_LAUNCH to the fastest in-loop launch of a bench_kernels JSON
(device values), for a device stage that sweeps the launch and then runs the decode with the winner.

    python benchmarks/pick_launch.py KERNELS_JSON [--file kernels/sparse_attention.py]
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("json")
    p.add_argument("--file", default="kernels/sparse_attention.py")
    args = p.parse_args(argv)
    best = fastest(json.load(open(args.json))["rows"])
    src = open(args.file).read()
    new, n = re.subn(r"^DEVICE_VALUES_LAUNCH = \{.*\}$", launch_line(best), src, flags=re.M)
    if n != 1:
        raise SystemExit(f"expected one DEVICE_VALUES_LAUNCH line in {args.file}, found {n}")
    open(args.file, "w").write(new)
    print(f"fastest in the loop: {best['ms_in_loop']:.3f} ms per layer -> {launch_line(best)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
