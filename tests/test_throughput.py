"""The throughput bench on CPU at tiny sizes: row-wise prefill, batch replication, bytes, refusal, CLI."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import shadowkv_jax as sk
from shadowkv_jax import planner, throughput as tp
from shadowkv_jax.decoding import prefill, prefill_rows
from shadowkv_jax.model.llama import in_token_chunks, init_params
from shadowkv_jax.planner import GiB, Limits, PlanError

CFG = sk.ModelConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                     num_kv_heads=2, head_dim=16, max_position_embeddings=8192)
SKV = dict(rank=16, chunk_size=8, sparse_budget=64, outlier_chunks=2, factorization="gram")


@pytest.fixture(scope="module")
def tiny():
    return sk.Model(CFG, init_params(CFG, jax.random.key(1)), None, "tiny")


def test_mlp_in_token_chunks_changes_nothing():
    x = jax.random.normal(jax.random.key(0), (2, 13, 8))
    fn = lambda h: jnp.tanh(h @ jnp.ones((8, 8))) + h
    np.testing.assert_allclose(np.asarray(in_token_chunks(fn, x, chunk=5)), np.asarray(fn(x)), rtol=1e-6)


def test_prefill_rows_equals_prefill_of_that_prompt_alone(tiny):
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(3, 256, (1, 96)), jnp.int32)
    lengths = jnp.asarray([90], jnp.int32)
    want_logits, want = prefill(tiny.params, ids, lengths, config=CFG, capacity=128)
    cache = sk.KVCache.zeros(CFG, 3, 128)
    logits, cache = prefill_rows(tiny.params, cache, ids, lengths, 1, config=CFG)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(want_logits), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(cache.k[:, 1]), np.asarray(want.k[:, 0]))
    assert not np.asarray(cache.k[:, 0]).any() and not np.asarray(cache.k[:, 2]).any()
    assert np.asarray(cache.lengths).tolist() == [0, 90, 0]


def test_timed_calls_exclude_preparing_the_next_calls_input(tiny):
    """The token slice that feeds the next call compiled on first use (60-110 ms on a GPU), and it used to run
    inside the timed call. Here the slice costs 0.3 s on its first use and a call 0.02 s: no timed call may
    include the slice, and each call's seconds are kept, warm-up first."""
    import time

    class Tokens:  # what a decode loop returns as tokens: slicing it is slow the first time
        sliced = False

        def __getitem__(self, index):
            if not Tokens.sliced:
                time.sleep(0.3)
                Tokens.sliced = True
            return jnp.zeros((2,), jnp.int32)

    seen = []

    def loop(params, carry, first, key, eos, consts):
        seen.append(first)
        time.sleep(0.02)
        return Tokens(), carry + 1, {"metrics": None}

    first = jnp.zeros((2,), jnp.int32)
    elapsed, carry, extras, calls = tp._timed(tiny, loop, jnp.int32(0), first, None, calls=3)
    assert len(calls) == 4 and elapsed == calls[1] and int(carry) == 4
    assert max(calls[1:]) < 0.2, calls  # the 0.3 s slice ran between calls, outside every timed one
    assert seen[0] is first and all(s is not first for s in seen[1:])  # each call goes on from the last one


def test_bench_rows_on_cpu(tiny):
    from shadowkv_jax.planner import plan

    # a GPU limit that fits exactly 2 sequences of full attention at this context: "auto" must pick 2
    two = plan(CFG, "full", 2, 640, max_new_tokens=8).gpu_total
    three = plan(CFG, "full", 3, 640, max_new_tokens=8).gpu_total
    limits = Limits(gpu_bytes=int((two + three) / 2 / 0.9), host_bytes=GiB)
    rates = {"hbm_read_bytes_per_s": 1e10, "h2d_bytes_per_s": None}
    factory = tp.shadowkv_factory(CFG, **SKV)
    out = tp.bench(tiny, [640], ["full", factory], ["auto"], steps=3, limits=limits, rates=rates, breakdown=True,
                   progress=lambda *_: None, profile=True, timed_calls=2)
    full, shadow = out["rows"]
    assert (full["method"], shadow["method"]) == ("full", "shadowkv")
    assert full["batch"] == 2 and full["plan"]["bound_by"] == "gpu"
    assert shadow["batch"] > 2  # the shadow state is smaller than the dense cache
    for r in (full, shadow):
        assert r["tokens_per_s"] > 0 and r["roofline_step_ms"] > 0
        assert r["no_attention_step_ms"] > 0
        assert r["profile"]["kernels"] == []  # no GPU kernels in a CPU trace
        assert r["profile"]["wall_ms"] > 0
        warmup, *timed = r["decode_calls_s"]  # the warm-up, then the two timed calls; the first one is reported
        assert len(timed) == 2 and r["decode_s"] == timed[0] and min(timed) > 0
    assert shadow["placement"] == "device" and shadow["bytes_per_step"]["pcie"] == 0
    assert 0 <= shadow["hit_rate"] <= 1
    per_seq = lambda r: r["bytes_per_step"]["hbm"] / r["batch"]
    assert per_seq(shadow) < per_seq(full)  # ShadowKV reads fewer bytes per sequence than the dense cache
    [pf] = tp.prefill_shares(out["rows"])
    assert pf["state_build_share"] == pytest.approx(1 - full["prefill_s"] / shadow["prefill_s"])
    [s] = tp.speedups(out["rows"])
    assert s["ratio"] == pytest.approx(shadow["tokens_per_s"] / full["tokens_per_s"])
    assert "| full | 640 | 2 |" in tp.markdown(out["rows"])


def test_bench_micro_batched_shadowkv_row(tiny):
    """--micro-batches 2: the batch decodes as two interleaved halves (here with the kernels on stream 1, in 2
    splits, in scheduling groups); the row says so, gives the batch's hit rate, and a batch of 1 cannot be
    split."""
    rates = {"hbm_read_bytes_per_s": 1e10, "h2d_bytes_per_s": None}
    factory = tp.shadowkv_factory(CFG, **SKV)
    limits = Limits(gpu_bytes=GiB, host_bytes=GiB)
    out = tp.bench(tiny, [640], [factory], [3], steps=3, limits=limits, rates=rates, progress=lambda *_: None,
                   step=tp.ShadowKVStep(micro_batches=2, value_stream=1, kernel_splits=2, schedule_groups=True))
    [row] = out["rows"]
    assert row["micro_batches"] == [2, 1] and row["batch"] == 3 and row["tokens_per_s"] > 0
    assert row["value_stream"] == 1 and row["kernel_splits"] == 2 and row["schedule_groups"]
    label = "shadowkv, values on the device, micro-batches 2+1, stream 1, 2 splits, scheduling groups"
    assert f"| {label} | 640 | 3 |" in tp.markdown(out["rows"])
    assert 0 <= row["hit_rate"] <= 1
    with pytest.raises(ValueError, match="micro_batches=2 needs a batch of at least 2, got batch=1"):
        tp.micro_batch_sizes(1, 2)
    with pytest.raises(ValueError, match="micro_batches=3 must be 1 or 2"):
        tp.micro_batch_sizes(4, 3)
    with pytest.raises(ValueError, match="breakdown=True times stand-ins of the plain step"):
        tp.run_one(tiny, factory(640), 640, 3, 2, rates=rates, breakdown=True, step=tp.ShadowKVStep(2))
    for bad, match in ((dict(micro_batches=3), "micro_batches=3 must be 1 or 2"),
                       (dict(value_stream=1), "value_stream=1 needs micro_batches=2"),
                       (dict(micro_batches=2, kernel_splits=0), "kernel_splits=0 needs micro_batches=2 and a value"),
                       (dict(micro_batches=2, schedule_groups=True), "schedule_groups=True needs value_stream"),
                       (dict(emulated_reuse=1.0), r"emulated_reuse=1.0 must be in \[0, 1\)")):
        with pytest.raises(ValueError, match=match):
            tp.ShadowKVStep(**bad)


@pytest.mark.parametrize("micro_batches", [1, 2])
def test_bench_split_values_row(tiny, micro_batches, monkeypatch):
    """--value-placement split with --batch auto: the planner fills host memory and keeps the other rows'
    values on the device (as many as the GPU holds); the row records the split, its PCIe bytes are the host
    rows' only, its label says so; a batch of 5 is the largest, bound by both memories."""
    from shadowkv_jax.planner import plan

    # on a CPU the interpreted kernel cannot read pinned host memory: the "host" part stays in device memory
    # here; compiled on a GPU the kernel reads it from pinned host memory (tests/test_kernels.py)
    monkeypatch.setattr(tp, "host_sharding", lambda device=None: jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    monkeypatch.setattr(tp, "_host_values", lambda row, batch: jnp.repeat(row, batch, axis=1))
    rates = {"hbm_read_bytes_per_s": 1e10, "h2d_bytes_per_s": 1e9}
    new = tp.new_tokens(3)
    host_cfg = sk.ShadowKVConfig.for_model(CFG, 640, **SKV, value_placement="host")
    per_row = plan(CFG, host_cfg, 1, 640, new, replicated=True).host["values"]
    split = tp.shadowkv_factory(CFG, **SKV, value_placement="split", implementation="pallas")  # as on a GPU
    # at this size one prompt's prefill (its fp32 scores) outweighs the whole batch's state, and every split would
    # fit as well as any other; without it, each device row costs its values, as at long context
    monkeypatch.setattr(planner, "prefill_activation_bytes", lambda *args, **kwargs: 0)
    at = lambda rows: plan(CFG, split(640), 5, 640, new, replicated=True, device_rows=rows).gpu_total
    gpu = (at(3) + at(4)) // 2  # room for 3 device rows, not 4
    limits = Limits(gpu_bytes=int(gpu / 0.97), host_bytes=int(2.5 * per_row / 0.97), margin=0.03)
    step = tp.ShadowKVStep(micro_batches=micro_batches)
    out = tp.bench(tiny, [640], [split], [5], steps=3, limits=limits, rates=rates, progress=lambda *_: None,
                   step=step)
    [row] = out["rows"]
    assert row["placement"] == "split" and row["device_value_rows"] == 3 and row["batch"] == 5
    assert row["plan"]["host"]["values"] == 2 * per_row and row["plan"]["gpu"]["values"] == 3 * per_row
    all_host = tp.step_bytes(CFG, split(640), 5, 640, new, row["hit_rate"], "host")
    assert row["bytes_per_step"]["pcie"] == pytest.approx(all_host["pcie"] * 2 / 5, abs=1)
    assert "values of 3 rows on the GPU" in tp.method_label(row)
    assert row["micro_batches"] == ([5] if micro_batches == 1 else [2, 3])  # host rows, then device rows
    auto = tp.bench(tiny, [640], [split], ["auto"], steps=3, limits=limits, rates=rates, progress=lambda *_: None)
    assert auto["rows"][0]["batch"] == 5 and auto["rows"][0]["plan"]["bound_by"] == "gpu+host"


def test_replicated_state_rows_are_copies(tiny):
    from shadowkv_jax.shadowkv.prefill import chunk_slots_for, padded_prompt_length, shadowkv_prefill

    cfg = sk.ShadowKVConfig(**SKV, value_placement="device")
    ids = np.random.default_rng(2).integers(3, 256, 600)
    t = padded_prompt_length(cfg, 600, 64)
    _, one = shadowkv_prefill(tiny.params, jnp.asarray(np.pad(ids, (0, t - 600)))[None], jnp.asarray([600]),
                              config=CFG, sk_config=cfg, chunk_slots=chunk_slots_for(cfg, [600]))
    st = tp.replicate_state(one, 3, "device")
    assert st.a.shape[1] == 3 and st.values.shape[1] == 3 and st.lengths.shape == (3,)
    host = tp.replicate_state(one, 3, "host")  # values built row by row in pinned host memory
    assert host.values.sharding.memory_kind == "pinned_host"
    for b in range(3):
        np.testing.assert_array_equal(np.asarray(st.a[:, b]), np.asarray(one.a[:, 0]))
        np.testing.assert_array_equal(np.asarray(st.values[:, b]), np.asarray(one.values[:, 0]))
        np.testing.assert_array_equal(np.asarray(host.values[:, b]), np.asarray(one.values[:, 0]))
    # the bench's way: the values staged in host RAM (the device copy deleted), then brought back layer by layer
    expect = np.asarray(one.values)
    source = one.values
    bare, staged = tp.stage_values(one)
    assert source.is_deleted() and bare.values is None and isinstance(staged, np.ndarray)
    tiled = tp.replicate_values(staged, 3, "device")
    on_host = tp.replicate_values(staged, 3, "host")
    assert on_host.sharding.memory_kind == "pinned_host"
    for b in range(3):
        np.testing.assert_array_equal(np.asarray(tiled[:, b]), expect[:, 0])
        np.testing.assert_array_equal(np.asarray(on_host[:, b]), expect[:, 0])


def test_step_bytes_count_value_reuse():
    cfg = sk.ShadowKVConfig(**SKV)
    none = tp.step_bytes(CFG, cfg, 4, 4096, 64, hit_rate=0.0, placement="host")
    half = tp.step_bytes(CFG, cfg, 4, 4096, 64, hit_rate=0.5, placement="host")
    values = 2 * 4 * 2 * 64 * 16 * 4  # L B Hkv budget D fp32
    assert none["pcie"] == values and half["pcie"] == values // 2
    assert tp.roofline_s({"hbm": 10, "pcie": 100}, {"hbm_read_bytes_per_s": 10.0, "h2d_bytes_per_s": 10.0}) == 10.0


def test_bench_refuses_a_batch_that_cannot_fit(tiny):
    limits = Limits(gpu_bytes=8 * 2**20, host_bytes=GiB)
    with pytest.raises(PlanError, match=r"batch=64 at context=640 needs .* GiB of GPU memory"):
        tp.bench(tiny, [640], ["full"], [64], steps=2, limits=limits, rates={"hbm_read_bytes_per_s": 1.0},
                 progress=lambda *_: None)


def test_bench_cli(tmp_path, capsys, monkeypatch):
    """`python -m shadowkv_jax bench` end to end on the embedded SmolLM2 (real weights) at a small size."""
    from shadowkv_jax.cli import main

    out = tmp_path / "bench.json"
    rc = main(["bench", "--model", sk.default_model_path(), "--context", "400", "--batch", "2", "--steps", "1",
               "--gpu-memory-gb", "2.0", "--host-memory-gb", "1", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert {r["method"] for r in data["rows"]} == {"full", "shadowkv"}
    assert all(r["batch"] == 2 and r["tokens_per_s"] > 0 for r in data["rows"])
    assert data["speedups"] and data["meta"]["weights"] == "real weights"
    printed = capsys.readouterr().out
    assert "| method | context | batch |" in printed
    assert main(["bench", "--model", sk.default_model_path(), "--context", "512", "--batch", "0"]) == 2
    assert "--batch '0' must be a positive integer" in capsys.readouterr().err
    assert main(["bench", "--model", sk.default_model_path(), "--timed-calls", "0"]) == 2
    assert "--timed-calls 0 must be >= 1" in capsys.readouterr().err
    assert main(["bench", "--model", sk.default_model_path(), "--breakdown", "--micro-batches", "2"]) == 2
    assert "--breakdown times stand-ins of the plain step" in capsys.readouterr().err
    assert main(["bench", "--model", sk.default_model_path(), "--value-stream", "1"]) == 2
    assert "--value-stream 1 needs --micro-batches 2" in capsys.readouterr().err
    assert main(["bench", "--model", sk.default_model_path(), "--micro-batches", "2", "--value-stream", "0"]) == 2
    assert "stream 0 is XLA's main stream" in capsys.readouterr().err
    assert main(["bench", "--model", sk.default_model_path(), "--micro-batches", "2", "--kernel-splits", "0"]) == 2
    assert "--kernel-splits 0 needs --micro-batches 2 and a positive number" in capsys.readouterr().err
    assert main(["bench", "--model", sk.default_model_path(), "--emulate-reuse", "1.5"]) == 2
    assert "--emulate-reuse 1.5 must be in [0, 1)" in capsys.readouterr().err
    assert main(["bench", "--model", sk.default_model_path(), "--micro-batches", "2", "--schedule-groups"]) == 2
    assert "--schedule-groups needs --value-stream" in capsys.readouterr().err
    assert main(["bench", "--model", sk.default_model_path(), "--value-placement", "split"]) == 2
    assert "--value-placement split keeps values in pinned host memory" in capsys.readouterr().err


def test_dense_decode_kernel_equals_xla_path(tiny):
    """The full-attention decode with the flash-decoding kernel (interpreted) gives the XLA path's logits."""
    from shadowkv_jax.decoding import decode_loop
    from shadowkv_jax.model.attention import DenseDecode

    rng = np.random.default_rng(3)
    ids = jnp.asarray(rng.integers(3, 256, (2, 128)), jnp.int32)
    lengths = jnp.asarray([128, 77], jnp.int32)
    out = {}
    for impl in ("xla", "pallas"):
        logits, cache = prefill(tiny.params, ids, lengths, config=CFG, capacity=192)
        first = jnp.argmax(logits, -1).astype(jnp.int32)
        _, _, extras = decode_loop(tiny.params, cache, first, jax.random.key(0), jnp.zeros((0,), jnp.int32),
                                   config=CFG, sampler=sk.Greedy(), num_steps=6,
                                   attention=DenseDecode(impl, interpret=True), return_logits=True)
        out[impl] = np.asarray(extras["logits"])
    np.testing.assert_allclose(out["pallas"], out["xla"], atol=1e-4)


def test_bench_runs_a_glm_shaped_model():
    """GLM's q/k/v biases, partial rotary and two KV heads go through both methods of the bench."""
    glm = sk.ModelConfig(vocab_size=256, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4,
                         num_kv_heads=2, head_dim=16, max_position_embeddings=8192, architecture="GlmForCausalLM",
                         attention_bias=True, partial_rotary_factor=0.5)
    model = sk.Model(glm, init_params(glm, jax.random.key(2)), None, "tiny-glm")
    out = tp.bench(model, [520], ["full", tp.shadowkv_factory(glm, **SKV)], [2], steps=2,
                   limits=Limits(gpu_bytes=GiB, host_bytes=GiB), rates={"hbm_read_bytes_per_s": 1e10},
                   progress=lambda *_: None)
    assert [r["method"] for r in out["rows"]] == ["full", "shadowkv"]
    assert all(r["tokens_per_s"] > 0 for r in out["rows"])


def test_select_only_stand_in_keeps_the_selection():
    """The selection-only stand-in must still compute the top-k (XLA deletes work whose result is unused)."""
    from functools import partial

    from shadowkv_jax.decoding import decode_loop
    from shadowkv_jax.model.llama import abstract_params
    from shadowkv_jax.shadowkv.state import empty_state

    cfg = sk.ShadowKVConfig(**SKV, value_placement="device")
    st = jax.eval_shape(partial(empty_state, CFG, cfg, 2, 40, "device"))

    def optimized(attention):
        return decode_loop.lower(abstract_params(CFG), st.without_values(), jax.ShapeDtypeStruct((2,), jnp.int32),
                                 jax.random.key(0), jnp.zeros((0,), jnp.int32), st.values, config=CFG,
                                 sampler=sk.Greedy(), num_steps=2, attention=attention).compile().as_text()

    has_topk = lambda text: "topk" in text.lower() or "sort" in text.lower()
    assert has_topk(optimized(tp.SelectOnly(cfg))) and not has_topk(optimized(tp.NoAttention()))


def test_hbm_probe_counts_every_queued_reduction(monkeypatch):
    """measure_bandwidths: a timed run queues `calls` reductions of the probe's buffer, so its rate is calls x bytes
    over the best run, after the warm-up."""
    seen = []
    monkeypatch.setattr(tp, "wall_times", lambda fn, repeats: (seen.append(fn()), [0.004, 0.002, 0.003])[1])
    rates = tp.measure_bandwidths(gib=0.001, calls=3, warmup_s=0.05)
    nbytes = rates["probe_bytes"]
    assert (rates["probe_calls"], rates["probe_warmup_s"]) == (3, 0.05)
    assert rates["hbm_read_bytes_per_s"] == pytest.approx(3 * nbytes / 0.002)
    assert rates["hbm_read_median_bytes_per_s"] == pytest.approx(3 * nbytes / 0.003)
    assert float(seen[0]) == pytest.approx(nbytes // 2)  # the reduction itself: a sum of ones


def test_limits_after_the_probe_leave_out_its_buffers():
    limits = Limits(gpu_bytes=80 << 30, host_bytes=110 << 30, margin=0.03)
    gpu_only = tp.after_probe(limits, {"probe_bytes": 4 << 30, "h2d_bytes_per_s": None})
    assert (gpu_only.gpu_bytes, gpu_only.host_bytes) == (76 << 30, 110 << 30)
    both = tp.after_probe(limits, {"probe_bytes": 4 << 30, "h2d_bytes_per_s": 5e10})
    assert (both.gpu_bytes, both.host_bytes, both.margin) == (76 << 30, 106 << 30, 0.03)


def test_bench_select_script_checks_every_selection_path(tmp_path):
    """benchmarks/bench_select.py (run on the GPU) on a small shape: every path picks the same set, JSON written."""
    from script_loader import load_benchmark

    out = tmp_path / "select.json"
    assert load_benchmark("bench_select").main(["--batch", "1", "--context", "16384", "--layers", "2", "--calls", "2",
                                                "--repeats", "1", "--warps", "8", "--splits", "2",
                                                "--json", str(out)]) == 0
    row = json.loads(out.read_text())
    paths = {"xla", "two_kernels", "fused_warps8", "split2", "step"}
    assert row["k"] == 32 and row["same_set"] == dict.fromkeys(paths, True) and row["step_splits"] == 16
    assert set(row["ms_per_layer"]) == paths


_HLO = """HloModule m

%fused_slice (p0: bf16[32,1024,1024], p1: s32[]) -> bf16[1024,1024] {
  %p0 = bf16[32,1024,1024]{2,1,0} parameter(0)
  %p1 = s32[] parameter(1)
  %c = s32[] constant(0)
  %ds = bf16[1,1024,1024]{2,1,0} dynamic-slice(%p0, %p1, %c, %c), dynamic_slice_sizes={1,1024,1024}, metadata={op_name="jit(f)/while/body/select/dynamic_slice"}
  ROOT %b = bf16[1024,1024]{1,0} bitcast(%ds)
}

%fused_pad (p0.2: bf16[32,1024,1024], p1.2: s32[]) -> bf16[1024,1032] {
  %p0.2 = bf16[32,1024,1024]{2,1,0} parameter(0)
  %p1.2 = s32[] parameter(1)
  %c.2 = s32[] constant(0)
  %z.2 = bf16[] constant(0)
  %ds.2 = bf16[1,1024,1024]{2,1,0} dynamic-slice(%p0.2, %p1.2, %c.2, %c.2), dynamic_slice_sizes={1,1024,1024}
  %b.2 = bf16[1024,1024]{1,0} bitcast(%ds.2)
  ROOT %pad = bf16[1024,1032]{1,0} pad(%b.2, %z.2), padding=0_0x0_8, metadata={op_name="jit(f)/while/body/select/dot_general"}
}

%dynamic-slice-fusion (p0.1: bf16[32,1024,1024], p1.1: s32[], p2: bf16[4,1024]) -> bf16[4,1024] {
  %p0.1 = bf16[32,1024,1024]{2,1,0} parameter(0)
  %p1.1 = s32[] parameter(1)
  %p2 = bf16[4,1024]{1,0} parameter(2)
  %c.1 = s32[] constant(0)
  %ds.1 = bf16[1,1024,1024]{2,1,0} dynamic-slice(%p0.1, %p1.1, %c.1, %c.1), dynamic_slice_sizes={1,1024,1024}
  %b.1 = bf16[1024,1024]{1,0} bitcast(%ds.1)
  ROOT %g = bf16[4,1024]{1,0} custom-call(%p2, %b.1), custom_call_target="__cublas$gemm"
}

%body (t: (s32[], bf16[32,1024,1024], bf16[4,1024])) -> (s32[], bf16[32,1024,1024], bf16[4,1024]) {
  %t = (s32[], bf16[32,1024,1024]{2,1,0}, bf16[4,1024]{1,0}) parameter(0)
  %i = s32[] get-tuple-element(%t), index=0
  %w = bf16[32,1024,1024]{2,1,0} get-tuple-element(%t), index=1
  %x = bf16[4,1024]{1,0} get-tuple-element(%t), index=2
  %sl = bf16[1024,1024]{1,0} fusion(%w, %i), kind=kLoop, calls=%fused_slice
  %y = bf16[4,1024]{1,0} custom-call(%x, %sl), custom_call_target="__cublas$gemm"
  %z = bf16[4,1024]{1,0} fusion(%w, %i, %y), kind=kCustom, calls=%dynamic-slice-fusion
  %pd = bf16[1024,1032]{1,0} fusion(%w, %i), kind=kLoop, calls=%fused_pad
  %y2 = bf16[4,1032]{1,0} custom-call(%x, %pd), custom_call_target="__cublas$gemm"
  ROOT %r = (s32[], bf16[32,1024,1024]{2,1,0}, bf16[4,1024]{1,0}) tuple(%i, %w, %z)
}
"""


def test_hlo_traffic_finds_materialised_slices_only():
    """A slice fused on its own (a copy the GEMM then reads) is listed with its consumer, and so is a
    padded copy (XLA pads bf16 GEMM operands to multiples of 8); the same slice inside a cuBLAS
    dynamic-slice fusion (address arithmetic, no copy) is not."""
    from script_loader import load_benchmark

    script = load_benchmark("hlo_traffic")
    rows = script.movements(_HLO, min_bytes=1 << 20)
    assert [(r["computation"], r["kind"], r["shape"], r["mib"]) for r in rows] == [
        ("body", "dynamic-slice", "bf16[1024,1024]", 2.0), ("body", "pad", "bf16[1024,1032]", 2.015625)]
    assert rows[0]["users"] == ["__cublas$gemm"] and rows[0]["source"].endswith("select/dynamic_slice")
    assert rows[1]["users"] == ["__cublas$gemm"] and rows[1]["source"].endswith("select/dot_general")
    assert script.movements(_HLO, min_bytes=4 << 20) == []


def test_hlo_traffic_script_runs_on_a_small_model(tmp_path):
    from script_loader import load_benchmark

    out = tmp_path / "hlo.json"
    assert load_benchmark("hlo_traffic").main(["--tiny", "--context", "1024", "--batch", "2", "--method", "shadowkv",
                                               "--min-mib", "0", "--json", str(out)]) == 0
    row = json.loads(out.read_text())
    assert row["args"]["method"] == "shadowkv" and isinstance(row["rows"], list)


@pytest.mark.slow  # a GPU study script's smoke test (20-25 s on a 2-core CPU): make test-slow
def test_bench_overlap_script_runs_on_a_small_model(tmp_path):
    """The stream-overlap probe (a GPU question) at toy sizes, kernel interpreted: every kind gives a time
    or a recorded error, never a crash."""
    from script_loader import load_benchmark

    out = tmp_path / "overlap.json"
    load_benchmark("bench_overlap").main(["--tiny", "--batch", "2", "--layers", "2", "--host-chunks", "16",
                                          "--selected", "4", "--splits", "1", "--warps", "4", "--repeats", "1",
                                          "--json", str(out)])
    [row] = json.loads(out.read_text())["rows"]
    for kind in ("attention", "weights", "serial", "pipelined", "pipelined_ordered", "streamed_gemms", "streamed"):
        assert f"{kind}_ms" in row or f"{kind}_error" in row
    assert row["serial_ms"] > 0 and row["pipelined_ms"] > 0 and row["pipelined_ordered_ms"] > 0


def test_plot_labels_and_panels(tmp_path):
    """A micro-batched row has its own label (the plot draws a line per label, so it is not joined to the
    plain step's point at the same batch, and speedups give it its own ratio); the breakdown panel is drawn
    only when a row has a breakdown."""
    import matplotlib.image

    base = dict(context=4096, roofline_step_ms=1.0, roofline_fraction=0.5, bytes_per_step={"pcie": 0},
                prefill_s=0.1, hit_rate=None)
    rows = [dict(base, method="full", batch=b, tokens_per_s=10.0 * b, step_ms=2.0) for b in (1, 2)]
    rows += [dict(base, method="shadowkv", batch=4, tokens_per_s=50.0, step_ms=3.0, micro_batches=[4]),
             dict(base, method="shadowkv", batch=4, tokens_per_s=60.0, step_ms=2.5, micro_batches=[2, 2],
                  value_stream=1, kernel_splits=1)]
    assert [tp.method_label(r) for r in rows[2:]] == ["shadowkv", "shadowkv, micro-batches 2+2, stream 1"]
    on_device = dict(rows[2], placement="device", config={"value_reuse": False})
    assert tp.method_label(on_device) == "shadowkv, values on the device, no value reuse"
    # one ratio per ShadowKV setting, each against the best full-attention row
    assert [(s["shadowkv"], s["ratio"]) for s in tp.speedups(rows)] == [
        ("shadowkv", 2.5), ("shadowkv, micro-batches 2+2, stream 1", 3.0)]
    one = tp.plot(rows, str(tmp_path / "one.png"))
    rows[0].update(no_attention_step_ms=1.0, select_only_step_ms=1.5)
    two = tp.plot(rows, str(tmp_path / "two.png"))
    w1, w2 = matplotlib.image.imread(one).shape[1], matplotlib.image.imread(two).shape[1]
    assert w2 > w1  # the breakdown panel is there only with a breakdown row


@pytest.mark.parametrize("micro_batches", [1, 2])
def test_emulated_reuse_keeps_that_share_of_the_chunks(tiny, micro_batches):
    """--emulate-reuse F: from the second step on, at least F of each step's chunks were selected at the step
    before (the first step has no previous selection); the row says the reuse was emulated."""
    rates = {"hbm_read_bytes_per_s": 1e10, "h2d_bytes_per_s": None}
    limits = Limits(gpu_bytes=GiB, host_bytes=GiB)
    rows = {}
    for f in (0.0, 0.5):
        out = tp.bench(tiny, [640], [tp.shadowkv_factory(CFG, **SKV)], [3], steps=4, limits=limits, rates=rates,
                       progress=lambda *_: None, step=tp.ShadowKVStep(micro_batches, emulated_reuse=f))
        [rows[f]] = out["rows"]
    k = rows[0.5]["config"]["sparse_budget"] // rows[0.5]["config"]["chunk_size"]
    assert rows[0.5]["hit_rate"] >= 3 / 4 * round(0.5 * k) / k  # 3 of 4 steps had a previous selection
    assert rows[0.5]["hit_rate"] > rows[0.0]["hit_rate"]
    assert "emulated_reuse" not in rows[0.0] and rows[0.5]["emulated_reuse"] == 0.5
    assert "emulated reuse 0.5" in tp.markdown([rows[0.5]])
