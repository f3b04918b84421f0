"""ShadowKV core: exactness against full attention, factorization, validation, ragged batches,
memory accounting, degenerate inputs, host placement, saved states."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import shadowkv_jax as sk
from shadowkv_jax.model.llama import init_params
from shadowkv_jax.shadowkv.factorize import factorize, subspace_agreement
from shadowkv_jax.shadowkv.memory import state_bytes
from shadowkv_jax.shadowkv.prefill import chunk_outlier_scores


@pytest.fixture(scope="module")
def english_ids(smollm2, english_long):
    ids = smollm2.tokenizer.encode(english_long)
    assert len(ids) >= 600
    return ids


def exact_config(model_cfg, prompt_len, c=8, max_new=64):
    """Full rank, no outliers, a budget covering every chunk: ShadowKV must equal full attention."""
    n_c = (prompt_len - 4 * c) // c
    return sk.ShadowKVConfig(rank=model_cfg.num_kv_heads * model_cfg.head_dim, chunk_size=c,
                             sparse_budget=n_c * c, outlier_chunks=0, local_chunks=4,
                             max_new_tokens=max_new)


def tiny_model(num_heads, num_kv_heads, head_dim=16, seed=0):
    cfg = sk.ModelConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=2,
                         num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim,
                         max_position_embeddings=4096, rope_theta=1000.0)
    params = init_params(cfg, jax.random.key(seed))
    # larger q/k weights give peaked attention, so a wrong key would show in the logits
    params["layers"]["wq"] = params["layers"]["wq"] * 8
    params["layers"]["wk"] = params["layers"]["wk"] * 8
    return sk.Model(cfg, params, None, f"tiny-{num_heads}x{num_kv_heads}")


def _compare(model, ids, method, steps):
    [a] = sk.generate(model, [ids], method=method, max_new_tokens=steps, return_logits=True)
    [b] = sk.generate(model, [ids], method="full", max_new_tokens=steps, return_logits=True)
    return a, b, float(np.abs(a.stats["logits"] - b.stats["logits"]).max())


def test_exactness_smollm2(smollm2, english_ids):
    ids = english_ids[:333]  # not a multiple of the chunk size: a remainder joins the local window
    a, b, err = _compare(smollm2, ids, exact_config(smollm2.config, len(ids)), steps=64)
    print(f"SmolLM2 exactness over 64 steps: max |dlogit| = {err:.3g}")
    assert err < 1e-3, err
    assert a.token_ids == b.token_ids
    assert a.stats["hit_rate"] == 1.0  # every chunk selected every step


@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 1)], ids=["MHA", "MQA"])
def test_exactness_tiny(heads, kv_heads):
    model = tiny_model(heads, kv_heads)
    ids = list(np.random.default_rng(0).integers(1, 128, 203))
    _, _, err = _compare(model, ids, exact_config(model.config, len(ids)), steps=64)
    print(f"{heads}x{kv_heads} exactness: max |dlogit| = {err:.3g}")
    assert err < 1e-4, err


def test_sparse_config_differs_but_stays_close(smollm2, english_ids):
    """A real sparse setting must actually change the computation (the test above is not vacuous)."""
    ids = english_ids[:400]
    cfg = sk.ShadowKVConfig(rank=48, chunk_size=8, sparse_budget=64, outlier_chunks=2, max_new_tokens=16)
    a, b, err = _compare(smollm2, ids, cfg, steps=8)
    assert err > 1e-3
    assert 0.0 <= a.stats["hit_rate"] <= 1.0
    assert np.isfinite(a.stats["logits"]).all()


def test_factorization_error_decreases_with_rank(smollm2, english_ids):
    k = jax.random.normal(jax.random.key(0), (1, 512, 96)) @ jnp.diag(jnp.linspace(3, 0.01, 96))
    errs = []
    s = np.linalg.svd(np.asarray(k[0]), compute_uv=False)
    for r in (4, 8, 16, 32, 64, 96):
        a, w = factorize(k, r, "svd")
        err = float(jnp.linalg.norm(k - a @ w))
        errs.append(err)
        np.testing.assert_allclose(err, np.sqrt((s[r:] ** 2).sum()), rtol=1e-3, atol=1e-3)
    assert all(e1 >= e2 - 1e-4 for e1, e2 in zip(errs, errs[1:])), errs
    assert errs[-1] < 1e-3


def test_gram_route_agrees_with_svd():
    k = jax.random.normal(jax.random.key(1), (2, 700, 64)) @ jnp.diag(jnp.geomspace(10, 0.01, 64))
    for r in (8, 32):
        a1, w1 = factorize(k, r, "svd")
        a2, w2 = factorize(k, r, "gram")
        agree = float(subspace_agreement(w1[0], w2[0]))
        assert agree > 0.999, agree
        np.testing.assert_allclose(np.asarray(a1 @ w1), np.asarray(a2 @ w2), atol=2e-3)


def test_config_validation(smollm2):
    with pytest.raises(sk.ShadowKVConfigError, match="sparse_budget=100 must be a multiple of chunk_size=8"):
        sk.ShadowKVConfig(sparse_budget=100)
    with pytest.raises(sk.ShadowKVConfigError, match="factorization='qr'"):
        sk.ShadowKVConfig(factorization="qr")
    with pytest.raises(sk.ShadowKVConfigError, match="rank=0"):
        sk.ShadowKVConfig(rank=0)
    with pytest.raises(sk.ShadowKVConfigError, match="rank=200 must be <= num_kv_heads \\* head_dim"):
        sk.ShadowKVConfig(rank=200).validate(smollm2.config)
    cfg = sk.ShadowKVConfig(rank=32, sparse_budget=128, outlier_chunks=4)
    with pytest.raises(sk.GenerationError, match="too short .* at least 192 tokens"):
        sk.generate(smollm2, [[5] * 100], method=cfg)
    with pytest.raises(sk.GenerationError, match="exceeds .*max_new_tokens=1024"):
        sk.generate(smollm2, [[5] * 300], method=cfg, max_new_tokens=2000)


def test_for_model_scales_the_reference_defaults(smollm2):
    cfg = sk.ShadowKVConfig.for_model(smollm2, 4096)
    assert cfg.rank == 48 and cfg.chunk_size == 8 and cfg.local_chunks == 4
    assert cfg.sparse_budget == 128 and cfg.outlier_chunks == 3  # ~3% of 4K
    big = sk.ModelConfig(vocab_size=10, hidden_size=4096, intermediate_size=14336, num_layers=32,
                         num_heads=32, num_kv_heads=8, head_dim=128)
    ref = sk.ShadowKVConfig.for_model(big, 131072)
    assert (ref.rank, ref.sparse_budget, ref.outlier_chunks) == (160, 2048, 48)  # the reference's


def test_ragged_batch_equals_each_alone(smollm2, english_ids):
    prompts = [english_ids[:260], english_ids[40:420], english_ids[100:371], english_ids[:512]]
    cfg = sk.ShadowKVConfig(rank=48, chunk_size=8, sparse_budget=96, outlier_chunks=2, max_new_tokens=16)
    batch = sk.generate(smollm2, prompts, method=cfg, max_new_tokens=12, return_logits=True)
    for p, rb in zip(prompts, batch):
        [ra] = sk.generate(smollm2, [p], method=cfg, max_new_tokens=12, return_logits=True)
        assert rb.token_ids == ra.token_ids
        n = len(ra.token_ids) + 1
        assert np.abs(rb.stats["logits"][:n] - ra.stats["logits"][:n]).max() < 2e-3


def test_memory_function_matches_state(smollm2, english_ids):
    cfg = sk.ShadowKVConfig(rank=48, chunk_size=8, sparse_budget=96, outlier_chunks=2, max_new_tokens=16)
    pre = sk.prefill_prompts(smollm2, [english_ids[:300], english_ids[:377]], method=cfg)
    real = pre.state.nbytes_by_placement()
    predicted = state_bytes(smollm2.config, cfg, 377, batch=2, placement=pre.state.placement)
    assert predicted["device"] == real["device"] and predicted["host"] == real["host"]
    direct = sum(x.nbytes for x in jax.tree.leaves(pre.state))
    assert direct == real["device"] + real["host"]


def test_degenerate_inputs_give_no_nan(smollm2):
    cfg = sk.ShadowKVConfig(rank=32, chunk_size=8, sparse_budget=64, outlier_chunks=2, max_new_tokens=8)
    [r] = sk.generate(smollm2, [[42] * 300], method=cfg, max_new_tokens=8, return_logits=True)
    assert np.isfinite(r.stats["logits"]).all()
    # all-zero keys: cosine guard in the outlier score and a zero landmark
    zeros = jnp.zeros((1, 2, 5, 8, 16))
    assert np.isfinite(np.asarray(chunk_outlier_scores(zeros, zeros.mean(axis=3)))).all()
    model = tiny_model(4, 2)
    params = dict(model.params, layers=dict(model.params["layers"],
                                            wk=jnp.zeros_like(model.params["layers"]["wk"])))
    zero_k = dataclasses.replace(model, params=params)
    ids = list(range(1, 120))
    cfg = sk.ShadowKVConfig(rank=8, chunk_size=4, sparse_budget=16, outlier_chunks=2, max_new_tokens=8)
    [r] = sk.generate(zero_k, [ids], method=cfg, max_new_tokens=8, return_logits=True)
    assert np.isfinite(r.stats["logits"]).all()


def test_host_placement_matches_device(smollm2, english_ids):
    """Values in pinned host memory (gathered by a host computation) give the same decode."""
    base = sk.ShadowKVConfig(rank=48, chunk_size=8, sparse_budget=96, outlier_chunks=2, max_new_tokens=16)
    ids = english_ids[:300]
    outs = {}
    for placement in ("host", "device"):
        cfg = dataclasses.replace(base, value_placement=placement)
        pre = sk.prefill_prompts(smollm2, [ids], method=cfg, max_new_tokens=10)
        assert pre.state.placement == placement
        assert pre.state.values.sharding.memory_kind == ("pinned_host" if placement == "host" else "device")
        [outs[placement]] = sk.decode_prefilled(smollm2, pre, max_new_tokens=10, return_logits=True)
    assert outs["host"].token_ids == outs["device"].token_ids
    np.testing.assert_allclose(outs["host"].stats["logits"], outs["device"].stats["logits"], atol=1e-5)


@pytest.mark.parametrize("impl", ["reference", "pallas"])
def test_split_placement_matches_device(smollm2, english_ids, tmp_path, impl):
    """Values split by rows (the first on the host, the last on the device) give the device decode's tokens
    and logits, for a ragged batch of three with the split inside it; the split state's memory is accounted
    by placement, and a saved split state comes back split. The interpreted kernel cannot read pinned host
    memory on a CPU, so there both parts stay on the device (the kernel's own test covers host memory on
    a GPU)."""
    from shadowkv_jax.kernels.common import SplitValues
    from shadowkv_jax.shadowkv.checkpoint import load_prefilled, save_prefilled
    from shadowkv_jax.shadowkv.state import device_value_rows, place_values

    cfg = sk.ShadowKVConfig(rank=48, chunk_size=8, sparse_budget=96, outlier_chunks=2, max_new_tokens=16,
                            value_placement="device", implementation=impl, top_k="xla")
    prompts = [english_ids[:300], english_ids[40:377], english_ids[7:333]]
    pre = lambda: sk.prefill_prompts(smollm2, prompts, method=cfg, max_new_tokens=6)
    want = sk.decode_prefilled(smollm2, pre(), max_new_tokens=6, return_logits=True)
    split = pre()
    st = place_values(split.state, "split", device_rows=1)
    assert st.placement == "split" and isinstance(st.values, SplitValues) and device_value_rows(st) == 1
    if impl == "reference":
        assert st.values.host.sharding.memory_kind == "pinned_host"
    else:
        on_device = jax.sharding.SingleDeviceSharding(jax.devices()[0], memory_kind="device")
        st = dataclasses.replace(st, values=SplitValues(jax.device_put(st.values.host, on_device), st.values.device))
    per_row = st.values.device.nbytes
    whole = split.state.nbytes_by_placement()
    assert st.nbytes_by_placement() == {"device": whole["device"] - 2 * per_row, "host": 2 * per_row}
    on_device = state_bytes(smollm2.config, cfg, 377, batch=3, placement="device")
    expect = state_bytes(smollm2.config, cfg, 377, batch=3, placement="split", device_rows=1)
    assert expect["host"] == on_device["by_field"]["values"] // 3 * 2
    assert expect["device"] + expect["host"] == on_device["device"]
    if impl == "reference":
        save_prefilled(str(tmp_path / "split"), dataclasses.replace(split, state=st))
        restored = load_prefilled(str(tmp_path / "split"))
        assert restored.state.placement == "split" and device_value_rows(restored.state) == 1
        np.testing.assert_array_equal(np.asarray(restored.state.values.host), np.asarray(st.values.host))
    got = sk.decode_prefilled(smollm2, dataclasses.replace(split, state=st), max_new_tokens=6, return_logits=True)
    for a, b in zip(got, want):
        assert a.token_ids == b.token_ids
        # all-device values run the kernel in more, smaller splits (DEVICE_VALUES_LAUNCH): fp32 sums in
        # another order, 4e-5 apart at logits up to 16
        np.testing.assert_allclose(a.stats["logits"], b.stats["logits"], atol=1e-4 if impl == "pallas" else 1e-5)


def test_place_values_refuses_bad_splits_and_keeps_whole_ones_whole(smollm2, english_ids):
    from shadowkv_jax.shadowkv.state import place_values

    cfg = sk.ShadowKVConfig(rank=48, chunk_size=8, sparse_budget=96, outlier_chunks=2, max_new_tokens=16,
                            value_placement="device")
    st = sk.prefill_prompts(smollm2, [english_ids[:300]] * 2, method=cfg, max_new_tokens=4).state
    for bad in (3, -1, None):
        with pytest.raises(ValueError, match=rf"device_rows={bad} must be an integer in \[0, batch=2\]"):
            place_values(st, "split", device_rows=bad)
    with pytest.raises(ValueError, match="device_rows=1 is for placement='split' only"):
        place_values(st, "host", device_rows=1)
    assert place_values(st, "split", device_rows=0).placement == "host"
    assert place_values(st, "split", device_rows=2).placement == "device"


def test_saved_state_decodes_like_a_fresh_prefill(smollm2, english_ids, tmp_path):
    from shadowkv_jax.shadowkv.checkpoint import load_prefilled, save_prefilled

    cfg = sk.ShadowKVConfig(rank=48, chunk_size=8, sparse_budget=96, outlier_chunks=2, max_new_tokens=16,
                            value_placement="host")
    pre = sk.prefill_prompts(smollm2, [english_ids[:300]], method=cfg, max_new_tokens=10)
    save_prefilled(str(tmp_path / "state"), pre)
    [fresh] = sk.decode_prefilled(smollm2, pre, max_new_tokens=10, return_logits=True)
    for _ in range(2):  # decode the restored state twice: a state can be reused via the checkpoint
        restored = load_prefilled(str(tmp_path / "state"))
        assert restored.state.placement == "host"
        assert restored.state.values.sharding.memory_kind == "pinned_host"
        [again] = sk.decode_prefilled(smollm2, restored, max_new_tokens=10, return_logits=True)
        assert again.token_ids == fresh.token_ids
        np.testing.assert_allclose(again.stats["logits"], fresh.stats["logits"], atol=1e-6)


def test_two_thousand_generated_tokens_none_dropped():
    """Exact settings: 2,000 generated tokens match full attention step for step, and every one of
    them sits in the state's generated-token buffer."""
    model = tiny_model(4, 2, seed=3)
    ids = list(np.random.default_rng(1).integers(1, 128, 1021))
    cfg = exact_config(model.config, len(ids), max_new=2000)
    n = 2000
    pre = sk.prefill_prompts(model, [ids], method=cfg)
    [a] = sk.decode_prefilled(model, pre, max_new_tokens=n, return_logits=True)
    [b] = sk.generate(model, [ids], method="full", max_new_tokens=n, return_logits=True)
    assert a.stats["generated_tokens"] == n == b.stats["generated_tokens"]
    assert a.token_ids == b.token_ids
    err = np.abs(a.stats["logits"] - b.stats["logits"]).max()
    assert err < 1e-3, err
    # the decode consumed `pre`; run the loop again by hand to look at the final state
    from shadowkv_jax.decoding import decode_loop
    from shadowkv_jax.shadowkv.decode import ShadowKVDecode

    pre = sk.prefill_prompts(model, [ids], method=cfg)
    first = jnp.argmax(pre.next_logits, -1).astype(jnp.int32)
    _, final, _ = decode_loop(model.params, pre.state.without_values(), first, jax.random.key(0),
                              jnp.zeros((0,), jnp.int32), pre.state.values, config=model.config,
                              sampler=sk.Greedy(), num_steps=n - 1,
                              attention=ShadowKVDecode(cfg, model.config, pre.state.placement))
    assert int(final.lengths[0]) == len(ids) + n - 1
    written = np.abs(np.asarray(final.gen_k)).sum(axis=(0, 2, 4))[0]  # [N_gen] per slot
    assert (written[: n - 1] > 0).all() and (written[n - 1:] == 0).all()


def test_more_than_max_new_tokens_is_an_error(smollm2):
    cfg = sk.ShadowKVConfig(rank=32, sparse_budget=64, outlier_chunks=1, max_new_tokens=8)
    with pytest.raises(sk.GenerationError, match="max_new_tokens=9 exceeds"):
        sk.generate(smollm2, [[7] * 200], method=cfg, max_new_tokens=9)
    pre = sk.prefill_prompts(smollm2, [[7] * 200], method=cfg)
    with pytest.raises(sk.GenerationError, match="max_new_tokens=9 exceeds ShadowKVConfig.max_new_tokens=8"):
        sk.decode_prefilled(smollm2, pre, max_new_tokens=9)


def test_pallas_decode_matches_reference(smollm2, english_ids):
    """The decode step with the fused kernel, and with the chunk selection kernel too (interpreted on CPU), equals
    the jnp path; ragged batch."""
    base = sk.ShadowKVConfig(rank=48, chunk_size=8, sparse_budget=96, outlier_chunks=2, max_new_tokens=8,
                             value_placement="device")
    prompts = [english_ids[:300], english_ids[50:427]]
    out = {}
    for impl, top_k in (("reference", "xla"), ("pallas", "xla"), ("pallas", "pallas")):
        cfg = dataclasses.replace(base, implementation=impl, top_k=top_k)
        out[impl, top_k] = sk.generate(smollm2, prompts, method=cfg, max_new_tokens=6, return_logits=True)
        assert all(r.stats["implementation"] == impl for r in out[impl, top_k])
    for kernels in (("pallas", "xla"), ("pallas", "pallas")):  # the fused kernel, then also the selection kernel
        for ref, ker in zip(out["reference", "xla"], out[kernels]):
            assert ref.token_ids == ker.token_ids
            err = np.abs(ref.stats["logits"] - ker.stats["logits"]).max()
            assert err < 2e-3, (kernels, err)


@pytest.mark.slow
def test_pallas_decode_exact_at_llama_attention_shapes():
    """fp32, exact CPU matmuls: the interpreted kernel equals the jnp path at Llama-3.1-8B's attention shapes
    (32 q / 8 KV heads, D 128, llama3 RoPE scaling, rank 160, chunk 8), 2 layers, 4,096 tokens. Separates
    kernel error from the bf16 / TF32 rounding of the GPU comparison (BENCHMARKS.md). ~4 min on 2 cores."""
    from shadowkv_jax.shapes import LLAMA_3_1_8B

    cfg = LLAMA_3_1_8B.replace(num_layers=2, dtype="float32", vocab_size=2048)
    model = sk.Model(cfg, init_params(cfg, jax.random.key(0)), None, "llama-3.1-8b attention shapes, 2 layers")
    rng = np.random.default_rng(0)
    prompts = [list(rng.integers(3, cfg.vocab_size, 4096 - 13 * i)) for i in range(2)]
    base = sk.ShadowKVConfig.for_model(model, 4096, value_placement="device", max_new_tokens=5)
    assert (base.rank, base.chunk_size) == (160, 8)
    out = {impl: sk.generate(model, prompts, method=dataclasses.replace(base, implementation=impl, top_k="xla"),
                             max_new_tokens=4, return_logits=True) for impl in ("reference", "pallas")}
    for ref, ker in zip(out["reference"], out["pallas"]):
        assert ref.token_ids == ker.token_ids
        assert np.abs(ref.stats["logits"] - ker.stats["logits"]).max() < 1e-4


def test_explicit_pallas_never_falls_back(smollm2):
    cfg = sk.ShadowKVConfig(rank=40, sparse_budget=64, outlier_chunks=1, max_new_tokens=8,
                            implementation="pallas")
    with pytest.raises(sk.GenerationError, match="implementation='pallas' cannot run this config: rank=40"):
        sk.generate(smollm2, [[7] * 300], method=cfg, max_new_tokens=4)


def test_landmark_axis_is_aligned_and_alignment_slots_never_valid():
    """The selectable-chunk axis is padded to a multiple of SELECT_ALIGN (XLA would otherwise copy every
    layer's landmarks to pad the score GEMM); the padding slots carry id n_c, past every sequence."""
    from shadowkv_jax.shadowkv.state import SELECT_ALIGN

    model = tiny_model(4, 2)
    ids = list(np.random.default_rng(1).integers(1, 128, 203))
    cfg = sk.ShadowKVConfig(rank=16, chunk_size=8, sparse_budget=32, outlier_chunks=3, max_new_tokens=4)
    st = sk.prefill_prompts(model, [ids], method=cfg).state
    n_c = (203 - 4 * 8) // 8  # 21 chunks, 18 selectable
    assert st.landmarks.shape[3] == st.chunk_ids.shape[3] == SELECT_ALIGN * 2
    ids_ = np.asarray(st.chunk_ids)
    assert (ids_[..., 18:] == n_c).all() and (ids_[..., :18] < n_c).all()
    assert not np.asarray(st.landmarks[..., 18:, :]).any()


@pytest.mark.parametrize("top_k,in_place", [("xla", False), ("pallas", True)], ids=["xla", "kernels"])
def test_selection_is_the_top_k_of_the_groups_max_softmax(top_k, in_place):
    """ALGORITHM.md step 2, in float64: softmax over chunks per query head, max over the G heads of a group,
    top-k (random scores: no near-ties between fp32 and float64). Padded chunks (id >= num_chunks) never win."""
    from shadowkv_jax.shadowkv.decode import select_chunks

    rng = np.random.default_rng(4)
    b, hkv, g, d, n, k, layers = 2, 2, 3, 32, 70, 9, 2
    q = rng.standard_normal((b, hkv * g, d)).astype(np.float32)
    lm = rng.standard_normal((layers, b, hkv, n, d)).astype(np.float32)
    chunk_ids = np.broadcast_to(np.arange(n, dtype=np.int32), (b, hkv, n)) + 100  # ids are not slot numbers
    num_chunks = np.array([100 + n, 100 + 50], np.int32)  # the second sequence: 20 padded slots
    layer = 1
    # in place: the stacked landmarks and chunk ids (another layer's ids differ: reading them would fail)
    stacked_ids = np.stack([chunk_ids[..., ::-1], chunk_ids])
    args = (jnp.asarray(q), jnp.asarray(lm if in_place else lm[layer]),
            jnp.asarray(stacked_ids if in_place else chunk_ids), jnp.asarray(num_chunks))
    got = select_chunks(*args, k, top_k=top_k, interpret=True, layer=jnp.int32(layer) if in_place else None)
    q64 = q.astype(np.float64).reshape(b, hkv, g, d)
    s = np.einsum("bhgd,bhnd->bhgn", q64, lm[layer].astype(np.float64)) / np.sqrt(d)
    s = np.where((chunk_ids < num_chunks[:, None, None])[:, :, None], s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    score = (p / p.sum(-1, keepdims=True)).max(axis=2)
    want = np.sort(np.take_along_axis(chunk_ids, np.argsort(-score, axis=-1)[..., :k], -1), -1)
    np.testing.assert_array_equal(np.sort(np.asarray(got), -1), want)
    assert (np.asarray(got)[1] < 150).all()
