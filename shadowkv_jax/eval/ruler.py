"""RULER-style synthetic tasks, written here from the task descriptions (no data is downloaded).

Tasks: niah_single, niah_multikey, niah_multivalue, niah_multiquery, vt (variable tracking through a
chain of assignments), cwe (common-words extraction), fwe (frequent-words extraction). The NIAH and vt
haystack is RULER's noise ("The grass is green. ...") or, with haystack="natural", English prose: the
sentences of the Python reference manual's topic texts that every CPython ships (`pydoc_data.topics`,
PSF license), read from a seed-chosen starting sentence. Every sample is deterministic from (task, target length, seed), fitted to the target
token count with the model's tokenizer (chat template and answer prefix included), and scored by
RULER's rule: the fraction of expected strings found in the output, case-insensitive.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import re
import string
from collections import Counter
from typing import Callable

from .niah import NOISE
from .scoring import ruler_string_match_all

TASKS = ("niah_single", "niah_multikey", "niah_multivalue", "niah_multiquery", "vt", "cwe", "fwe")
HAYSTACKS = ("noise", "natural")
NIAH_INSTRUCTION = ("Some special magic numbers are hidden within the following text. Make sure to memorize "
                    "them. I will quiz you about the numbers afterwards.\n")


@dataclasses.dataclass(frozen=True)
class Sample:
    task: str
    prompt_ids: tuple[int, ...]
    expected: tuple[str, ...]
    target_tokens: int

    def score(self, output: str) -> float:
        return ruler_string_match_all(output, self.expected)


def _word(rng: random.Random, n: int = 6) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(n))


def _number(rng: random.Random) -> str:
    return str(rng.randint(1_000_000, 9_999_999))


def _fit(tokenizer, build: Callable[[int], tuple[str, str]], target: int, chat: bool) -> tuple[int, ...]:
    """Largest size n whose prompt fits `target` tokens; build(n) -> (body, answer_prefix)."""
    def ids(n):
        body, prefix = build(n)
        text = tokenizer.chat_prompt(body) + prefix if chat else body + "\n" + prefix
        return tokenizer.encode(text, add_special_tokens=not chat)

    lo, hi = 1, 2
    while len(ids(hi)) <= target:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if len(ids(mid)) <= target else (lo, mid)
    out = ids(lo)
    if len(out) > target:
        raise ValueError(f"target_tokens={target} is too small for even the smallest prompt ({len(out)} tokens)")
    return tuple(out)


@functools.lru_cache(maxsize=1)
def natural_sentences() -> tuple[str, ...]:
    """Prose sentences (40-300 characters, no code) from the standard library's `pydoc_data.topics`."""
    try:
        from pydoc_data import topics
    except ImportError:
        raise ValueError("haystack='natural' needs the standard library's pydoc_data package, which this Python "
                         "lacks; use haystack='noise'") from None
    text = re.sub(r"\s+", " ", " ".join(topics.topics.values()))
    out = [x.strip() for x in re.split(r"(?<=[.!?])\s+", text)]
    return tuple(x for x in out if 40 <= len(x) <= 300 and x[0].isupper() and ">>>" not in x and "::" not in x)


def _filler(haystack: str, rng: random.Random) -> Callable[[int], list[str]]:
    """n -> n haystack sentences."""
    if haystack == "noise":
        return lambda n: [NOISE] * n
    if haystack != "natural":
        raise ValueError(f"haystack={haystack!r} is not one of {HAYSTACKS}")
    sentences = natural_sentences()
    start = rng.randrange(len(sentences))  # drawn last: noise samples stay as they were
    return lambda n: [sentences[(start + i) % len(sentences)] + " " for i in range(n)]


def _haystack(n: int, needles: list[tuple[float, str]], filler=None) -> str:
    sentences = (filler or _filler("noise", random.Random(0)))(n)
    for depth, text in sorted(needles, key=lambda x: -x[0]):
        sentences.insert(round(depth * n), text + " ")
    return "".join(sentences)


def _niah(task: str, rng: random.Random, haystack: str = "noise"):
    keys = [_word(rng) for _ in range(4)]
    values = [_number(rng) for _ in range(4)]
    depths = [rng.random() for _ in range(4)]
    needle = "One of the special magic numbers for {} is: {}."
    if task == "niah_single":
        items, ask, expected = [(keys[0], values[0])], [keys[0]], [values[0]]
    elif task == "niah_multikey":  # three distractor keys
        items, ask, expected = list(zip(keys, values)), [keys[0]], [values[0]]
    elif task == "niah_multivalue":
        items, ask, expected = [(keys[0], v) for v in values], [keys[0]], values
    else:  # niah_multiquery
        items, ask, expected = list(zip(keys, values)), keys, values
    placed = [(d, needle.format(k, v)) for d, (k, v) in zip(depths, items)]
    filler = _filler(haystack, rng)
    if task == "niah_multivalue":
        question = f"What are all the special magic numbers for {ask[0]} mentioned in the provided text?"
        prefix = f"The special magic numbers for {ask[0]} mentioned in the provided text are"
    elif len(ask) > 1:
        question = f"What are all the special magic numbers for {', '.join(ask[:-1])}, and {ask[-1]} mentioned in the provided text?"
        prefix = f"The special magic numbers for {', '.join(ask[:-1])}, and {ask[-1]} mentioned in the provided text are"
    else:
        question = f"What is the special magic number for {ask[0]} mentioned in the provided text?"
        prefix = f"The special magic number for {ask[0]} mentioned in the provided text is"
    return (lambda n: (NIAH_INSTRUCTION + _haystack(n, placed, filler) + "\n" + question, prefix)), expected


def _vt(rng: random.Random, hops: int = 4, haystack: str = "noise"):
    names = [_word(rng, 5).upper() for _ in range(hops + 1)]
    value = str(rng.randint(10000, 99999))
    chain = [f"VAR {names[0]} = {value}."] + [f"VAR {names[i + 1]} = VAR {names[i]}." for i in range(hops)]
    depths = sorted(rng.random() for _ in chain)
    placed = list(zip(depths, chain))
    filler = _filler(haystack, rng)
    question = (f"Memorize and track the chain(s) of variable assignment hidden in the text above. "
                f"Question: Find all variables that are assigned the value {value} in the text above.")
    prefix = f"According to the chain(s) of variable assignment in the text above, {len(names)} variables are assigned the value {value}, they are:"
    return (lambda n: (_haystack(n, placed, filler) + "\n" + question, prefix)), names


def _cwe(rng: random.Random, n_common: int = 10, common_freq: int = 10, rare_freq: int = 3):
    common = [_word(rng) for _ in range(n_common)]
    pool = [_word(rng) for _ in range(4000)]

    def build(n):
        words = common * common_freq + [w for w in pool[:n] for _ in range(rare_freq)]
        random.Random(n).shuffle(words)
        listing = " ".join(f"{i + 1}. {w}" for i, w in enumerate(words))
        return (f"Below is a numbered list of words. In these words, some appear more often than others. "
                f"Memorize the ones that appear most often.\n{listing}\nQuestion: What are the {n_common} most "
                f"common words in the above list?",
                f"Answer: The top {n_common} words that appear most often in the list are:")
    return build, common


def _fwe(rng: random.Random, top: int = 3, alpha: float = 2.0):
    vocab = [_word(rng, 5) for _ in range(400)]

    def build(n):
        local = random.Random(n)
        base = 40 + 3 * n  # Zipf counts base / rank^alpha; >= 40 keeps the top four strictly ordered
        used = vocab[: min(len(vocab), 10 + n)]
        counts = {w: max(1, int(base / (i + 1) ** alpha)) for i, w in enumerate(used)}
        words = [w for w, c in counts.items() for _ in range(c)]
        local.shuffle(words)
        return (f"Read the following coded text and track the frequency of each coded word. Find the three "
                f"most frequently appeared coded words.\n{' '.join(words)}\nQuestion: Do not provide any "
                f"explanation. Please ignore the dots '....'. What are the three most frequently appeared "
                f"words in the above coded text?",
                "Answer: According to the coded text above, the three most frequently appeared words are:")
    expected = vocab[:top]  # counts fall with rank, so the first three are the most frequent
    return build, expected


def make_sample(tokenizer, task: str, target_tokens: int, seed: int = 0, chat: bool | None = None,
                haystack: str = "noise") -> Sample:
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not one of {TASKS}")
    if haystack not in HAYSTACKS:
        raise ValueError(f"haystack={haystack!r} is not one of {HAYSTACKS}")
    chat = tokenizer.is_chat if chat is None else chat
    rng = random.Random(f"{task}:{target_tokens}:{seed}")
    if task.startswith("niah"):
        build, expected = _niah(task, rng, haystack)
    elif task == "vt":
        build, expected = _vt(rng, haystack=haystack)
    else:
        build, expected = {"cwe": _cwe, "fwe": _fwe}[task](rng)
    return Sample(task, _fit(tokenizer, build, target_tokens, chat), tuple(expected), target_tokens)


def make_samples(tokenizer, tasks, lengths, samples: int, seed: int = 0, haystack: str = "noise") -> list[Sample]:
    return [make_sample(tokenizer, t, n, seed + i, haystack=haystack) for t in tasks for n in lengths
            for i in range(samples)]


def word_counts_check(text: str) -> Counter:
    """Word counts of a cwe/fwe body (used by tests to confirm the expected answers)."""
    return Counter(w for w in text.replace(".", " ").split() if w.isalpha() and w.islower())
