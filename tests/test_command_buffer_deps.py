"""The command-buffer ordering check (benchmarks/command_buffer_deps.py) on a hand-written dump in XLA's format."""

from script_loader import load_benchmark

HLO = """
%body.1 (arg_tuple.9: (s32[], f32[8], f32[8])) -> (s32[], f32[8], f32[8]) {
  %arg_tuple.9 = (s32[], f32[8]{0}, f32[8]{0}) parameter(0)
  %kernel.a = f32[8]{0} custom-call(%arg_tuple.9#1), custom_call_target="x", metadata={op_name="jit(f)/micro_batch_a/pallas_call"}
  %use.a = f32[8]{0} fusion(%kernel.a), kind=kLoop, calls=%f1, metadata={op_name="jit(f)/micro_batch_a/add"}
  %gemm.b = f32[8]{0} custom-call(%arg_tuple.9#2), custom_call_target="y", metadata={op_name="jit(f)/micro_batch_b/dot"}
  %bit.b = f32[2,4]{1,0} bitcast(%gemm.b)
  %tail.b = f32[8]{0} fusion(%bit.b), kind=kLoop, calls=%f2, control-predecessors={%use.a}, metadata={op_name="jit(f)/micro_batch_b/mul"}
  %free.b = f32[8]{0} fusion(%arg_tuple.9#2), kind=kLoop, calls=%f3, metadata={op_name="jit(f)/micro_batch_b/neg"}
  ROOT %tuple.1 = (s32[], f32[8]{0}, f32[8]{0}) tuple(%arg_tuple.9#0, %use.a, %tail.b)
}
"""
# kernel.a and gemm.b share the temp slice [0, 32) of allocation 3: gemm.b reuses kernel.a's buffer once
# use.a has read it, so the command buffer must order gemm.b after kernel.a; free.b has its own slice.
ASSIGNMENT = """
allocation 1: size 32, parameter 1, shape |f32[8]| at ShapeIndex {}:
 value: <10 arg_tuple.9{1} (phi) @0> (size=32,offset=0): f32[8]{0}
allocation 2: size 32, parameter 2, shape |f32[8]| at ShapeIndex {}:
 value: <11 arg_tuple.9{2} (phi) @0> (size=32,offset=0): f32[8]{0}
allocation 3: size 96, preallocated-temp:
 value: <12 kernel.a @0> (size=32,offset=0): f32[8]{0}
 value: <13 use.a @0> (size=32,offset=32): f32[8]{0}
 value: <14 gemm.b @0> (size=32,offset=0): f32[8]{0}
 value: <15 tail.b @0> (size=32,offset=64): f32[8]{0}
 value: <16 free.b @0> (size=32,offset=32): f32[8]{0}
"""


def test_reused_buffers_order_independent_chains():
    deps = load_benchmark("command_buffer_deps")
    instrs = deps.computation(HLO, "body.1")
    assert [i["name"] for i in instrs][:3] == ["arg_tuple.9", "kernel.a", "use.a"]
    graph = deps.orderings(instrs, deps.buffer_slices(ASSIGNMENT))
    assert graph["order"] == ["kernel.a", "use.a", "gemm.b", "tail.b", "free.b"]  # no bitcast, tuple, parameter
    edges = graph["edges"]
    assert ("kernel.a", "data") in edges["use.a"]
    assert ("kernel.a", "reuse") in edges["gemm.b"]  # no data from A to B, yet ordered
    assert ("gemm.b", "data") in edges["tail.b"]  # read through the bitcast
    assert ("use.a", "control") in edges["tail.b"]
    assert ("use.a", "reuse") in edges["free.b"]  # free.b writes use.a's slice after use.a wrote it
    waits = {w["name"]: w["via"] for w in deps.waiting_for(graph, "kernel.a")}
    assert set(waits) == {"use.a", "gemm.b", "tail.b", "free.b"}
    assert deps.body_holding("x = (s32[]) while(%t), condition=%c, body=%body.1\n" + HLO, "gemm.b") == "body.1"
