"""Import a script of benchmarks/ by path (they are scripts, not a package)."""

import importlib.util
import os
import sys

BENCHMARKS = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks")


def load_benchmark(name: str):
    """The script as a module; benchmarks/ is on sys.path while it loads (the scripts import `common`)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCHMARKS, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, BENCHMARKS)
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(BENCHMARKS)
    return mod
