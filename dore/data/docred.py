"""DocRED / Re-DocRED json, `rel_info.json` and the official CodaLab `result.json`.

A DocRED file is a JSON list of documents `{title, sents, vertexSet, labels?}`: `sents` are token
lists, `vertexSet[i]` the mentions `{name, pos, sent_id, type}` of entity i (`pos` sentence-relative,
end-exclusive) and `labels` the relations `{h, t, r, evidence}` (absent from the test split).
The vertexSet index is the entity index, so `h`/`t` and a prediction's `h_idx`/`t_idx` keep
their meaning. Re-DocRED's extra mention keys `global_pos` and `index` are documented and ignored.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from itertools import accumulate, pairwise
from pathlib import Path

from pydantic import BaseModel, ConfigDict, StrictInt, TypeAdapter, ValidationError

from dore.data.model import DataError, Document, Entity, Mention, Relation, atomic_write_text
from dore.data.report import ReaderReport

PathLike = str | os.PathLike

# Keys some releases add that carry nothing the document model needs (Re-DocRED mentions).
_DOCUMENTED_EXTRA_KEYS = frozenset({"global_pos", "index"})


class _Raw(BaseModel):
    # Unknown keys are kept in `model_extra` so the reader can count them instead of losing them silently.
    model_config = ConfigDict(extra="allow")


class _RawMention(_Raw):
    name: str
    pos: tuple[StrictInt, StrictInt]
    sent_id: StrictInt
    type: str


class _RawLabel(_Raw):
    h: StrictInt
    t: StrictInt
    r: str
    evidence: list[StrictInt] | None = None


class _RawDocument(_Raw):
    title: str
    sents: list[list[str]]
    vertexSet: list[list[_RawMention]] | None = None  # absent: entities to be found (`dore predict` on sents only)
    labels: list[_RawLabel] | None = None


class DocredPrediction(BaseModel):
    """One item of the official `result.json`; h_idx/t_idx index the gold vertexSet.
    Unknown keys are rejected, so a misspelt field fails here rather than inside the scorer."""

    model_config = ConfigDict(extra="forbid")

    title: str
    h_idx: StrictInt
    t_idx: StrictInt
    r: str
    evidence: list[StrictInt] | None = None


def _field(loc: tuple[int | str, ...]) -> str | None:
    """A pydantic error location as a path: ('vertexSet', 2, 0, 'pos') -> 'vertexSet[2][0].pos'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or None


_KEY = re.compile(r'[{,]\s*"(\w+)"\s*:')  # a string after '{' or ',' and before ':' is always a key
_TITLE = re.compile(r'[{,]\s*"title"\s*:\s*("(?:[^"\\]|\\.)*")')


def _iter_json_list(text: str, file: PathLike) -> Iterator[tuple[int, object]]:
    """Decode a top-level JSON list item by item, so a broken or truncated file is reported
    against the document it breaks in (its title when already read, else its index) and the last key read."""
    decoder = json.JSONDecoder()
    ws = re.compile(r"\s*")
    pos = ws.match(text).end()
    if text[pos:pos + 1] != "[":
        raise DataError("expected a JSON list of documents", file=file)
    pos = ws.match(text, pos + 1).end()
    if text[pos:pos + 1] == "]":
        return
    index = 0
    while True:
        try:
            item, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            chunk = text[pos:exc.pos]
            title = _TITLE.search(chunk)
            keys = _KEY.findall(chunk)
            raise DataError(f"invalid or truncated JSON: {exc.msg} (character {exc.pos} of {len(text)})",
                            file=file, doc=json.loads(title.group(1)) if title else index,
                            field=keys[-1] if keys else None) from exc
        yield index, item
        pos = ws.match(text, end).end()
        if text[pos:pos + 1] == "]" and not text[pos + 1:].strip():
            return
        if text[pos:pos + 1] != ",":
            raise DataError(f"expected ',' or ']' after this document (character {pos} of {len(text)})",
                            file=file, doc=index)
        pos = ws.match(text, pos + 1).end()
        index += 1


def _read_text(path: PathLike) -> str:
    """The file's text; `.gz` files are decompressed (committed predictions are gzip-compressed)."""
    try:
        if str(path).endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                return fh.read()
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=path) from exc


def load_rel_info(path: PathLike) -> dict[str, str]:
    """`rel_info.json`: relation P-id -> name, in the file's key order (the order DORE's relation tokens use)."""
    try:
        raw = json.loads(_read_text(path))
        return TypeAdapter(dict[str, str]).validate_python(raw)
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})", file=path) from exc
    except ValidationError as exc:
        err = exc.errors()[0]
        raise DataError(f"{err['msg']} (expected an object of P-id -> name)", file=path,
                        field=_field(err["loc"])) from exc


def read_docred(path: PathLike, rel_info: PathLike | None = None) -> tuple[list[Document], ReaderReport]:
    """Read a DocRED / Re-DocRED json file.

    doc_id and title are the document title; tokens are the sentences joined; mentions move to
    document-level offsets. Entity.type is the most common mention type (ties: the first mention's).
    Relations keep duplicate labels as annotated (the official scorer counts their evidence).
    With `rel_info`, a label outside it is a DataError. Documents without `labels` (the test split)
    have no relations and meta {"labelled": false}.

    Counted in the report, never raised: duplicate titles, duplicate (h, t, r) labels, entities with
    mixed mention types, mention names that differ from the tokens at their position (kept as
    given; spacing-only differences counted apart) and unknown keys (ignored).
    Raised as DataError naming file, document and field: malformed or truncated JSON, missing or
    ill-typed fields, a pos outside its sentence, sent_id / h / t / evidence out of range.
    """
    relations = load_rel_info(rel_info) if rel_info is not None else None
    report = ReaderReport(file=str(path))
    docs, seen_titles = [], set()
    for index, item in _iter_json_list(_read_text(path), path):
        try:
            raw = _RawDocument.model_validate(item)
        except ValidationError as exc:
            err = exc.errors()[0]
            title = item.get("title") if isinstance(item, dict) else None
            raise DataError(err["msg"], file=path, doc=title if isinstance(title, str) else index,
                            field=_field(err["loc"]) or "document") from exc
        if raw.title in seen_titles:
            report.quirk("duplicate title", raw.title)
        seen_titles.add(raw.title)
        doc = _build_document(raw, path, relations, report).check(file=str(path))
        report.add_document(doc)
        docs.append(doc)
    return docs, report


def _build_document(raw: _RawDocument, file: PathLike, rel_info: Mapping[str, str] | None,
                    report: ReaderReport) -> Document:
    title = raw.title
    offsets = list(accumulate((len(s) for s in raw.sents), initial=0))
    tokens = [tok for sent in raw.sents for tok in sent]
    _count_unknown_keys(raw, report)

    entities = []
    if raw.vertexSet is None:
        report.quirk("no vertexSet: the document is read without entities", title)
    for e, vertex in enumerate(raw.vertexSet or []):
        mentions = []
        for m, raw_m in enumerate(vertex):
            where = f"vertexSet[{e}][{m}]"
            if not 0 <= raw_m.sent_id < len(raw.sents):
                raise DataError(f"sent_id {raw_m.sent_id} out of range (document has {len(raw.sents)} sentences)",
                                file=file, doc=title, field=f"{where}.sent_id")
            first, last = raw_m.pos
            if not 0 <= first < last <= len(raw.sents[raw_m.sent_id]):
                raise DataError(f"pos {list(raw_m.pos)} outside sentence {raw_m.sent_id} "
                                f"({len(raw.sents[raw_m.sent_id])} tokens)", file=file, doc=title, field=f"{where}.pos")
            start, end = offsets[raw_m.sent_id] + first, offsets[raw_m.sent_id] + last
            surface = " ".join(tokens[start:end])
            if raw_m.name != surface:
                spacing_only = "".join(raw_m.name.split()) == "".join(surface.split())
                report.quirk("mention name differs from its tokens only in spacing (name kept)" if spacing_only
                             else "mention name differs from its tokens (name kept)", title)
            mentions.append(Mention(start=start, end=end, text=raw_m.name, sent_id=raw_m.sent_id, type=raw_m.type))
        types = Counter(m.type for m in mentions)  # insertion-ordered, so ties go to the first mention's type
        if len(types) > 1:
            report.quirk("entity with mixed mention types (most common kept)", title)
        entities.append(Entity(mentions=mentions, type=types.most_common(1)[0][0] if types else None))

    relations = []
    for i, label in enumerate(raw.labels or []):
        for arg in ("h", "t"):
            if not 0 <= getattr(label, arg) < len(entities):
                raise DataError(f"entity index {getattr(label, arg)} out of range (vertexSet has {len(entities)})",
                                file=file, doc=title, field=f"labels[{i}].{arg}")
        if rel_info is not None and label.r not in rel_info:
            raise DataError(f"relation {label.r!r} is not in rel_info", file=file, doc=title, field=f"labels[{i}].r")
        bad = [s for s in label.evidence or [] if not 0 <= s < len(raw.sents)]
        if bad:
            raise DataError(f"evidence sentence {bad[0]} out of range (document has {len(raw.sents)} sentences)",
                            file=file, doc=title, field=f"labels[{i}].evidence")
        relations.append(Relation(args=(label.h, label.t), label=label.r, evidence=label.evidence))

    doc = Document(doc_id=title, title=title, tokens=tokens, sentences=list(pairwise(offsets)), entities=entities,
                   relations=relations, meta={"labelled": raw.labels is not None})
    duplicates = len(doc.relations) - len(doc.unique_relations())
    if duplicates:
        report.quirk("duplicate (h, t, r) label (kept)", title, duplicates)
    return doc


def _count_unknown_keys(raw: _RawDocument, report: ReaderReport) -> None:
    parts: list[_Raw] = [raw, *(m for vertex in raw.vertexSet or [] for m in vertex), *(raw.labels or [])]
    for part in parts:
        for key in part.model_extra.keys() - _DOCUMENTED_EXTRA_KEYS:
            report.quirk(f"unknown key {key!r} ignored", raw.title)


def write_docred_result(path: PathLike, predictions: Iterable[DocredPrediction | Mapping]) -> Path:
    """Write the official CodaLab `result.json` atomically; every prediction is validated first."""
    rows = []
    for i, pred in enumerate(predictions):
        try:
            pred = pred if isinstance(pred, DocredPrediction) else DocredPrediction.model_validate(pred)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise DataError(err["msg"], file=path, doc=_title_of(pred, i), field=_field((i, *err["loc"]))) from exc
        rows.append(pred.model_dump(exclude_none=True))
    return atomic_write_text(path, json.dumps(rows, ensure_ascii=False))


def read_docred_result(path: PathLike) -> list[DocredPrediction]:
    """Read a `result.json`: a list of {title, h_idx, t_idx, r, evidence?}; bad fields raise DataError."""
    predictions = []
    for i, item in _iter_json_list(_read_text(path), path):
        try:
            predictions.append(DocredPrediction.model_validate(item))
        except ValidationError as exc:
            err = exc.errors()[0]
            raise DataError(err["msg"], file=path, doc=_title_of(item, i), field=_field((i, *err["loc"]))) from exc
    return predictions


def _title_of(item: object, index: int) -> str | int:
    title = item.get("title") if isinstance(item, Mapping) else None
    return title if isinstance(title, str) else index
