"""Memory planner: derived bytes match real structures; batches that cannot fit are refused."""

import dataclasses

import jax
import pytest

import shadowkv_jax as sk
from shadowkv_jax.model.llama import init_params
from shadowkv_jax.planner import GiB, Limits, PlanError, max_batch, plan, require_fits, weight_bytes
from shadowkv_jax.shadowkv.memory import state_bytes

CFG = sk.ModelConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                     num_kv_heads=2, head_dim=16, max_position_embeddings=8192)
SKV = sk.ShadowKVConfig(rank=16, chunk_size=8, sparse_budget=64, outlier_chunks=2, value_placement="host")


def test_weights_and_state_bytes_match_real_structures():
    params = init_params(CFG, jax.random.key(0))
    assert weight_bytes(CFG) == sum(x.nbytes for x in jax.tree.leaves(params))
    p = plan(CFG, "full", batch=2, context=1000, max_new_tokens=24)
    cache = sk.KVCache.zeros(CFG, 2, 1024)
    assert p.gpu["kv_cache"] == cache.nbytes()
    s = plan(CFG, SKV, batch=2, context=1000, max_new_tokens=24)
    expect = state_bytes(CFG, dataclasses.replace(SKV, max_new_tokens=24), 1000, batch=2, placement="host")
    assert s.host["values"] == expect["host"] and s.gpu["shadow_state"] == expect["device"]


def test_max_batch_is_the_largest_that_fits_and_larger_is_refused():
    context = 4096
    one = plan(CFG, "full", 1, context, 64)
    limits = Limits(gpu_bytes=int(one.gpu_total * 3.5 / 0.9), host_bytes=GiB, margin=0.10)
    best = max_batch(CFG, "full", context, limits, 64)
    assert best.check(limits) is None
    assert plan(CFG, "full", best.batch + 1, context, 64).check(limits) is not None
    with pytest.raises(PlanError, match=rf"batch={best.batch + 1} at context=4096 needs .* GiB of GPU memory"):
        require_fits(plan(CFG, "full", best.batch + 1, context, 64), limits)


def test_shadowkv_bounded_by_host_memory_says_so():
    context = 4096
    p1 = plan(CFG, SKV, 1, context, 64)
    limits = Limits(gpu_bytes=100 * GiB, host_bytes=int(p1.host_total * 5 / 0.9) + 64, margin=0.10)
    best = max_batch(CFG, SKV, context, limits, 64)
    assert best.batch == 5
    with pytest.raises(PlanError, match="pinned host memory .* XLA_PJRT_GPU_HOST_MEMORY_LIMIT_GB"):
        require_fits(plan(CFG, SKV, 6, context, 64), limits)
    # ShadowKV keeps far less on the GPU than full attention at the same batch
    assert plan(CFG, SKV, 4, context, 64).gpu_total < plan(CFG, "full", 4, context, 64).gpu_total


def test_nothing_fits_is_an_error():
    with pytest.raises(PlanError, match="refused before allocating: batch=1"):
        max_batch(CFG, "full", 4096, Limits(gpu_bytes=1 << 20, host_bytes=GiB))


def test_host_limit_follows_the_xla_variable(monkeypatch):
    monkeypatch.setenv("XLA_PJRT_GPU_HOST_MEMORY_LIMIT_GB", "110")
    assert Limits.host_default(80 * GiB).host_bytes == 110 * GiB
    monkeypatch.delenv("XLA_PJRT_GPU_HOST_MEMORY_LIMIT_GB")
    assert Limits.host_default(80 * GiB).host_bytes == 64 * GiB


def test_replicated_batch_holds_the_copy_source_not_the_prefill():
    """The bench's flow: one prompt's state (values on the device) is prefilled before the batch state
    exists, then copied into each row, its values staged in host RAM and brought back one layer at a time;
    the prefill no longer adds to the batch state, nor do the source's values but for one layer."""
    from shadowkv_jax.planner import decode_activation_bytes, prefill_activation_bytes

    context, new = 4096, 64
    cfg = dataclasses.replace(SKV, max_new_tokens=new)
    one = state_bytes(CFG, cfg, context, batch=1, placement="device")
    one_row, one_values = one["device"], one["by_field"]["values"]
    source = one_row - one_values + one_values // CFG.num_layers
    prefill = prefill_activation_bytes(CFG, 1, context)
    attended = cfg.local_capacity + (cfg.outlier_chunks + cfg.selected_chunks) * cfg.chunk_size + new
    for batch in (1, 40):
        decode = decode_activation_bytes(CFG, batch, attended)
        general = plan(CFG, SKV, batch, context, new)
        bench = plan(CFG, SKV, batch, context, new, replicated=True)
        assert general.gpu["activations"] == max(prefill + one_row, decode)
        batch_state = bench.gpu["shadow_state"] + bench.gpu.get("values", 0)
        assert bench.gpu["activations"] == max(prefill + one_row - batch_state, source, decode)
        on_device = plan(CFG, dataclasses.replace(SKV, value_placement="device"), batch, context, new, replicated=True)
        assert on_device.gpu["values"] == batch * one_values
        assert on_device.gpu["activations"] == max(prefill + one_row - on_device.gpu["shadow_state"]
                                                   - on_device.gpu["values"], source, decode)
    assert plan(CFG, SKV, 40, context, new, replicated=True).gpu_total < plan(CFG, SKV, 40, context, new).gpu_total
    # full attention prefills into the cache in both flows
    assert plan(CFG, "full", 4, context, new, replicated=True).gpu == plan(CFG, "full", 4, context, new).gpu


def test_split_values_fill_the_gpu_then_the_host():
    """value_placement "split": each batch keeps the values of as many rows on the GPU as fit there and the
    rest on the host, so the largest batch exceeds what host memory alone holds; one more row is refused,
    naming the split, and the planned bytes are the state's own."""
    from shadowkv_jax import throughput as tp
    from shadowkv_jax.planner import split_plan

    context, new = 4096, 64
    split = dataclasses.replace(SKV, value_placement="split")
    host_only = plan(CFG, SKV, 1, context, new)
    per_row_values = host_only.host["values"]
    # host room for 4 rows' values; the GPU for the host-only plan of 4 rows plus about 3 more rows' values
    limits = Limits(gpu_bytes=int((plan(CFG, SKV, 4, context, new).gpu_total + 3.5 * per_row_values) / 0.9),
                    host_bytes=int(4.5 * per_row_values / 0.9), margin=0.10)
    assert max_batch(CFG, SKV, context, limits, new).batch == 4
    best = max_batch(CFG, split, context, limits, new)
    assert best.batch > 4 and best.check(limits) is None
    assert best.host["values"] == (best.batch - best.device_value_rows) * per_row_values
    assert best.gpu["values"] == best.device_value_rows * per_row_values
    cfg = dataclasses.replace(split, max_new_tokens=new)
    expect = state_bytes(CFG, cfg, context, best.batch, "split", best.device_value_rows)
    assert best.gpu["shadow_state"] + best.gpu["values"] == expect["device"] and best.host_total == expect["host"]
    # the split is the most rows the GPU holds: one more would not fit it
    more = plan(CFG, split, best.batch, context, new, device_rows=best.device_value_rows + 1)
    assert best.device_value_rows == best.batch or not more.gpu_fits(limits)
    nxt = split_plan(CFG, split, best.batch + 1, context, limits, new)
    with pytest.raises(PlanError, match=rf"batch={best.batch + 1} at context=4096 with the values of "
                                        rf"{nxt.device_value_rows} of the {best.batch + 1} rows on the GPU needs"):
        require_fits(nxt, limits)
    assert tp.bound_by(CFG, split, context, max_batch(CFG, split, context, limits, tp.new_tokens(3), replicated=True),
                       limits, 3) == "gpu+host"
    with pytest.raises(ValueError, match="device_rows=2 needs value_placement='split'"):
        plan(CFG, SKV, 4, context, new, device_rows=2)
