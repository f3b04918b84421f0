"""The micro-batched decode step (shadowkv/pipeline.py) gives what one ShadowKV step over the whole batch gives."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import shadowkv_jax as sk
from shadowkv_jax.decoding import decode_loop
from shadowkv_jax.model.llama import init_params
from shadowkv_jax.sampling import Greedy
from shadowkv_jax.shadowkv.decode import ShadowKVDecode
from shadowkv_jax.shadowkv.pipeline import (SCHEDULE_GROUP_COMPILER_OPTIONS, MicroBatches, PipelinedShadowKV,
                                            compile_grouped, split_state)


def _model(layers):
    cfg = sk.ModelConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=layers, num_heads=4,
                         num_kv_heads=2, head_dim=16, max_position_embeddings=4096, rope_theta=1000.0)
    params = init_params(cfg, jax.random.key(layers))
    params["layers"]["wq"] = params["layers"]["wq"] * 8  # peaked attention: a wrong chunk shows in the logits
    params["layers"]["wk"] = params["layers"]["wk"] * 8
    return sk.Model(cfg, params, None, f"tiny-{layers}")


def _decode(model, attention, carry, consts, first, steps):
    args = (model.params, carry, first, jax.random.key(0), jnp.zeros((0,), jnp.int32), consts)
    kw = dict(config=model.config, sampler=Greedy(), num_steps=steps, attention=attention, return_logits=True)
    with jax.default_matmul_precision("highest"):
        if getattr(attention, "schedule_groups", False):  # compiled as the bench compiles it
            toks, carry, extras = compile_grouped(decode_loop.lower(*args, **kw))(*args)
        else:
            toks, carry, extras = decode_loop(*args, **kw)
    return np.asarray(toks), carry, extras


# four of the six cases run under `make test-slow` only (CI's 20-minute budget): the default suite keeps one
# reference case and the kernel path with a stream; the scheduling groups (experimental, 57 s on 2 cores) are slow
_slow = pytest.mark.slow


@pytest.mark.parametrize("layers,sizes,impl,stream,groups", [
    (1, (1, 2), "reference", None, False), pytest.param(2, (2, 1), "reference", None, False, marks=_slow),
    pytest.param(4, (2, 1), "reference", None, False, marks=_slow),
    pytest.param(3, (1, 2), "pallas", None, False, marks=_slow), (3, (2, 1), "pallas", 1, False),
    pytest.param(4, (1, 2), "pallas", 1, True, marks=_slow)])
def test_two_micro_batches_decode_like_one_batch(layers, sizes, impl, stream, groups):
    """Ragged prompts; the budget selects a strict subset (so selection and value reuse matter); the
    layer counts cover the peeled first and last layers with and without a scan between them. On a GPU
    the kernels run compiled with the values in pinned host memory (interpreted on device memory on CPU);
    there, the XLA products run at full fp32 precision (no TF32), as the kernels' do. `stream`: the kernels
    run as their own calls on that GPU stream, beside the other micro-batch's work; `groups`: in XLA
    scheduling groups with it (the half-iterations traced in the grouped order)."""
    gpu = jax.devices()[0].platform == "gpu"
    placement, tol = ("host", 1e-4) if gpu else ("device", 2e-5)
    model = _model(layers)
    rng = np.random.default_rng(layers)
    prompts = [list(rng.integers(1, 128, n)) for n in (203, 260, 171)]
    cfg = sk.ShadowKVConfig(rank=16, chunk_size=8, sparse_budget=48, outlier_chunks=2, max_new_tokens=8,
                            value_placement=placement, implementation=impl, top_k="xla")
    pre = sk.prefill_prompts(model, prompts, method=cfg)
    st = pre.state
    first = jnp.argmax(pre.next_logits, axis=-1).astype(jnp.int32)
    plain = ShadowKVDecode(cfg, model.config, st.placement, impl, interpret=not gpu)
    mb = split_state(st, sizes)  # before the plain decode, which donates the state
    values = st.values  # read-only: both decodes read the same array
    want_toks, want_carry, want = _decode(model, plain, st.without_values(), values, first, 6)
    got_toks, got_carry, got = _decode(model, PipelinedShadowKV(plain, value_stream=stream, schedule_groups=groups),
                                       mb, values, first, 6)
    print(f"max |dlogit| {np.abs(np.asarray(got['logits']) - np.asarray(want['logits'])).max():.3g}")
    np.testing.assert_array_equal(got_toks, want_toks)
    np.testing.assert_allclose(np.asarray(got["logits"]), np.asarray(want["logits"]), atol=tol, rtol=tol)
    np.testing.assert_allclose(np.asarray(got["metrics"]["hit_rate"]), np.asarray(want["metrics"]["hit_rate"]),
                               atol=1e-6)
    assert 0 < float(np.asarray(want["metrics"]["hit_rate"]).mean()) < 1
    np.testing.assert_array_equal(np.asarray(got_carry.lengths), np.asarray(want_carry.lengths))
    for name in ("prev_selection", "gen_k", "value_cache"):
        joined = np.concatenate([np.asarray(getattr(p, name)) for p in got_carry.parts], axis=1)
        np.testing.assert_allclose(joined, np.asarray(getattr(want_carry, name)), atol=tol, err_msg=name)


def test_micro_batch_sizes_are_checked():
    model = _model(2)
    cfg = sk.ShadowKVConfig(rank=16, chunk_size=8, sparse_budget=48, outlier_chunks=2, max_new_tokens=4,
                            value_placement="device")
    st = sk.prefill_prompts(model, [[5] * 200, [6] * 200], method=cfg).state
    for sizes in ((2, 1), (2, 0), (1, 1, 0)):
        with pytest.raises(ValueError, match=r"micro-batch sizes=.* must be two positive sizes summing to the batch 2"):
            split_state(st, sizes)
    three = MicroBatches((st.without_values(),) * 3)
    with pytest.raises(ValueError, match="schedule_groups=True needs value_stream"):
        PipelinedShadowKV(ShadowKVDecode(cfg, model.config), schedule_groups=True).decode_step(
            model.params, model.config, split_state(st, (1, 1)), jnp.zeros((2,), jnp.int32), st.values)
    with pytest.raises(ValueError, match="runs 2 micro-batches, got 3"):
        PipelinedShadowKV(ShadowKVDecode(cfg, model.config)).decode_step(model.params, model.config, three,
                                                                          jnp.zeros((6,), jnp.int32), st.values)


@pytest.mark.slow  # 34 s on CI's machine; the grouped decode (above) is under make test-slow too
def test_schedule_groups_reach_every_kernel_call():
    """With schedule_groups, the lowered step's kernel calls (one per micro-batch and layer iteration: the
    first, the loop body, the last) each get their own scheduling group after group_stream_calls, a group
    that holds GEMMs (the other micro-batch's work traced with the call); and the module still compiles."""
    import re

    from shadowkv_jax.kernels.common import group_stream_calls

    model = _model(3)
    cfg = sk.ShadowKVConfig(rank=16, chunk_size=8, sparse_budget=48, outlier_chunks=2, max_new_tokens=4,
                            value_placement="device", implementation="pallas", top_k="xla")
    st = sk.prefill_prompts(model, [[5] * 200, [7] * 230], method=cfg).state
    # compiled on a GPU: XLA's stream pass refuses the calls an interpreted kernel nests in its stream call
    decode = ShadowKVDecode(cfg, model.config, st.placement, "pallas", interpret=jax.devices()[0].platform != "gpu")
    pipelined = PipelinedShadowKV(decode, value_stream=1, schedule_groups=True)
    lowered = decode_loop.lower(model.params, split_state(st, (1, 1)), jnp.zeros((2,), jnp.int32), jax.random.key(0),
                                jnp.zeros((0,), jnp.int32), st.values, config=model.config, sampler=Greedy(),
                                num_steps=2, attention=pipelined)
    assert group_stream_calls(lowered.compiler_ir("stablehlo")) == 6
    calls = [l for l in lowered.as_text().splitlines() if "call @compute_on" in l]  # the stream calls themselves
    groups = [re.search(r'_scheduling_group_id = "(\d+)"', l).group(1) for l in calls]
    assert len(calls) == 6 and len(set(groups)) == 6
    gemms = [l for l in lowered.as_text().splitlines() if "stablehlo.dot_general" in l]
    for g in groups:  # each group holds the other micro-batch's GEMMs too
        assert any(f'_scheduling_group_id = "{g}"' in l for l in gemms), g
    lowered.compile(SCHEDULE_GROUP_COMPILER_OPTIONS)


def test_each_kernel_holds_the_previous_kernels_prepared_operands():
    """Every kernel after the step's first takes the previous micro-batch's kernel maxima and the operands
    prepared for that kernel as `after` (query, chunk ids, padded hit slots; W is read in place): held until then,
    their memory cannot go to the other micro-batch's work in between (shadowkv/pipeline.py)."""
    model = _model(3)
    cfg = sk.ShadowKVConfig(rank=16, chunk_size=8, sparse_budget=48, outlier_chunks=2, max_new_tokens=4,
                            value_placement="device", implementation="pallas", top_k="xla")
    st = sk.prefill_prompts(model, [[5] * 200, [7] * 230], method=cfg).state
    decode = ShadowKVDecode(cfg, model.config, st.placement, "pallas", interpret=True)
    step = lambda carry: PipelinedShadowKV(decode).decode_step(model.params, model.config, carry,
                                                                jnp.zeros((2,), jnp.int32), st.values)

    def kernels(jaxpr):  # the attention kernel's launches, in trace order, with their operands
        for eqn in jaxpr.eqns:
            name = eqn.params.get("name", eqn.params.get("name_and_src_info"))  # JAX 0.10 / 0.11
            if eqn.primitive.name == "pallas_call" and "gather_reconstruct" in str(name):
                yield eqn.invars
            for p in eqn.params.values():
                for sub in (p if isinstance(p, (tuple, list)) else [p]):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        yield from kernels(inner)

    launches = list(kernels(jax.make_jaxpr(step)(split_state(st, (1, 1))).jaxpr))
    first, later = launches[0], launches[1:]
    assert later and all(len(l) == len(first) + 1 + 3 for l in later)  # maxima + 3 prepared (value reuse on)
    # the held operands have the shapes of the launch's own query, chunk ids and hit slots (the first launch's
    # operands: layers, q, A, W, chunk ids, four RoPE tables, values, hits, value cache, then the exact segments)
    shapes = lambda vs: [tuple(v.aval.shape) for v in vs]
    q, chunks, hits = shapes(first)[1], shapes(first)[4], shapes(first)[10]
    for l in later:
        assert shapes(l)[-3:] == [q, chunks, hits]
