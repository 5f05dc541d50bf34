"""Training data for `--data PATH`: read a local file, format it as the Unsloth notebooks do, tokenize it.

Accepted files: JSON (a list of objects), JSON Lines, or Parquet, each example in one of three forms:
- alpaca: `instruction`, `input`, `output` -> the notebooks' Alpaca prompt + EOS;
- chat: `messages` (a list of {role, content}) -> the tokenizer's chat template, or a ChatML-style
  template when the tokenizer has none (the synthetic checkpoints have none), + EOS;
- text: `text` -> the text + EOS.
Nothing is downloaded. A synthetic checkpoint's word-level tokenizer would turn real text into
unknown tokens, so for synthetic models the text is tokenized with a byte-level BPE tokenizer trained
on the dataset itself (vocabulary capped at the model's), which gives real-text token counts; records
say which tokenizer was used. Token ids are handed to the trainer pre-tokenized, so every recipe
trains on the same ids.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from bench.config.settings import file_sha256

FORMS = ("alpaca", "chat", "text")
SUFFIXES = (".json", ".jsonl", ".parquet")
#: The Alpaca prompt of Unsloth's notebooks (e.g. Llama3.1_(8B)-Alpaca); EOS is appended after it.
ALPACA_PROMPT = """Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.

### Instruction:
{}

### Input:
{}

### Response:
{}"""
#: Used only when a tokenizer has no chat template (synthetic checkpoints).
CHATML = "<|im_start|>{role}\n{content}<|im_end|>\n"
BPE_MAX_VOCAB = 32000


class DataError(ValueError):
    """A data file the suite cannot use (CLI exit code 2)."""


@dataclass(frozen=True)
class DatasetInfo:
    """What a record says about its training data. Token counts are after formatting and EOS."""

    name: str  # file name
    sha256: str  # of the file's bytes
    form: str  # alpaca | chat | text
    examples: int
    tokenizer: str  # "model" or "bpe-<vocab>-trained-on-data"
    token_length_p50: int
    token_length_p90: int
    token_length_p99: int
    token_length_max: int
    token_length_mean: float
    truncated: int  # examples longer than the cell's seq_len (cut to it)
    packing: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_examples(path: Path) -> list[dict[str, Any]]:
    """The examples of a JSON / JSONL / Parquet file, as dicts; DataError naming what is wrong."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise DataError(f"data file {path}: use a .json, .jsonl or .parquet file")
    try:
        if path.suffix.lower() == ".parquet":
            import pandas as pd

            return pd.read_parquet(path).to_dict(orient="records")
        text = path.read_text(encoding="utf-8")
    except (OSError, ImportError, ValueError) as exc:
        raise DataError(f"cannot read data file {path}: {exc}") from None
    try:
        if path.suffix.lower() == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"data file {path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise DataError(f"data file {path}: expected a list of objects (one example each)")
    if not rows:
        raise DataError(f"data file {path} holds no examples")
    return rows


def detect_form(examples: list[dict[str, Any]], where: str = "data") -> str:
    """alpaca, chat or text, from the first example's fields; every example must have them."""
    first = examples[0]
    if "messages" in first:
        form, needed = "chat", ("messages",)
    elif "instruction" in first and "output" in first:
        form, needed = "alpaca", ("instruction", "output")
    elif "text" in first:
        form, needed = "text", ("text",)
    else:
        raise DataError(f"{where}: examples need 'instruction'/'input'/'output' (Alpaca), 'messages' (chat) "
                        f"or 'text'; the first has {sorted(first)}")
    for i, ex in enumerate(examples):
        missing = [k for k in needed if k not in ex]
        if missing:
            raise DataError(f"{where}: example {i} lacks {missing} ({form} form)")
    return form


def format_example(example: dict[str, Any], form: str, eos_token: str, tokenizer=None) -> str:
    """One example as training text, ending in EOS."""
    if form == "alpaca":
        text = ALPACA_PROMPT.format(example.get("instruction") or "", example.get("input") or "",
                                    example.get("output") or "")
    elif form == "chat":
        messages = example["messages"]
        if tokenizer is not None and getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(messages, tokenize=False)
        else:
            text = "".join(CHATML.format(role=m.get("role", ""), content=m.get("content", "")) for m in messages)
    else:
        text = str(example["text"])
    return text if text.endswith(eos_token) else text + eos_token


def train_bpe(texts: list[str], vocab_size: int, special_tokens: list[str]):
    """A byte-level BPE tokenizer trained on `texts` (vocab <= vocab_size), as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=special_tokens[0])


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile (q in 0..100) of already sorted values."""
    k = max(0, min(len(sorted_values) - 1, int(round(q / 100 * len(sorted_values) + 0.5)) - 1))
    return int(sorted_values[k])


@dataclass
class TokenizedData:
    input_ids: list[list[int]]  # one list per example, cut to seq_len
    lengths: list[int]  # each example's token count before the cut
    info: DatasetInfo


def load_tokenized(path: Path, tokenizer, *, synthetic: bool, vocab_size: int, seq_len: int, packing: bool,
                   max_examples: Optional[int] = None) -> TokenizedData:
    """Read, format and tokenize `path` for a model whose tokenizer is `tokenizer`.

    With `synthetic`, a BPE tokenizer trained on the formatted texts replaces it (see the module
    docstring); its ids stay below `vocab_size`, and its EOS is the model's EOS id.
    """
    path = Path(path)
    examples = read_examples(path)
    if max_examples:
        examples = examples[:max_examples]
    form = detect_form(examples, str(path))
    eos = tokenizer.eos_token or "</s>"
    texts = [format_example(ex, form, eos, tokenizer) for ex in examples]
    if synthetic:
        vocab = min(vocab_size, BPE_MAX_VOCAB)
        bpe = train_bpe([t[: -len(eos)] for t in texts], vocab, [eos])
        eos_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else vocab_size - 1
        ids = [bpe(t[: -len(eos)], add_special_tokens=False)["input_ids"] + [eos_id] for t in texts]
        tok_name = f"bpe-{len(bpe)}-trained-on-data"
    else:
        ids = [tokenizer(t, add_special_tokens=True)["input_ids"] for t in texts]
        tok_name = "model"
    lengths = sorted(len(x) for x in ids)
    info = DatasetInfo(
        name=path.name, sha256=file_sha256(path), form=form, examples=len(ids), tokenizer=tok_name,
        token_length_p50=percentile(lengths, 50), token_length_p90=percentile(lengths, 90),
        token_length_p99=percentile(lengths, 99), token_length_max=lengths[-1],
        token_length_mean=round(statistics.fmean(lengths), 2), truncated=sum(n > seq_len for n in lengths),
        packing=packing)
    return TokenizedData([x[:seq_len] for x in ids], [len(x) for x in ids], info)


def check_data_file(path: Path) -> str:
    """Validate a --data file up front (readable, a known form); return its form."""
    return detect_form(read_examples(Path(path)), str(path))
