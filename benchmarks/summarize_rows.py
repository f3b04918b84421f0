"""One line per bench row of `python -m shadowkv_jax bench --json` files: the figures a device stage's notes need.

    python benchmarks/summarize_rows.py OUT/tput_*.json
"""

from __future__ import annotations

import json
import sys


def lines(paths) -> list[str]:
    out = ["| file | method | context | batch | layer weights | ms/step (each timed call) | tokens/s | roofline ms "
           "(HBM TB/s) | step / roofline | compile decode s | peak GB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        hbm = data["rates"]["hbm_read_bytes_per_s"]
        for r in data["rows"]:
            calls = ", ".join(f"{1e3 * t / r['steps']:.2f}" for t in r["decode_calls_s"][1:])
            peak = (r.get("memory_after_decode") or {}).get("peak_bytes_in_use")
            out.append(f"| {path.rsplit('/', 1)[-1]} | {r['method']} | {r['context']} | {r['batch']} | "
                       f"{r.get('layer_weights', 'stacked')} | {r['step_ms']:.2f} ({calls}) | {r['tokens_per_s']:.1f} | "
                       f"{r['roofline_step_ms']:.2f} ({hbm / 1e12:.2f}) | {r['step_ms'] / r['roofline_step_ms']:.2f} | "
                       f"{r['compile_decode_s']:.1f} | {'-' if peak is None else f'{peak / 1e9:.2f}'} |")
    return out


def main(argv=None) -> int:
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print("usage: summarize_rows.py BENCH_JSON...", file=sys.stderr)
        return 2
    print("\n".join(lines(paths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
