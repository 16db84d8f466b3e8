"""DocRED and Re-DocRED relation-extraction scores, computed as the official scorers compute them.

`docred_score` follows `thunlp/DocRED` `code/evaluation.py` (commit 6c79803) step for step
(docs/evaluation.md §1). `redocred_breakdown` adds the subsets of `tonytan48/Re-DocRED`
`official_evaluate_benchmark` (§2).

Predictions use the official submission format, ``{"title", "h_idx", "t_idx", "r", "evidence"?}``.
``h_idx`` and ``t_idx`` index the gold vertexSet, which is `Document.entities` order, never DORE's
first-appearance order. Gold is a list of `Document`s whose `doc_id` is the DocRED title.

Where an official script crashes, these functions set the affected score to 0, add a readable
message to the result's ``warnings`` and log it. Every other number is the official one. Scores
are percentages.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import groupby, product
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from dore.data.model import DataError, Document

logger = logging.getLogger(__name__)

Fact = tuple[str, str, str]  # (a mention name of the head, a mention name of the tail, relation id)
FactKey = tuple[str, int, int, str]  # (title, h_idx, t_idx, r)

#: The 10 relations Re-DocRED calls frequent. All other relations are long-tail.
FREQUENT_RELATIONS = frozenset({"P17", "P131", "P27", "P150", "P175", "P577", "P463", "P527", "P495", "P361"})
#: A fact is long-distance when its sentence distance exceeds this (Re-DocRED: d > 5).
LONG_DISTANCE = 5


class Prediction(BaseModel):
    """One submitted fact, as in the official `result.json`. Extra keys, such as a score, are ignored.

    Indices must be plain Python ints (use `.tolist()` on arrays), as they are in JSON.
    """

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    title: str
    h_idx: int
    t_idx: int
    r: str
    evidence: list[int] | None = Field(default=None, description="sentence ids; missing or null = none")

    @property
    def key(self) -> FactKey:
        """The official sort and de-duplication key."""
        return (self.title, self.h_idx, self.t_idx, self.r)


_PREDICTIONS = TypeAdapter(list[Prediction])


def train_facts(docs: Iterable[Document]) -> set[Fact]:
    """The official training fact set: every (head mention name, tail mention name, r) of every label.

    It covers all mention pairs of the label's two entities. Pass it as `train_facts_annotated` or
    `train_facts_distant`. The official script caches it under a name derived from the file name;
    here it is an explicit argument.
    """
    return {
        (mh.text, mt.text, rel.label)
        for doc in docs
        for rel in doc.relations
        for mh, mt in product(doc.entities[rel.head].mentions, doc.entities[rel.tail].mentions)
    }


def docred_score(
    predictions: Iterable[Mapping[str, Any] | BaseModel],
    gold: Iterable[Document],
    *,
    train_facts_annotated: Collection[Fact] | None,
    train_facts_distant: Collection[Fact] | None = None,
) -> dict[str, Any]:
    """RE, evidence and Ign scores, exactly as `thunlp/DocRED` `evaluation.py` computes them.

    - Gold: a fact key (title, h, t, r) counts once. When a label is duplicated, the evidence of the
      last copy wins, but `tot_evidences` sums the evidence of every copy.
    - Predictions are sorted by (title, h_idx, t_idx, r) and repeated keys are dropped. The first in
      submission order survives, with its evidence.
    - A prediction with an unknown title stays in the precision denominator, and its evidence is not
      counted. A self-pair, an out-of-range index or an unknown relation is simply wrong.
    - Ign ("in train"): a *correct* prediction is in train when any mention-name pair of its gold
      entities, with r and in that direction, is a training fact. Ign precision drops these facts
      from both sides of the fraction. Recall is not adjusted (thunlp/DocRED#31, #47).

    Returns percentages: re_p, re_r, re_f1, evi_p, evi_r, evi_f1, ign_p and ign_f1 (annotated set),
    and ign_p_distant and ign_f1_distant. A fact set passed as None gives None ("n/a") for its Ign
    scores. The raw counts and a list of `warnings` are also returned.
    """
    index = _Gold.build(gold)
    submitted = _validate(predictions)
    kept = _dedupe(submitted)
    fact_sets = {"annotated": train_facts_annotated, "distant": train_facts_distant}
    warnings: list[str] = []

    correct = correct_evidence = pred_evi = unknown_title = 0
    in_train: Counter[str] = Counter()
    for pred in kept:
        doc = index.docs.get(pred.title)
        if doc is None:
            unknown_title += 1
            continue
        evidence = set(pred.evidence or ())
        pred_evi += len(evidence)  # counted whether or not the fact is correct
        gold_evidence = index.evidence.get(pred.key)
        if gold_evidence is None:
            continue
        correct += 1
        correct_evidence += len(gold_evidence & evidence)
        for name, facts in fact_sets.items():
            if facts is not None and _in_train(doc, pred, facts):
                in_train[name] += 1

    n_kept, tot_relations = len(kept), len(index.evidence)
    if not kept:
        _warn(warnings, "empty submission: the official scorer raises IndexError here; every score is 0")
    if not tot_relations:
        _warn(warnings, "the gold has no relation label: the official scorer divides by zero for "
                        "recall; recall is 0")
    if not index.tot_evidences:
        _warn(warnings, "the gold has no evidence sentence: the official scorer divides by zero for "
                        "evidence recall; it is 0")
    re_p, re_r = _ratio(correct, n_kept), _ratio(correct, tot_relations)
    evi_p, evi_r = _ratio(correct_evidence, pred_evi), _ratio(correct_evidence, index.tot_evidences)
    result: dict[str, Any] = {
        "scorer": "docred_official",
        "re_p": 100 * re_p, "re_r": 100 * re_r, "re_f1": 100 * _f1(re_p, re_r),
        "evi_p": 100 * evi_p, "evi_r": 100 * evi_r, "evi_f1": 100 * _f1(evi_p, evi_r),
    }
    for name, facts in fact_sets.items():
        suffix = "" if name == "annotated" else f"_{name}"
        if facts is None:
            result |= {f"ign_p{suffix}": None, f"ign_f1{suffix}": None, f"correct_in_train_{name}": None}
            continue
        if kept and n_kept == in_train[name]:
            _warn(warnings, f"every prediction is a correct fact already in the {name} training set: "
                            "the official scorer divides by zero for Ign precision; it is 0")
        ign_p = _ratio(correct - in_train[name], n_kept - in_train[name])
        result |= {f"ign_p{suffix}": 100 * ign_p, f"ign_f1{suffix}": 100 * _f1(ign_p, re_r),
                   f"correct_in_train_{name}": in_train[name]}
    return result | {
        "n_submitted": len(submitted), "n_kept": n_kept, "n_unknown_title": unknown_title,
        "correct": correct, "tot_relations": tot_relations,
        "pred_evi": pred_evi, "correct_evidence": correct_evidence, "tot_evidences": index.tot_evidences,
        "warnings": warnings,
    }


def redocred_breakdown(
    predictions: Iterable[Mapping[str, Any] | BaseModel],
    gold: Iterable[Document],
    *,
    relations: Collection[str] | None = None,
) -> dict[str, Any]:
    """The subsets of Re-DocRED `official_evaluate_benchmark`: P, R and F1 (percent) with no Ign.

    Subsets:
    - **frequent**: r is in `FREQUENT_RELATIONS`.
    - **long_tail**: any other r. When `relations` (the label inventory, e.g. the rel_info.json keys)
      is given, only other r in it count, as the official script uses `rel2id`.
    - **intra**: d = 0; **inter**: d >= 1; **long_distance**: d > 5, with counts only, as in the
      official script. d is the minimum |sent_id difference| over all mention pairs of the two gold
      entities.

    A prediction falls into subsets by its r and the d of its (h_idx, t_idx) in the gold vertexSet;
    a gold fact does the same. P = correct / predictions in the subset, R = correct / gold in the
    subset. Predictions are de-duplicated as in `docred_score`.

    This differs from the official script only where that script drops data or crashes:
    - A one-prediction submission is scored; the official `len > 1` test empties it.
    - A prediction with an unknown title, or with an entity index outside the vertexSet (negative
      included), has no distance. It counts in its relation subset but in no distance subset, and
      `n_unplaced` counts it. The official script raises KeyError or IndexError.
    - A subset with no gold fact gets recall 0 and a warning; the official script divides by zero.
    """
    index = _Gold.build(gold)
    kept = _dedupe(_validate(predictions))
    distance = _SentenceDistance(index.docs)
    warnings: list[str] = []

    def subsets(key: FactKey) -> list[str]:
        r, d = key[3], distance(*key[:3])
        membership = {
            "frequent": r in FREQUENT_RELATIONS,
            "long_tail": r not in FREQUENT_RELATIONS and (relations is None or r in relations),
            "intra": d == 0,
            "inter": d is not None and d >= 1,
            "long_distance": d is not None and d > LONG_DISTANCE,
        }
        return [name for name, member in membership.items() if member]

    n_gold, n_pred, n_correct = Counter(), Counter(), Counter()
    for key in index.evidence:
        n_gold.update(subsets(key))
    for pred in kept:
        names = subsets(pred.key)
        n_pred.update(names)
        if pred.key in index.evidence:
            n_correct.update(names)

    result: dict[str, Any] = {"scorer": "redocred_benchmark"}
    for name in ("frequent", "long_tail", "intra", "inter"):
        if not n_gold[name]:
            _warn(warnings, f"no gold fact in the {name} subset: the official scorer divides by zero "
                            "for its recall; it is 0")
        p, r = _ratio(n_correct[name], n_pred[name]), _ratio(n_correct[name], n_gold[name])
        result[name] = {"p": 100 * p, "r": 100 * r, "f1": 100 * _f1(p, r),
                        "n_pred": n_pred[name], "n_gold": n_gold[name], "correct": n_correct[name]}
    result["long_distance"] = {"n_pred": n_pred["long_distance"], "n_gold": n_gold["long_distance"],
                               "correct": n_correct["long_distance"]}
    result["n_unplaced"] = sum(distance(*pred.key[:3]) is None for pred in kept)
    result["warnings"] = warnings
    return result


def per_relation_f1(
    predictions: Iterable[Mapping[str, Any] | BaseModel], gold: Iterable[Document]
) -> dict[str, dict[str, float | int]]:
    """P, R and F1 (percent) for each relation, with no Ign. Used for plots.

    Predictions are de-duplicated as in `docred_score`; unknown-title predictions count as wrong.
    Each value is {p, r, f1, support (gold facts), n_pred, correct}. Relations are ordered by
    support, largest first, then by id.
    """
    index = _Gold.build(gold)
    kept = _dedupe(_validate(predictions))
    support = Counter(key[3] for key in index.evidence)
    n_pred = Counter(pred.r for pred in kept)
    correct = Counter(pred.r for pred in kept if pred.key in index.evidence)
    out: dict[str, dict[str, float | int]] = {}
    for r in sorted(support.keys() | n_pred.keys(), key=lambda r: (-support[r], r)):
        p, rec = _ratio(correct[r], n_pred[r]), _ratio(correct[r], support[r])
        out[r] = {"p": 100 * p, "r": 100 * rec, "f1": 100 * _f1(p, rec),
                  "support": support[r], "n_pred": n_pred[r], "correct": correct[r]}
    return out


# --- the official structures ------------------------------------------------------------------

@dataclass
class _Gold:
    """The official gold structures: documents by title, evidence by fact key, evidence total."""

    docs: dict[str, Document]
    evidence: dict[FactKey, set[int]]
    tot_evidences: int

    @classmethod
    def build(cls, gold: Iterable[Document]) -> _Gold:
        docs: dict[str, Document] = {}
        evidence: dict[FactKey, set[int]] = {}
        tot_evidences = 0
        for doc in gold:
            if doc.doc_id in docs:
                raise DataError("the title occurs twice in the gold documents", doc=doc.doc_id, field="doc_id")
            docs[doc.doc_id] = doc
            for i, rel in enumerate(doc.relations):
                if len(rel.args) != 2 or not all(0 <= a < len(doc.entities) for a in rel.args):
                    raise DataError(f"expected two entity indices below {len(doc.entities)}, got {rel.args}",
                                    doc=doc.doc_id, field=f"relations[{i}].args")
                labelled = rel.evidence or []
                evidence[(doc.doc_id, rel.head, rel.tail, rel.label)] = set(labelled)  # last copy wins
                tot_evidences += len(labelled)  # ... but every copy's evidence counts
        return cls(docs, evidence, tot_evidences)


@dataclass
class _SentenceDistance:
    """d(title, h, t) = min |sent_id difference| over all mention pairs; None when undefined."""

    docs: dict[str, Document]
    _sentences: dict[tuple[str, int], list[int]] = field(default_factory=dict)

    def __call__(self, title: str, h: int, t: int) -> int | None:
        doc = self.docs.get(title)
        if doc is None or not all(0 <= i < len(doc.entities) for i in (h, t)):
            return None
        return min(abs(a - b) for a, b in product(self._of(doc, h), self._of(doc, t)))

    def _of(self, doc: Document, entity: int) -> list[int]:
        key = (doc.doc_id, entity)
        if key not in self._sentences:
            mentions = doc.entities[entity].mentions
            if not mentions:
                raise DataError("entity has no mention, so its sentence distance is undefined",
                                doc=doc.doc_id, field=f"entities[{entity}].mentions")
            self._sentences[key] = [_sentence_id(doc, entity, j) for j in range(len(mentions))]
        return self._sentences[key]


def _sentence_id(doc: Document, entity: int, j: int) -> int:
    mention = doc.entities[entity].mentions[j]
    if mention.sent_id is not None:
        return mention.sent_id
    try:
        return doc.sentence_of(mention.start)
    except IndexError:
        raise DataError(f"mention starts at token {mention.start}, outside every sentence",
                        doc=doc.doc_id, field=f"entities[{entity}].mentions[{j}]") from None


def _validate(predictions: Iterable[Mapping[str, Any] | BaseModel]) -> list[Prediction]:
    """Check every prediction; pydantic objects (e.g. the reader's `DocredPrediction`) are read by field."""
    raw = [pred.model_dump() if isinstance(pred, BaseModel) else pred for pred in predictions]
    try:
        return _PREDICTIONS.validate_python(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        position, *path = err["loc"]
        item = raw[position]
        title = item.get("title") if isinstance(item, Mapping) else None
        raise DataError(err["msg"], doc=title,
                        field=".".join([f"predictions[{position}]", *map(str, path)])) from exc


def _dedupe(predictions: list[Prediction]) -> list[Prediction]:
    """Sort by (title, h_idx, t_idx, r) and keep the first prediction of each key.

    `sorted` is stable, like the official `list.sort`, so the first in submission order survives.
    """
    def key(pred: Prediction) -> FactKey:
        return pred.key

    return [next(run) for _, run in groupby(sorted(predictions, key=key), key=key)]


def _in_train(doc: Document, pred: Prediction, facts: Collection[Fact]) -> bool:
    """Whether any mention-name pair of the gold entities, with r and direction, is a training fact."""
    heads, tails = doc.entities[pred.h_idx].mentions, doc.entities[pred.t_idx].mentions
    return any((mh.text, mt.text, pred.r) in facts for mh, mt in product(heads, tails))


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def _warn(warnings: list[str], message: str) -> None:
    warnings.append(message)
    logger.warning(message)
