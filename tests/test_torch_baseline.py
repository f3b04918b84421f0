"""benchmarks/torch_baseline.py on CPU: the tiny shape runs end to end, and the decode really attends
to the K/V that the script writes into the StaticCache (so its timings are of real full attention)."""

from __future__ import annotations

import json

import pytest
from script_loader import load_benchmark

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from transformers import DynamicCache  # noqa: E402

CONTEXT, BATCH = 64, 2


@pytest.fixture(scope="module")
def tb():
    return load_benchmark("torch_baseline")


def test_main_tiny_runs(tb, tmp_path, capsys):
    out = tmp_path / "tb.json"
    rows = tb.main(["--shape", "tiny", "--context", str(CONTEXT), "--batch", str(BATCH), "--steps", "3",
                    "--warmup", "1", "--compile", "none", "--device", "cpu", "--json", str(out)])
    assert len(rows) == 1
    row = rows[0]
    assert row["status"] == "ok", row
    assert row["variant"] == "eager" and row["batch"] == BATCH and row["context"] == CONTEXT
    assert row["tokens_per_s"] > 0 and row["ms_per_step"] > 0 and row["logits_finite"]
    assert row["capacity"] == CONTEXT + 1 + 3
    saved = json.loads(out.read_text())
    assert saved["rows"] == rows
    assert {"torch", "transformers", "device", "date", "command", "note"} <= saved["meta"].keys()
    assert "| tiny | 64 | 2 | eager |" in capsys.readouterr().out.strip().splitlines()[-1]


@pytest.mark.parametrize("argv, message", [
    (["--shape", "nope", "--context", "8"], "unknown --shape"),
    (["--shape", "tiny", "--context", "0"], "--context must be >= 1"),
    (["--shape", "tiny", "--context", "8", "--batch", "0"], "--batch"),
    (["--shape", "tiny", "--context", "8", "--steps", "0"], "--steps"),
    (["--shape", "tiny", "--context", "200000"], "max_position_embeddings"),
])
def test_bad_args(tb, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        tb.main(argv + ["--device", "cpu"])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("shape", ["tiny", "tiny-glm"])
def test_decode_attends_to_filled_cache(tb, shape):
    """One decode step at position CONTEXT through the filled StaticCache equals the same step through a
    DynamicCache holding exactly the filled K/V, changes when a filled position changes, and ignores
    the unfilled capacity."""
    model = tb.build_model(shape, "cpu", torch.float32)
    capacity = CONTEXT + 8
    ids = torch.tensor([[3], [11]])
    pos = torch.full((BATCH, 1), CONTEXT)

    def step(mutate=None):
        cache = tb.filled_cache(model, BATCH, CONTEXT, capacity, seed=0)  # same seed: same K/V
        if mutate is not None:
            mutate(cache)
        return cache, tb.make_forward(model, cache)(ids, pos)

    with torch.inference_mode():
        cache, logits = step()
        assert torch.isfinite(logits).all()

        ref_cache = DynamicCache(config=model.config)
        for i, layer in enumerate(cache.layers):
            ref_cache.update(layer.keys[:, :, :CONTEXT].clone(), layer.values[:, :, :CONTEXT].clone(), i)
        ref = tb.make_forward(model, ref_cache)(ids, pos)
        torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-5)
        # the step wrote its own K/V at position CONTEXT, where the cache length said it would
        assert int(cache.layers[0].cumulative_length) == CONTEXT + 1

        def bump(index):
            def mutate(c):
                for layer in c.layers:
                    layer.values[:, :, index] += 1.0
                    layer.keys[:, :, index] -= 1.0
            return mutate

        for filled in (0, CONTEXT - 1):  # first and last filled positions are read
            _, changed = step(bump(filled))
            assert (changed - logits).abs().max() > 1e-4, f"position {filled} was not attended"
        _, same = step(bump(capacity - 1))  # beyond the cache length: masked out
        torch.testing.assert_close(same, logits, rtol=0, atol=0)
