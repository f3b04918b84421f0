"""Evaluation: scoring rules on hand-made cases, the LongBench loader, RULER-style samples."""

import json

import pytest

from script_loader import load_benchmark
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


@pytest.mark.parametrize("task", ["niah_multikey", "vt"])
def test_natural_haystack_samples(smollm2, task):
    """Natural-text haystack: prose from the standard library, needles in it, same fit and scoring;
    noise samples are unchanged by the option."""
    tok = smollm2.tokenizer
    s = ruler.make_sample(tok, task, 1200, seed=3, haystack="natural")
    assert s == ruler.make_sample(tok, task, 1200, seed=3, haystack="natural")
    noise = ruler.make_sample(tok, task, 1200, seed=3)
    assert noise == ruler.make_sample(tok, task, 1200, seed=3, haystack="noise")
    assert s.expected == noise.expected and s.prompt_ids != noise.prompt_ids
    assert 1000 <= len(s.prompt_ids) <= 1200
    text = tok.decode(s.prompt_ids)
    assert all(e in text for e in s.expected)
    assert "The grass is green" not in text
    assert sum(x in text for x in ruler.natural_sentences()[:3000]) >= 5  # real sentences of the corpus
    with pytest.raises(ValueError, match="haystack='essays' is not one of"):
        ruler.make_sample(tok, task, 1200, haystack="essays")


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


def _eval_sweeps_module():
    return load_benchmark("eval_sweeps")


def _sweep_row(**kw):
    row = {"accuracy": 0.5, "attention_error": 0.1, "attention_error_max_layer": 0.3, "hit_rate": 0.8,
           "sparse_budget": 128, "outlier_tokens": 24, "local_tokens": 32, "gpu_bytes_per_token": 1000.0,
           "host_bytes_per_token": 2000.0}
    return {**row, **kw}


def test_eval_sweeps_configs_hold_token_counts():
    import dataclasses

    import shadowkv_jax as sk

    es = _eval_sweeps_module()
    # SmolLM2-135M's attention shape (Hkv * D = 3 * 64 = 192) without loading the weights
    mc = sk.ModelConfig(vocab_size=128, hidden_size=576, intermediate_size=1536, num_layers=2, num_heads=9,
                        num_kv_heads=3, head_dim=64, max_position_embeddings=8192)
    base, rank_cfgs, chunk_cfgs = es.sweep_configs(mc, 4096, [8, 16, 32, 48, 96, 192], [4, 8, 16, 32],
                                                   max_new_tokens=48)
    assert (base.rank, base.chunk_size, base.sparse_budget, base.outlier_chunks,
            base.local_chunks) == (48, 8, 128, 3, 4)
    assert base.max_new_tokens == 48
    # rank sweep: only the rank moves
    assert [r for r, _ in rank_cfgs] == [8, 16, 32, 48, 96, 192]
    assert all(c == dataclasses.replace(base, rank=r) for r, c in rank_cfgs)
    # chunk-size sweep: budget, outlier and local windows held in tokens (24 outlier tokens at c=16 -> 2 chunks)
    got = {c: (cfg.rank, cfg.sparse_budget, cfg.outlier_chunks, cfg.local_chunks) for c, cfg in chunk_cfgs}
    assert got == {4: (48, 128, 6, 8), 8: (48, 128, 3, 4), 16: (48, 128, 2, 2), 32: (48, 128, 1, 1)}
    # the default point is the same config in both sweeps (evaluated once by the script)
    assert dict(chunk_cfgs)[8] == dict(rank_cfgs)[48] == base
    # a budget that the chunk size does not divide is rounded to whole chunks, never below one
    small = sk.ShadowKVConfig.for_model(mc, 700)
    assert small.sparse_budget == 24
    assert es.config_for_chunk_size(small, 32).sparse_budget == 32
    assert es.config_for_chunk_size(small, 16).sparse_budget == 32  # 1.5 chunks, ties up
    assert es.config_for_chunk_size(dataclasses.replace(small, outlier_chunks=0), 4).outlier_chunks == 0
    with pytest.raises(ValueError, match="1..num_kv_heads"):
        es.sweep_configs(mc, 4096, [48, 256], [8])


def test_sweep_plot_and_table(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from shadowkv_jax.eval.plots import sweep_plot

    es = _eval_sweeps_module()
    rank_rows = [_sweep_row(rank=r, chunk_size=8, attention_error=1 / r) for r in (192, 8, 48, 16)]
    chunk_rows = [_sweep_row(rank=48, chunk_size=c) for c in (4, 8, 16, 32)]
    png = sweep_plot(rank_rows, chunk_rows, full_accuracy=0.9, defaults={"rank": 48, "chunk_size": 8},
                     path=str(tmp_path / "sweeps.png"))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert sweep_plot([], chunk_rows, path=str(tmp_path / "chunks_only.png"))  # one sweep may be missing
    table = es.markdown(rank_rows, chunk_rows, {"accuracy": 0.9}, {"rank": 48, "chunk_size": 8})
    lines = table.splitlines()
    assert len(lines) == 2 + 4 + 4 + 1 and lines[-1].startswith("| full attention |")
    assert sum("(default)" in line for line in lines) == 2  # rank 48 at c=8 in both sweeps
    # a saved result re-plots without running anything
    saved = {"model": "/m/smol.gguf", "length": 4096, "tasks": ["niah_single"], "samples_per_task": 2,
             "device": "cpu", "jax": "0", "defaults": {"rank": 48, "chunk_size": 8}, "rank_sweep": rank_rows,
             "chunk_size_sweep": chunk_rows, "full_attention": {"accuracy": 0.9}, "markdown": table}
    (tmp_path / "saved.json").write_text(json.dumps(saved))
    assert es.main(["--from-json", str(tmp_path / "saved.json"), "--plot", str(tmp_path / "replot.png")]) == 0
    assert (tmp_path / "replot.png").read_bytes()[:4] == b"\x89PNG"
    assert capsys.readouterr().out.strip() == table


@pytest.mark.slow
def test_eval_sweeps_script_end_to_end(smollm2, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    es = _eval_sweeps_module()
    out, png = tmp_path / "sweeps.json", tmp_path / "sweeps.png"
    assert es.main(["--length", "700", "--samples", "1", "--tasks", "niah_single", "--ranks", "48",
                    "--chunk-sizes", "8", "16", "--max-new-tokens", "8", "--json", str(out), "--plot", str(png)],
                   model=smollm2) == 0
    res = json.loads(out.read_text())
    assert res["distinct_configs"] == 2 and res["generate_calls"] == 3  # the default point runs once
    assert [r["rank"] for r in res["rank_sweep"]] == [48]
    assert res["rank_sweep"][0]["accuracy"] == res["chunk_size_sweep"][0]["accuracy"]
    assert [r["chunk_size"] for r in res["chunk_size_sweep"]] == [8, 16]
    assert res["defaults"] == {"rank": 48, "chunk_size": 8} and 0 <= res["full_attention"]["accuracy"] <= 1
    assert all(r["attention_error"] > 0 for r in res["rank_sweep"] + res["chunk_size_sweep"])
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert capsys.readouterr().out.rstrip().endswith("| full attention | - | - | - | - | - | "
                                                      f"{res['full_attention']['accuracy']:.3f} | 0 | 0 | - | - | - |")
