"""Predicted relations + gold documents -> the dataset's official metrics (its scorer chosen here).

Predictions are in the documents' own entity numbering: `{doc_id: [(args, label), ...]}`.
Every metric dict names its scorer; every number is in percent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from dore.data.model import DataError, Document, iter_json_objects
from dore.scoring.bio import candidate_f1
from dore.scoring.docred import docred_score, redocred_breakdown, train_facts
from dore.scoring.scirex import scirex_official

Predictions = Mapping[str, Iterable[tuple[tuple[int, ...], str]]]
SCIREX_SLOTS = ("Task", "Method", "Material", "Metric")


def dataset_kind(gold: Sequence[Document]) -> str:
    """`docred`, `bio` (CDR/GDA candidate pairs) or `scirex`, from what the documents carry."""
    if any(d.candidates is not None for d in gold):
        return "bio"
    if any(len(r.args) == 4 for d in gold for r in d.relations) or \
            any(e.type in SCIREX_SLOTS for d in gold[:5] for e in d.entities):
        return "scirex"
    return "docred"


def predictions_from_documents(docs: Iterable[Document]) -> dict[str, list[tuple[tuple[int, ...], str]]]:
    """A document file used as predictions (e.g. gold scored against itself)."""
    return {d.doc_id: [(tuple(r.args), r.label) for r in d.relations] for d in docs}


def is_prediction_lines(path) -> bool:
    """`dore predict`'s JSON lines for documents given with entities (`{"doc_id", "relations"}`, no tokens)."""
    first = next(iter_json_objects(path), (0, {}))[1]
    return "doc_id" in first and "relations" in first and "tokens" not in first


def read_prediction_lines(path) -> dict[str, list[tuple[tuple[int, ...], str]]]:
    """`dore predict`'s JSON lines (gzip if `.gz`) as predictions: each relation needs `args` (entity
    indices) and `label`; a malformed line raises DataError naming the file, line and field."""
    predictions: dict[str, list[tuple[tuple[int, ...], str]]] = {}
    for lineno, record in iter_json_objects(path):
        doc_id, relations = record.get("doc_id"), record.get("relations")
        if not isinstance(doc_id, str) or not isinstance(relations, list):
            raise DataError("expected {\"doc_id\": str, \"relations\": [...]}", file=path, line=lineno,
                            field="doc_id" if not isinstance(doc_id, str) else "relations")
        for i, relation in enumerate(relations):
            args, label = (relation.get("args"), relation.get("label")) if isinstance(relation, dict) else (None, None)
            if not (isinstance(args, list) and all(isinstance(a, int) for a in args) and isinstance(label, str)):
                raise DataError("a relation needs integer `args` and a string `label`", file=path, line=lineno,
                                doc=doc_id, field=f"relations[{i}]")
        if doc_id in predictions:
            raise DataError("document predicted twice", file=path, line=lineno, doc=doc_id, field="doc_id")
        predictions[doc_id] = [(tuple(r["args"]), r["label"]) for r in relations]
    return predictions


def docred_records_from_documents(docs: Iterable[Document]) -> list[dict]:
    """A DocRED-format document file as official result records, evidence included."""
    return [{"title": d.doc_id, "h_idx": r.args[0], "t_idx": r.args[1], "r": r.label, "evidence": r.evidence or []}
            for d in docs for r in d.relations]


def docred_records(predictions: Predictions) -> list[dict]:
    """The official `result.json` records (h_idx / t_idx index the gold vertexSet)."""
    return [{"title": doc_id, "h_idx": args[0], "t_idx": args[1], "r": label}
            for doc_id, rels in predictions.items() for args, label in rels]


def score(predictions: Predictions, gold: Sequence[Document], *, train_docs: Sequence[Document] | None = None,
          kind: str | None = None, docred_results: list[dict] | None = None, arity: int | None = None) -> dict:
    """All metrics of the gold's dataset. `train_docs` gives DocRED's Ign fact set (the documents
    actually trained on); without it Ign F1 is reported as n/a. `docred_results` passes official
    result.json records (with evidence) instead of `predictions`. SciREX: binary and 4-ary
    scores, binary only for a binary model (`arity` 2)."""
    kind = kind or dataset_kind(gold)
    if kind == "docred":
        records = docred_results if docred_results is not None else docred_records(predictions)
        facts = train_facts(train_docs) if train_docs is not None else None
        main = docred_score(records, gold, train_facts_annotated=facts)
        return {"scorer": main["scorer"], "f1": main["re_f1"], "ign_f1": main["ign_f1"], "p": main["re_p"],
                "r": main["re_r"], "evi_f1": main["evi_f1"], "official": main,
                "breakdown": redocred_breakdown(records, gold)}
    if kind == "bio":
        label = next((r.label for d in gold for r in d.relations), "CID")
        pairs = {doc_id: [args for args, lab in rels if lab == label] for doc_id, rels in predictions.items()}
        main = candidate_f1(pairs, gold, label)
        return {"scorer": main["scorer"], "f1": main["f1"], "p": main["p"], "r": main["r"], "official": main}
    if kind == "scirex":
        by_id = {d.doc_id: d for d in gold}
        slot_dicts = {doc_id: [_slot_dict(by_id[doc_id], args) for args, _ in rels]
                      for doc_id, rels in predictions.items() if doc_id in by_id}
        binary = scirex_official(gold, slot_dicts, 2)
        four = scirex_official(gold, slot_dicts, 4) if arity != 2 else None
        return {"scorer": "scirex_official", "f1": binary["f1"], "p": binary["p"], "r": binary["r"],
                "f1_4ary": four and four["f1"], "binary": binary, "4ary": four}
    raise ValueError(f"unknown dataset kind {kind!r}")


def _slot_dict(doc: Document, args: tuple[int, ...]) -> dict[str, str]:
    """SciREX prediction in entity indices -> {type slot: cluster name} (4-ary: positional slots).

    Entities without a mention cannot be predicted (they are not in the input): their slot is
    left empty, so the tuple only counts for the projections that do not need it."""
    slots = zip(SCIREX_SLOTS, args) if len(args) == 4 else ((doc.entities[a].type, a) for a in args)
    return {slot: doc.entities[a].id for slot, a in slots if doc.entities[a].mentions}


def headline(metrics: dict) -> dict:
    """The numbers of a metrics dict worth a table row (scalars only)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) or v is None}
