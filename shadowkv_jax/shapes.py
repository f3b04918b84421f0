"""Named model shapes for throughput work: random weights of the real architecture (speed does not
depend on the weight values; accuracy and hit rates do)."""

from __future__ import annotations

from .config import ModelConfig, RopeScaling

LLAMA_3_1_8B = ModelConfig(
    vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_layers=32, num_heads=32,
    num_kv_heads=8, head_dim=128, rms_norm_eps=1e-5, rope_theta=500000.0,
    rope_scaling=RopeScaling(8.0, 1.0, 4.0, 8192), max_position_embeddings=131072, dtype="bfloat16")

# GLM-4-9B-1M (GlmForCausalLM): 40 layers, 2 KV heads, head dim 128, q/k/v biases, half-rotary RoPE
GLM_4_9B = ModelConfig(
    vocab_size=151552, hidden_size=4096, intermediate_size=13696, num_layers=40, num_heads=32,
    num_kv_heads=2, head_dim=128, rms_norm_eps=1.5625e-7, rope_theta=10000.0 * 500,
    max_position_embeddings=1048576, dtype="bfloat16", architecture="GlmForCausalLM",
    attention_bias=True, partial_rotary_factor=0.5)

NAMED_SHAPES = {"llama-3.1-8b": LLAMA_3_1_8B, "glm-4-9b": GLM_4_9B}
