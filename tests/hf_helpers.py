"""Tiny random HF Llama checkpoints and logit comparisons for the HF parity tests (torch CPU)."""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  # small, so that scaling changes the frequencies that matter at positions < 40
                  "original_max_position_embeddings": 16}
ROPE_FIELDS = ("rope_type", "factor", "low_freq_factor", "high_freq_factor",
               "original_max_position_embeddings")


def tiny_llama(*, seed: int = 0, hidden: int = 64, heads: int = 4, kv_heads: int = 4,
               head_dim: int | None = None, vocab: int = 160, layers: int = 2, intermediate: int = 112,
               tied: bool = False, llama3: bool = False, rope_theta: float = 10000.0) -> LlamaForCausalLM:
    """A random fp32 `LlamaForCausalLM` with eager attention (the most literal reference)."""
    torch.manual_seed(seed)
    rope = dict(LLAMA3_SCALING) if llama3 else {"rope_type": "default"}
    rope["rope_theta"] = rope_theta
    kwargs = {"head_dim": head_dim} if head_dim is not None else {}
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, tie_word_embeddings=tied,
        rope_parameters=rope, max_position_embeddings=256,
        # the default std 0.02 makes attention nearly uniform, which would hide RoPE/masking errors
        initializer_range=0.15, attn_implementation="eager", **kwargs)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        # RMSNorm weights start at 1; move them away so a dropped or misplaced scale shows up
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return model


def hf_logits(model: LlamaForCausalLM, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(ids, dtype=torch.long)).logits.float().numpy()


def random_ids(vocab: int, batch: int = 2, seq: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, size=(batch, seq), dtype=np.int64)


def logit_delta(ours, ref) -> tuple[float, float]:
    """(max |Δ|, logit scale max |ref|)."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, f"logits shape {ours.shape} != reference {ref.shape}"
    return float(np.abs(ours - ref).max()), float(np.abs(ref).max())


def assert_logits_match(ours, ref, *, rel: float = 1e-4, label: str = "") -> float:
    """max |Δ| <= rel * logit scale and greedy argmax agrees everywhere; returns max |Δ|."""
    delta, scale = logit_delta(ours, ref)
    print(f"[{label}] max|Δ|={delta:.2e} scale={scale:.3g} rel={delta / scale:.2e}")
    assert delta <= rel * scale, (
        f"{label}: max|Δ|={delta:.3e} exceeds {rel:g} x logit scale {scale:.3g}")
    ours_top, ref_top = np.asarray(ours).argmax(-1), np.asarray(ref).argmax(-1)
    agree = float((ours_top == ref_top).mean())
    assert agree == 1.0, f"{label}: greedy argmax agrees on {agree:.1%} of positions (max|Δ|={delta:.3e})"
    return delta


def read_config(directory) -> dict:
    with open(os.path.join(directory, "config.json")) as f:
        return json.load(f)


def write_config(directory, config: dict) -> None:
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f, indent=2)


def other_rope_spelling(config: dict) -> dict:
    """The same config in the other RoPE spelling.

    Newer transformers write `rope_parameters` (theta inside); older ones write top-level `rope_theta`
    plus `rope_scaling` (null when unscaled).
    """
    config = dict(config)
    if "rope_parameters" in config:
        params = config.pop("rope_parameters")
        config["rope_theta"] = params["rope_theta"]
        kind = params.get("rope_type", "default")
        config["rope_scaling"] = None if kind == "default" else {k: params[k] for k in ROPE_FIELDS}
    else:
        params = {"rope_type": "default", **(config.pop("rope_scaling", None) or {})}
        params["rope_theta"] = config.pop("rope_theta")
        config["rope_parameters"] = params
    return config
