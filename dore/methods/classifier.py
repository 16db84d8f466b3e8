"""ATLOP-style classification baseline (Zhou et al., 2021) on DORE's encoder and inputs
(the model: `dore.model.atlop`).

- **Encoder and input**: the backbone's own encoder (`model.get_encoder()`) reads exactly DORE's
  input (`encode_document`: every mention wrapped in its entity's `<e_k>` marker, same
  truncation). ATLOP's `*` marker embedding is the hidden state at each mention's start marker.
Pairs are every ordered pair of distinct entities, or the document's `candidates` (CDR/GDA),
minus `excluded`. Training runs in the one loop (`dore.training.loop`, `ClassifierMethod`): the same optimizer,
budget, checkpoints and resume as DORE, selection on dev F1 of the official scorer; batches of
documents without a single pair are skipped and counted. Weights are saved with safetensors only.
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
from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase

from dore.config import TrainConfig
from dore.data.model import DataError, Document, atomic_dir, atomic_write_text, candidate_pairs
from dore.extract import Predictions
from dore.model.atlop import ATLOP, TH, at_loss, at_predict
from dore.model.backbone import CLASSIFIER_CONFIG, CLASSIFIER_WEIGHTS, Backbone
from dore.model.inputs import encode_document, special_frame, word_pieces
from dore.symbolic.layout import IdLayout, SlotAssignment

CONFIG_FILE = CLASSIFIER_CONFIG
WEIGHTS_FILE = CLASSIFIER_WEIGHTS


# --- documents -> examples -------------------------------------------------------------------

@dataclass
class PairExample:
    doc: Document
    input_ids: list[int]
    starts: list[list[int]]  # per entity: positions of its mentions' start markers in input_ids
    pairs: list[tuple[int, int]]
    labels: Tensor  # bool [pairs, classes]; TH set where the pair has no relation


def mention_starts(doc: Document, assignment: SlotAssignment, input_ids: Sequence[int],
                   tokenizer: PreTrainedTokenizerBase, marker_ids: Sequence[int]) -> list[list[int]]:
    """Per entity, the positions of its mentions' start markers in `encode_document`'s output.

    Walks the words as `encode_document` lays them out: at each word boundary the end markers
    of the mentions ending there, then the start markers of those starting there (read from
    the ids, so their order does not matter), then the word's pieces. Stops at a truncation cut.
    """
    spans = {(m.start, m.end, slot) for e, slot in assignment.slot_of.items() for m in doc.entities[e].mentions}
    n_open, n_close = Counter(s for s, _, _ in spans), Counter(e for _, e, _ in spans)
    entity_of_id = {marker_ids[slot]: e for e, slot in assignment.slot_of.items()}
    prefix, suffix = special_frame(tokenizer)
    body_end = len(input_ids) - len(suffix)
    starts: list[list[int]] = [[] for _ in doc.entities]
    cursor = len(prefix)
    for position, pieces in enumerate([*word_pieces(tokenizer, doc.tokens), []]):
        cursor += n_close[position]
        for _ in range(n_open[position]):
            if cursor >= body_end:
                return starts
            if input_ids[cursor] not in entity_of_id:
                raise ValueError(f"document {doc.doc_id!r}: no entity marker at position {cursor}; "
                                 "were the ids made by encode_document with these markers?")
            starts[entity_of_id[input_ids[cursor]]].append(cursor)
            cursor += 1
        cursor += len(pieces)
    return starts


# --- the classifier --------------------------------------------------------------------------

@dataclass
class RelationClassifier:
    """The model with what it needs to read documents: tokenizer, layout (markers, labels)."""

    model: ATLOP
    tokenizer: PreTrainedTokenizerBase
    layout: IdLayout
    backbone_config: PretrainedConfig  # the seq2seq config the encoder comes from (for loading)
    family: str
    max_source_length: int | None
    top_k: int | None = 4
    card: dict = field(default_factory=dict)  # provenance: training config, data hash, dev metrics

    @classmethod
    def from_backbone(cls, backbone, layout: IdLayout, *, emb_size: int | None = None, block_size: int = 64,
                      context_pooling: bool = True, top_k: int | None = 4, seed: int = 0,
                      max_source_length: int | None = None) -> "RelationClassifier":
        """A new head (seeded) on the backbone's encoder, which it shares and trains in place.
        `max_source_length`: the input cap (None: the backbone's positions)."""
        if layout.arity != 2:
            raise ValueError(f"the classifier scores pairs; layout {layout.name!r} has arity {layout.arity}")
        if backbone.family == "led" and context_pooling:
            raise ValueError("LED's windowed attention has no [L, L] map: use context_pooling=False")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = ATLOP(backbone.model.get_encoder(), layout.n_relations + 1, emb_size=emb_size,
                          block_size=block_size, context_pooling=context_pooling)
        return cls(model, backbone.tokenizer, layout, backbone.model.config, backbone.family,
                   max_source_length or backbone.max_source_length, top_k)

    @property
    def marker_ids(self) -> list[int]:
        return self.tokenizer.convert_tokens_to_ids(self.layout.token_names())

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    def examples(self, docs: Sequence[Document], counts: Counter | None = None) -> list[PairExample]:
        """Encode documents as DORE does and label their pairs. `counts`: truncated inputs, entities
        lost to truncation, gold relations outside the classified pairs (never silent)."""
        counts = Counter() if counts is None else counts
        markers = self.marker_ids
        out = []
        for doc in docs:
            assignment = self.layout.assign(doc)
            enc = encode_document(doc, assignment, self.tokenizer, markers, self.max_source_length)
            counts["truncated_inputs"] += int(enc.truncated)
            counts["entities_lost_to_truncation"] += len(enc.lost_entities)
            pairs = candidate_pairs(doc)
            row = {p: i for i, p in enumerate(pairs)}
            labels = torch.zeros((len(pairs), self.layout.n_relations + 1), dtype=torch.bool)
            for rel in doc.unique_relations():
                if (i := row.get(tuple(rel.args))) is None:
                    counts["relations_outside_pairs"] += 1
                    continue
                labels[i, self.layout.relation_code(rel.label) - self.layout.n_slots + 1] = True
            labels[:, TH] = ~labels[:, TH + 1:].any(1)
            out.append(PairExample(doc, enc.input_ids, mention_starts(doc, assignment, enc.input_ids, self.tokenizer,
                                                                      markers), pairs, labels))
        return out

    def collate(self, batch: Sequence[PairExample], device: torch.device | str = "cpu") -> dict:
        ids = pad_sequence([torch.tensor(ex.input_ids) for ex in batch], batch_first=True, padding_value=self.pad_id)
        lengths = torch.tensor([len(ex.input_ids) for ex in batch])
        return {"input_ids": ids.to(device),
                "attention_mask": (torch.arange(ids.shape[1])[None, :] < lengths[:, None]).long().to(device),
                "starts": [ex.starts for ex in batch],
                "pairs": [torch.tensor(ex.pairs, dtype=torch.long, device=device).view(-1, 2) for ex in batch]}

    @torch.no_grad()
    def predict(self, docs: Sequence[Document], *, batch_docs: int = 8,
                counts: Counter | None = None) -> dict[str, list[tuple[tuple[int, int], str]]]:
        """`{doc_id: [((head, tail), label)]}` in the documents' own entity numbering, for
        `dore.scoring.score.score`; at most `top_k` labels per pair (None: no limit). `counts`: as `examples`."""
        self.model.eval()
        device = next(self.model.parameters()).device
        out = {}
        examples = self.examples(docs, counts)
        for start in range(0, len(examples), batch_docs):
            batch = examples[start: start + batch_docs]
            if not any(ex.pairs for ex in batch):
                out.update({ex.doc.doc_id: [] for ex in batch})
                continue
            keep = at_predict(self.model(**self.collate(batch, device)), self.top_k).cpu()
            offset = 0
            for ex in batch:
                rows = keep[offset: offset + len(ex.pairs)]
                offset += len(ex.pairs)
                out[ex.doc.doc_id] = [(ex.pairs[i], self.layout.relations[r])  # column r + 1 is relation r
                                      for i, r in rows[:, TH + 1:].nonzero().tolist()]
        return out

    # --- persistence ---------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, **card) -> Path:
        """Weights (safetensors), head shape, layout, tokenizer and the backbone's config, and the
        card (`card` merged over the current one); written to a temporary folder and renamed so a
        reader never sees half a model."""
        m = self.model
        self.card = {**self.card, **card}
        with atomic_dir(directory) as tmp:
            save_model(self.model, str(tmp / WEIGHTS_FILE))  # drops shared copies (tied embeddings) itself
            self.tokenizer.save_pretrained(tmp)
            self.backbone_config.save_pretrained(tmp)
            atomic_write_text(tmp / CONFIG_FILE, json.dumps(
                {"family": self.family, "max_source_length": self.max_source_length, "top_k": self.top_k,
                 "n_classes": m.n_classes, "emb_size": m.emb_size, "block_size": m.block_size,
                 "context_pooling": m.context_pooling, "card": self.card}, indent=1, default=str))
            atomic_write_text(tmp / "layout.json", self.layout.to_json())
        return Path(directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "RelationClassifier":
        directory = Path(directory)
        if not (directory / CONFIG_FILE).exists():
            raise FileNotFoundError(f"{directory} is not a saved classifier (no {CONFIG_FILE})")
        config = json.loads((directory / CONFIG_FILE).read_text())
        layout = IdLayout.from_dict(json.loads((directory / "layout.json").read_text()))
        tokenizer = AutoTokenizer.from_pretrained(directory)
        if config["n_classes"] != layout.n_relations + 1:
            raise DataError(f"{config['n_classes']} classes for {layout.n_relations} relations", file=directory,
                            field="n_classes")
        backbone_config = AutoConfig.from_pretrained(directory)
        encoder = AutoModelForSeq2SeqLM.from_config(backbone_config).get_encoder()  # weights come next
        model = ATLOP(encoder, config["n_classes"], emb_size=config["emb_size"], block_size=config["block_size"],
                      context_pooling=config["context_pooling"])
        load_model(model, str(directory / WEIGHTS_FILE))
        return cls(model, tokenizer, layout, backbone_config, config["family"], config["max_source_length"],
                   config["top_k"], config.get("card", {}))



# --- training --------------------------------------------------------------------------------

def param_groups(model: ATLOP, cfg: TrainConfig) -> list[dict]:
    """As `dore.methods.seq2seq.param_groups`: no decay on biases and norms; the new head (extractors and
    bilinear) at `lr_new` (ATLOP: 1e-4 against the encoder's 5e-5), default `lr`."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim < 2 or "norm" in name.lower() or name.endswith(".bias")
        groups.setdefault((no_decay, not name.startswith("encoder.")), []).append(p)
    head_lr = cfg.lr if cfg.lr_new is None else cfg.lr_new
    return [{"params": ps, "weight_decay": 0.0 if nd else cfg.weight_decay, "lr": head_lr if new else cfg.lr}
            for (nd, new), ps in groups.items()]



class ClassifierMethod:
    """The classifier's training contract (`dore.training.loop.Method`), dev prediction and saving.
    LED runs without context pooling (no [L, L] attention map)."""

    def __init__(self, cfg: TrainConfig, backbone: Backbone, layout: IdLayout):
        if cfg.chunk_length is not None:
            raise ValueError("the classifier encodes one window per document: chunk_length is not supported")
        self.cfg = cfg
        pooling = cfg.context_pooling and backbone.family != "led"
        self.classifier = RelationClassifier.from_backbone(backbone, layout, context_pooling=pooling, seed=cfg.seed,
                                                           max_source_length=cfg.max_source_length)
        self.model = self.classifier.model

    def examples(self, docs: Sequence[Document], counts: Counter) -> list[PairExample]:
        return self.classifier.examples(docs, counts)

    def collate(self, examples: Sequence[PairExample], epoch: int, counts: Counter) -> dict | None:
        with_pairs = [ex for ex in examples if ex.pairs]
        if not with_pairs:
            return None
        return {**self.classifier.collate(with_pairs), "labels": torch.cat([ex.labels for ex in with_pairs])}

    def loss(self, model, batch: dict) -> tuple[Tensor, int]:
        labels = batch["labels"]
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return at_loss(model(**inputs), labels), len(labels)

    def param_groups(self, cfg: TrainConfig) -> list[dict]:
        return param_groups(self.model, cfg)

    def predict(self, docs: Sequence[Document]) -> Predictions:
        return self.classifier.predict(docs)

    def save(self, directory: str | Path, **card) -> Path:
        return self.classifier.save_pretrained(directory, **card)

    def summary(self) -> dict:
        return {"context_pooling": self.model.context_pooling}


class ClassifierPredictor:
    """A saved classifier scoring a split: one forward pass per document, no decoder."""

    def __init__(self, directory: str | Path):
        self.classifier = RelationClassifier.from_pretrained(directory)
        self.card = self.classifier.card

    def predict_split(self, docs: Sequence[Document], num_beams: int) -> tuple[Predictions, int, dict]:
        """(predictions, 0 decoder steps, the input counts: truncated inputs, entities lost to
        truncation, gold relations outside the pairs)."""
        counts: Counter = Counter()
        predictions = self.classifier.predict(docs, counts=counts)
        return predictions, 0, {"input_counts": dict(counts)}


def load(directory: str | Path) -> ClassifierPredictor:
    return ClassifierPredictor(directory)
