"""What the DORE service accepts and answers, and how a request becomes a `Document`.

A request document is given either as `text`, with each entity's mentions as character
spans `[start, end)` and/or `names` to find in the text, or as `tokens` (sentences of
tokens, DocRED style) with mentions as sentence-relative token spans `[start, end)`.
Entity indices in the answer are the positions of the entities in the request.

Checks run per request document, before any batching, so a bad document is refused on its
own with a 4xx naming the document and the field:

- 400 (BentoML, from the pydantic schema below): malformed JSON, bytes that are not UTF-8,
  missing or ill-typed fields, unknown keys, both or neither of `text` / `tokens`;
- 413: a document over `MAX_DOCUMENT_BYTES`;
- 422 (`to_document`, `check_document`): empty text, a span outside the text or its
  sentence, a span covering no word, a name not in the text, an entity type the model has
  no block for, more entities than the model has slots.

Text is cut into words by the same tokenizer the PubTator/RENET readers use
(`dore.data.bio.tokenize`), split again at every mention boundary. A document sent without
`entities` is read by the model's entity recognizer instead (text: sentences and words from
`dore.data.text`); its answer lists the entities found (mentions as character spans, type, name)
and the relations refer to them by position. A model without a recognizer (CDR, GDA) refuses
such a document with 422 and the reason.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections import Counter
from itertools import accumulate, pairwise

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dore.data.bio import split_sentences, tokenize
from dore.data.model import DataError, Document, Entity, Mention
from dore.data.text import document_from_text
from dore.extract import PredictedRelation, TextExtraction
from dore.symbolic.layout import IdLayout, LayoutError

MAX_DOCUMENT_BYTES = 1_000_000  # UTF-8 bytes of a document's text (or of its tokens joined by spaces)
MAX_DOCUMENTS_PER_REQUEST = 16
FIND_ENTITIES = "find_entities"  # Document.meta flag: sent without entities, the recognizer finds them


class RequestError(DataError):
    """A request document the service refuses, with the HTTP status to answer."""

    def __init__(self, message: str, *, status: int = 422, doc: str | int | None = None, field: str | None = None):
        super().__init__(message, doc=doc, field=field)
        self.status = status


def refusal(exc: DataError) -> tuple[int, dict]:
    """HTTP status and body for a refused document (a plain DataError is a 422)."""
    return getattr(exc, "status", 422), {"error": str(exc), "document": exc.doc, "field": exc.field}


# --- request ------------------------------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CharSpan(_Strict):
    start: int = Field(ge=0, description="character offset, inclusive")
    end: int = Field(gt=0, description="character offset, exclusive")


class TokenSpan(_Strict):
    sent: int = Field(ge=0, description="sentence index")
    start: int = Field(ge=0, description="token offset in the sentence, inclusive")
    end: int = Field(gt=0, description="token offset in the sentence, exclusive")


class EntityIn(_Strict):
    spans: list[CharSpan] = Field(default_factory=list, description="text documents: mention character spans")
    names: list[str] = Field(default_factory=list, description=(
        "text documents: names to find in the text; every whole-word occurrence is a mention "
        "(case-sensitive, else case-insensitive)"))
    mentions: list[TokenSpan] = Field(default_factory=list, description="token documents: mention token spans")
    type: str | None = Field(default=None, description="entity type (required by typed models, e.g. Chemical/Disease)")

    @model_validator(mode="after")
    def _has_mentions(self) -> "EntityIn":
        if not (self.spans or self.names or self.mentions):
            raise ValueError("an entity needs at least one of spans, names or mentions")
        return self


class DocumentIn(_Strict):
    id: str | None = Field(default=None, description="echoed in the answer; default: the document's position")
    text: str | None = Field(default=None, description="the document as plain text")
    tokens: list[list[str]] | None = Field(default=None, description="the document as sentences of tokens")
    entities: list[EntityIn] | None = Field(default=None, description=(
        "entities in the order the answer's indices refer to; leave out to have the model find them"))

    @model_validator(mode="after")
    def _one_form(self) -> "DocumentIn":
        if (self.text is None) == (self.tokens is None):
            raise ValueError("give the document as either text or tokens, not both or neither")
        if self.text is not None and any(e.mentions for e in self.entities or []):
            raise ValueError("a text document gives mentions as spans or names; token mentions need tokens")
        if self.tokens is not None and any(e.spans or e.names for e in self.entities or []):
            raise ValueError("a token document gives mentions as token spans (mentions); spans and names need text")
        return self


# --- answer -------------------------------------------------------------------------------

class RelationOut(BaseModel):
    head: int = Field(description="head entity index (position in the request)")
    tail: int = Field(description="tail entity index")
    head_name: str
    tail_name: str
    label: str = Field(description="relation label, e.g. P17")
    label_name: str = Field(description="relation name, e.g. country")
    confidence: float = Field(description="product of the generated symbols' probabilities")
    args: list[int] = Field(description="every argument, head first (more than two for n-ary models)")

    @classmethod
    def of(cls, rel: PredictedRelation) -> "RelationOut":
        return cls(head=rel.args[0], tail=rel.args[1], head_name=rel.names[0], tail_name=rel.names[1],
                   label=rel.label, label_name=rel.label_name, confidence=rel.confidence, args=list(rel.args))


class MentionOut(BaseModel):
    text: str
    sent: int = Field(description="sentence index")
    token_start: int = Field(description="word offset in the sentence, inclusive")
    token_end: int = Field(description="word offset in the sentence, exclusive")
    start: int | None = Field(default=None, description="character offset in the text, inclusive (text documents)")
    end: int | None = Field(default=None, description="character offset, exclusive")


class EntityOut(BaseModel):
    type: str | None
    name: str = Field(description="the first mention's text")
    score: float | None = Field(description="the recognizer's confidence")
    mentions: list[MentionOut]


class DocumentResult(BaseModel):
    id: str
    relations: list[RelationOut]
    entities: list[EntityOut] | None = Field(default=None, description=(
        "the entities found, when the request gave none; relations refer to them by position"))
    entities_dropped: int | None = Field(default=None, description="entities found beyond the model's slots")


class ExtractResponse(BaseModel):
    model: str = Field(description="BentoML tag of the model that answered")
    documents: list[DocumentResult]


class Extraction(BaseModel):
    """One document's outcome inside a batch: its relations, or why it has none."""

    relations: list[RelationOut] = Field(default_factory=list)
    entities: list[EntityOut] | None = None
    entities_dropped: int | None = None
    error: str | None = None
    status: int | None = None

    @classmethod
    def of(cls, relations: list[PredictedRelation]) -> "Extraction":
        return cls(relations=[RelationOut.of(rel) for rel in relations])

    @classmethod
    def found(cls, result: TextExtraction) -> "Extraction":
        found = result.to_dict()
        entities = [EntityOut(type=e["type"], name=e["name"], score=e["score"], mentions=[
            MentionOut(text=m["text"], sent=m["sent_id"], token_start=m["pos"][0], token_end=m["pos"][1],
                       start=m.get("start"), end=m.get("end")) for m in e["mentions"]]) for e in found["entities"]]
        return cls(relations=[RelationOut.of(rel) for rel in result.relations], entities=entities,
                   entities_dropped=result.entities_dropped)

    @classmethod
    def refused(cls, exc: DataError) -> "Extraction":
        status, body = refusal(exc)
        return cls(error=body["error"], status=status)


class ModelInfo(BaseModel):
    model: str = Field(description="BentoML tag")
    layout: str = Field(description="layout name (docred, cdr, gda, scirex-binary, scirex-4ary)")
    entity_slots: int = Field(description="most entities a document may have (typed models: per type, see blocks)")
    blocks: list[tuple[str | None, int]] = Field(description="entity blocks: (type or None, slots)")
    arity: int
    relations: dict[str, str] = Field(description="label -> name, in the model's symbol order")
    entity_types: list[str] | None = Field(description="types a typed model requires; None: any or none")
    dev_metrics: dict
    decoding: dict
    adaptive_batching: bool
    quantization: str | None = Field(None, description="int8 dynamic quantization served (all | decoder); None: float")
    max_document_bytes: int = MAX_DOCUMENT_BYTES
    max_documents_per_request: int = MAX_DOCUMENTS_PER_REQUEST


# --- request -> Document ------------------------------------------------------------------

def find_name(text: str, name: str) -> list[tuple[int, int]]:
    """Character spans of every whole-word occurrence of `name`: case-sensitive matches if there
    are any, else case-insensitive ones. Lookarounds instead of `\\b` so names that begin or end
    with punctuation ("U.S.") still match."""
    for flags in (0, re.IGNORECASE):
        pattern = re.compile(rf"(?<!\w){re.escape(name)}(?!\w)", flags)
        spans = [m.span() for m in pattern.finditer(text)]
        if spans:
            return spans
    return []


def to_document(doc_in: DocumentIn, index: int, layout: IdLayout) -> Document:
    """The `Document` a request document stands for, checked against the model's layout.
    Raises RequestError (413 or 422) naming the document and the field."""
    where = doc_in.id if doc_in.id is not None else index
    doc_id = doc_in.id if doc_in.id is not None else str(index)
    if doc_in.entities is None:
        return _document_to_read(doc_in, doc_id, where)
    doc = (_text_document(doc_in, doc_id, where) if doc_in.text is not None
           else _token_document(doc_in, doc_id, where))
    return check_document(doc, layout, where)


def _check_size(n_bytes: int, where: str | int, field: str) -> None:
    if n_bytes > MAX_DOCUMENT_BYTES:
        raise RequestError(f"document is {n_bytes:,} bytes; the limit is {MAX_DOCUMENT_BYTES:,} bytes",
                           status=413, doc=where, field=field)


def _document_to_read(doc_in: DocumentIn, doc_id: str, where: str | int) -> Document:
    """A document sent without entities: its words and sentences, flagged for the recognizer."""
    if doc_in.text is not None:
        _check_size(len(doc_in.text.encode("utf-8")), where, "text")
        try:
            doc = document_from_text(doc_in.text, doc_id)
        except DataError as exc:
            raise RequestError(exc.message, doc=where, field="text") from None
    else:
        doc = _token_document(doc_in.model_copy(update={"entities": []}), doc_id, where)
    return doc.model_copy(update={"meta": {**doc.meta, FIND_ENTITIES: True}})


def _text_document(doc_in: DocumentIn, doc_id: str, where: str | int) -> Document:
    text = doc_in.text
    _check_size(len(text.encode("utf-8")), where, "text")
    char_spans: list[list[tuple[int, int]]] = []  # per entity, sorted, duplicates removed
    for e, ent in enumerate(doc_in.entities):
        spans = set()
        for j, span in enumerate(ent.spans):
            if not span.start < span.end <= len(text):
                raise RequestError(f"span [{span.start}, {span.end}) outside the {len(text)}-character text",
                                   doc=where, field=f"entities[{e}].spans[{j}]")
            spans.add((span.start, span.end))
        for j, name in enumerate(ent.names):
            found = find_name(text, name.strip()) if name.strip() else []
            if not found:
                raise RequestError(f"name {name!r} not found in the text", doc=where, field=f"entities[{e}].names[{j}]")
            spans.update(found)
        char_spans.append(sorted(spans))

    flat = [span for spans in char_spans for span in spans]
    words, word_spans = tokenize(text, flat)
    if not words:
        raise RequestError("the text has no words", doc=where, field="text")
    sentences = split_sentences(text, words, 0, word_spans)
    sentence_starts = [start for start, _ in sentences]
    word_of = iter(word_spans)
    entities = []
    for e, (ent, spans) in enumerate(zip(doc_in.entities, char_spans)):
        mentions = []
        for char_start, char_end in spans:
            first, last = next(word_of)
            if first == last:
                raise RequestError(f"span [{char_start}, {char_end}) covers no word "
                                   f"({text[char_start:char_end]!r})", doc=where, field=f"entities[{e}].spans")
            mentions.append(Mention(start=first, end=last, text=text[char_start:char_end],
                                    sent_id=bisect_right(sentence_starts, first) - 1, type=ent.type,
                                    char_start=char_start, char_end=char_end))
        entities.append(Entity(mentions=mentions, type=ent.type))
    return Document(doc_id=doc_id, text=text, tokens=[text[s:e] for s, e in words], sentences=sentences,
                    entities=entities)


def _token_document(doc_in: DocumentIn, doc_id: str, where: str | int) -> Document:
    sents = doc_in.tokens
    tokens = [tok for sent in sents for tok in sent]
    _check_size(sum(len(tok.encode("utf-8")) + 1 for tok in tokens), where, "tokens")
    if not any(tok.strip() for tok in tokens):
        raise RequestError("the document has no tokens", doc=where, field="tokens")
    offsets = list(accumulate((len(s) for s in sents), initial=0))
    entities = []
    for e, ent in enumerate(doc_in.entities):
        mentions = []
        for j, m in enumerate(ent.mentions):
            field = f"entities[{e}].mentions[{j}]"
            if m.sent >= len(sents):
                raise RequestError(f"sentence {m.sent} out of range (the document has {len(sents)} sentences)",
                                   doc=where, field=field)
            if not m.start < m.end <= len(sents[m.sent]):
                raise RequestError(f"span [{m.start}, {m.end}) outside sentence {m.sent} "
                                   f"({len(sents[m.sent])} tokens)", doc=where, field=field)
            start, end = offsets[m.sent] + m.start, offsets[m.sent] + m.end
            mentions.append(Mention(start=start, end=end, text=" ".join(tokens[start:end]), sent_id=m.sent,
                                    type=ent.type))
        entities.append(Entity(mentions=mentions, type=ent.type))
    return Document(doc_id=doc_id, tokens=tokens, sentences=list(pairwise(offsets)), entities=entities)


def check_document(doc: Document, layout: IdLayout, where: str | int | None = None) -> Document:
    """Structural invariants (DataError) and the model's layout (RequestError): entity types of
    typed models, slot capacity."""
    where = doc.doc_id if where is None else where
    doc.check()
    if doc.meta.get(FIND_ENTITIES):
        return doc  # the recognizer's entities are fitted to the slots (`Extractor.fit_slots`)
    if layout.typed:
        allowed = [b.type for b in layout.blocks]
        for e, ent in enumerate(doc.entities):
            if ent.type not in allowed:
                problem = "has no type" if ent.type is None else f"has type {ent.type!r}"
                raise RequestError(f"entity {problem}; this model's entity types are {allowed}",
                                   doc=where, field=f"entities[{e}].type")
    try:
        layout.assign(doc)
    except LayoutError:
        # Types are known to fit here, so the layout refused the number of entities of some block.
        counts = Counter(e.type if layout.typed else None for e in doc.entities if e.mentions)
        block = next(b for b in layout.blocks if counts[b.type] > b.size)
        what = f"entities of type {block.type!r}" if layout.typed else "entities"
        raise RequestError(f"{counts[block.type]} {what}, more than the {block.size} slots this model has",
                           doc=where, field="entities") from None
    return doc


def model_info(tag: str, layout: IdLayout, card: dict, adaptive_batching: bool,
               quantization: str | None = None) -> ModelInfo:
    return ModelInfo(model=tag, layout=layout.name, entity_slots=layout.n_slots,
                     blocks=[(b.type, b.size) for b in layout.blocks], arity=layout.arity,
                     relations=dict(zip(layout.relations, layout.relation_names)),
                     entity_types=[b.type for b in layout.blocks] if layout.typed else None,
                     dev_metrics=card.get("dev_metrics") or {}, decoding=card.get("decoding") or {},
                     adaptive_batching=adaptive_batching, quantization=quantization)
