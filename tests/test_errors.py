"""Bad input gets a clear error naming what is wrong."""

import json
import os

import numpy as np
import pytest

import shadowkv_jax as sk
from shadowkv_jax.cli import main


def test_empty_prompt(smollm2):
    with pytest.raises(sk.GenerationError, match="prompt 0 is empty"):
        sk.generate(smollm2, "   ")
    with pytest.raises(sk.GenerationError, match="prompts is empty"):
        sk.generate(smollm2, [])
    with pytest.raises(sk.GenerationError, match="prompt 1 has no tokens"):
        sk.generate(smollm2, [[1, 2], []])


def test_prompt_longer_than_context(smollm2):
    ctx = smollm2.config.max_position_embeddings
    with pytest.raises(sk.GenerationError, match=f"exceeds the model's context of {ctx}"):
        sk.generate(smollm2, [[1] * (ctx - 3)], max_new_tokens=8)


def test_bad_generation_arguments(smollm2):
    with pytest.raises(sk.GenerationError, match="max_new_tokens=0"):
        sk.generate(smollm2, "hi", max_new_tokens=0)
    with pytest.raises(sk.GenerationError, match="method='sparse'"):
        sk.generate(smollm2, "hi", method="sparse")
    with pytest.raises(sk.GenerationError, match="outside the vocabulary"):
        sk.generate(smollm2, [[1, 2, 10 ** 6]])
    with pytest.raises(sk.GenerationError, match="token_ids must be"):
        sk.forward(smollm2, np.zeros((1, 0), np.int32))


def test_missing_and_unknown_paths(tmp_path):
    with pytest.raises(sk.ModelNotFoundError, match="nope.gguf"):
        sk.load_model(str(tmp_path / "nope.gguf"))
    with pytest.raises(sk.WeightsError, match="neither config.json"):
        sk.load_model(str(tmp_path))


def test_unknown_architecture_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["MambaForCausalLM"]}))
    with pytest.raises(sk.ConfigError, match="MambaForCausalLM"):
        sk.load_model(str(tmp_path))


def test_config_validation():
    base = dict(vocab_size=10, hidden_size=8, intermediate_size=16, num_layers=1, head_dim=4)
    with pytest.raises(sk.ConfigError, match="num_heads=3 must be a multiple of num_kv_heads=2"):
        sk.ModelConfig(num_heads=3, num_kv_heads=2, **base)
    with pytest.raises(sk.ConfigError, match="dtype='int8'"):
        sk.ModelConfig(num_heads=2, num_kv_heads=1, dtype="int8", **base)


def test_cli_reports_errors(capsys, tmp_path):
    assert main(["generate", "--prompt", "hi", "--model", str(tmp_path / "missing.gguf")]) == 2
    assert "missing.gguf" in capsys.readouterr().err


def test_checkpoint_roundtrip_and_shape_mismatch(smollm2, tmp_path):
    out = sk.convert(smollm2, str(tmp_path / "ckpt"))
    restored = sk.load_model(out)
    assert restored.config == smollm2.config
    ids = np.asarray([[1, 504, 3458, 28, 2]], np.int32)
    np.testing.assert_array_equal(np.asarray(sk.forward(restored, ids)), np.asarray(sk.forward(smollm2, ids)))
    assert restored.tokenizer.encode("Paris is lovely") == smollm2.tokenizer.encode("Paris is lovely")
    # a marker whose config disagrees with the stored tensors is refused, naming the tensor
    marker = os.path.join(out, "shadowkv_model.json")
    meta = json.load(open(marker))
    meta["config"]["intermediate_size"] += 8
    json.dump(meta, open(marker, "w"))
    with pytest.raises(sk.WeightsError, match="w_down|w_gate|w_up"):
        sk.load_model(out)
