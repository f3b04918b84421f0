"""The GPU studies' report tools (benchmarks/ncu_summary.py, ncu_sass_phases.py, pick_launch.py, summarize_rows.py)
on CPU: they read what Nsight Compute, the sweeps and the bench write, and must read it right."""

import json
import os

import pytest
from script_loader import BENCHMARKS, load_benchmark

RESULTS = os.path.join(BENCHMARKS, "results")


def test_ncu_summary_reads_a_real_details_page(capsys):
    """anat34's report (12 launches of the attention kernel, H200): the first launch's figures as ncu printed them."""
    summary = load_benchmark("ncu_summary")
    launches = summary.summarize(os.path.join(RESULTS, "ncu_launches_anat34_h200.csv"))
    assert len(launches) == 12
    first = launches[0]
    assert first["kernel"] == "shadowkv_gather_reconstruct_attention" and first["grid"] == "(10, 8, 11)"
    assert (first["us"], first["regs"], first["smem_KB"]) == (92.70, 248, 151.55)
    assert (first["limit_regs"], first["limit_smem"], first["occupancy_%"]) == (2, 1, 6.24)
    assert launches[10]["smem_KB"] == 77.82  # 8/64/4/1/0: one pipeline stage, half the shared memory
    assert summary.main([os.path.join(RESULTS, "ncu_launches_anat34_h200.csv"), "--labels", "base"]) == 0
    assert "| base | (10, 8, 11) | 92.7 |" in capsys.readouterr().out


SASS_HEADER = ["Address", "Source", "Warp Stall Sampling (All Samples)", "Warp Stall Sampling (Not-issued Samples)",
               "Instructions Executed", "stall_long_sb", "stall_barrier", "stall_long_sb (Not Issued)"]


def test_ncu_sass_phases_groups_samples_by_region(tmp_path, capsys):
    """Samples by how often an instruction ran, and the hottest region's windows with their stall reasons."""
    rows = [["0x0", "LDC R1, c[0x0][0x28]", "5", "5", "80", "5", "0", "5"],  # set-up: ran once per warp
            ["0x10", "LDGSTS [R2], desc[UR4][R4.64]", "10", "10", "640", "10", "0", "10"],  # the loop: 8 times
            ["0x20", "@P0 BAR.SYNC.DEFER_BLOCKING 0x0", "60", "60", "640", "0", "60", "0"],
            ["0x30", "HMMA.16816.F32.BF16 R24, R68, R72, RZ", "25", "20", "640", "1", "2", "1"]]
    path = tmp_path / "sass.csv"
    lines = ['"Kernel Name","k",'] + [",".join(f'"{x}"' for x in r) for r in [SASS_HEADER] + rows]
    path.write_text("\n".join(lines) + "\n")
    phases = load_benchmark("ncu_sass_phases")
    assert phases.opcode("@P0 BAR.SYNC.DEFER_BLOCKING 0x0") == "BAR"
    assert phases.main([str(path), "--window", "2"]) == 0
    out = capsys.readouterr().out
    assert "4 instructions, 100 samples" in out
    assert "| 640 | 3 | 95 | 95.0% |" in out and "| 80 | 1 | 5 | 5.0% |" in out
    assert "| 1 | 70 | 70.0% | LDGSTS:1 BAR:1 | barrier 60, long_sb 10 |" in out  # the loop's first window


def test_pick_launch_rewrites_the_launch_constants(tmp_path):
    """The fastest in-loop attention launch and the fastest landmark launch replace their constants' lines."""
    pick = load_benchmark("pick_launch")
    src = tmp_path / "k.py"
    src.write_text('A = 1\nDEVICE_VALUES_LAUNCH = {"block_tokens": 64}\nDECODE_LAUNCH = {"block": 128}\n')
    kernels = tmp_path / "kernels.json"
    kernels.write_text(json.dumps({"rows": [
        {"placement": "device", "splits": 8, "block_tokens": 64, "warps": 4, "stages": 2, "ms_in_loop": 0.096},
        {"placement": "device", "splits": 8, "block_tokens": 64, "warps": 4, "stages": 3, "ms_in_loop": 0.093},
        {"placement": "host", "splits": 4, "block_tokens": 32, "warps": 8, "stages": 2, "ms_in_loop": 0.01}]}))
    assert pick.main([str(kernels), "--file", str(src)]) == 0
    landmark = tmp_path / "landmark.json"
    landmark.write_text(json.dumps({"rows": [{"launch": "rows/128/4", "ms_per_layer": 0.01},
                                             {"launch": "dot/128/4", "ms_per_layer": 0.098},
                                             {"launch": "dot/128/4/4/2", "ms_per_layer": 0.090}]}))
    assert pick.main([str(landmark), "--landmark", "--file", str(src)]) == 0
    assert src.read_text().splitlines() == [
        "A = 1",
        'DEVICE_VALUES_LAUNCH = {"block_tokens": 64, "num_splits": 8, "num_warps": 4, "num_stages": 3, '
        '"w_once": False}',
        'DECODE_LAUNCH = {"block": 128, "blocks": 4, "num_warps": 4, "num_stages": 2}']
    with pytest.raises(SystemExit, match="expected one DECODE_LAUNCH line"):
        pick.rewrite(str(tmp_path / "kernels.json"), "DECODE_LAUNCH", "x")


@pytest.mark.slow  # a GPU study script interpreted at a toy size (~30 s on a 2-core CPU): make test-slow
def test_kernel_anatomy_runs_one_layer_interpreted(capsys):
    anatomy = load_benchmark("kernel_anatomy")
    assert anatomy.main(["--batch", "1", "--context", "4096", "--calls", "1", "--interpret"]) == 0
    assert anatomy.main(["--batch", "1", "--context", "4096", "--interpret", "--launches", "8/64/4/3/0",
                         "2/16/4/1/1"]) == 0
    out = capsys.readouterr().out
    assert "call 0:" in out and "launch 8/64/4/3/0: ran" in out and "launch 2/16/4/1/1: ran" in out


def test_summarize_rows_reads_a_real_bench_file(capsys):
    """ul48's layer-scan row (H200): the timed calls after the warm-up, the row's probe and its step / roofline."""
    summarize = load_benchmark("summarize_rows")
    path = os.path.join(RESULTS, "tput_llama_122880_shadowkv_h100mem_ul48_stacked_h200.json")
    assert summarize.main([path]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3
    assert ("| shadowkv | 122880 | 5 | stacked | 8.58 (8.58, 8.53, 8.55) | 582.7 | 5.57 (3.93) | 1.54 |"
            in out[2]), out[2]
    assert summarize.main([]) == 2
