"""Checks that need a GPU (run there with `pytest -m gpu tests/test_gpu.py`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shadowkv_jax.model.attention import causal_attention, flash_available, grouped_attention, prompt_mask

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("t,lengths", [(1000, [1000, 640]), (4160, [4100, 3001])])
def test_flash_prefill_attention_matches_exact(t, lengths):
    """cuDNN flash attention (bf16) against exact fp32 attention, judged by the exact bf16 path's error."""
    rng = np.random.default_rng(0)
    b, hq, hkv, d = 2, 8, 2, 128
    q32, k32, v32 = (jnp.asarray(rng.standard_normal((b, t, h, d)), jnp.float32) for h in (hq, hkv, hkv))
    lens = jnp.asarray(lengths, jnp.int32)
    q, k, v = (x.astype(jnp.bfloat16) for x in (q32, k32, v32))
    assert flash_available(q)
    got = np.asarray(jax.jit(causal_attention)(q, k, v, lens), np.float32)
    truth = np.asarray(grouped_attention(q32, k32, v32, prompt_mask(t, lens)), np.float32)
    exact16 = np.asarray(grouped_attention(q, k, v, prompt_mask(t, lens)), np.float32)
    for i, n in enumerate(lengths):  # rows past a sequence's length are padding
        err = np.abs(got[i, :n] - truth[i, :n]).max()
        ref = np.abs(exact16[i, :n] - truth[i, :n]).max()
        assert np.isfinite(got[i]).all()
        assert err <= 2 * ref + 1e-3, (err, ref)
