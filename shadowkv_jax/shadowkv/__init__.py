"""ShadowKV: low-rank pre-RoPE keys, offloaded values, landmark-selected sparse attention."""

from .config import ShadowKVConfig, ShadowKVConfigError
from .state import ShadowKVState

__all__ = ["ShadowKVConfig", "ShadowKVConfigError", "ShadowKVState"]
