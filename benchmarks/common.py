"""What every benchmark script records: where and when it ran, and how to write its JSON."""

from __future__ import annotations

import json
import sys

from shadowkv_jax import throughput


def run_meta(**extra) -> dict:
    """Device, platform, JAX version, date and the command line, plus any extra fields."""
    return throughput.run_meta(command=" ".join(sys.argv), **extra)


def save_json(path: str | None, obj) -> None:
    """Write `obj` to `path` (indented) when a path was given."""
    if path:
        with open(path, "w") as f:
            json.dump(obj, f, indent=1)
