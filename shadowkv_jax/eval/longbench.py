"""LongBench-format data from local files (nothing is downloaded): one jsonl per dataset, rows with
`input`, `context`, `answers` (list), optional `all_classes`, `length`, `_id`.

Point `load_dataset` at a file such as `data/longbench/qasper.jsonl`; the dataset name (file stem)
selects the metric and the prompt template.
"""

from __future__ import annotations

import dataclasses
import json
import os
from functools import partial
from typing import Callable

from .scoring import best_over_answers, classification_score, code_edit_similarity, qa_f1, rouge_l

QA = "Answer the question based on the given passages. Only give me the answer.\n\n{context}\n\nQuestion: {input}\nAnswer:"
SUMMARY = "Summarize the following text.\n\n{context}\n\n{input}\nSummary:"
CLASSIFY = "Classify the text into one of the given categories.\n\n{context}\n\n{input}\nCategory:"
CODE = "Complete the code.\n\n{context}{input}"

DATASETS: dict[str, tuple[str, Callable]] = {
    **{n: (QA, qa_f1) for n in ("narrativeqa", "qasper", "multifieldqa_en", "hotpotqa", "2wikimqa", "musique")},
    **{n: (SUMMARY, rouge_l) for n in ("gov_report", "qmsum", "multi_news", "samsum")},
    **{n: (CLASSIFY, classification_score) for n in ("trec", "lsht")},
    **{n: (CODE, code_edit_similarity) for n in ("lcc", "repobench-p")},
}


@dataclasses.dataclass(frozen=True)
class Example:
    dataset: str
    prompt: str
    answers: tuple[str, ...]
    all_classes: tuple[str, ...] = ()

    def score(self, prediction: str) -> float:
        metric = DATASETS[self.dataset][1]
        if metric is classification_score:
            metric = partial(classification_score, all_classes=self.all_classes)
        return best_over_answers(metric, prediction, self.answers)


def load_dataset(path: str, limit: int | None = None) -> list[Example]:
    """Examples of one local LongBench jsonl file; errors name the file, line and field."""
    name = os.path.basename(path).removesuffix(".jsonl").removesuffix("_e")
    if name not in DATASETS:
        raise ValueError(f"{path!r}: dataset {name!r} is not known; known: {sorted(DATASETS)}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"LongBench file not found: {path!r} (LongBench is not downloadable here; "
                                "place its jsonl files locally and pass their paths)")
    template = DATASETS[name][0]
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                answers = row["answers"]
                prompt = template.format(context=row["context"], input=row.get("input", ""))
            except (json.JSONDecodeError, KeyError) as e:
                raise ValueError(f"{path!r} line {i}: not a LongBench row ({type(e).__name__}: {e})") from None
            if not isinstance(answers, list) or not answers:
                raise ValueError(f"{path!r} line {i}: 'answers' must be a non-empty list")
            out.append(Example(name, prompt, tuple(map(str, answers)), tuple(row.get("all_classes") or ())))
            if limit is not None and len(out) >= limit:
                break
    return out
