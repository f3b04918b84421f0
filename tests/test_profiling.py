"""Kernel time by named scope from a profiler trace (the parsing; GPU traces are read the same way)."""

import jax
import jax.numpy as jnp

from shadowkv_jax import profiling

_HLO = """
ENTRY %main (p: bf16[8]) -> bf16[8] {
  %fusion.3 = bf16[13,8,4,15311]{3,2,1,0} fusion(%a), kind=kCustom, metadata={op_name="jit(decode_loop)/while/body/DecoderLayer/attention/select/bhgd,bhnd->bhgn/dot_general"}
  %custom-call.7 = (f32[13,8,1,16,128]{4,3,2,1,0}) custom-call(%b), custom_call_target="__gpu$xla.gpu.triton", metadata={op_name="jit(decode_loop)/while/body/DecoderLayer/attention/gather_reconstruct_attention/pallas_call"}
  %loop_dynamic_slice_fusion.2 = bf16[1,13,8,240,8,128]{5,4,3,2,1,0} fusion(%d), kind=kLoop, metadata={op_name="jit(decode_loop)/while/body/DecoderLayer/attention/jit(dynamic_index_in_dim)/dynamic_slice"}
  %custom-call.9 = f32[13,8,4,15312]{3,2,1,0} custom-call(%e), custom_call_target="__gpu$xla.gpu.triton", backend_config={"name":"shadowkv_landmark_scores"}, metadata={op_name="jit(decode_loop)/while/body/DecoderLayer/attention/select/pallas_call"}
  ROOT %gemm.1 = bf16[13,4096]{1,0} custom-call(%c), custom_call_target="__cublas$gemm", metadata={op_name="jit(decode_loop)/while/body/DecoderLayer/mlp/dot_general"}
}
"""


def _ev(name, hlo_op, ns, line="Stream #13"):
    return {"name": name, "hlo_op": hlo_op, "ns": ns, "line": line}


def test_summarize_sums_kernel_time_per_scope_and_per_step():
    events = [_ev("triton_fusion_select", "fusion.3", 2_000_000), _ev("triton_fusion_select", "fusion.3", 2_000_000),
              _ev("shadowkv_gather_reconstruct_attention", "custom-call.7", 6_000_000),
              _ev("sm90_xmma_gemm", "gemm.1", 1_000_000),
              _ev("unmapped_kernel", "", 1_000_000),
              _ev("fusion.3", "fusion.3", 9_000_000, line="XLA Ops")]  # a derived line: not counted again
    out = profiling.summarize(events, _HLO, per=2)
    assert out["by_scope_ms"] == {"select": 2.0, "gather_reconstruct_attention": 3.0, "mlp": 0.5, "other": 0.5}
    assert out["total_ms"] == 6.0
    top = out["kernels"][0]
    assert (top["hlo_op"], top["ms"], top["launches"], top["scope"]) == ("custom-call.7", 3.0, 0.5,
                                                                        "gather_reconstruct_attention")


def test_kernels_inside_command_buffers_are_attributed_by_their_names():
    """In a CUDA-graph loop body every event's hlo_op is the command buffer: fusion kernels are found by
    their instruction's name, Pallas kernels by the custom call that names them (also a copy that XLA names
    with a suffix), cuBLAS stays "other"."""
    events = [_ev("loop_dynamic_slice_fusion_2", "command_buffer_13", 1_000_000),
              _ev("shadowkv_landmark_scores", "command_buffer_13", 1_000_000),
              _ev("shadowkv_landmark_scores__1", "command_buffer_13", 1_000_000),  # XLA's name for a second copy
              _ev("nvjet_sm90_tst_192x16_64x8_4x1_v_bz_NNT", "command_buffer_13", 4_000_000)]
    out = profiling.summarize(events, _HLO)
    assert out["by_scope_ms"] == {"attention": 1.0, "select": 2.0, "other": 4.0}
    copy = next(k for k in out["kernels"] if k["kernel"] == "loop_dynamic_slice_fusion_2")
    assert copy["shape"] == "bf16[1,13,8,240,8,128]{5,4,3,2,1,0}"  # what the copy copies
    assert copy["op_name"].endswith("attention/jit(dynamic_index_in_dim)/dynamic_slice")


def test_scope_prefers_the_most_specific_named_scope():
    assert profiling.scope_of("a/DecoderLayer/attention/select/x") == "select"
    assert profiling.scope_of("a/DecoderLayer/attention/x") == "attention"
    assert profiling.scope_of("a/lm_head/x") == "other"
    assert profiling.op_names(_HLO)["gemm.1"].endswith("mlp/dot_general")


def test_profile_kernels_runs_and_returns_the_result():
    f = jax.jit(lambda x: jnp.sin(x) * 2)
    x = jnp.ones((64,))
    summary, out = profiling.profile_kernels(lambda: f(x), f.lower(x).compile().as_text())
    assert float(out[0]) == float(jnp.sin(1.0) * 2)
    assert summary["total_ms"] >= 0 and isinstance(summary["kernels"], list)  # no GPU plane on CPU: empty


def test_concurrency_finds_idle_gaps_and_kernels_side_by_side():
    ms = 1_000_000
    events = [dict(_ev("shadowkv_gather_reconstruct_attention", "", 10 * ms, "Stream #100(Compute)"), start_ns=0),
              dict(_ev("nvjet_gemm", "", 2 * ms, "Stream #101(Compute)"), start_ns=2 * ms),
              dict(_ev("nvjet_gemm", "", 2 * ms, "Stream #101(Compute)"), start_ns=12 * ms),
              dict(_ev("fusion", "", 30 * ms, "XLA Ops"), start_ns=0)]  # derived line: not a kernel
    c = profiling.concurrency(events, per=2, window_ms=100)
    assert (c["span_ms"], c["busy_ms"], c["idle_ms"], c["concurrent_ms"]) == (7.0, 6.0, 1.0, 1.0)
    assert (c["focus_ms"], c["focus_beside_others_ms"], c["streams"]) == (5.0, 1.0, 2)
    assert c["window"] == [(1.5, 2.0, "Stream #101", "nvjet_gemm")]  # from the middle of step 2 (10.5 ms) on
    assert profiling.concurrency([], per=1) == {}


def test_every_kernel_of_the_time_window_is_named():
    """summarize's window_ops: the op_name and result shape behind each kernel in the concurrency window, the
    small fusions included (the top-kernel list names only the longest)."""
    ms = 1_000_000
    events = [dict(_ev("shadowkv_landmark_scores", "command_buffer_13", 3 * ms, "Stream #99(Compute)"), start_ns=0),
              dict(_ev("loop_dynamic_slice_fusion_2", "command_buffer_13", ms // 10, "Stream #94(Compute)"),
                   start_ns=3 * ms),
              dict(_ev("nvjet_sm90_gemm", "command_buffer_13", ms, "Stream #99(Compute)"), start_ns=4 * ms)]
    out = profiling.summarize(events, _HLO, top=1)
    assert [k["kernel"] for k in out["kernels"]] == ["shadowkv_landmark_scores"]  # the top list: one kernel
    names = [w[3] for w in out["concurrency"]["window"]]
    assert "loop_dynamic_slice_fusion_2" in names and set(out["window_ops"]) == set(names)
    copy = out["window_ops"]["loop_dynamic_slice_fusion_2"]
    assert copy["shape"] == "bf16[1,13,8,240,8,128]{5,4,3,2,1,0}"
    assert copy["op_name"].endswith("attention/jit(dynamic_index_in_dim)/dynamic_slice")
    assert out["window_ops"]["nvjet_sm90_gemm"] == {"op_name": "", "shape": ""}  # cuBLAS: not in the HLO by name
