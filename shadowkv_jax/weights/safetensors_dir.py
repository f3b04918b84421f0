"""HF checkpoint directories: config.json + model.safetensors (or shards with an index).

The safetensors format is an 8-byte little-endian header size, a JSON header of
{name: {dtype, shape, data_offsets}}, then raw bytes. We read it with numpy memory maps so that
bf16 tensors (which the `safetensors` numpy backend rejects) load without torch.
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np

from ..config import ConfigError, ModelConfig
from .common import WeightsError, assemble_params, layer_names

SAFETENSORS_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}


def _np_dtype(code: str, source: str) -> np.dtype:
    import ml_dtypes

    if code not in SAFETENSORS_DTYPES:
        raise WeightsError(f"{source}: tensor dtype {code!r} is not supported; "
                           f"supported: {sorted(SAFETENSORS_DTYPES)}")
    name = SAFETENSORS_DTYPES[code]
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """name -> memory-mapped numpy array for one .safetensors file."""
    if not os.path.isfile(path):
        raise WeightsError(f"safetensors file not found: {path!r}")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise WeightsError(f"{path!r} is truncated: no safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n <= 0 or 8 + n > size:
            raise WeightsError(f"{path!r} is corrupt: header size {n} does not fit a {size}-byte file")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise WeightsError(f"{path!r} is corrupt: unreadable header ({e})") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{path!r} is corrupt: the header is not a JSON object")
    header.pop("__metadata__", None)
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n) if size > 8 + n else None
    out = {}
    for name, info in header.items():
        # a damaged entry must not escape as a KeyError/TypeError from deep inside numpy
        try:
            code = str(info["dtype"])
            start, end = (int(x) for x in info["data_offsets"])
            shape = tuple(int(x) for x in info["shape"])
        except (KeyError, TypeError, ValueError):
            raise WeightsError(f"{path!r} is corrupt: tensor {name!r} has a malformed header entry "
                               "(needs dtype, shape and two data_offsets)") from None
        dt = _np_dtype(code, path)
        if (data is None or not 0 <= start <= end <= data.shape[0] or min(shape, default=0) < 0
                or end - start != dt.itemsize * int(np.prod(shape))):
            raise WeightsError(f"{path!r} is corrupt: tensor {name!r} data_offsets {start}..{end} do not "
                               f"match shape {shape} of {code} in a {size}-byte file")
        out[name] = data[start:end].view(dt).reshape(shape)
    return out


def read_hf_config(directory: str) -> dict:
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        raise WeightsError(f"{directory!r} has no config.json; not an HF checkpoint directory")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise WeightsError(f"{path!r} is not valid JSON ({e})") from None


def safetensors_files(directory: str) -> list[str]:
    index = os.path.join(directory, "model.safetensors.index.json")
    single = os.path.join(directory, "model.safetensors")
    if os.path.isfile(index):
        try:
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
            return sorted({os.path.join(directory, v) for v in weight_map.values()})
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
            raise WeightsError(f"{index!r} is corrupt: no readable weight_map ({e!r})") from None
    if os.path.isfile(single):
        return [single]
    raise WeightsError(f"{directory!r} has neither model.safetensors nor model.safetensors.index.json")


def deinterleave_rotary_rows(w: np.ndarray, n_heads: int, head_dim: int, rotary_dim: int) -> np.ndarray:
    """GLM rotates interleaved pairs (2i, 2i+1) of each head's first `rotary_dim` dims; reorder those
    rows to (i, i + rotary_dim/2), the rotate-half layout. Applied to q and k alike, it leaves every
    q.k product unchanged. w [n_heads * head_dim, ...] (a weight or a bias)."""
    x = w.reshape(n_heads, head_dim, *w.shape[1:])
    rot, rest = x[:, :rotary_dim], x[:, rotary_dim:]
    rot = np.concatenate([rot[:, 0::2], rot[:, 1::2]], axis=1)
    return np.concatenate([rot, rest], axis=1).reshape(w.shape)


def load_hf_dir(directory: str, dtype: str | None = None) -> tuple[ModelConfig, dict]:
    """(config, params) from an HF directory; params numpy in `dtype` (default: the config's)."""
    hf = read_hf_config(directory)
    try:
        config = ModelConfig.from_hf(hf, dtype=dtype)
    except ConfigError as e:
        raise ConfigError(f"{directory!r}: {e}") from None
    tensors: dict[str, np.ndarray] = {}
    for path in safetensors_files(directory):
        tensors.update(read_safetensors(path))

    def raw(name: str) -> np.ndarray:
        if name not in tensors:
            raise WeightsError(f"{directory!r}: missing tensor {name!r}")
        return np.asarray(tensors[name], dtype=np.float32)

    glm = config.architecture == "GlmForCausalLM"

    def get(name: str) -> np.ndarray:
        if glm and name.endswith(("mlp.gate_proj.weight", "mlp.up_proj.weight")):
            fused = raw(name.rsplit("mlp.", 1)[0] + "mlp.gate_up_proj.weight")  # [2F, E]: gate, then up
            half = fused.shape[0] // 2
            return fused[:half] if name.endswith("gate_proj.weight") else fused[half:]
        a = raw(name)
        if glm and (".q_proj." in name or ".k_proj." in name):
            heads = config.num_heads if ".q_proj." in name else config.num_kv_heads
            a = deinterleave_rotary_rows(a, heads, config.head_dim, config.rotary_dim)
        return a

    head = "lm_head.weight"
    if not config.tie_word_embeddings and head not in tensors:
        raise WeightsError(f"{directory!r}: config says untied embeddings but {head!r} is missing")
    params = assemble_params(
        config, get, directory,
        layer_name=lambda i, ours: f"model.layers.{i}.{layer_names(config)[ours][0]}",
        embed_name="model.embed_tokens.weight", norm_name="model.norm.weight", head_name=head)
    return config, params
