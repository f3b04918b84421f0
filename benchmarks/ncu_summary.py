"""A table of what Nsight Compute measured per kernel launch: time, registers, shared memory, occupancy, DRAM.

    ncu -i REPORT.ncu-rep --page details --csv > details.csv
    python benchmarks/ncu_summary.py details.csv [--labels L1 L2 ...] [--json OUT]

--labels names the launches in the report's order (e.g. kernel_anatomy.py --launches' list).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys

METRICS = {  # column: (section, metric name) as the details page names them
    "us": ("GPU Speed Of Light Throughput", "Duration"),
    "dram_%": ("GPU Speed Of Light Throughput", "DRAM Throughput"),
    "regs": ("Launch Statistics", "Registers Per Thread"),
    "smem_KB": ("Launch Statistics", "Dynamic Shared Memory Per Block"),
    "limit_regs": ("Occupancy", "Block Limit Registers"),
    "limit_smem": ("Occupancy", "Block Limit Shared Mem"),
    "occupancy_%": ("Occupancy", "Achieved Occupancy"),
}


def summarize(path: str) -> list[dict]:
    launches: dict[str, dict] = {}
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f)]
    start = next(i for i, r in enumerate(rows) if r and r[0] == "ID")
    header = rows[start]
    col = {name: header.index(name) for name in ("ID", "Kernel Name", "Grid Size", "Block Size", "Section Name",
                                                 "Metric Name", "Metric Unit", "Metric Value")}
    for r in rows[start + 1:]:
        if len(r) <= col["Metric Value"]:
            continue
        launch = launches.setdefault(r[col["ID"]], {"kernel": r[col["Kernel Name"]], "grid": r[col["Grid Size"]],
                                                    "block": r[col["Block Size"]]})
        for key, (section, metric) in METRICS.items():
            if r[col["Section Name"]] == section and r[col["Metric Name"]] == metric:
                value = float(r[col["Metric Value"]].replace(",", ""))
                unit = r[col["Metric Unit"]]
                if key == "us" and unit in ("msecond", "ms"):
                    value *= 1e3
                if key == "us" and unit in ("nsecond", "ns"):
                    value /= 1e3
                launch[key] = value
    return list(launches.values())


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("csv")
    p.add_argument("--labels", nargs="+", default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    launches = summarize(args.csv)
    for i, launch in enumerate(launches):
        launch["label"] = args.labels[i] if args.labels and i < len(args.labels) else launch["kernel"][:40]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(launches, f, indent=1)
    print("| launch | grid | µs | DRAM % | regs | smem KB | programs/SM by regs, smem | occupancy % |")
    print("|---|---|---|---|---|---|---|---|")
    for x in launches:
        g = lambda k, fmt="{:.1f}": fmt.format(x[k]) if k in x else "-"
        print(f"| {x['label']} | {x['grid']} | {g('us')} | {g('dram_%')} | {g('regs', '{:.0f}')} | {g('smem_KB')} | "
              f"{g('limit_regs', '{:.0f}')}, {g('limit_smem', '{:.0f}')} | {g('occupancy_%')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
