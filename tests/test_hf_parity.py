"""Logit parity with HF transformers (torch CPU, fp32) on tiny random Llama checkpoints.

Each test writes its own checkpoint with `save_pretrained`, loads it with `shadowkv_jax.load_model`
and compares `shadowkv_jax.forward` logits against `LlamaForCausalLM(...).logits`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import shadowkv_jax
from shadowkv_jax import ConfigError, ModelNotFoundError, WeightsError

from hf_helpers import (assert_logits_match, hf_logits, logit_delta, other_rope_spelling, random_ids,
                        read_config, tiny_llama, write_config)

FP32_REL = 1e-4  # max |Δ| allowed, relative to the largest |logit|

# Together these cover G in {1, 3, 4} and MQA, head_dim 8/16/24 (24 with E != Hq*D), tied and
# untied embeddings, llama3 RoPE scaling on and off, and a non-default rope_theta.
CASES = {
    "mha_g1": dict(hidden=64, heads=4, kv_heads=4),
    "gqa_g3_tied_llama3": dict(hidden=96, heads=6, kv_heads=2, tied=True, llama3=True),
    "gqa_g4_theta5e5": dict(hidden=64, heads=8, kv_heads=2, rope_theta=500000.0),
    "mqa_d24_llama3": dict(hidden=64, heads=4, kv_heads=1, head_dim=24, llama3=True),
    # HF insists on E % Hq == 0 even with an explicit head_dim
    "gqa_g3_d24_tied": dict(hidden=96, heads=6, kv_heads=2, head_dim=24, tied=True),
}


def save(hf_model, directory, **kwargs) -> str:
    hf_model.save_pretrained(directory, **kwargs)
    return str(directory)


def our_logits(model, ids) -> np.ndarray:
    return np.asarray(shadowkv_jax.forward(model, ids))


@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_hf(case, tmp_path):
    spec = CASES[case]
    hf = tiny_llama(**spec)
    ids = random_ids(hf.config.vocab_size)
    ref = hf_logits(hf, ids)

    written = save(hf, tmp_path / "written")
    model = shadowkv_jax.load_model(written)
    c = model.config
    assert model.tokenizer is None
    assert (c.num_heads, c.num_kv_heads, c.head_dim) == (spec["heads"], spec["kv_heads"],
                                                        spec.get("head_dim", spec["hidden"] // spec["heads"]))
    assert c.tie_word_embeddings == spec.get("tied", False)
    assert (c.rope_scaling is not None) == spec.get("llama3", False)
    assert c.rope_theta == spec.get("rope_theta", 10000.0)
    logits = our_logits(model, ids)
    assert_logits_match(logits, ref, rel=FP32_REL, label=case)

    # The other config spelling (rope_theta/rope_scaling vs rope_parameters) must mean the same model.
    other = tmp_path / "other"
    save(hf, other)
    hf_dict = read_config(written)
    other_dict = other_rope_spelling(hf_dict)
    assert ("rope_parameters" in other_dict) != ("rope_parameters" in hf_dict)
    write_config(other, other_dict)
    model2 = shadowkv_jax.load_model(str(other))
    assert model2.config == model.config
    np.testing.assert_array_equal(our_logits(model2, ids), logits)


def test_llama3_scaling_is_exercised(tmp_path):
    """Dropping the llama3 scaling must break parity, or the parity cases above prove nothing about it."""
    hf = tiny_llama(hidden=64, heads=4, kv_heads=2, llama3=True)
    ids = random_ids(hf.config.vocab_size)
    ref = hf_logits(hf, ids)
    model = shadowkv_jax.load_model(save(hf, tmp_path))
    unscaled = dataclasses.replace(model, config=model.config.replace(rope_scaling=None))
    delta, scale = logit_delta(our_logits(unscaled, ids), ref)
    assert delta > 100 * FP32_REL * scale, f"unscaled RoPE gives max|Δ|={delta:.3e} only"
    assert_logits_match(our_logits(model, ids), ref, rel=FP32_REL, label="llama3")


def test_sharded_checkpoint(tmp_path):
    hf = tiny_llama(hidden=64, heads=4, kv_heads=2, seed=1)
    directory = save(hf, tmp_path, max_shard_size="20KB")
    with open(os.path.join(directory, "model.safetensors.index.json")) as f:
        shards = set(json.load(f)["weight_map"].values())
    assert len(shards) > 1 and not os.path.exists(os.path.join(directory, "model.safetensors"))
    ids = random_ids(hf.config.vocab_size)
    assert_logits_match(our_logits(shadowkv_jax.load_model(directory), ids), hf_logits(hf, ids),
                        rel=FP32_REL, label="sharded")

    os.remove(os.path.join(directory, sorted(shards)[-1]))
    with pytest.raises(WeightsError, match=re.escape(sorted(shards)[-1])):
        shadowkv_jax.load_model(directory)


def test_bf16_checkpoint(tmp_path):
    hf = tiny_llama(hidden=64, heads=4, kv_heads=2, seed=2)
    with torch.no_grad():  # make every weight bf16-representable, so the fp32 reference is exact
        for p in hf.parameters():
            p.copy_(p.bfloat16().float())
    ids = random_ids(hf.config.vocab_size)
    # Reference before the cast: `.to(bfloat16)` also rounds HF's RoPE inv_freq buffer.
    ref = hf_logits(hf, ids)
    directory = save(hf.to(torch.bfloat16), tmp_path)

    # Loaded up to fp32, the bf16 bytes must decode exactly: fp32 parity holds.
    model32 = shadowkv_jax.load_model(directory, dtype="float32")
    assert_logits_match(our_logits(model32, ids), ref, rel=FP32_REL, label="bf16 file, fp32 compute")

    # Loaded as stored, the model computes in bf16: only a loose match is expected, with torch's
    # own bf16 forward of the same checkpoint as the yardstick.
    model16 = shadowkv_jax.load_model(directory)
    assert model16.config.dtype == "bfloat16"
    assert all(a.dtype == jnp.bfloat16 for a in jax.tree.leaves(model16.params))
    delta, scale = logit_delta(our_logits(model16, ids), ref)
    torch_delta, _ = logit_delta(hf_logits(hf, ids), ref)
    print(f"[bf16 compute] max|Δ|={delta:.2e} (torch bf16: {torch_delta:.2e}) scale={scale:.3g}")
    assert delta <= 5e-2 * scale and delta <= 2 * torch_delta, (
        f"bf16 compute: max|Δ|={delta:.3e}, torch bf16 max|Δ|={torch_delta:.3e}, logit scale {scale:.3g}")


# ---------------------------------------------------------------------------------- errors
@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    """config.json + model.safetensors contents of one tiny untied checkpoint, copied per test."""
    directory = tmp_path_factory.mktemp("ckpt")
    save(tiny_llama(hidden=64, heads=4, kv_heads=2), directory)
    return {name: (directory / name).read_bytes() for name in ("config.json", "model.safetensors")}


@pytest.fixture
def checkpoint(checkpoint_bytes, tmp_path):
    for name, data in checkpoint_bytes.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


def test_unknown_architecture(checkpoint):
    config = read_config(checkpoint)
    config["architectures"] = ["GPT2LMHeadModel"]
    write_config(checkpoint, config)
    with pytest.raises(ConfigError, match="GPT2LMHeadModel"):
        shadowkv_jax.load_model(str(checkpoint))


@pytest.mark.parametrize("name", ["model.layers.1.self_attn.k_proj.weight", "lm_head.weight"])
def test_wrong_tensor_shape(checkpoint, name):
    path = str(checkpoint / "model.safetensors")
    tensors = load_file(path)
    rows, cols = tensors[name].shape
    tensors[name] = torch.zeros(rows + 8, cols)
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(WeightsError, match=re.escape(repr(name))):
        shadowkv_jax.load_model(str(checkpoint))


def _truncate(data: bytes) -> bytes:
    return data[: len(data) * 3 // 5]


def _garble_header(data: bytes) -> bytes:
    n = int.from_bytes(data[:8], "little")
    return data[:8] + b"\xff" * n + data[8 + n:]


def _huge_header_size(data: bytes) -> bytes:
    return (1 << 40).to_bytes(8, "little") + data[8:]


def _edit_header(edit):
    """A corruption that rewrites the JSON header's entry of the tensor at offset 0 (data untouched)."""
    def corrupt(data: bytes) -> bytes:
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + n])
        first = next(k for k, v in header.items() if k != "__metadata__" and v["data_offsets"][0] == 0)
        head = json.dumps(edit(header, first)).encode()
        return len(head).to_bytes(8, "little") + head + data[8 + n:]
    return corrupt


def _drop(key):
    return lambda h, first: {**h, first: {k: v for k, v in h[first].items() if k != key}}


def _set(key, value):
    return lambda h, first: {**h, first: {**h[first], key: value}}


CORRUPTIONS = {
    "truncated": _truncate,
    "garbled_header": _garble_header,
    "huge_header_size": _huge_header_size,
    "5_bytes": lambda data: data[:5],
    "empty": lambda data: b"",
    "header_not_object": _edit_header(lambda h, first: list(h)),
    "entry_without_dtype": _edit_header(_drop("dtype")),
    "entry_without_offsets": _edit_header(_drop("data_offsets")),
    # same length, shifted before the data block: numpy would silently wrap the negative start
    "negative_offset": _edit_header(lambda h, first: {
        **h, first: {**h[first], "data_offsets": [o - 8 for o in h[first]["data_offsets"]]}}),
    "shape_not_a_list": _edit_header(_set("shape", "x")),
    "integer_dtype": _edit_header(_set("dtype", "I64")),
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_corrupt_safetensors(checkpoint, corrupt):
    path = checkpoint / "model.safetensors"
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(WeightsError, match="model.safetensors"):
        shadowkv_jax.load_model(str(checkpoint))


@pytest.mark.parametrize("index", ["{", "[]", '{"metadata": {}}'])
def test_corrupt_shard_index(checkpoint, index):
    (checkpoint / "model.safetensors.index.json").write_text(index)
    with pytest.raises(WeightsError, match="model.safetensors.index.json"):
        shadowkv_jax.load_model(str(checkpoint))


def test_missing_path(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no_such_model"):
        shadowkv_jax.load_model(str(tmp_path / "no_such_model"))
