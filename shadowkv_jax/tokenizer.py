"""Tokenizers without torch.

* GGUF files: a `tokenizers` byte-level BPE built from the embedded vocab and merges, split the way
  llama.cpp's `tokenizer.ggml.pre` says, plus the file's chat template (rendered with jinja2).
* HF directories: transformers' AutoTokenizer (fast tokenizers; no torch import).

Both expose one small interface: `encode`, `decode`, `chat_prompt`, `bos_id`, `eos_ids`, `is_chat`.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Sequence

# GPT-2 style split preceded by single digits: how llama.cpp's "smollm" pre-tokenizer splits.
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED = 3, 4


class TokenizerError(ValueError):
    pass


def _pre_tokenizer(pre: str | None):
    from tokenizers import Regex, pre_tokenizers as pt

    byte_level = pt.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in (None, "default", "gpt2", "gpt-2"):
        return byte_level
    if pre == "smollm":
        return pt.Sequence([pt.Digits(individual_digits=True), byte_level])
    split = {"llama3": LLAMA3_SPLIT, "llama-v3": LLAMA3_SPLIT, "llama-bpe": LLAMA3_SPLIT,
             "smaug-bpe": LLAMA3_SPLIT, "qwen2": QWEN2_SPLIT}.get(pre)
    if split is None:
        warnings.warn(f"GGUF tokenizer.ggml.pre={pre!r} is not known here; using the GPT-2 split, "
                      "which may tokenize numbers or whitespace differently from the model's training")
        return byte_level
    return pt.Sequence([pt.Split(Regex(split), behavior="isolated"),
                        pt.ByteLevel(add_prefix_space=False, use_regex=False)])


def render_chat(template: str, messages: Sequence[dict], add_generation_prompt: bool = True,
                **extra) -> str:
    """Render an HF-style chat template with jinja2 (sandboxed, as transformers does)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(msg):
        raise TokenizerError(f"chat template: {msg}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(messages=list(messages),
                                            add_generation_prompt=add_generation_prompt, **extra)


class BPETokenizer:
    """A `tokenizers.Tokenizer` plus the special ids and chat template a GGUF file carries."""

    def __init__(self, backend, *, bos_id: int | None, eos_ids: Sequence[int],
                 chat_template: str | None, add_bos: bool):
        self.backend = backend
        self.bos_id = bos_id
        self.eos_ids = tuple(int(i) for i in eos_ids)
        self.chat_template = chat_template
        self.add_bos = add_bos

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_gguf(cls, path_or_reader) -> "BPETokenizer":
        from tokenizers import AddedToken, Tokenizer, decoders, models

        from .weights.gguf import open_gguf

        reader = open_gguf(path_or_reader) if isinstance(path_or_reader, str) else path_or_reader
        fields = reader.fields

        def strings(key):
            f = fields[key]
            return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

        def scalar(key, default=None):
            return fields[key].contents() if key in fields else default

        model = scalar("tokenizer.ggml.model")
        if model != "gpt2":
            raise TokenizerError(f"GGUF tokenizer.ggml.model={model!r} is not supported; supported: 'gpt2' "
                                 "(byte-level BPE)")
        tokens = strings("tokenizer.ggml.tokens")
        merges = [tuple(m.split(" ", 1)) for m in strings("tokenizer.ggml.merges")]
        types = list(fields["tokenizer.ggml.token_type"].contents()) if (
            "tokenizer.ggml.token_type" in fields) else [1] * len(tokens)
        backend = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges,
                                       fuse_unk=False))
        backend.pre_tokenizer = _pre_tokenizer(scalar("tokenizer.ggml.pre"))
        backend.decoder = decoders.ByteLevel()
        backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                    for t, k in zip(tokens, types) if k == TOKEN_TYPE_CONTROL])
        backend.add_tokens([AddedToken(t, special=False, normalized=False)
                            for t, k in zip(tokens, types) if k == TOKEN_TYPE_USER_DEFINED])
        bos = scalar("tokenizer.ggml.bos_token_id")
        eos = [scalar("tokenizer.ggml.eos_token_id")]
        eot = scalar("tokenizer.ggml.eot_token_id")
        template = scalar("tokenizer.chat_template")
        # chat models end a turn with their end-of-turn token; stop there too
        for extra in (eot, backend.token_to_id("<|im_end|>"), backend.token_to_id("<|eot_id|>")):
            if extra is not None and extra not in eos and template:
                eos.append(extra)
        return cls(backend, bos_id=bos, eos_ids=[e for e in eos if e is not None],
                   chat_template=template, add_bos=bool(scalar("tokenizer.ggml.add_bos_token", False)))

    # -- persistence (for our orbax checkpoints) -------------------------------------------
    def save(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self.backend.save(os.path.join(directory, "tokenizer.json"))
        meta = {"kind": "bpe", "bos_id": self.bos_id, "eos_ids": list(self.eos_ids),
                "chat_template": self.chat_template, "add_bos": self.add_bos}
        with open(os.path.join(directory, "shadowkv_tokenizer.json"), "w") as f:
            json.dump(meta, f, indent=1)

    @classmethod
    def load(cls, directory: str) -> "BPETokenizer":
        from tokenizers import Tokenizer

        with open(os.path.join(directory, "shadowkv_tokenizer.json")) as f:
            meta = json.load(f)
        backend = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
        return cls(backend, bos_id=meta["bos_id"], eos_ids=meta["eos_ids"],
                   chat_template=meta["chat_template"], add_bos=meta["add_bos"])

    # -- use ---------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    @property
    def is_chat(self) -> bool:
        return bool(self.chat_template)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = self.backend.encode(text, add_special_tokens=False).ids
        if add_special_tokens and self.add_bos and self.bos_id is not None:
            ids = [self.bos_id] + ids
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode(list(map(int, ids)), skip_special_tokens=skip_special_tokens)

    def chat_prompt(self, user_text: str) -> str:
        if not self.chat_template:
            raise TokenizerError("this tokenizer has no chat template; pass chat=False")
        bos = self.backend.id_to_token(self.bos_id) if self.bos_id is not None else ""
        eos = self.backend.id_to_token(self.eos_ids[0]) if self.eos_ids else ""
        return render_chat(self.chat_template, [{"role": "user", "content": user_text}],
                           bos_token=bos, eos_token=eos)


class HFTokenizer:
    """transformers' AutoTokenizer for HF checkpoint directories (fast tokenizers; no torch)."""

    def __init__(self, directory: str):
        from transformers import AutoTokenizer

        self.directory = directory
        self.hf = AutoTokenizer.from_pretrained(directory)
        eos = self.hf.eos_token_id
        self.eos_ids = tuple([eos] if isinstance(eos, int) else (eos or []))
        self.bos_id = self.hf.bos_token_id

    def save(self, directory: str) -> None:
        self.hf.save_pretrained(directory)

    @classmethod
    def load(cls, directory: str) -> "HFTokenizer":
        return cls(directory)

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    @property
    def is_chat(self) -> bool:
        return bool(getattr(self.hf, "chat_template", None))

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=add_special_tokens))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.hf.decode(list(map(int, ids)), skip_special_tokens=skip_special_tokens)

    def chat_prompt(self, user_text: str) -> str:
        if not self.is_chat:
            raise TokenizerError("this tokenizer has no chat template; pass chat=False")
        return self.hf.apply_chat_template([{"role": "user", "content": user_text}], tokenize=False,
                                           add_generation_prompt=True)


def load_saved_tokenizer(directory: str):
    """The tokenizer stored beside one of our checkpoints (either kind)."""
    if os.path.isfile(os.path.join(directory, "shadowkv_tokenizer.json")):
        return BPETokenizer.load(directory)
    return HFTokenizer.load(directory)
