"""Save and restore a prefilled ShadowKV state with orbax: prefill once, decode many times.

Directory layout: `prefilled.json` (ShadowKVConfig, placement, prompt ids) and `arrays/` (orbax:
the state's arrays and the next-token logits). Values come back at the placement they were saved
from (pinned host memory or the device), or at an explicitly requested one.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np

from ..generation import Prefilled
from .config import ShadowKVConfig
from .state import ARRAY_FIELDS, ShadowKVState, device_value_rows, place_values, value_array

MARKER = "prefilled.json"


def save_prefilled(directory: str, pre: Prefilled) -> str:
    import orbax.checkpoint as ocp

    if not isinstance(pre.method, ShadowKVConfig):
        raise ValueError("save_prefilled stores ShadowKV states; this one was prefilled with 'full'")
    directory = os.path.abspath(directory)
    os.makedirs(directory, exist_ok=True)
    st: ShadowKVState = pre.state
    arrays = {name: jax.tree.map(np.asarray, getattr(st, name)) for name in ARRAY_FIELDS if name != "values"}
    arrays["values"] = np.asarray(value_array(st.values))  # split values are saved as one array
    arrays["next_logits"] = np.asarray(pre.next_logits)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.join(directory, "arrays"), arrays, force=True)
    with open(os.path.join(directory, MARKER), "w") as f:
        json.dump({"config": dataclasses.asdict(st.config), "placement": st.placement,
                   "device_value_rows": device_value_rows(st),
                   "prompt_ids": pre.prompt_ids, "stats": pre.stats}, f)
    return directory


def load_prefilled(directory: str, placement: str | None = None, device_rows: int | None = None) -> Prefilled:
    """Restore a `Prefilled`; values go to `placement` (default: where they were when saved; "split" with
    `device_rows` rows on the device, by default as many as when saved)."""
    import orbax.checkpoint as ocp

    directory = os.path.abspath(directory)
    try:
        with open(os.path.join(directory, MARKER)) as f:
            meta = json.load(f)
    except OSError as e:
        raise FileNotFoundError(f"{directory!r} holds no saved ShadowKV state ({e})") from None
    cfg = ShadowKVConfig(**meta["config"])
    with ocp.StandardCheckpointer() as ckptr:
        arrays = ckptr.restore(os.path.join(directory, "arrays"))
    logits = jax.device_put(arrays.pop("next_logits"))
    state = ShadowKVState(**{k: jax.device_put(v) for k, v in arrays.items()}, config=cfg,
                          placement="device")
    target = placement or meta["placement"]
    if target == "host":
        state = place_values(state, "host")
    elif target == "split":
        rows = meta.get("device_value_rows", 0) if device_rows is None else device_rows
        state = place_values(state, "split", device_rows=rows)
    elif device_rows is not None:
        raise ValueError(f"device_rows={device_rows} is for placement='split' only (got {target!r})")
    return Prefilled(cfg, state, logits, meta["prompt_ids"], meta.get("stats", {}))
