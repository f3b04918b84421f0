"""Evaluation: scoring rules on hand-made cases, the LongBench loader, RULER-style samples."""

import json

import pytest

from shadowkv_jax.eval import longbench, ruler
from shadowkv_jax.eval.scoring import (classification_score, code_edit_similarity, normalize_answer, qa_f1,
                                       rouge_l, ruler_string_match_all)


def test_ruler_string_match_all():
    assert ruler_string_match_all("The numbers are 123 and 456.", ["123", "456"]) == 1.0
    assert ruler_string_match_all("Only 123 here", ["123", "456"]) == 0.5
    assert ruler_string_match_all("VAR abc", ["ABC"]) == 1.0  # case-insensitive
    assert ruler_string_match_all("nothing", ["1"]) == 0.0
    with pytest.raises(ValueError):
        ruler_string_match_all("x", [])


def test_qa_f1_and_normalization():
    assert normalize_answer("The  Cat, sat!") == "cat sat"
    assert qa_f1("the cat sat", "cat sat") == 1.0
    assert qa_f1("a dog", "cat") == 0.0
    assert qa_f1("cat sat on mat", "cat sat") == pytest.approx(2 * 0.5 * 1.0 / 1.5)


def test_rouge_l():
    assert rouge_l("a b c d", "a b c d") == 1.0
    # LCS of "a x b y c" and "a b c" is 3: P = 3/5, R = 1
    assert rouge_l("a x b y c", "a b c") == pytest.approx(2 * 0.6 * 1.0 / 1.6)
    assert rouge_l("", "a") == 0.0


def test_classification_score():
    classes = ["sports", "politics", "science fiction", "science"]
    assert classification_score("This is about sports.", "sports", classes) == 1.0
    assert classification_score("sports or politics", "sports", classes) == 0.5
    # "science" inside the gold "science fiction" does not count against it
    assert classification_score("science fiction", "science fiction", classes) == 1.0
    assert classification_score("politics", "sports", classes) == 0.0


def test_code_edit_similarity_uses_the_first_code_line():
    assert code_edit_similarity("```python\n# comment\nreturn x + 1\nmore", "return x + 1") == 1.0
    assert 0.5 < code_edit_similarity("return x + 2", "return x + 1") < 1.0


def test_longbench_loader(tmp_path):
    rows = [{"input": "Who?", "context": "Alice met Bob.", "answers": ["Alice"], "length": 3},
            {"input": "Where?", "context": "In Paris.", "answers": ["Paris", "paris, france"]}]
    f = tmp_path / "hotpotqa.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ex = longbench.load_dataset(str(f))
    assert len(ex) == 2 and "Alice met Bob." in ex[0].prompt and ex[0].prompt.endswith("Answer:")
    assert ex[1].score("Paris, France") == 1.0  # best over the reference answers
    assert ex[1].score("It is Paris") == pytest.approx(0.5)  # token F1 against "Paris": P 1/3, R 1
    assert ex[0].score("Bob") == 0.0
    cls = tmp_path / "trec.jsonl"
    cls.write_text(json.dumps({"input": "q", "context": "c", "answers": ["LOC"], "all_classes": ["LOC", "NUM"]}))
    assert longbench.load_dataset(str(cls))[0].score("LOC") == 1.0
    bad = tmp_path / "qasper.jsonl"
    bad.write_text('{"input": "q", "context": "c"}\n')
    with pytest.raises(ValueError, match="line 1"):
        longbench.load_dataset(str(bad))
    with pytest.raises(ValueError, match="not known"):
        longbench.load_dataset(str(tmp_path / "mystery.jsonl"))
    with pytest.raises(FileNotFoundError, match="place its jsonl files locally"):
        longbench.load_dataset(str(tmp_path / "narrativeqa.jsonl"))


@pytest.mark.parametrize("task", ruler.TASKS)
def test_ruler_samples_fit_and_are_deterministic(smollm2, task):
    tok = smollm2.tokenizer
    s = ruler.make_sample(tok, task, 1200, seed=3)
    assert s == ruler.make_sample(tok, task, 1200, seed=3)
    assert s != ruler.make_sample(tok, task, 1200, seed=4)
    assert 1000 <= len(s.prompt_ids) <= 1200
    text = tok.decode(s.prompt_ids)
    for e in s.expected:
        assert e in text
    assert s.score(" ".join(s.expected)) == 1.0
    assert s.score("no idea") == 0.0
    if task in ("cwe", "fwe"):  # the expected words really are the most frequent ones
        counts = ruler.word_counts_check(text)
        top = {w for w, _ in counts.most_common(len(s.expected))}
        assert top == set(s.expected)


def test_eval_ruler_cli_writes_a_summary(smollm2, tmp_path, capsys):
    from shadowkv_jax.cli import main

    out = tmp_path / "ruler.json"
    assert main(["eval", "ruler", "--lengths", "600", "--tasks", "niah_single", "--samples", "2",
                 "--method", "full", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    [row] = summary["rows"]
    assert row["task"] == "niah_single" and row["samples"] == 2 and 0 <= row["score"] <= 100
    assert "| niah_single |" in capsys.readouterr().out


def test_niah_heatmap_grid_and_png(tmp_path):
    pytest.importorskip("matplotlib")
    from shadowkv_jax.eval.plots import niah_grid, niah_heatmap

    rows = [{"depth": d, "target_tokens": n, "found": f}
            for d, n, f in [(0.1, 4096, True), (0.1, 4096, False), (0.5, 4096, True), (0.1, 8192, True),
                            (0.5, 8192, False)]]
    depths, lengths, grid = niah_grid(rows)
    assert depths == [0.1, 0.5] and lengths == [4096, 8192]
    assert grid == [[0.5, 1.0], [1.0, 0.0]]
    png = niah_heatmap(rows, str(tmp_path / "niah.png"))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_sweep_rows_and_attention_error():
    import jax
    import numpy as np

    import shadowkv_jax as sk
    from shadowkv_jax.eval.sweep import attention_output_error, sweep
    from shadowkv_jax.model.llama import init_params

    cfg = sk.ModelConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                         num_kv_heads=2, head_dim=16, max_position_embeddings=2048, rope_theta=1000.0)
    params = init_params(cfg, jax.random.key(0))
    params["layers"]["wq"] = params["layers"]["wq"] * 8  # peaked attention, so sparsity matters
    params["layers"]["wk"] = params["layers"]["wk"] * 8
    model = sk.Model(cfg, params, None, "tiny")
    ids = tuple(int(x) for x in np.random.default_rng(0).integers(1, 128, 300))

    class Sample:  # the sweep needs prompt_ids and a score
        prompt_ids = ids

        @staticmethod
        def score(text):
            return 1.0

    exact = sk.ShadowKVConfig(rank=32, chunk_size=4, sparse_budget=(300 - 16) // 4 * 4, outlier_chunks=0)
    assert attention_output_error(model, ids, exact).max() < 1e-4
    base = sk.ShadowKVConfig(rank=32, chunk_size=4, sparse_budget=192, outlier_chunks=1)
    rows = sweep(model, [Sample()], base, rank=[4, 32], chunk_size=[4, 8], max_new_tokens=4)
    assert [(r["rank"], r["chunk_size"]) for r in rows] == [(4, 4), (4, 8), (32, 4), (32, 8)]
    by = {(r["rank"], r["chunk_size"]): r for r in rows}
    assert by[(4, 4)]["attention_error"] > by[(32, 4)]["attention_error"] > 0
    assert by[(4, 4)]["gpu_bytes_per_token"] < by[(32, 4)]["gpu_bytes_per_token"]
    assert all(0 <= r["hit_rate"] <= 1 and r["accuracy"] == 1.0 for r in rows)
    with pytest.raises(ValueError, match="'ranks' is not a ShadowKVConfig field"):
        sweep(model, [Sample()], base, ranks=[4])
