r"""Our GGUF tokenizer (BPETokenizer.from_gguf) against transformers' GGUF tokenizer on the same file.

One known gap in transformers (seen in 5.24): its GGUF tokenizer mapping has no entry for
`tokenizer.ggml.pre = "smollm"`, so it splits text with the plain GPT-2 regex and skips the digit
isolation of SmolLM2's pre-tokenizer (llama.cpp's "smollm" type runs the regex `\p{N}` before the
GPT-2 regex; our tokenizer runs `Digits(individual_digits=True)` before ByteLevel). The two only
disagree where whitespace directly precedes a numeric character: "\n\n3" is ["\n\n", "3"] for
llama.cpp and us but ["\n", "\n", "3"] for transformers' GGUF tokenizer.
So every text is checked against transformers' tokenizer with llama.cpp's smollm split put back,
and, where the gap cannot arise, against transformers' tokenizer exactly as it loads.
"""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest

import shadowkv_jax as sk

# llama.cpp (src/llama-vocab.cpp), LLAMA_VOCAB_PRE_TYPE_SMOLLM: split by each regex in turn; text a
# regex does not match stays a piece of its own (as with `Split(..., "isolated")`)
LLAMA_CPP_SMOLLM_REGEXES = (
    r"\p{N}",
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
)

TEXTS = {
    "accents": "Café naïve façade — résumé, Ångström, Œuvre, Straße; ΑΒΓ αβγ; Привет, мир!",
    "cjk": "日本語のテキストと中文字符，한국어 문장。全角：ＡＢＣ１２３",
    "emoji": "Emoji: 👍🏽 🇫🇷 👨‍👩‍👧‍👦 🤖✨ (skin tone, flag, ZWJ family)",
    "rtl": "שלום עולם — مرحبا بالعالم 123",
    "combining": "e\u0301 vs \u00e9, a\u0308, \u200bzero\u200cwidth, \ufeffBOM",
    "python": "def f(x):\n\tif x > 0:\n\t\treturn x ** 2\n    else:\n        return -x  # negate\n",
    "code_mixed": "x = [1, 2, 3]; y = {'a': 1.5e-3}\r\n\tz = \"tab\tsep\"  \n}}\n\n",
    "numbers": "12345678901234567890 3.14159 -42 0.5 1,000,000 2024-01-15 15/01/2024 12:30:45 "
               "v1.2.3 $19.99 1e10 007\n2\t3",
    "numbers_unicode": "Arabic-Indic ٣٤٥, fractions ½ ¾, x², ①, Ⅻ; after spaces:  ٣ \n\n½",
    "whitespace": "a  b   c    d\n\n\nnew\t\t\ttabs   \n  \n \u00a0nbsp\u3000ideographic   ",
    "contractions": "I'm you're they'll we've it's I'd HE'S DON'T",
    "chat_markup": "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
    "special_inline": "text<|im_end|>more<|endoftext|> <|im_start|>x",
    "special_lookalikes": "<|im_start <|unknown|> <im_end> |im_end|",
    "empty": "",
    "space": " ",
    "spaces": "   ",
    "newline": "\n",
    "newlines": "\n\n",
    "tab": "\t",
    "mixed_ws": " \n \n\t",
    "dot": ".",
    "letter": "a",
}
SPECIAL = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")


@pytest.fixture(scope="module")
def tok(smollm2):
    return smollm2.tokenizer


@pytest.fixture(scope="module")
def llama_cpp_ref(hf_smollm2_tokenizer):
    """transformers' GGUF tokenizer (vocab, merges, added tokens) with llama.cpp's smollm split."""
    from tokenizers import Regex, Tokenizer, pre_tokenizers as pt

    backend = Tokenizer.from_str(hf_smollm2_tokenizer.backend_tokenizer.to_str())
    backend.pre_tokenizer = pt.Sequence(
        [pt.Split(Regex(r), behavior="isolated") for r in LLAMA_CPP_SMOLLM_REGEXES]
        + [pt.ByteLevel(add_prefix_space=False, use_regex=False)])
    return backend


def _transformers_gap(text: str) -> bool:
    """Where transformers' missing digit split can change ids: a numeric char right after two
    whitespace chars (they stay one piece, e.g. "\n\n"), or right after one space when it is not
    ASCII (the vocabulary merges "Ġ" with a leading non-ASCII byte, e.g. " ٣"). One whitespace before
    an ASCII digit is safe: SmolLM2's merges never join a digit with anything."""
    for i, c in enumerate(text):
        if unicodedata.category(c).startswith("N") and i and text[i - 1].isspace():
            if (i > 1 and text[i - 2].isspace()) or not c.isascii():
                return True
    return False


def _check_same_ids(tok, hf_tok, llama_cpp_ref, text):
    ours = tok.encode(text, add_special_tokens=False)
    ref = llama_cpp_ref.encode(text, add_special_tokens=False).ids
    assert ours == ref, f"{text[:60]!r}: ours {ours[:40]} != llama.cpp-split reference {ref[:40]}"
    if not _transformers_gap(text):
        plain = hf_tok.encode(text, add_special_tokens=False)
        assert ours == plain, f"{text[:60]!r}: ours {ours[:40]} != transformers {plain[:40]}"
        # with special tokens too (SmolLM2 adds no BOS; both sides must agree on that)
        assert tok.encode(text) == hf_tok.encode(text)
    return ours


@pytest.mark.parametrize("name", list(TEXTS))
def test_ids_match_transformers(tok, hf_smollm2_tokenizer, llama_cpp_ref, name):
    _check_same_ids(tok, hf_smollm2_tokenizer, llama_cpp_ref, TEXTS[name])


def test_long_english_matches_transformers(tok, hf_smollm2_tokenizer, llama_cpp_ref, english_long):
    assert not _transformers_gap(english_long)
    ids = _check_same_ids(tok, hf_smollm2_tokenizer, llama_cpp_ref, english_long)
    assert len(ids) >= 700


def test_digits_after_whitespace(tok, llama_cpp_ref):
    """The transformers gap, pinned to llama.cpp's split (SmolLM2's own tokenizer agrees)."""
    newline2, space2 = (tok.backend.token_to_id(t) for t in ("\u010a\u010a", "\u0120\u0120"))
    assert tok.encode("\n\n3") == [newline2, tok.backend.token_to_id("3")]
    assert tok.encode("  3") == [space2, tok.backend.token_to_id("3")]
    for text in ("\n\n2024", "x =  42", "\r\n345", "a\t\t7 \u0663", "  \u00bd"):
        assert tok.encode(text) == llama_cpp_ref.encode(text, add_special_tokens=False).ids


def test_fuzzed_text_matches_transformers(tok, hf_smollm2_tokenizer, llama_cpp_ref):
    """Seeded random mixtures of the pieces that stress pre-tokenization boundaries."""
    pieces = ["the", " The", "ing", "é", "日本", "한", "👍", "🏽", "\u200d", "ש", "ع", "0", "12", "345",
              ".", ",", "'s", "'", "-", "(", "\"", " ", "  ", "\t", "\n", "\r\n", "\u00a0", "<|im_end|>",
              "<|im_start|>", "<|", "|>", "_", "#", "$", "{", "}", "\\", "x"]
    rng = np.random.default_rng(1234)
    for _ in range(300):
        text = "".join(rng.choice(pieces, size=rng.integers(1, 25)))
        _check_same_ids(tok, hf_smollm2_tokenizer, llama_cpp_ref, text)


def test_special_tokens_are_single_ids(tok, hf_smollm2_tokenizer):
    for s in SPECIAL:
        [i] = tok.encode(s, add_special_tokens=False)
        assert i == hf_smollm2_tokenizer.convert_tokens_to_ids(s)
    ids = tok.encode(TEXTS["chat_markup"], add_special_tokens=False)
    assert ids.count(tok.backend.token_to_id("<|im_start|>")) == 2
    assert ids.count(tok.backend.token_to_id("<|im_end|>")) == 1


@pytest.mark.parametrize("name", list(TEXTS))
def test_round_trip(tok, name):
    text = TEXTS[name]
    ids = tok.encode(text)
    assert tok.decode(ids, skip_special_tokens=False) == text
    if not any(s in text for s in SPECIAL):
        assert tok.decode(ids) == text
    else:  # the default decode drops the special tokens and nothing else
        stripped = text
        for s in SPECIAL:
            stripped = stripped.replace(s, "")
        assert tok.decode(ids) == stripped


def test_round_trip_long(tok, english_long):
    ids = tok.encode(english_long)
    assert tok.decode(ids) == english_long


def test_chat_prompt_matches_transformers(tok, hf_smollm2_tokenizer):
    question = "What is the capital of France?"
    ref = hf_smollm2_tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                                   tokenize=False, add_generation_prompt=True)
    ours = tok.chat_prompt(question)
    assert ours == ref
    assert ours.startswith("<|im_start|>") and ours.endswith("<|im_start|>assistant\n")
    assert tok.encode(ours, add_special_tokens=False) == hf_smollm2_tokenizer.encode(
        ref, add_special_tokens=False)


def test_eos_ids_include_im_end(tok, hf_smollm2_tokenizer):
    im_end = tok.backend.token_to_id("<|im_end|>")
    assert im_end is not None and im_end == hf_smollm2_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in tok.eos_ids
    # the file's own EOS id (transformers' eos_token_id for this GGUF differs between versions)
    from gguf import GGUFReader

    eos = GGUFReader(sk.default_model_path()).fields["tokenizer.ggml.eos_token_id"].contents()
    assert tok.eos_ids[0] == eos
    assert tok.is_chat
    assert tok.vocab_size == len(hf_smollm2_tokenizer)
