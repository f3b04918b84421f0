"""GGUF loading: logits parity with transformers on the same file, q/k un-permutation, bad files."""

from __future__ import annotations

import numpy as np
import pytest

import shadowkv_jax as sk
from shadowkv_jax.tokenizer import BPETokenizer
from shadowkv_jax.weights.gguf import unpermute_rope_rows

PARITY_TOKENS = 640  # >= 512 positions: long enough that RoPE and causal masking matter far out
# Both sides dequantize the same Q4_1/Q8_0 blocks to fp32, so only float rounding (different op
# order/fusion in XLA vs torch) separates them. Measured on the 640-token prefix of
# english_long.txt: max |Δlogit| ≈ 1.4e-4 with logits up to ~43 (≈3e-6 relative), identical greedy
# tokens everywhere. 1e-3 leaves ~7x headroom for other CPUs/BLAS builds (summation order) and is
# still ~4e4x below the logit scale, so any real modelling difference shows: e.g. skipping the q/k
# un-permutation drops greedy agreement to ~22%.
MAX_ABS_LOGIT_DELTA = 1e-3
MIN_GREEDY_AGREEMENT = 0.99


@pytest.fixture(scope="module")
def parity_ids(smollm2, english_long):
    ids = smollm2.tokenizer.encode(english_long)
    assert len(ids) >= PARITY_TOKENS, f"english_long.txt has only {len(ids)} tokens"
    return np.asarray(ids[:PARITY_TOKENS], np.int64)


def test_logits_match_transformers(smollm2, hf_smollm2, parity_ids, record_property):
    import torch

    ours = np.asarray(sk.forward(smollm2, parity_ids[None]), np.float32)[0]
    with torch.inference_mode():
        ref = hf_smollm2(torch.as_tensor(parity_ids[None])).logits[0].float().numpy()
    assert ours.shape == ref.shape == (PARITY_TOKENS, smollm2.config.vocab_size)
    assert np.isfinite(ours).all()

    delta = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
    max_delta = float(delta.max())
    pos, tok = np.unravel_index(int(delta.argmax()), delta.shape)
    agreement = float((ours.argmax(-1) == ref.argmax(-1)).mean())
    scale = float(np.abs(ref).max())
    print(f"\nGGUF parity over {PARITY_TOKENS} tokens: greedy agreement {agreement:.2%}, "
          f"max |Δlogit| {max_delta:.3e} (at position {pos}, token {tok}; logit scale {scale:.1f}), "
          f"mean |Δlogit| {delta.mean():.3e}")
    record_property("parity_tokens", PARITY_TOKENS)
    record_property("greedy_agreement", agreement)
    record_property("max_abs_logit_delta", max_delta)

    assert agreement >= MIN_GREEDY_AGREEMENT, f"greedy next-token agreement {agreement:.2%}"
    assert max_delta <= MAX_ABS_LOGIT_DELTA, (
        f"max |Δlogit| {max_delta:.3e} at position {pos}, token {tok} exceeds {MAX_ABS_LOGIT_DELTA}")


# -- llama.cpp's q/k row permutation ------------------------------------------------------------

def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's `permute`: HF rotate-half rows -> interleaved-pair rows, per head."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2)
            .reshape(w.shape))


@pytest.mark.parametrize("n_head", [1, 3, 9])
@pytest.mark.parametrize("head_dim,trailing", [(8, (5,)), (64, (3,)), (6, ())])  # () = a bias vector
def test_unpermute_inverts_llama_cpp_permutation(n_head, head_dim, trailing):
    rng = np.random.default_rng(n_head * 100 + head_dim)
    w = rng.standard_normal((n_head * head_dim, *trailing)).astype(np.float32)
    permuted = llama_cpp_permute(w, n_head)
    assert not np.array_equal(permuted, w)  # the check below would be vacuous otherwise
    np.testing.assert_array_equal(unpermute_rope_rows(permuted, n_head), w)
    np.testing.assert_array_equal(llama_cpp_permute(unpermute_rope_rows(w, n_head), n_head), w)


@pytest.mark.parametrize("n_head", [1, 3, 9])
def test_unpermute_maps_interleaved_pairs_to_halves(n_head):
    """Spelled out without reshapes: GGUF row 2i / 2i+1 of a head is HF row i / i + D/2."""
    d = 8
    gguf_rows = np.arange(n_head * d, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
    hf = unpermute_rope_rows(gguf_rows, n_head)
    for h in range(n_head):
        for i in range(d // 2):
            assert hf[h * d + i, 0] == h * d + 2 * i
            assert hf[h * d + d // 2 + i, 0] == h * d + 2 * i + 1


# -- missing and corrupt files --------------------------------------------------------------------

def test_missing_gguf_file(tmp_path):
    path = str(tmp_path / "nope" / "model.gguf")
    with pytest.raises(sk.ModelNotFoundError, match="nope"):
        sk.load_model(path)


def _corrupt_bytes(kind: str, real: str) -> bytes:
    if kind == "random":
        return np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    if kind == "empty":
        return b""
    with open(real, "rb") as f:
        if kind == "header_only":  # valid magic/version, metadata cut off
            return f.read(1000)
        # "truncated": an interrupted download; metadata and tensor infos (~1.8 MB) intact,
        # tensor data cut off
        return f.read(4 << 20)


@pytest.mark.parametrize("kind", ["header_only", "random", "empty", "truncated"])
def test_corrupt_gguf_file(kind, smollm2_path, tmp_path):
    path = tmp_path / f"corrupt_{kind}.gguf"
    path.write_bytes(_corrupt_bytes(kind, smollm2_path))
    with pytest.raises(sk.WeightsError) as e:
        sk.load_model(str(path))
    assert str(path) in str(e.value)


def test_corrupt_gguf_tokenizer(smollm2_path, tmp_path):
    path = tmp_path / "truncated.gguf"
    with open(smollm2_path, "rb") as f:
        path.write_bytes(f.read(1000))
    with pytest.raises(sk.WeightsError, match="truncated.gguf"):
        BPETokenizer.from_gguf(str(path))
