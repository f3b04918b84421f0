"""Scoring rules: RULER's string match and LongBench's metrics (QA F1, ROUGE-L, classification,
code edit similarity), written from their published definitions."""

from __future__ import annotations

import difflib
import re
import string
from collections import Counter
from typing import Sequence


def ruler_string_match_all(prediction: str, expected: Sequence[str]) -> float:
    """Fraction of the expected strings found in the prediction (case-insensitive)."""
    if not expected:
        raise ValueError("expected must name at least one string")
    pred = prediction.lower()
    return sum(e.lower() in pred for e in expected) / len(expected)


def normalize_answer(s: str) -> str:
    """Lowercase, drop punctuation and the articles a/an/the, collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def qa_f1(prediction: str, ground_truth: str) -> float:
    """Token-level F1 between normalized prediction and answer."""
    pred, gold = normalize_answer(prediction).split(), normalize_answer(ground_truth).split()
    common = Counter(pred) & Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, ground_truth: str) -> float:
    """ROUGE-L F-measure over whitespace tokens (lowercased)."""
    pred, gold = prediction.lower().split(), ground_truth.lower().split()
    if not pred or not gold:
        return 0.0
    lcs = _lcs(pred, gold)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(gold)
    return 2 * precision * recall / (precision + recall)


def classification_score(prediction: str, ground_truth: str, all_classes: Sequence[str]) -> float:
    """1 / (number of class names mentioned) if the right one is among them, else 0. Class names that
    are substrings of the right one (but not it) do not count against it."""
    matches = [c for c in all_classes if c in prediction]
    matches = [c for c in matches if not (c in ground_truth and c != ground_truth)]
    return 1.0 / len(matches) if ground_truth in matches else 0.0


def code_edit_similarity(prediction: str, ground_truth: str) -> float:
    """Edit similarity (0..1) between the first code line of the prediction and the answer."""
    lines = [ln for ln in prediction.lstrip("\n").split("\n")
             if ln.strip() and not ln.strip().startswith(("`", "#", "//"))]
    first = lines[0] if lines else ""
    return difflib.SequenceMatcher(None, first, ground_truth).ratio()


def best_over_answers(metric, prediction: str, answers: Sequence[str], **kw) -> float:
    """LongBench scores a prediction against each reference answer and keeps the best."""
    return max(metric(prediction, a, **kw) for a in answers)
