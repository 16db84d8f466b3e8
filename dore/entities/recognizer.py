"""`EntityRecognizer`: tokenized documents in, documents with predicted entities out.

    rec = EntityRecognizer.from_pretrained(directory)
    docs = rec.recognize(docs, coref="learned" | "string-match" | None)

Input documents need `tokens` and `sentences`; their entities (and relations, which refer to
them) are ignored and replaced. Each output entity has its mentions (document-level word spans,
sentence, text, the mention's predicted type; character offsets when the input carries
`meta["token_offsets"]`), the majority type, and a confidence in `meta["entity_scores"]` (same
order). The network and its training examples are in `dore.entities.model`; the coreference
backends in `dore.entities.coref`. A saved recognizer is `entities.json` (types, encoder
architecture, windows, default backend, card), `model.safetensors` and the tokenizer's files:
no pickle.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from dore.coref.string_match import StringMatch
from dore.data.model import DataError, Document, atomic_dir, atomic_write_text
from dore.entities.coref import (COREF_BACKENDS, PredictedMention, assemble, learned_clusters, pair_features,
                                 string_match_clusters)
from dore.entities.encoder import Windows, build_encoder, load_encoder, make_windows, max_positions, word_shape
from dore.entities.model import EntityModel, allowed_transitions, antecedent_loss, viterbi

CONFIG_FILE = "entities.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass
class EntityExample:
    doc: Document
    windows: Windows
    sent_of_word: list[int]
    tags: list[int] = field(default_factory=list)  # training only: gold BIO tags per word
    spans: list[tuple[int, int]] = field(default_factory=list)  # gold mentions (distinct spans)
    span_types: list[int] = field(default_factory=list)
    cluster: list[int] = field(default_factory=list)  # each gold mention's entity
    features: Tensor | None = None

    @property
    def input_ids(self) -> list[int]:
        return self.windows.input_ids


def sentence_of_words(doc: Document) -> list[int]:
    out = [0] * len(doc.tokens)
    for k, (s, e) in enumerate(doc.sentences):
        out[s:e] = [k] * (e - s)
    return out


class EntityRecognizer:
    def __init__(self, model: EntityModel, tokenizer: PreTrainedTokenizerBase, types: Sequence[str],
                 encoder_spec: dict, *, window: int, stride: int, default_coref: str = "learned",
                 card: dict | None = None):
        if default_coref not in COREF_BACKENDS:
            raise ValueError(f"coref backend {default_coref!r}; choose one of {', '.join(COREF_BACKENDS)}")
        self.model, self.tokenizer, self.types = model, tokenizer, list(types)
        self.encoder_spec, self.window, self.stride = encoder_spec, window, stride
        self.default_coref, self.card = default_coref, dict(card or {})
        self.type_index = {t: i for i, t in enumerate(self.types)}
        self.allowed = allowed_transitions(len(self.types))

    @classmethod
    def new(cls, backbone: str, types: Sequence[str], *, window: int = 512, stride: int = 256,
            mention_size: int = 128, word_shapes: bool = True, seed: int = 0) -> "EntityRecognizer":
        """A fresh recognizer on a backbone's encoder (heads seeded with `seed`); `window` is capped
        at the encoder's positions."""
        encoder, tokenizer, spec = load_encoder(backbone, seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = EntityModel(encoder, len(types), mention_size=mention_size, word_shapes=word_shapes)
        window = min(window, max_positions(encoder) or window)
        return cls(model, tokenizer, sorted(types), spec, window=window, stride=min(stride, window - 2))

    # --- examples ----------------------------------------------------------------------------
    def example(self, doc: Document, counts: Counter | None = None, *, gold: bool = False) -> EntityExample:
        """The encoder input of a document; with `gold`, its tags and gold mentions as training targets."""
        sentence_starts = {s for s, _ in doc.sentences}
        shapes = [word_shape(w, i in sentence_starts) for i, w in enumerate(doc.tokens)]
        ex = EntityExample(doc, make_windows(self.tokenizer, doc.tokens, self.window, self.stride, shapes),
                           sentence_of_words(doc))
        if counts is not None:
            counts["documents_longer_than_one_window"] += int(len(ex.windows.ids) > 1)
        if not gold:
            return ex
        counts = Counter() if counts is None else counts
        owner: dict[tuple[int, int], tuple[int, str]] = {}
        for e, entity in enumerate(doc.entities):
            for m in entity.mentions:
                mtype = m.type or entity.type
                if mtype not in self.type_index:
                    raise DataError(f"mention type {mtype!r} is not one of the recognizer's types {self.types}",
                                    doc=doc.doc_id, field=f"entities[{e}]")
                if (m.start, m.end) in owner:
                    counts["gold_spans_in_two_entities_first_kept"] += 1
                    continue
                owner[(m.start, m.end)] = (e, mtype)
        ex.tags = [0] * len(doc.tokens)
        for (s, end), (_, mtype) in sorted(owner.items(), key=lambda item: (item[0][0], item[0][0] - item[0][1])):
            if any(ex.tags[s:end]) or len({ex.sent_of_word[s], ex.sent_of_word[end - 1]}) > 1:
                counts["gold_mentions_nested_or_crossing_left_out_of_tags"] += 1
                continue
            k = self.type_index[mtype]
            ex.tags[s:end] = [1 + 2 * k] + [2 + 2 * k] * (end - s - 1)
        ordered = sorted(owner)
        ex.spans = ordered
        ex.span_types = [self.type_index[owner[s][1]] for s in ordered]
        ex.cluster = [owner[s][0] for s in ordered]
        ex.features = pair_features(doc.tokens, ordered, [owner[s][1] for s in ordered],
                                    [ex.sent_of_word[s] for s, _ in ordered])
        counts["gold_mentions"] += len(ordered)
        return ex

    def collate(self, examples: Sequence[EntityExample]) -> dict:
        """The windows of all documents as one padded batch, and where each word is read."""
        windows = [torch.tensor(w) for ex in examples for w in ex.windows.ids]
        ids = pad_sequence(windows, batch_first=True, padding_value=self.tokenizer.pad_token_id)
        shapes = pad_sequence([torch.tensor(w) for ex in examples for w in ex.windows.shapes], batch_first=True)
        lengths = torch.tensor([len(w) for w in windows])
        rows, positions, first = [], [], 0
        for ex in examples:
            rows += [first + w for w in ex.windows.window_of]
            positions += ex.windows.positions
            first += len(ex.windows.ids)
        return {"input_ids": ids, "attention_mask": (torch.arange(ids.shape[1])[None, :] < lengths[:, None]).long(),
                "rows": torch.tensor(rows), "positions": torch.tensor(positions), "shapes": shapes,
                "word_counts": [len(ex.doc.tokens) for ex in examples]}

    def training_batch(self, examples: Sequence[EntityExample]) -> dict:
        return {**self.collate(examples), "tags": torch.tensor([t for ex in examples for t in ex.tags]),
                "spans": [torch.tensor(ex.spans, dtype=torch.long).view(-1, 2) for ex in examples],
                "span_types": [torch.tensor(ex.span_types, dtype=torch.long) for ex in examples],
                "clusters": [torch.tensor(ex.cluster, dtype=torch.long) for ex in examples],
                "features": [ex.features for ex in examples]}

    @staticmethod
    def loss(model: EntityModel, batch: dict, coref_weight: float = 1.0) -> tuple[Tensor, Tensor]:
        """(tag loss, antecedent loss) of a training batch: cross-entropy per word, the antecedent
        loss averaged over documents with at least two gold mentions (0 when there is none)."""
        words = model.word_states(batch["input_ids"], batch["attention_mask"], batch["rows"], batch["positions"],
                                  batch["shapes"])
        tag_loss = torch.nn.functional.cross_entropy(model.tag_logits(words), batch["tags"])
        coref_losses, offset = [], 0
        for n, spans, types, cluster, features in zip(batch["word_counts"], batch["spans"], batch["span_types"],
                                                      batch["clusters"], batch["features"]):
            if len(spans) >= 2:
                mentions = model.mention_vectors(words[offset: offset + n], spans, types)
                coref_losses.append(antecedent_loss(model.antecedent_scores(mentions, features), cluster))
            offset += n
        coref_loss = torch.stack(coref_losses).mean() if coref_losses else words.sum() * 0
        return tag_loss, coref_loss

    # --- prediction --------------------------------------------------------------------------
    def recognize(self, docs: Sequence[Document], coref: str | None = None, *, batch_docs: int = 8) -> list[Document]:
        """Copies of `docs` with predicted entities (see the module docstring); `coref` None: the default."""
        coref = coref or self.default_coref
        return self.recognize_backends(docs, (coref,), batch_docs=batch_docs)[coref]

    @torch.no_grad()
    def recognize_backends(self, docs: Sequence[Document], backends: Sequence[str] = COREF_BACKENDS, *,
                           batch_docs: int = 8) -> dict[str, list[Document]]:
        """One encoder pass, the entities of every backend in `backends`."""
        unknown = [b for b in backends if b not in COREF_BACKENDS]
        if unknown:
            raise ValueError(f"coref backend {unknown[0]!r}; choose one of {', '.join(COREF_BACKENDS)}")
        was_training = self.model.training
        self.model.eval()
        device = next(self.model.parameters()).device
        matcher = StringMatch()
        out: dict[str, list[Document]] = {b: [] for b in backends}
        for first in range(0, len(docs), batch_docs):
            examples = [self.example(doc) for doc in docs[first: first + batch_docs]]
            batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in self.collate(examples).items()}
            words = self.model.word_states(batch["input_ids"], batch["attention_mask"], batch["rows"],
                                           batch["positions"], batch["shapes"])
            log_probs = self.model.tag_logits(words).log_softmax(-1).float().cpu()
            offset = 0
            for ex in examples:
                n = len(ex.doc.tokens)
                mentions = self.decode_mentions(ex, log_probs[offset: offset + n])
                for backend in backends:
                    if backend == "learned":
                        clusters = self.learned(ex, words[offset: offset + n], mentions)
                    else:
                        clusters = string_match_clusters(ex.doc, mentions, matcher)
                    entities, scores = assemble(ex.doc, mentions, clusters)
                    out[backend].append(ex.doc.model_copy(update={
                        "entities": entities, "relations": [], "candidates": None, "excluded": [],
                        "meta": {**ex.doc.meta, "entity_scores": scores, "coref": backend}}))
                offset += n
        self.model.train(was_training)
        return out

    def decode_mentions(self, ex: EntityExample, log_probs: Tensor) -> list[PredictedMention]:
        """Constrained Viterbi per sentence; a mention's confidence is the mean probability of its tags."""
        mentions = []
        for k, (s, e) in enumerate(ex.doc.sentences):
            if e <= s:
                continue
            tags = viterbi(log_probs[s:e], self.allowed)
            i = 0
            while i < len(tags):
                if tags[i] % 2 == 1:  # B-type
                    j = i + 1
                    while j < len(tags) and tags[j] == tags[i] + 1:
                        j += 1
                    probs = log_probs[s + i: s + j].gather(1, torch.tensor(tags[i:j]).unsqueeze(1)).exp()
                    mentions.append(PredictedMention(s + i, s + j, self.types[(tags[i] - 1) // 2],
                                                     float(probs.mean()), k))
                    i = j
                else:
                    i += 1
        return mentions

    def learned(self, ex: EntityExample, words: Tensor, mentions: Sequence[PredictedMention]) -> list[list[int]]:
        if len(mentions) < 2:
            return [[i] for i in range(len(mentions))]
        spans = [(m.start, m.end) for m in mentions]
        features = pair_features(ex.doc.tokens, spans, [m.type for m in mentions], [m.sent_id for m in mentions])
        vectors = self.model.mention_vectors(words, torch.tensor(spans, device=words.device),
                                             torch.tensor([self.type_index[m.type] for m in mentions],
                                                          device=words.device))
        return learned_clusters(self.model.antecedent_scores(vectors, features.to(words.device)).float().cpu())

    # --- persistence -------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, **card) -> Path:
        """Config, weights (safetensors) and tokenizer, written to a temporary folder and renamed so
        a reader never sees half a recognizer; `card` is merged over the current card."""
        self.card = {**self.card, **card}
        with atomic_dir(directory) as tmp:
            save_model(self.model, str(tmp / WEIGHTS_FILE))
            self.tokenizer.save_pretrained(tmp)
            atomic_write_text(tmp / CONFIG_FILE, json.dumps(
                {"types": self.types, "encoder": self.encoder_spec, "window": self.window, "stride": self.stride,
                 "mention_size": self.model.mention_size, "type_size": self.model.type_size,
                 "word_shapes": self.model.word_shapes, "default_coref": self.default_coref, "card": self.card},
                indent=1, default=str))
        return Path(directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "EntityRecognizer":
        directory = Path(directory)
        if not (directory / CONFIG_FILE).exists():
            raise FileNotFoundError(f"{directory} is not a saved entity recognizer (no {CONFIG_FILE})")
        config = json.loads((directory / CONFIG_FILE).read_text())
        model = EntityModel(build_encoder(config["encoder"]), len(config["types"]),
                            mention_size=config["mention_size"], type_size=config["type_size"],
                            word_shapes=config.get("word_shapes", False))  # saved before shapes: none
        load_model(model, str(directory / WEIGHTS_FILE))
        model.eval()
        return cls(model, AutoTokenizer.from_pretrained(directory), config["types"], config["encoder"],
                   window=config["window"], stride=config["stride"], default_coref=config["default_coref"],
                   card=config.get("card", {}))
