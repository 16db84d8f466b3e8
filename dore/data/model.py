"""The one document model every reader produces and every stage consumes.

Positions are **document-level word offsets, end-exclusive** (`[start, end)` into
`Document.tokens`). Sources with character offsets (PubTator, RENET) keep them in
`Mention.char_start/char_end` against `Document.text`, so nothing of the source is lost.

Entities keep the order of the source file (DocRED's vertexSet order), so a relation's
argument indices and a prediction's `h_idx/t_idx` mean the same thing as in the source.
The first-appearance numbering DORE generates with is computed by `Document.entity_order`,
never stored, so it cannot drift out of sync with the entities.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class DataError(ValueError):
    """A structural error in an input file: names the file, the document and the field."""

    def __init__(self, message: str, *, file: str | os.PathLike | None = None,
                 doc: str | int | None = None, field: str | None = None, line: int | None = None):
        self.file, self.doc, self.field, self.line = (str(file) if file else None), doc, field, line
        self.message = message  # without the place, to name it again (dore.data.salvage)
        where = []
        if file:
            where.append(f"file {file}" + (f" line {line}" if line is not None else ""))
        if doc is not None:
            where.append(f"document {doc!r}")
        if field:
            where.append(f"field {field!r}")
        super().__init__(f"{'; '.join(where)}: {message}" if where else message)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Mention(_Strict):
    start: int = Field(ge=0, description="document-level word offset, inclusive")
    end: int = Field(gt=0, description="document-level word offset, exclusive")
    text: str = Field(description="surface string as given by the source")
    sent_id: int | None = None
    type: str | None = None
    char_start: int | None = None
    char_end: int | None = None


class Entity(_Strict):
    mentions: list[Mention]
    type: str | None = None
    id: str | None = Field(default=None, description="knowledge-base id (MeSH, NCBI Gene) or cluster name")

    @property
    def name(self) -> str:
        """The first mention's text (a display name); the id when there is no mention."""
        return self.mentions[0].text if self.mentions else (self.id or "")

    @property
    def first_position(self) -> tuple[int, int]:
        if not self.mentions:
            return (1 << 62, 1 << 62)  # unmentioned entities sort last
        return min((m.start, m.end) for m in self.mentions)


class Relation(_Strict):
    args: tuple[int, ...] = Field(description="entity indices, head first (n-ary: in the layout's slot order)")
    label: str
    evidence: list[int] | None = None
    meta: dict = Field(default_factory=dict, description="source extras, e.g. SciREX score, unmentioned-entity flag")

    @property
    def head(self) -> int:
        return self.args[0]

    @property
    def tail(self) -> int:
        return self.args[1]


class Document(_Strict):
    doc_id: str
    tokens: list[str]
    sentences: list[tuple[int, int]] = Field(description="word spans [start, end) of each sentence")
    entities: list[Entity]
    relations: list[Relation] = Field(default_factory=list, description="as annotated; duplicates kept")
    title: str | None = None
    text: str | None = Field(default=None, description="original character text, for char-offset sources")
    candidates: list[tuple[int, ...]] | None = Field(
        default=None, description="pairs that are scored (CDR/GDA); None = every ordered pair")
    excluded: list[tuple[int, ...]] = Field(
        default_factory=list, description="pairs dropped by the source's filter (CDR not_include): never scored, never negatives")
    extra_mentions: list[Mention] = Field(
        default_factory=list, description="typed mentions outside the entities (SciREX non-salient NER)")
    meta: dict = Field(default_factory=dict)

    # --- derived views -------------------------------------------------------------
    def entity_order(self) -> list[int]:
        """Entity indices sorted by first appearance: earliest mention start, then end, then index."""
        return sorted(range(len(self.entities)), key=lambda i: (*self.entities[i].first_position, i))

    def unique_relations(self) -> list[Relation]:
        """Relations de-duplicated on (args, label), first occurrence kept."""
        seen, out = set(), []
        for rel in self.relations:
            key = (rel.args, rel.label)
            if key not in seen:
                seen.add(key)
                out.append(rel)
        return out

    def sentence_of(self, token: int) -> int:
        for i, (s, e) in enumerate(self.sentences):
            if s <= token < e:
                return i
        raise IndexError(token)

    def check(self, *, file: str | None = None) -> "Document":
        """Structural invariants every reader guarantees; raises DataError naming the field."""
        n_tok, n_ent = len(self.tokens), len(self.entities)
        if n_tok == 0:
            raise DataError("document has no tokens", file=file, doc=self.doc_id, field="tokens")
        for i, ent in enumerate(self.entities):
            for j, m in enumerate(ent.mentions):
                if not (0 <= m.start < m.end <= n_tok):
                    raise DataError(f"mention span [{m.start}, {m.end}) outside the {n_tok} tokens",
                                    file=file, doc=self.doc_id, field=f"entities[{i}].mentions[{j}]")
        for i, rel in enumerate(self.relations):
            bad = [a for a in rel.args if not 0 <= a < n_ent]
            if bad:
                raise DataError(f"entity index {bad[0]} out of range (document has {n_ent} entities)",
                                file=file, doc=self.doc_id, field=f"relations[{i}].args")
        for name in ("candidates", "excluded"):
            for i, pair in enumerate(getattr(self, name) or []):
                if any(not 0 <= a < n_ent for a in pair):
                    raise DataError(f"entity index out of range in {tuple(pair)}",
                                    file=file, doc=self.doc_id, field=f"{name}[{i}]")
        return self

    # --- canonical JSONL -----------------------------------------------------------
    def to_json(self) -> str:
        """Canonical form: sorted keys, compact separators, defaults left out: byte-stable."""
        return json.dumps(self.model_dump(mode="json", exclude_defaults=True), sort_keys=True,
                          separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str, *, file: str | None = None, lineno: int | None = None) -> "Document":
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"not valid JSON ({exc.msg} at column {exc.colno})", file=file, line=lineno) from exc
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            doc = raw.get("doc_id") if isinstance(raw, dict) else None
            raise DataError(err["msg"], file=file, line=lineno, doc=doc, field=field) from exc


@contextmanager
def atomic_dir(directory: str | os.PathLike) -> Iterator[Path]:
    """A folder written as a whole: the block writes into a fresh `<directory>.tmp`, which then
    replaces `directory` (a reader never sees half a model); if the block fails, it is removed."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write via a temporary file in the same folder and rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_jsonl(path: str | os.PathLike, docs: Iterable[Document]) -> Path:
    return atomic_write_text(path, "".join(d.to_json() + "\n" for d in docs))


def iter_json_objects(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSON-lines file (gzip if `.gz`); a line
    that is not a JSON object raises DataError naming the file and line."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"not valid JSON ({exc.msg} at column {exc.colno})", file=path, line=lineno) from exc
            if not isinstance(raw, dict):
                raise DataError(f"expected a JSON object, got {type(raw).__name__}", file=path, line=lineno)
            yield lineno, raw


def read_jsonl(path: str | os.PathLike) -> Iterator[Document]:
    """dore's documents, one per line (gzip if `.gz`: committed predictions are compressed)."""
    opener = gzip.open if Path(path).suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                yield Document.from_json(line, file=str(path), lineno=lineno).check(file=str(path))


def candidate_pairs(doc: Document) -> list[tuple[int, int]]:
    """The entity pairs a model scores: `candidates` if given, else every ordered pair; minus `excluded`."""
    excluded = {tuple(p) for p in doc.excluded}
    pairs = ([tuple(p) for p in doc.candidates] if doc.candidates is not None else
             [(h, t) for h in range(len(doc.entities)) for t in range(len(doc.entities)) if h != t])
    return [p for p in pairs if p not in excluded]
