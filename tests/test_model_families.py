"""Qwen2 and GLM (GlmForCausalLM) checkpoints: logits parity with transformers, and ShadowKV's
exactness check (full rank, no outliers, every chunk) on each."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import shadowkv_jax as sk  # noqa: E402
from hf_helpers import assert_logits_match, hf_logits, random_ids  # noqa: E402


def _randomize(model):
    """Larger weights than the 0.02 default, non-unit norms and non-zero biases, so that any
    mistake in RoPE, biases or head layout shows in the logits."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.3)
    return model.eval()


def tiny_qwen2(seed=0, tied=True):
    torch.manual_seed(seed)
    cfg = transformers.Qwen2Config(vocab_size=160, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                   tie_word_embeddings=tied, initializer_range=0.15, attn_implementation="eager",
                                   rope_parameters={"rope_type": "default", "rope_theta": 1e6})
    return _randomize(transformers.Qwen2ForCausalLM(cfg))


def tiny_glm(seed=0):
    torch.manual_seed(seed)
    cfg = transformers.GlmConfig(vocab_size=160, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                 max_position_embeddings=512, initializer_range=0.15, pad_token_id=0,
                                 eos_token_id=1, bos_token_id=2, attn_implementation="eager")
    return _randomize(transformers.GlmForCausalLM(cfg))


FAMILIES = {"qwen2-tied": lambda: tiny_qwen2(tied=True), "qwen2-untied": lambda: tiny_qwen2(tied=False),
            "glm": tiny_glm}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    hf = FAMILIES[request.param]()
    path = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(path)
    return request.param, hf, sk.load_model(str(path))


def test_config_read_from_the_checkpoint(family):
    name, hf, ours = family
    c = ours.config
    assert c.attention_bias
    if name == "glm":
        assert c.architecture == "GlmForCausalLM" and c.rotary_dim == 8  # half of head_dim 16
    else:
        assert c.architecture == "Qwen2ForCausalLM" and c.rotary_dim == c.head_dim
        assert c.tie_word_embeddings == (name == "qwen2-tied")


def test_logits_match_transformers(family):
    name, hf, ours = family
    ids = random_ids(160, batch=2, seq=40)
    err = assert_logits_match(np.asarray(sk.forward(ours, ids)), hf_logits(hf, ids), label=name)
    print(f"{name}: max |dlogit| = {err:.3g}")


def test_shadowkv_exactness(family):
    name, hf, ours = family
    ids = list(random_ids(160, batch=1, seq=203, seed=5)[0])
    c = 8
    n_c = (len(ids) - 4 * c) // c
    cfg = sk.ShadowKVConfig(rank=ours.config.num_kv_heads * ours.config.head_dim, chunk_size=c,
                            sparse_budget=n_c * c, outlier_chunks=0, local_chunks=4, max_new_tokens=32)
    [a] = sk.generate(ours, [ids], method=cfg, max_new_tokens=24, return_logits=True)
    [b] = sk.generate(ours, [ids], method="full", max_new_tokens=24, return_logits=True)
    err = float(np.abs(a.stats["logits"] - b.stats["logits"]).max())
    print(f"{name}: ShadowKV exactness max |dlogit| = {err:.3g}")
    assert err < 1e-4, err
    assert a.token_ids == b.token_ids


def test_glm_partial_rotary_through_the_kernel_path():
    """The fused kernel (interpreted) handles partial rotary: equals the jnp path on GLM."""
    import dataclasses
    import tempfile

    hf = tiny_glm(seed=1)
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        model = sk.load_model(d)
    ids = list(random_ids(160, batch=1, seq=300, seed=6)[0])
    base = sk.ShadowKVConfig(rank=16, chunk_size=8, sparse_budget=64, outlier_chunks=2, max_new_tokens=8,
                             value_placement="device")
    out = [sk.generate(model, [ids], method=dataclasses.replace(base, implementation=i), max_new_tokens=6,
                       return_logits=True)[0] for i in ("reference", "pallas")]
    assert np.abs(out[0].stats["logits"] - out[1].stats["logits"]).max() < 1e-4
