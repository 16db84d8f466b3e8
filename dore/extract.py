"""Prediction API: `Extractor.from_pretrained(dir).extract(documents)`, and from plain text
`extract_text(texts)`: text -> sentences and words -> mentions -> entities -> DORE relations.

A saved model directory holds the backbone (safetensors weights and tokenizer, symbol
tokens included), `layout.json` (entity slots, relation order and names) and
`dore_model.json` (preset, decoding defaults, training-data hash, dev metrics). Loading
refuses a document that does not fit the layout, with a clear error. A model that reads plain
text also has an entity recognizer (mention detection and coreference, `dore.entities`): in
its `entities/` folder, or beside it in the run (`<run>/<dataset>/entities/model`, where the
`train-entities` stage writes it); packaging copies it into the model.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from pydantic import BaseModel

from dore.config import DecodingConfig
from dore.data.model import DataError, Document, atomic_dir, atomic_write_text
from dore.data.text import document_from_text
from dore.decoding.constraint import Rules, slot_mask
from dore.decoding.generate import generate_rows, generate_sequence
from dore.entities import EntityRecognizer
from dore.entities.recognizer import CONFIG_FILE as RECOGNIZER_CONFIG
from dore.model.backbone import Backbone, load_trained
from dore.model.entities import of as entities_of
from dore.model.entities import set_relation_logits
from dore.model.inputs import encode_document, pad_batch
from dore.model.quantize import quantize_int8
from dore.progress import Progress
from dore.symbolic.layout import IdLayout, LayoutError, SlotAssignment
from dore.symbolic.parse import parse_codes, parse_rows

MODEL_CARD = "dore_model.json"
ENTITIES_DIR = "entities"  # the entity recognizer, inside a model directory or beside it
PROGRESS_LINE_EVERY = 10  # batches between two plain progress lines outside a terminal
SORT_WINDOW_BATCHES = 16  # sort_by_length: documents are ordered by length within windows of this many batches
MAX_RELATIVE_POSITIONS = 4096  # decoder length cap for backbones without absolute positions (T5)
Predictions = dict[str, list[tuple[tuple[int, ...], str]]]  # doc id -> [(entity indices, label)], as scorers take


class PredictedRelation(BaseModel):
    args: tuple[int, ...]  # entity indices in the document's own numbering
    names: tuple[str, ...]
    label: str
    label_name: str
    confidence: float


@dataclass
class ExtractionStats:
    parse: Counter = field(default_factory=Counter)
    decoder_steps: int = 0
    rows: int = 0
    documents: int = 0
    truncated_inputs: int = 0
    lost_entities: int = 0
    outputs_cut: int = 0  # rows or sequences that ended because their token budget had no room for another tuple


@dataclass
class TextExtraction:
    """One document read without given entities: the entities found and the relations between them."""

    document: Document  # with the predicted entities (character spans when it came as text)
    relations: list[PredictedRelation]
    entities_dropped: int = 0  # found beyond the model's slots: the lowest-scoring are left out

    def to_dict(self) -> dict:
        """Entities (type, name, score; mentions with sentence, sentence-relative word span `pos` as
        in DocRED, and character span when known) and relations referring to them by index."""
        doc = self.document
        scores = doc.meta.get("entity_scores") or [None] * len(doc.entities)
        entities = []
        for ent, score in zip(doc.entities, scores):
            mentions = []
            for m in ent.mentions:
                sent = m.sent_id if m.sent_id is not None else doc.sentence_of(m.start)
                first = doc.sentences[sent][0]
                mention = {"text": m.text, "sent_id": sent, "pos": [m.start - first, m.end - first], "type": m.type}
                if m.char_start is not None:
                    mention |= {"start": m.char_start, "end": m.char_end}
                mentions.append(mention)
            entities.append({"type": ent.type, "name": ent.name, "score": score, "mentions": mentions})
        relations = [{"h": r.args[0], "t": r.args[1], "r": r.label, "label_name": r.label_name,
                      "confidence": r.confidence, **({"args": list(r.args)} if len(r.args) > 2 else {})}
                     for r in self.relations]
        return {"doc_id": doc.doc_id, "entities": entities, "relations": relations,
                "entities_dropped": self.entities_dropped}


def training_data_hash(docs: Iterable[Document]) -> str:
    h = hashlib.sha256()
    for d in docs:
        h.update(d.to_json().encode())
    return h.hexdigest()


def recognizer_dir(model_dir: str | Path) -> Path | None:
    """Where a model's entity recognizer is: inside the model (`entities/`), else its run's
    (`<run>/<dataset>/entities/model`, what `dore entities train` writes)."""
    model_dir = Path(model_dir)
    for candidate in (model_dir / ENTITIES_DIR, model_dir.parent / ENTITIES_DIR / "model"):
        if (candidate / RECOGNIZER_CONFIG).exists():
            return candidate
    return None


class Extractor:
    def __init__(self, backbone: Backbone, layout: IdLayout, decoding: DecodingConfig | None = None,
                 card: dict | None = None, recognizer: EntityRecognizer | None = None):
        self.backbone, self.layout = backbone, layout
        self.decoding = decoding or DecodingConfig()
        self.card = card or {}
        self.stats = ExtractionStats()
        self.recognizer = recognizer

    # --- persistence -------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, directory: str | Path, entities: str | Path | None = None,
                        quantize: str | None = None, relation_logits: str = "both") -> "Extractor":
        """The model in `directory`, with the entity recognizer in `entities` (default: the
        model's own or its run's, if there is one); `quantize` ("all" or "decoder"): int8 dynamic
        quantization of those linear layers of the DORE model, for CPU inference
        (`dore.model.quantize`; approximate: F1 in bench/bench_decoding.py); `relation_logits`:
        the pair-term ablations of a `pair_logits` model (`dore.model.entities`)."""
        directory = Path(directory)
        if not (directory / MODEL_CARD).exists():
            raise FileNotFoundError(f"{directory} is not a saved DORE model (no {MODEL_CARD})")
        card = json.loads((directory / MODEL_CARD).read_text())
        layout = IdLayout.from_dict(json.loads((directory / "layout.json").read_text()))
        backbone = load_trained(directory, layout)
        set_relation_logits(backbone.model, relation_logits)
        if quantize:
            quantize_int8(backbone.model, quantize)
        entities = Path(entities) if entities is not None else recognizer_dir(directory)
        recognizer = EntityRecognizer.from_pretrained(entities) if entities is not None else None
        return cls(backbone, layout, DecodingConfig(**card.get("decoding", {})), card, recognizer)

    def save_pretrained(self, directory: str | Path, **card) -> Path:
        """Weights as safetensors only, tokenizer, layout and model card; written to a temporary
        folder and renamed so a reader never sees half a model."""
        self.card = {**self.card, **card, "decoding": self.decoding.model_dump(), "family": self.backbone.family}
        with atomic_dir(directory) as tmp:
            self.backbone.model.save_pretrained(tmp, safe_serialization=True)
            self.backbone.tokenizer.save_pretrained(tmp)
            atomic_write_text(tmp / "layout.json", self.layout.to_json())
            atomic_write_text(tmp / MODEL_CARD, json.dumps(self.card, indent=1, default=str))
            if self.recognizer is not None:
                self.recognizer.save_pretrained(tmp / ENTITIES_DIR)
        return Path(directory)

    # --- extraction --------------------------------------------------------------------
    def check_fits(self, doc: Document) -> SlotAssignment:
        try:
            return self.layout.assign(doc)
        except LayoutError as exc:
            raise LayoutError(f"document {doc.doc_id!r} does not fit this model: {exc}") from None

    def recognize(self, docs: Sequence[Document | str]) -> list[tuple[Document, int]]:
        """Entities for documents given without them (plain text, or sentences of words): per
        document, the document with its predicted entities that fit the model's slots, and how
        many were left out (the lowest-scoring first)."""
        if self.recognizer is None:
            raise DataError("this model has no entity recognizer, so it cannot read documents without entities: "
                            "give the entities, or use a model packaged with one (`dore entities train`)",
                            field="entities")
        docs = [document_from_text(d, str(i)) if isinstance(d, str) else d.model_copy(update={"entities": [],
                                                                                             "relations": []})
                for i, d in enumerate(docs)]
        return [self.fit_slots(doc) for doc in self.recognizer.recognize(docs)]

    def fit_slots(self, doc: Document) -> tuple[Document, int]:
        """`doc` with only as many entities per block as the layout has slots: the highest-scoring
        (`meta["entity_scores"]`) are kept, in their order; entities of a type the layout has no
        block for are left out too."""
        scores = doc.meta.get("entity_scores") or [1.0] * len(doc.entities)
        room = {b.type if self.layout.typed else None: b.size for b in self.layout.blocks}
        keep = set()
        for i in sorted(range(len(doc.entities)), key=lambda i: -scores[i]):
            block = doc.entities[i].type if self.layout.typed else None
            if room.get(block, 0) > 0:
                room[block] -= 1
                keep.add(i)
        kept = sorted(keep)
        if len(kept) == len(doc.entities):
            return doc, 0
        meta = {**doc.meta, "entity_scores": [scores[i] for i in kept]}
        return doc.model_copy(update={"entities": [doc.entities[i] for i in kept], "meta": meta}), \
            len(doc.entities) - len(kept)

    def extract_text(self, docs: Sequence[Document | str],
                     decoding: DecodingConfig | None = None) -> list[TextExtraction]:
        """Plain texts (or documents without entities) -> entities -> relations between them."""
        prepared = self.recognize(docs)
        relations = self.extract([doc for doc, _ in prepared], decoding)
        return [TextExtraction(doc, rels, dropped) for (doc, dropped), rels in zip(prepared, relations)]

    @torch.no_grad()
    def check_decoding(self, cfg: DecodingConfig) -> None:
        """Refuse, before any decoding, what this model cannot decode: beam search runs through HF
        generate, which does not know a model's entity table (entity symbols decode greedily)."""
        if cfg.num_beams > 1 and entities_of(self.backbone.model) is not None:
            raise DataError("a model with entity symbols decodes greedily (the symbol head); beam search "
                            "needs a model trained with --recipe plain", field="num_beams")

    def generate(self, docs: Sequence[Document], decoding: DecodingConfig | None = None):
        """Per document: (assignment, encoded input ids, its generated rows or sequence as
        `Decoded`, NA tuples included), before parsing. Each batch is encoded once."""
        cfg = decoding or self.decoding
        self.check_decoding(cfg)
        self.backbone.model.eval()
        out = []
        progress = Progress(len(docs), desc="extract", unit="doc", enabled=len(docs) > cfg.batch_docs)
        window = cfg.batch_docs * (SORT_WINDOW_BATCHES if cfg.sort_by_length else 1)
        batches = 0
        for window_start in range(0, len(docs), window):
            assignments, input_ids = self._inputs(docs[window_start: window_start + window], cfg)
            order = list(range(len(input_ids)))
            if cfg.sort_by_length:  # batches of similar lengths: less padding for the encoder and cross-attention
                order.sort(key=lambda i: len(input_ids[i]))
            decoded: list = [None] * len(order)
            for start in range(0, len(order), cfg.batch_docs):
                batch = order[start: start + cfg.batch_docs]
                for i, rows in zip(batch, self._generate([assignments[i] for i in batch],
                                                         [input_ids[i] for i in batch], cfg)):
                    decoded[i] = rows
                batches += 1
                progress.step({} if batches % PROGRESS_LINE_EVERY == 0 else None, n=len(batch))
            out.extend(zip(assignments, input_ids, decoded))
        progress.close()
        return out

    def _inputs(self, docs: Sequence[Document], cfg: DecodingConfig) -> tuple[list[SlotAssignment], list[list[int]]]:
        """Each document's slot assignment and encoded input ids (cuts counted in `stats`)."""
        assignments = [self.check_fits(d) for d in docs]
        max_length = cfg.max_source_length or (None if cfg.chunk_length else self.backbone.max_source_length)
        encoded = [encode_document(d, a, self.backbone.tokenizer, self.backbone.code_to_id, max_length,
                                   chunk_length=cfg.chunk_length, pad_id=self.backbone.pad_id)
                   for d, a in zip(docs, assignments)]
        self.stats.documents += len(docs)
        self.stats.truncated_inputs += sum(e.truncated for e in encoded)
        self.stats.lost_entities += sum(len(e.lost_entities) for e in encoded)
        return assignments, [e.input_ids for e in encoded]

    def predict_tuples(self, docs: Sequence[Document], decoding: DecodingConfig | None = None):
        """Per document: (assignment, [(slot tuple, confidence)]) with NA removed."""
        cfg = decoding or self.decoding
        return [self._parse(assignment, rows, cfg) for assignment, _, rows in self.generate(docs, cfg)]

    def predictions(self, docs: Sequence[Document], decoding: DecodingConfig | None = None) -> Predictions:
        """What the scorers take: `{doc_id: [(entity indices, label)]}`."""
        return {d.doc_id: [(r.args, r.label) for r in rels] for d, rels in zip(docs, self.extract(docs, decoding))}

    def extract(self, docs: Sequence[Document], decoding: DecodingConfig | None = None) -> list[list[PredictedRelation]]:
        return [self.relations(doc, assignment, tuples)
                for doc, (assignment, tuples) in zip(docs, self.predict_tuples(docs, decoding))]

    def relations(self, doc: Document, assignment: SlotAssignment, tuples) -> list[PredictedRelation]:
        """A document's (slot tuple, confidence) pairs as relations between its entities."""
        rels = []
        for slots, conf in tuples:
            args = tuple(assignment.entity_of[s] for s in slots[:-1])
            r = slots[-1] - self.layout.n_slots
            rels.append(PredictedRelation(args=args, names=tuple(doc.entities[a].name for a in args),
                                          label=self.layout.relations[r], label_name=self.layout.relation_names[r],
                                          confidence=round(conf, 6)))
        return rels

    def _generate(self, assignments, input_ids, cfg: DecodingConfig) -> list[list]:
        """Encode the batch once, decode rows (or sequences) under the symbol constraint; the
        `Decoded` rows of each document."""
        bb, layout = self.backbone, self.layout
        device = next(bb.model.parameters()).device
        ids = pad_batch(input_ids, bb.pad_id)
        attention = (ids != bb.pad_id).long()  # chunked inputs hold padding inside
        slots = [a.slots for a in assignments]
        code_bias = self.code_bias(cfg)
        # each document's own token budget, so its output does not depend on the batch it is in
        budgets = [cfg.max_new_tokens or self.default_max_new_tokens(cfg.mode, a) for a in assignments]
        common = dict(layout=layout, code_to_id=bb.code_to_id, decoder_prefix=bb.decoder_prefix,
                      doc_slots=slot_mask(layout, slots), num_beams=cfg.num_beams, length_penalty=cfg.length_penalty,
                      max_new_tokens=max(budgets) + 1, budgets=budgets,
                      code_bias=code_bias, symbol_head=cfg.symbol_head,
                      rules=Rules(sorted_heads=cfg.order == "row-column"), chunk_length=cfg.chunk_length,
                      compact=cfg.compact_rows)
        if cfg.mode == "rows":
            heads = [layout.row_heads(s) for s in slots]
            decoded = generate_rows(bb.model, ids.to(device), attention.to(device), heads, **common)
        else:
            decoded = generate_sequence(bb.model, ids.to(device), attention.to(device), **common)
        per_doc: list[list] = [[] for _ in assignments]
        per_tuple = layout.arity + (cfg.mode == "sequence")  # generated codes per tuple (rows: the head is given)
        for d in decoded:
            per_doc[d.doc].append(d)
            # the budget ended it: no room for another tuple (the constraint then forces EOS)
            self.stats.outputs_cut += not d.finished or len(d.codes) + per_tuple > budgets[d.doc]
        return per_doc

    def code_bias(self, cfg: DecodingConfig) -> torch.Tensor | None:
        """[n_codes]: the NA and EOS logit biases of `cfg`, or None when both are 0."""
        if not (cfg.na_bias or cfg.eos_bias):
            return None
        code_bias = torch.zeros(self.layout.n_codes)
        code_bias[self.layout.na_code], code_bias[self.layout.eos_code] = cfg.na_bias, cfg.eos_bias
        return code_bias

    def parse(self, assignment: SlotAssignment, rows: list, cfg: DecodingConfig | None = None):
        """One document's decoded rows -> (assignment, [(slot tuple, confidence)]), NA removed."""
        return self._parse(assignment, rows, cfg or self.decoding)

    def _parse(self, assignment: SlotAssignment, rows: list, cfg: DecodingConfig):
        """One document's decoded rows -> (assignment, [(slot tuple, confidence)]), NA removed."""
        layout = self.layout
        self.stats.rows += len(rows)
        self.stats.decoder_steps += max((len(r.codes) + r.finished for r in rows), default=0)
        confidence = {}
        for r in rows:
            confidence.update(tuple_confidences(r.codes, r.probs, layout, r.head))
        if cfg.mode == "rows":
            tuples = parse_rows({r.head: r.codes for r in rows}, layout, assignment.slots, self.stats.parse)
        else:
            tuples = parse_codes(rows[0].codes if rows else [], layout, assignment.slots, counts=self.stats.parse)
        return assignment, [(t, confidence.get(t, 0.0)) for t in tuples]

    def default_max_new_tokens(self, mode: str, assignment: SlotAssignment) -> int:
        """Room for every cell of the document with one relation plus two more labels per entity
        (a row: its head's cells plus 8; docs/method.md §7), within the decoder's positions. A
        cut output is counted (`stats.outputs_cut`), never silent."""
        n = max(len(assignment.slots), 1)
        tuple_len = self.layout.arity + 1
        if mode == "rows":
            budget = (tuple_len - 1) * (n + 8) + 1
        else:
            budget = tuple_len * (len(self.layout.cell_domain(assignment.slots)) + 2 * n) + 1
        positions = self.backbone.max_target_length or MAX_RELATIVE_POSITIONS
        return min(budget, positions - len(self.backbone.decoder_prefix) - 1)


def tuple_confidences(codes: Sequence[int], probs: Sequence[float], layout: IdLayout,
                      head: int | None) -> dict[tuple[int, ...], float]:
    """Each complete tuple of a generated sequence -> the product of its codes' probabilities."""
    out, pending, p = {}, [], 1.0
    for code, prob in zip(codes, probs):
        p *= prob
        if code < layout.n_slots:
            pending.append(code)
            continue
        key = (*(() if head is None else (head,)), *pending, code)
        out.setdefault(key, p)
        pending, p = [], 1.0
    return out


