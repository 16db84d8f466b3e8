"""CDR and GDA relation scores: ATLOP's candidate-pair F1 and DORE's own micro variant.

The scorers do not share semantics (docs/evaluation.md §3), so each result names its
scorer. `candidate_f1` ("atlop_candidate_f1") is the one to report for every system. `dore_variant_f1`
("dore_micro") reproduces the numbers DORE's own `evaluate.py` prints.

Predictions map a `doc_id` to the (head, tail) entity-index pairs predicted for the relation label,
with NA already removed. Pairs are ordered as in `Document.candidates` (Chemical or Gene first in
the ATLOP/EoG files). A reversed pair is a different pair. Scores are percentages.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import StrictInt, TypeAdapter, ValidationError

from dore.data.model import DataError, Document

logger = logging.getLogger(__name__)

Pair = tuple[int, int]
_PAIRS = TypeAdapter(list[tuple[StrictInt, StrictInt]])
_SMOOTHING = 1e-5  # ATLOP's `train_bio.py` adds it to every denominator


def candidate_f1(
    predicted_pairs_per_doc: Mapping[str, Iterable[Pair]], gold: Iterable[Document], label: str
) -> dict[str, Any]:
    """Micro binary F1 over the candidate pairs of the split, as ATLOP `train_bio.py` computes it.

    The candidates are `Document.candidates` minus `Document.excluded`, so `not_include` pairs are
    never scored. A candidate is predicted positive iff some predicted pair names it, so repeats
    count once. It is gold positive iff a relation with `label` joins the pair. Predicted pairs that
    are excluded or not candidates are ignored and counted. So are gold relations outside the
    candidates (`gold_outside_candidates`, with a warning); the EoG files have none. Predictions for
    unknown documents are ignored with a warning.

    P = TP/(TP+FP+1e-5), R = TP/(TP+FN+1e-5), F1 = 2PR/(P+R+1e-5), then times 100. ATLOP works in
    float32; this works in float64, and the results differ by less than 1e-4 points.
    """
    docs = _index(gold)
    warnings = _unknown_docs(predicted_pairs_per_doc, docs)
    tp = fp = fn = ignored_excluded = ignored_non_candidate = n_candidates = outside = 0
    for doc in docs.values():
        candidates, excluded, relations = _gold_pairs(doc, label)
        positives = relations & candidates
        predicted = set(_pairs(doc.doc_id, predicted_pairs_per_doc.get(doc.doc_id, ())))
        n_candidates += len(candidates)
        outside += len(relations - candidates)
        tp += len(predicted & positives)
        fp += len((predicted & candidates) - positives)
        fn += len(positives - predicted)
        ignored_excluded += len(predicted & excluded)
        ignored_non_candidate += len(predicted - candidates - excluded)

    if outside:
        _warn(warnings, f"{outside} {label} relation(s) outside the candidate pairs were not scored")
    p = tp / (tp + fp + _SMOOTHING)
    r = tp / (tp + fn + _SMOOTHING)
    f1 = 2 * p * r / (p + r + _SMOOTHING)
    return {
        "scorer": "atlop_candidate_f1", "p": 100 * p, "r": 100 * r, "f1": 100 * f1,
        "tp": tp, "fp": fp, "fn": fn, "n_candidates": n_candidates,
        "ignored_excluded": ignored_excluded, "ignored_non_candidate": ignored_non_candidate,
        "gold_outside_candidates": outside, "warnings": warnings,
    }


def dore_variant_f1(
    predicted_pairs_per_doc: Mapping[str, Iterable[Pair]], gold: Iterable[Document], label: str
) -> dict[str, Any]:
    """DORE's micro P/R/F1 (`ayyyq/DORE` `evaluate.py` `_eval`), over generated pairs in order.

    - An index outside the document's entities is skipped (`skipped_out_of_range`).
    - A pair that matches a gold relation not matched yet is a TP.
    - Otherwise, a pair on an excluded (`not_include`) pair is excused (`excused`).
    - Anything else is an FP, including a repeat of a matched pair and a non-candidate pair.
    - FN = the gold relations (every relation with `label`, candidate or not) that no pair matched.

    P = TP/(TP+FP), R = TP/(TP+FN), F1 = 2PR/(P+R), each 0 on a zero denominator. The result is
    labelled "dore_micro" and must not be reported as the ATLOP metric.
    """
    docs = _index(gold)
    warnings = _unknown_docs(predicted_pairs_per_doc, docs)
    tp = fp = fn = skipped = excused = 0
    for doc in docs.values():
        excluded, positives = {tuple(pair) for pair in doc.excluded}, _label_pairs(doc, label)
        matched: set[Pair] = set()
        for h, t in _pairs(doc.doc_id, predicted_pairs_per_doc.get(doc.doc_id, ())):
            if not (0 <= h < len(doc.entities) and 0 <= t < len(doc.entities)):
                skipped += 1
            elif (h, t) in positives and (h, t) not in matched:
                tp += 1
                matched.add((h, t))
            elif (h, t) in excluded:
                excused += 1
            else:
                fp += 1
        fn += len(positives - matched)

    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {
        "scorer": "dore_micro", "p": 100 * p, "r": 100 * r, "f1": 100 * f1,
        "tp": tp, "fp": fp, "fn": fn, "skipped_out_of_range": skipped, "excused": excused,
        "warnings": warnings,
    }


def _index(gold: Iterable[Document]) -> dict[str, Document]:
    docs: dict[str, Document] = {}
    for doc in gold:
        if doc.doc_id in docs:
            raise DataError("the document id occurs twice in the gold documents", doc=doc.doc_id, field="doc_id")
        docs[doc.doc_id] = doc
    return docs


def _gold_pairs(doc: Document, label: str) -> tuple[set[Pair], set[Pair], set[Pair]]:
    """(scored candidates, excluded pairs, pairs of the relations with `label`) of one document."""
    if doc.candidates is None:
        raise DataError("no candidate pairs: CDR/GDA scoring needs the reader's candidate list",
                        doc=doc.doc_id, field="candidates")
    excluded = {tuple(pair) for pair in doc.excluded}
    candidates = {tuple(pair) for pair in doc.candidates} - excluded
    return candidates, excluded, _label_pairs(doc, label)


def _label_pairs(doc: Document, label: str) -> set[Pair]:
    return {rel.args for rel in doc.relations if rel.label == label}


def _pairs(doc_id: str, pairs: Iterable[Pair]) -> list[Pair]:
    try:
        return _PAIRS.validate_python(list(pairs))
    except ValidationError as exc:
        err = exc.errors()[0]
        raise DataError(err["msg"], doc=doc_id, field=f"predictions[{err['loc'][0]}]") from exc


def _unknown_docs(predicted_pairs_per_doc: Mapping[str, Iterable[Pair]], docs: Mapping[str, Document]) -> list[str]:
    """A fresh warnings list, holding one message if some predicted documents are not in the gold."""
    unknown = sorted(set(predicted_pairs_per_doc) - docs.keys())
    warnings: list[str] = []
    if unknown:
        _warn(warnings, f"predictions for {len(unknown)} document(s) not in the gold were ignored, e.g. {unknown[:3]}")
    return warnings


def _warn(warnings: list[str], message: str) -> None:
    warnings.append(message)
    logger.warning(message)
