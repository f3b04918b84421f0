"""ShadowKVConfig: the knobs of the algorithm (frozen; change with `dataclasses.replace`).

Letters: c chunk size, k = sparse_budget / c selected chunks per KV head, n_out outlier chunks,
n_loc local chunks, r rank. See ../shared/ALGORITHM.md for the algorithm and the reference defaults.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from ..config import ModelConfig

FACTORIZATIONS = ("svd", "gram")
PLACEMENTS = ("auto", "host", "device", "split")
TOP_K = ("auto", "xla", "pallas")
IMPLEMENTATIONS = ("auto", "reference", "pallas")

# The reference's defaults, for a 128K context and Llama-3.1-8B (Hkv * D = 1024).
REFERENCE_RANK, REFERENCE_HKV_D = 160, 1024
REFERENCE_BUDGET, REFERENCE_CONTEXT = 2048, 131072
OUTLIERS_PER_1K_BUDGET = 24
MIN_RANK = 48


class ShadowKVConfigError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class ShadowKVConfig:
    rank: int = 160  # r: rank of the shared low-rank basis of the pre-RoPE keys, <= Hkv * D
    chunk_size: int = 8  # c: tokens per chunk
    sparse_budget: int = 2048  # selected tokens per KV head and step (a multiple of chunk_size)
    outlier_chunks: int = 48  # n_out: chunks kept exact, per KV head, for the whole decode
    local_chunks: int = 4  # n_loc: the last chunks of the prompt, kept exact
    factorization: str = "svd"  # "svd" (fp32 SVD) or "gram" (eigendecomposition of K^T K)
    value_placement: str = "auto"  # "host" (pinned_host memory), "device", "auto": host on GPU, or "split":
    #                                the values of as many sequences as the GPU has room for on the device, the
    #                                others on the host (planner.split_plan decides how many)
    max_new_tokens: int = 1024  # capacity of the generated-token K/V buffers
    implementation: str = "auto"  # decode attention: "reference" (jnp), "pallas", "auto"
    value_reuse: bool = True  # keep last step's selected values on the device; fetch only the misses (saves PCIe
    #                           reads: with value_placement "device" the cache only adds writes, turn it off)
    top_k: str = "auto"  # selection after the scores: "xla" (softmax, lax.top_k), "pallas" (one kernel:
    #                      kernels/chunk_selection.py), "auto": the kernel wherever the attention kernel runs
    #                      compiled (GPU), else XLA

    def __post_init__(self):
        for name in ("rank", "chunk_size", "sparse_budget", "local_chunks", "max_new_tokens"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ShadowKVConfigError(f"{name}={v!r} must be a positive integer")
        if not isinstance(self.outlier_chunks, int) or self.outlier_chunks < 0:
            raise ShadowKVConfigError(f"outlier_chunks={self.outlier_chunks!r} must be an integer >= 0")
        if not isinstance(self.value_reuse, bool):
            raise ShadowKVConfigError(f"value_reuse={self.value_reuse!r} must be True or False")
        if self.sparse_budget % self.chunk_size:
            raise ShadowKVConfigError(
                f"sparse_budget={self.sparse_budget} must be a multiple of chunk_size={self.chunk_size} "
                f"(e.g. {self.sparse_budget - self.sparse_budget % self.chunk_size or self.chunk_size})")
        for name, allowed in (("factorization", FACTORIZATIONS), ("value_placement", PLACEMENTS),
                              ("implementation", IMPLEMENTATIONS), ("top_k", TOP_K)):
            if getattr(self, name) not in allowed:
                raise ShadowKVConfigError(f"{name}={getattr(self, name)!r} is not one of {allowed}")

    @property
    def selected_chunks(self) -> int:  # k
        return self.sparse_budget // self.chunk_size

    @property
    def local_capacity(self) -> int:
        """Slots of the local window: n_loc chunks plus up to c - 1 remainder tokens."""
        return self.local_chunks * self.chunk_size + self.chunk_size - 1

    def min_prompt_length(self) -> int:
        """Shortest prompt with enough full chunks for the outliers and the budget."""
        return (self.local_chunks + self.outlier_chunks + self.selected_chunks) * self.chunk_size

    def num_chunks(self, prompt_length: int) -> int:
        """Full chunks outside the local window for a prompt of this length."""
        return max(prompt_length - self.local_chunks * self.chunk_size, 0) // self.chunk_size

    def validate(self, model: ModelConfig, prompt_lengths: Sequence[int] = ()) -> None:
        """Errors that need the model or the prompts; each names the field, value and what is valid."""
        hd = model.num_kv_heads * model.head_dim
        if self.rank > hd:
            raise ShadowKVConfigError(
                f"rank={self.rank} must be <= num_kv_heads * head_dim = {model.num_kv_heads} * "
                f"{model.head_dim} = {hd} (the keys have no more dimensions)")
        for i, n in enumerate(prompt_lengths):
            if n < self.min_prompt_length():
                raise ShadowKVConfigError(
                    f"prompt {i} has {n} tokens, too short for local_chunks={self.local_chunks} + "
                    f"outlier_chunks={self.outlier_chunks} + sparse_budget={self.sparse_budget} tokens "
                    f"(chunk_size={self.chunk_size}): at least {self.min_prompt_length()} tokens are needed")
            if self.rank > self.num_chunks(n) * self.chunk_size:
                raise ShadowKVConfigError(
                    f"rank={self.rank} exceeds the {self.num_chunks(n) * self.chunk_size} chunked tokens of "
                    f"prompt {i} ({n} tokens); lower the rank or use a longer prompt")

    def resolved_placement(self, platform: str) -> str:
        if self.value_placement == "auto":
            return "host" if platform == "gpu" else "device"
        return self.value_placement

    @classmethod
    def for_model(cls, model, context_len: int, **overrides) -> "ShadowKVConfig":
        """The reference's defaults scaled to a model and a context length.

        * rank: 160 per 1024 key dims (Hkv * D), rounded up to a multiple of 8, but never below 48
          and never above Hkv * D (at SmolLM2's 192 key dims, rank 32 dropped a digit of a needle
          at 7K tokens that rank 48 retrieved);
        * sparse_budget: 2048 tokens per 128K of context (1.56%), but at short contexts never below
          3% of the context or 256 tokens, whichever is smaller; rounded up to whole chunks;
        * outlier_chunks: 24 per 1024 budget tokens (at least 1);
        * chunk_size 8, local_chunks 4 (the reference's).
        `model` is a Model or a ModelConfig. Keyword overrides replace any field.
        """
        mc: ModelConfig = getattr(model, "config", model)
        c = overrides.get("chunk_size", 8)
        hd = mc.num_kv_heads * mc.head_dim
        rank = min(hd, max(MIN_RANK, 8 * math.ceil(REFERENCE_RANK * hd / REFERENCE_HKV_D / 8)))
        budget = max(REFERENCE_BUDGET * context_len / REFERENCE_CONTEXT, min(0.03 * context_len, 256))
        budget = c * max(1, math.ceil(budget / c))
        outliers = max(1, round(OUTLIERS_PER_1K_BUDGET * budget / 1024))
        fields = dict(rank=rank, chunk_size=c, sparse_budget=budget, outlier_chunks=outliers,
                      local_chunks=4)
        fields.update(overrides)
        return cls(**fields)
