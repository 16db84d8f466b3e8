"""Offline tokenizers and tiny random seq2seq models, for fast tests and smoke runs.

No pretrained seq2seq backbone can be downloaded here, so the `tiny-*` specs of
`load_backbone` train a ~2000-piece tokenizer on a small English corpus (by default the
text of the first 100 Re-DocRED dev documents) and build a randomly initialised model of
the real architecture around it:

- T5: a Unigram/Metaspace vocabulary wrapped as `T5Tokenizer(vocab=..., extra_ids=0)`
  (`<pad>`=0, `</s>`=1, `<unk>`=2, `</s>` appended like the real one);
- BART/LED: a byte-level BPE with BART's specials `<s> <pad> </s> <unk> <mask>`, wrapped as
  `BartTokenizer` (`add_prefix_space=False` like facebook/bart-large).

Trained tokenizers are cached under `<cache>/tokenizers/<kind>-<hash>/`, the hash covering
the corpus, the vocabulary size and the `tokenizers` version; the same corpus gives
byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import tokenizers
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    AutoTokenizer,
    BartConfig,
    BartForConditionalGeneration,
    BartTokenizer,
    LEDConfig,
    LEDForConditionalGeneration,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    T5Config,
    T5ForConditionalGeneration,
    T5Tokenizer,
)

from dore.data.model import DataError

TokenizerKind = Literal["unigram", "bpe"]
TinyFamily = Literal["t5", "bart", "led"]

TOKENIZER_KIND: dict[TinyFamily, TokenizerKind] = {"t5": "unigram", "bart": "bpe", "led": "bpe"}
VOCAB_SIZE = 2000
N_CORPUS_DOCS = 100
# Absolute learned positions: room for 1024-token inputs and DORE's single-sequence targets (max 514).
MAX_POSITIONS = 1024
LED_MAX_SOURCE_POSITIONS = 4096  # SciREX inputs

_T5_SPECIALS = ["<pad>", "</s>", "<unk>"]  # T5's ids 0, 1, 2
_BART_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # BART's ids 0..3 (mask moved up from the end)
# Unigram EM sums floats in hash-map order: scores differ run to run by ~4e-11 (the piece set does
# not). Rounding to 0.01 makes the saved vocabulary reproducible without changing segmentation much.
_SCORE_DECIMALS = 2


def default_cache_dir() -> Path:
    """`$DORE_CACHE`, else ~/.cache/dore."""
    return Path(os.environ.get("DORE_CACHE") or Path.home() / ".cache" / "dore")


def default_corpus_path() -> Path:
    """`$DORE_TINY_CORPUS`, else Re-DocRED dev under `$DORE_SHARED_DATA` (default ../shared/data)."""
    if path := os.environ.get("DORE_TINY_CORPUS"):
        return Path(path)
    shared = os.environ.get("DORE_SHARED_DATA") or Path(__file__).resolve().parents[3] / "shared" / "data"
    return Path(shared) / "redocred" / "dev_revised.json"


def docred_corpus(path: str | os.PathLike | None = None, n_docs: int = N_CORPUS_DOCS) -> list[str]:
    """The words of the first `n_docs` documents of a DocRED-format json, one string per document."""
    path = Path(path) if path is not None else default_corpus_path()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read a tokenizer corpus: {exc}", file=path) from exc
    if not isinstance(raw, list):
        raise DataError("expected a JSON list of DocRED documents", file=path)
    texts = []
    for i, doc in enumerate(raw[:n_docs]):
        sents = doc.get("sents") if isinstance(doc, dict) else None
        if not isinstance(sents, list) or not all(isinstance(s, list) for s in sents):
            raise DataError("expected a list of token lists", file=path, doc=i, field="sents")
        texts.append(" ".join(str(w) for sent in sents for w in sent))
    return texts


def corpus_hash(kind: TokenizerKind, corpus: Sequence[str], vocab_size: int) -> str:
    """Content key of a trained tokenizer (length-prefixed texts: no two corpora collide by joining)."""
    h = hashlib.sha256(f"{kind}\0{vocab_size}\0tokenizers {tokenizers.__version__}\0".encode())
    for text in corpus:
        data = text.encode("utf-8")
        h.update(len(data).to_bytes(8, "little") + data)
    return h.hexdigest()[:16]


def _train_unigram(corpus: Sequence[str], vocab_size: int) -> T5Tokenizer:
    backend = Tokenizer(models.Unigram())
    # The same pre-tokenizer T5Tokenizer installs, so pieces are learnt as they will be used.
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)])
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=_T5_SPECIALS, unk_token="<unk>",
                                      show_progress=False)
    backend.train_from_iterator(corpus, trainer)
    trained = json.loads(backend.to_str())["model"]["vocab"]
    pieces = sorted(((p, round(s, _SCORE_DECIMALS)) for p, s in trained if p not in _T5_SPECIALS),
                    key=lambda ps: (-ps[1], ps[0]))
    return T5Tokenizer(vocab=[(s, 0.0) for s in _T5_SPECIALS] + pieces, extra_ids=0)


def _train_byte_bpe(corpus: Sequence[str], vocab_size: int) -> BartTokenizer:
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=_BART_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(corpus, trainer)
    model = json.loads(backend.to_str())["model"]
    return BartTokenizer(vocab=model["vocab"], merges=[tuple(m) for m in model["merges"]])


def train_tokenizer(kind: TokenizerKind, corpus: Sequence[str], *, vocab_size: int = VOCAB_SIZE,
                    cache_dir: str | os.PathLike | None = None) -> PreTrainedTokenizerBase:
    """Train (or load from the cache) a T5-style Unigram or a BART-style byte-level BPE tokenizer."""
    if not corpus:
        raise ValueError("the tokenizer corpus is empty")
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / "tokenizers" / f"{kind}-{corpus_hash(kind, corpus, vocab_size)}"
    if not folder.is_dir():
        tokenizer = (_train_unigram if kind == "unigram" else _train_byte_bpe)(corpus, vocab_size)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared like any other
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(folder)  # atomic: concurrent readers never see half a tokenizer
        except OSError:  # another process won the race; its files are identical
            shutil.rmtree(tmp)
    return AutoTokenizer.from_pretrained(folder)


def tiny_tokenizer(family: TinyFamily, corpus: Sequence[str] | None = None, *,
                   cache_dir: str | os.PathLike | None = None) -> PreTrainedTokenizerBase:
    return train_tokenizer(TOKENIZER_KIND[family], docred_corpus() if corpus is None else corpus,
                           cache_dir=cache_dir)


def tiny_model(family: TinyFamily, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A randomly initialised 2-layer, 64-wide model of the family's architecture (seed it first)."""
    vocab, pad, eos = len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id
    if family == "t5":
        config = T5Config(vocab_size=vocab, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                          pad_token_id=pad, eos_token_id=eos, decoder_start_token_id=pad)
        return T5ForConditionalGeneration(config)
    shape = dict(vocab_size=vocab, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                 decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128,
                 pad_token_id=pad, eos_token_id=eos, bos_token_id=tokenizer.bos_token_id,
                 decoder_start_token_id=eos)  # BART/LED start the decoder with </s>
    if family == "bart":
        return BartForConditionalGeneration(BartConfig(max_position_embeddings=MAX_POSITIONS, **shape))
    if family == "led":
        return LEDForConditionalGeneration(LEDConfig(
            attention_window=[16, 16], max_encoder_position_embeddings=LED_MAX_SOURCE_POSITIONS,
            max_decoder_position_embeddings=MAX_POSITIONS, **shape))
    raise ValueError(f"no tiny model for family {family!r} (choose t5, bart or led)")
