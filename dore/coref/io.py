"""A coreference result on disk: one canonical JSONL file that DVC can cache and compare.

Line 1 is the header `{"backend", "format", "provenance", "setting"}`; then one `CorefDoc` per
line, sorted by doc_id. Keys are sorted, separators compact, absent optional fields left out, and
nothing run-dependent (no time, no path) is written, so identical runs give identical bytes. The
file is written atomically: a reader never sees half of it.

`write_relations` / `read_relations` keep DORE's relations over such clusters: the predictions
behind a committed SciREX chain score, which re-score from the gold file alone.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import ValidationError

from dore.coref.result import CorefDoc, CorefResult
from dore.data.model import DataError, Document, Entity, Mention, atomic_write_text, iter_json_objects

FORMAT = "dore-coref/1"


def _dumps(obj: dict) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def dumps_result(result: CorefResult) -> str:
    header = {"backend": result.backend, "format": FORMAT, "provenance": result.provenance, "setting": result.setting}
    docs = sorted(result.docs, key=lambda d: d.doc_id)
    return "".join(_dumps(line) + "\n" for line in
                   [header, *(d.model_dump(mode="json", exclude_none=True) for d in docs)])


def write_result(path: str | os.PathLike, result: CorefResult) -> Path:
    return atomic_write_text(path, dumps_result(result))


def read_result(path: str | os.PathLike) -> CorefResult:
    """Read a file written by `write_result`; DataError names the line and field of any problem."""
    path = Path(path)
    lines = list(iter_json_objects(path))
    if not lines:
        raise DataError("empty file (expected a header line)", file=path)
    header = lines[0][1]
    if header.get("format") != FORMAT:
        raise DataError(f"not a {FORMAT} coreference result", file=path, line=lines[0][0], field="format")
    docs = []
    for lineno, raw in lines[1:]:
        try:
            docs.append(CorefDoc.model_validate(raw))
        except ValidationError as exc:
            err = exc.errors()[0]
            raise DataError(err["msg"], file=path, line=lineno, doc=raw.get("doc_id"),
                            field=".".join(map(str, err["loc"]))) from exc
    ids = [d.doc_id for d in docs]
    if len(set(ids)) != len(ids):
        repeated = next(i for i in ids if ids.count(i) > 1)
        raise DataError("doc_id appears on two lines", file=path, doc=repeated, field="doc_id")
    try:
        return CorefResult(backend=header.get("backend"), setting=header.get("setting"),
                           provenance=header.get("provenance", {}), docs=docs)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise DataError(err["msg"], file=path, line=lines[0][0], field=".".join(map(str, err["loc"]))) from exc


RELATIONS_FORMAT = "dore-scirex-relations/1"


def write_relations(path: str | os.PathLike, pred_docs: Sequence[Document], predictions: Mapping[str, Sequence]
                    ) -> Path:
    """DORE's relations over predicted clusters as gzip JSON lines, enough to score them again from the
    gold file alone (`read_relations`): line 1 the header, then per document (sorted by doc_id) its
    entities (id, type, mentions as `[start, end, NER type]`), the clusters the layout dropped and its
    relations (`[entity indices, label]`). Written atomically; identical runs give identical bytes."""
    settings = {d.meta["coref"]["setting"] for d in pred_docs}
    if len(settings) != 1:  # one file, one setting: the scorer maps clusters by it
        raise DataError(f"relations of one setting expected, got {sorted(settings)}", file=path, field="setting")
    lines = [{"format": RELATIONS_FORMAT, "setting": settings.pop()}]
    for doc in sorted(pred_docs, key=lambda d: d.doc_id):
        lines.append({"doc_id": doc.doc_id, "backend": doc.meta["coref"]["backend"],
                      "dropped_clusters": doc.meta["coref"]["dropped_clusters"],
                      "entities": [{"id": e.id, "type": e.type,
                                    "mentions": [[m.start, m.end, m.type] for m in e.mentions]} for e in doc.entities],
                      "relations": [[list(args), label] for args, label in predictions.get(doc.doc_id, ())]})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(gzip.compress("".join(_dumps(line) + "\n" for line in lines).encode(), mtime=0))
    os.replace(tmp, path)
    return path


def read_relations(path: str | os.PathLike, gold_docs: Sequence[Document]
                   ) -> tuple[list[Document], dict[str, list[tuple[tuple[int, ...], str]]]]:
    """A `write_relations` file back as what `score_relations` takes: the predicted documents (words and
    sentences from `gold_docs`, joined by doc_id, in their order) and the predictions over their entities."""
    path = Path(path)
    lines = list(iter_json_objects(path))
    if not lines or lines[0][1].get("format") != RELATIONS_FORMAT:
        raise DataError(f"not a {RELATIONS_FORMAT} file", file=path, line=lines[0][0] if lines else None,
                        field="format")
    setting = lines[0][1]["setting"]
    records = {raw["doc_id"]: (lineno, raw) for lineno, raw in lines[1:]}
    docs, predictions = [], {}
    for gold in gold_docs:
        if gold.doc_id not in records:
            raise DataError("no prediction for this document", file=path, doc=gold.doc_id, field="doc_id")
        lineno, raw = records[gold.doc_id]
        try:
            entities = [Entity(id=e["id"], type=e["type"], mentions=[
                Mention(start=s, end=t, text=" ".join(gold.tokens[s:t]), type=ner, sent_id=gold.sentence_of(s))
                for s, t, ner in e["mentions"]]) for e in raw["entities"]]
            predictions[gold.doc_id] = [(tuple(args), label) for args, label in raw["relations"]]
            meta = {"coref": {"backend": raw["backend"], "setting": setting,
                              "dropped_clusters": raw["dropped_clusters"]}}
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"malformed prediction ({exc!r})", file=path, line=lineno, doc=gold.doc_id) from exc
        docs.append(gold.model_copy(update={"entities": entities, "relations": [], "meta": meta}).check(file=str(path)))
    return docs, predictions
