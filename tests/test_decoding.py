"""Full-attention decoding: scan loop vs step-by-step, prefill+decode vs one forward, ragged batches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import shadowkv_jax as sk
from shadowkv_jax.api import pad_batch
from shadowkv_jax.decoding import decode_loop, decode_step, prefill
from shadowkv_jax.model.llama import init_params

PROMPTS = ["What is the capital of France?",
           "Write a haiku about the sea.",
           "List three prime numbers and explain why each one is prime, in one sentence each."]


@pytest.fixture(scope="module")
def tiny():
    """A random 3-layer GQA model (G = 2) for fast structural checks."""
    cfg = sk.ModelConfig(vocab_size=97, hidden_size=48, intermediate_size=96, num_layers=3, num_heads=4,
                         num_kv_heads=2, head_dim=12, max_position_embeddings=256, rope_theta=500.0)
    return sk.Model(cfg, init_params(cfg, jax.random.key(1)), None, "tiny-random")


def test_scan_loop_equals_step_by_step(smollm2):
    cfg = smollm2.config
    ids = sk.api.encode_prompts(smollm2, PROMPTS[0], chat=None)
    tokens, lengths = pad_batch(ids)
    n = 12
    logits, cache = prefill(smollm2.params, tokens, lengths, config=cfg, capacity=128)
    first = jnp.argmax(logits, -1).astype(jnp.int32)
    loop_tokens, _, _ = decode_loop(smollm2.params, cache, first, jax.random.key(0),
                                    jnp.zeros((0,), jnp.int32), config=cfg, sampler=sk.Greedy(), num_steps=n)
    logits, cache = prefill(smollm2.params, tokens, lengths, config=cfg, capacity=128)
    tok, stepped = first, []
    for _ in range(n):
        logits, cache = decode_step(smollm2.params, cache, tok, config=cfg)
        tok = jnp.argmax(logits, -1).astype(jnp.int32)
        stepped.append(int(tok[0]))
    assert np.asarray(loop_tokens)[0].tolist() == stepped


def test_prefill_then_decode_equals_full_forward(smollm2):
    [r] = sk.generate(smollm2, PROMPTS[2], max_new_tokens=24, return_logits=True, chat=True)
    assert len(r.token_ids) >= 8, r.text
    seq = r.prompt_ids + r.token_ids
    full = np.asarray(sk.forward(smollm2, np.asarray(seq)[None]))[0]
    # decode logits i predict token at position len(prompt)+i
    n = len(r.token_ids)
    dec = r.stats["logits"][:n]
    ref = full[len(r.prompt_ids) - 1: len(r.prompt_ids) - 1 + n]
    err = np.abs(dec - ref).max()
    assert err < 2e-3, f"max |Δlogit| = {err}"
    assert (dec.argmax(-1) == ref.argmax(-1)).all()


def test_ragged_batch_equals_each_alone(smollm2):
    batch = sk.generate(smollm2, PROMPTS, max_new_tokens=16, return_logits=True)
    for prompt, rb in zip(PROMPTS, batch):
        [ra] = sk.generate(smollm2, prompt, max_new_tokens=16, return_logits=True)
        assert rb.prompt_ids == ra.prompt_ids
        assert rb.token_ids == ra.token_ids, (prompt, rb.text, ra.text)
        n = len(ra.token_ids) + 1
        assert np.abs(rb.stats["logits"][:n] - ra.stats["logits"][:n]).max() < 2e-3


def test_padding_is_never_attended(tiny):
    """Changing the pad tokens (and the padded length) must not change any real logit."""
    cfg = tiny.config
    ids = [[5, 6, 7, 8, 9, 10, 11], [3, 4]]
    tokens, lengths = pad_batch(ids, bucket=16)
    noisy = tokens.at[1, 2:].set(42)
    a, ca = prefill(tiny.params, tokens, lengths, config=cfg, capacity=32)
    b, cb = prefill(tiny.params, noisy, lengths, config=cfg, capacity=32)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    for _ in range(3):  # the decode steps too
        tok = jnp.argmax(a, -1).astype(jnp.int32)
        a, ca = decode_step(tiny.params, ca, tok, config=cfg)
        b, cb = decode_step(tiny.params, cb, tok, config=cfg)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    # and the short sequence alone (no padding partner) agrees with its batched self
    alone, _ = prefill(tiny.params, jnp.asarray([[3, 4]], jnp.int32), jnp.asarray([2], jnp.int32),
                       config=cfg, capacity=32)
    np.testing.assert_allclose(np.asarray(alone)[0], np.asarray(prefill(
        tiny.params, tokens, lengths, config=cfg, capacity=32)[0])[1], atol=1e-5)


def test_tiny_decode_matches_forward(tiny):
    ids = np.array([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]], np.int32)
    full = np.asarray(sk.forward(tiny, ids))[0]
    logits, cache = prefill(tiny.params, jnp.asarray(ids[:, :4]), jnp.asarray([4], jnp.int32),
                            config=tiny.config, capacity=16)
    got = [np.asarray(logits)[0]]
    for t in range(4, 10):
        logits, cache = decode_step(tiny.params, cache, jnp.asarray(ids[:, t]), config=tiny.config)
        got.append(np.asarray(logits)[0])
    np.testing.assert_allclose(np.stack(got[:-1]), full[3:9], atol=1e-5, rtol=1e-5)
    assert int(cache.lengths[0]) == 10


def test_decode_rows_padded_for_the_gemms_change_nothing(tiny, monkeypatch):
    """A decode step's rows padded to a multiple of 16 for the dense work (model/llama.DECODE_ROW_MULTIPLE, on by
    default on GPUs only; forced here): the same logits and cache as unpadded, with 3 sequences (13 zero rows) and
    none for one sequence or a prompt."""
    from shadowkv_jax.model import llama

    assert llama.decode_row_padding(3, 1) == (13 if jax.default_backend() == "gpu" else 0)
    rng = np.random.default_rng(4)
    tokens = jnp.asarray(rng.integers(1, 97, (3, 6)), jnp.int32)
    lengths = jnp.asarray([6, 4, 5], jnp.int32)

    def run():
        logits, cache = prefill(tiny.params, tokens, lengths, config=tiny.config, capacity=16)
        out = []
        for t in range(3):
            logits, cache = decode_step(tiny.params, cache, tokens[:, t], config=tiny.config)
            out.append(np.asarray(logits))
        return np.stack(out), cache

    monkeypatch.setattr(llama, "DECODE_ROW_MULTIPLE", {})
    want, want_cache = run()
    monkeypatch.setattr(llama, "DECODE_ROW_MULTIPLE", {jax.default_backend(): 16})
    assert [llama.decode_row_padding(3, 1), llama.decode_row_padding(1, 1), llama.decode_row_padding(3, 6)] == [13, 0, 0]
    jax.clear_caches()  # the padding is chosen when the step is traced
    got, got_cache = run()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(got_cache.k), np.asarray(want_cache.k), atol=1e-6)
    jax.clear_caches()


def test_samplers():
    logits = jnp.asarray([[0.0, 5.0, 1.0, -2.0], [3.0, 0.0, 0.0, 2.9]])
    key = jax.random.key(0)
    assert sk.Greedy()(logits, key).tolist() == [1, 0]
    # a tiny nucleus keeps only the top token
    assert sk.TopP(p=0.01)(logits, key).tolist() == [1, 0]
    # top-p 0.6 on row 1 keeps tokens 0 and 3 only
    draws = {int(sk.TopP(p=0.6)(logits, k)[1]) for k in jax.random.split(key, 64)}
    assert draws == {0, 3}
    hot = {int(sk.Temperature(5.0)(logits, k)[0]) for k in jax.random.split(key, 64)}
    assert len(hot) >= 3
    for bad in (lambda: sk.Temperature(0.0), lambda: sk.TopP(p=0.0), lambda: sk.TopP(p=1.5)):
        with pytest.raises(ValueError):
            bad()


def test_sampled_generation_is_seeded(smollm2):
    s = sk.TopP(p=0.9, temperature=0.8)
    a = sk.generate(smollm2, PROMPTS[1], max_new_tokens=12, sampler=s, seed=3)[0].token_ids
    b = sk.generate(smollm2, PROMPTS[1], max_new_tokens=12, sampler=s, seed=3)[0].token_ids
    assert a == b


def test_cache_is_a_pytree(tiny):
    cache = sk.KVCache.zeros(tiny.config, batch=2, capacity=8)
    leaves = jax.tree_util.tree_leaves(cache)
    assert len(leaves) == 3
    assert cache.nbytes() == 2 * (3 * 2 * 2 * 8 * 12 * 4) + 2 * 4
