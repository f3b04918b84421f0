"""Weight loading: GGUF files, HF safetensors directories, and our own orbax checkpoints."""

from .common import WeightsError

__all__ = ["WeightsError"]
