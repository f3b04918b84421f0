"""Needle in a haystack: the generator, and (slow) ShadowKV vs full attention on SmolLM2."""

import pytest

import shadowkv_jax as sk
from shadowkv_jax.eval import niah


def test_cases_fit_their_target_and_hold_the_needle(smollm2):
    cases = niah.make_cases(smollm2.tokenizer, [600, 1500], [0.0, 0.5, 1.0], needles_per_depth=2, seed=7)
    assert len(cases) == 12
    again = niah.make_cases(smollm2.tokenizer, [600, 1500], [0.0, 0.5, 1.0], needles_per_depth=2, seed=7)
    assert cases == again  # deterministic from the seed
    for c in cases:
        assert c.target_tokens - 40 <= len(c.prompt_ids) <= c.target_tokens
        text = smollm2.tokenizer.decode(c.prompt_ids)
        assert f"special magic numbers for {c.key} is: {c.answer}" in text
    assert niah.found(cases[0], f"It is {cases[0].answer}.")
    assert not niah.found(cases[0], "I do not know")


@pytest.mark.slow
@pytest.mark.parametrize("length", [4096, 7168])
def test_shadowkv_finds_the_needles_full_attention_finds(smollm2, length):
    cases = niah.make_cases(smollm2.tokenizer, [length], [0.1, 0.3, 0.5, 0.7, 0.9], 2, seed=0)
    full = niah.run_cases(smollm2, cases, "full", batch_size=5)
    cfg = sk.ShadowKVConfig.for_model(smollm2, length, max_new_tokens=16)
    sparse = niah.run_cases(smollm2, cases, cfg, batch_size=5)
    print(f"{length}: full {sum(r['found'] for r in full)}/10, shadowkv {sum(r['found'] for r in sparse)}/10")
    assert [r["found"] for r in sparse] == [r["found"] for r in full]
