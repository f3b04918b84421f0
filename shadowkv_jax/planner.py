"""Memory planner: GPU and host bytes of a decode configuration, and the largest batch that fits.

Weights and the dense cache come from `jax.eval_shape` of the real structures (the params pytree,
`KVCache`); the ShadowKV state from `shadowkv.memory.state_bytes`, which reads the same shape
declaration the state is built from. None of them can drift from the code. Activations are an upper bound
from the shapes the prefill materialises at once (one layer; attention in query blocks); workspace is
a stated fraction. A plan that does not fit is refused before anything is allocated, with the numbers.
"""

from __future__ import annotations

import dataclasses
import math
import os

import jax
import numpy as np

from .cache import KVCache
from .config import ModelConfig
from .model.attention import flash_supported
from .model.llama import MLP_TOKEN_CHUNK, abstract_params
from .shadowkv.config import ShadowKVConfig
from .shadowkv.memory import state_bytes

GiB = 1 << 30
PREFILL_QUERY_BLOCK = 512  # model/attention.py: causal_attention's query block
XLA_PINNED_HOST_DEFAULT_CAP = 64 * GiB  # XLA's error message on the H100: "the default 64 GB" (68.7e9 bytes)
HOST_LIMIT_ENV = "XLA_PJRT_GPU_HOST_MEMORY_LIMIT_GB"


class PlanError(ValueError):
    """A configuration that does not fit the stated memory."""


@dataclasses.dataclass(frozen=True)
class Limits:
    gpu_bytes: int
    host_bytes: int
    margin: float = 0.10  # fraction of each limit kept free

    @classmethod
    def host_default(cls, gpu_bytes: int, margin: float = 0.10) -> "Limits":
        """Host limit = XLA's pinned-host cap: $XLA_PJRT_GPU_HOST_MEMORY_LIMIT_GB if set, else 64 GiB."""
        gb = os.environ.get(HOST_LIMIT_ENV)
        return cls(gpu_bytes, int(float(gb) * GiB) if gb else XLA_PINNED_HOST_DEFAULT_CAP, margin)


@dataclasses.dataclass(frozen=True)
class Plan:
    method: str  # "full" or "shadowkv"
    batch: int
    context: int
    gpu: dict  # name -> bytes
    host: dict
    device_value_rows: int = 0  # ShadowKV "split" placement: rows whose values stay on the GPU

    @property
    def gpu_total(self) -> int:
        return sum(self.gpu.values())

    @property
    def host_total(self) -> int:
        return sum(self.host.values())

    def gpu_fits(self, limits: Limits) -> bool:
        return self.gpu_total <= limits.gpu_bytes * (1 - limits.margin)

    def check(self, limits: Limits) -> str | None:
        """None if it fits within the limits less the margin, else why not (with the numbers)."""
        usable_gpu = limits.gpu_bytes * (1 - limits.margin)
        usable_host = limits.host_bytes * (1 - limits.margin)
        split = (f" with the values of {self.device_value_rows} of the {self.batch} rows on the GPU"
                 if self.device_value_rows else "")
        if not self.gpu_fits(limits):
            return (f"batch={self.batch} at context={self.context}{split} needs {self.gpu_total / GiB:.2f} GiB of GPU memory "
                    f"({_fmt(self.gpu)}), more than {usable_gpu / GiB:.2f} GiB usable "
                    f"({limits.gpu_bytes / GiB:.2f} GiB less a {limits.margin:.0%} margin)")
        if self.host_total > usable_host:
            return (f"batch={self.batch} at context={self.context}{split} needs {self.host_total / GiB:.2f} GiB of pinned host "
                    f"memory ({_fmt(self.host)}), more than {usable_host / GiB:.2f} GiB usable "
                    f"({limits.host_bytes / GiB:.2f} GiB less a {limits.margin:.0%} margin; raise "
                    f"{HOST_LIMIT_ENV} before JAX starts if the machine has more)")
        return None


def _fmt(parts: dict) -> str:
    return ", ".join(f"{k} {v / GiB:.2f} GiB" for k, v in parts.items())


def _nbytes(tree) -> int:
    return int(sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


def weight_bytes(config: ModelConfig) -> int:
    return _nbytes(abstract_params(config))


def flash_prefill(config: ModelConfig, platform: str | None = None) -> bool:
    """Whether prefill attention runs as cuDNN flash attention (the model's own predicate)."""
    return flash_supported(config.jnp_dtype, config.head_dim, platform)


def prefill_activation_bytes(config: ModelConfig, batch: int, context: int, flash: bool | None = None) -> int:
    """Upper bound on what one prefill layer holds at once for `batch` prompts of `context` tokens:
    hidden states, q/k/v, the MLP's two intermediates (one token chunk of them), one query block of
    fp32 scores and probabilities (none with flash attention), the fp32 key matrix the factorization
    works on, and the last-token logits."""
    if flash is None:
        flash = flash_prefill(config)
    it = np.dtype(config.jnp_dtype).itemsize
    b, t, e, f = batch, context, config.hidden_size, config.intermediate_size
    hq, hkv, d = config.num_heads, config.num_kv_heads, config.head_dim
    hidden = 3 * b * t * e * it
    qkv = b * t * (hq + 3 * hkv) * d * it  # q, k, v and pre-RoPE k
    mlp = 2 * b * min(t, MLP_TOKEN_CHUNK) * f * it + (b * t * e * it if t > MLP_TOKEN_CHUNK else 0)
    scores = 0 if flash else 2 * b * hq * min(t, PREFILL_QUERY_BLOCK) * t * 4
    factor = 2 * b * t * hkv * d * 4
    logits = b * config.vocab_size * 4
    return hidden + qkv + mlp + scores + factor + logits


def decode_activation_bytes(config: ModelConfig, batch: int, attended_tokens: int) -> int:
    """One decode step: per-layer hidden/MLP vectors, scores over the attended keys, gathered K/V,
    and the logits of every sequence."""
    it = np.dtype(config.jnp_dtype).itemsize
    b = batch
    per_layer = b * (4 * config.hidden_size + 2 * config.intermediate_size) * it
    attn = b * config.num_kv_heads * attended_tokens * (2 * config.head_dim * it + 2 * config.group_size * 4)
    return per_layer + attn + b * config.vocab_size * 4


def plan(config: ModelConfig, method, batch: int, context: int, max_new_tokens: int = 1024,
         prefill_batch: int = 1, workspace_fraction: float = 0.05, replicated: bool = False,
         device_rows: int = 0) -> Plan:
    """Bytes of decoding `batch` prompts of `context` tokens with "full" or a ShadowKVConfig.

    A ShadowKVConfig whose value_placement is "split" keeps the values of `device_rows` rows on the GPU
    and the others in pinned host memory (`split_plan` picks the most that fit).

    Prompts are prefilled `prefill_batch` at a time into the batch's cache or state, so the
    activation term is the larger of one such prefill and one decode step of the whole batch.
    `replicated` (ShadowKV, as the throughput bench builds a batch): one prompt's state is prefilled
    before the batch state exists, then copied into every row, so the prefill no longer coexists with
    the batch state; the copy's source does: that prompt's state without its values (staged in host RAM
    first, throughput.stage_values) and one layer of them at a time.
    """
    weights = weight_bytes(config)
    gpu = {"weights": weights}
    host = {}
    prefilled = source = 0  # a ShadowKV prefill's own state, and what of it the bench's copy holds, below
    if method == "full":
        cache = jax.eval_shape(lambda: KVCache.zeros(config, batch, context + max_new_tokens))
        gpu["kv_cache"] = _nbytes(cache)
        attended = context + max_new_tokens
        name = "full"
    elif isinstance(method, ShadowKVConfig):
        cfg = dataclasses.replace(method, max_new_tokens=max_new_tokens)
        placement = cfg.resolved_placement("gpu")
        if placement != "split" and device_rows:
            raise ValueError(f"device_rows={device_rows} needs value_placement='split' (got {placement!r})")
        state = state_bytes(config, cfg, context, batch, placement, device_rows)  # same declaration as the state
        on_host = state["host"]
        on_gpu = state["by_field"]["values"] - on_host
        gpu["shadow_state"] = state["device"] - on_gpu
        if on_host:
            host["values"] = on_host
        if on_gpu:
            gpu["values"] = on_gpu
        attended = cfg.local_capacity + (cfg.outlier_chunks + cfg.selected_chunks) * cfg.chunk_size + max_new_tokens
        name = "shadowkv"
        # a prefill builds its prompts' whole state, values included, on the device before they move
        one = state_bytes(config, cfg, context, min(prefill_batch, batch), "device")
        prefilled = one["device"]
        source = prefilled - one["by_field"]["values"] + one["by_field"]["values"] // config.num_layers
    else:
        raise ValueError(f"method={method!r} must be 'full' or a ShadowKVConfig")
    prefill = prefill_activation_bytes(config, min(prefill_batch, batch), context)
    decode = decode_activation_bytes(config, batch, attended)
    if name == "shadowkv" and replicated:
        # the prefill ran before any of the batch state existed; the copy's source sits beside all of it
        batch_state = gpu["shadow_state"] + gpu.get("values", 0)
        gpu["activations"] = max(prefill + prefilled - batch_state, source, decode)
    else:
        gpu["activations"] = max(prefill + prefilled, decode)
    gpu["workspace"] = int(workspace_fraction * sum(gpu.values()))
    return Plan(name, batch, context, gpu, host, device_rows if name == "shadowkv" else 0)


def splits_values(method) -> bool:
    return isinstance(method, ShadowKVConfig) and method.resolved_placement("gpu") == "split"


def split_plan(config: ModelConfig, method: ShadowKVConfig, batch: int, context: int, limits: Limits,
               max_new_tokens: int = 1024, **plan_args) -> Plan:
    """The "split" plan of `batch` rows with the values of as many rows on the GPU as fit there (device rows
    cost HBM reads instead of PCIe reads, so more is faster), the others in pinned host memory. Whether the
    host holds the rest is for `Plan.check` to say."""
    at = lambda n: plan(config, method, batch, context, max_new_tokens, device_rows=n, **plan_args)
    lo, hi = 0, batch
    while lo < hi:  # GPU bytes grow with the device rows
        mid = (lo + hi + 1) // 2
        if at(mid).gpu_fits(limits):
            lo = mid
        else:
            hi = mid - 1
    return at(lo)


def require_fits(p: Plan, limits: Limits) -> Plan:
    reason = p.check(limits)
    if reason:
        raise PlanError(f"refused before allocating: {reason}")
    return p


def best_plan(config: ModelConfig, method, batch: int, context: int, limits: Limits, max_new_tokens: int = 1024,
              **plan_args) -> Plan:
    """`plan` of this batch; with split values at its best split (`split_plan`), which depends on the limits."""
    if splits_values(method):
        return split_plan(config, method, batch, context, limits, max_new_tokens, **plan_args)
    return plan(config, method, batch, context, max_new_tokens, **plan_args)


def max_batch(config: ModelConfig, method, context: int, limits: Limits, max_new_tokens: int = 1024,
              upper: int = 4096, **plan_args) -> Plan:
    """The plan of the largest batch that fits (bytes grow with the batch, so bisect), each batch size at its
    best split where the values are split (`best_plan`)."""
    at = lambda b: best_plan(config, method, b, context, limits, max_new_tokens, **plan_args)
    require_fits(at(1), limits)
    lo, hi = 1, upper
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if at(mid).check(limits) is None:
            lo = mid
        else:
            hi = mid - 1
    return at(lo)
