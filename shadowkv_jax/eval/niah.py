"""Needle in a haystack with a noise haystack (RULER's "niah_single" style).

A needle "One of the special magic numbers for {key} is: {value}." is placed at a relative depth in
repeated noise sentences; the question asks for the number. Prompts are fitted to a target token
count with the model's tokenizer (chat template included) and are deterministic from a seed. A case
counts as found when the number appears in the output.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Sequence

NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
KEYS = ["apple", "river", "lantern", "violet", "copper", "meadow", "falcon", "harbor", "cedar", "glacier",
        "pepper", "canyon", "orchid", "marble", "thunder", "willow", "saffron", "compass", "ember", "quartz"]
QUESTION = "What is the special magic number for {key} mentioned in the provided text?"
INSTRUCTION = ("Some special magic numbers are hidden within the following text. Make sure to memorize "
               "them. I will quiz you about the numbers afterwards.\n")
ANSWER_PREFIX = "The special magic number for {key} mentioned in the provided text is"


@dataclasses.dataclass(frozen=True)
class NeedleCase:
    prompt_ids: tuple[int, ...]
    answer: str
    key: str
    target_tokens: int
    depth: float


def _prompt_text(tokenizer, repeats: int, depth: float, key: str, value: str, chat: bool) -> str:
    sentences = [NOISE] * repeats
    needle = f"One of the special magic numbers for {key} is: {value}. "
    sentences.insert(round(depth * repeats), needle)
    body = INSTRUCTION + "".join(sentences) + "\n" + QUESTION.format(key=key)
    return tokenizer.chat_prompt(body) if chat else body


def make_case(tokenizer, target_tokens: int, depth: float, key: str, value: str,
              chat: bool | None = None) -> NeedleCase:
    """Fit the haystack so the whole prompt (template and answer prefix included) is <= target."""
    chat = tokenizer.is_chat if chat is None else chat
    prefix = " " + ANSWER_PREFIX.format(key=key)

    def ids_for(repeats):
        text = _prompt_text(tokenizer, repeats, depth, key, value, chat)
        return tokenizer.encode(text + prefix.strip() if chat else text + prefix,
                                add_special_tokens=not chat)

    per = max(1, len(tokenizer.encode(NOISE * 8, add_special_tokens=False)) // 8)
    repeats = max(1, target_tokens // per)
    ids = ids_for(repeats)
    while len(ids) > target_tokens and repeats > 1:
        repeats -= max(1, (len(ids) - target_tokens) // per)
        ids = ids_for(repeats)
    return NeedleCase(tuple(ids), value, key, target_tokens, depth)


def make_cases(tokenizer, lengths: Sequence[int], depths: Sequence[float], needles_per_depth: int = 2,
               seed: int = 0) -> list[NeedleCase]:
    rng = random.Random(seed)
    cases = []
    for length in lengths:
        for depth in depths:
            for _ in range(needles_per_depth):
                key = rng.choice(KEYS)
                value = str(rng.randint(1_000_000, 9_999_999))
                cases.append(make_case(tokenizer, length, depth, key, value))
    return cases


def found(case: NeedleCase, output: str) -> bool:
    return case.answer in output.replace(",", "")


def run_cases(model, cases: Sequence[NeedleCase], method="full", batch_size: int = 4,
              max_new_tokens: int = 12) -> list[dict]:
    """Greedy answers for each case; one dict per case (key, depth, length, output, found)."""
    from ..generation import generate

    rows = []
    for i in range(0, len(cases), batch_size):
        group = cases[i: i + batch_size]
        results = generate(model, [list(c.prompt_ids) for c in group], method=method,
                           max_new_tokens=max_new_tokens)
        for c, r in zip(group, results):
            rows.append({"key": c.key, "answer": c.answer, "depth": c.depth, "target_tokens": c.target_tokens,
                         "prompt_tokens": len(c.prompt_ids), "output": r.text, "found": found(c, r.text),
                         "hit_rate": r.stats.get("hit_rate")})
    return rows
