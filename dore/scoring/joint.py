"""Joint (end-to-end) relation scores: relations between *predicted* entities against the gold ones.

A predicted entity is the set of its mention spans `(start, end)` (document-level word offsets).
Three ways to say a predicted relation `(h, t, r)` is right, in percent, micro over documents:

- `strict` (JEREX `rel`): some gold relation `(gh, gt, r)` has exactly the mention spans of `h` in
  `gh` and of `t` in `gt`;
- `strict_typed` (JEREX `rel_nec`): the same, and each predicted entity's type equals the gold one's;
- `relaxed`: predicted and gold entities are matched one to one, greedily by the number of shared
  mention spans (ties: lower gold index, then lower predicted index); a relation counts when its
  matched pair and label are a gold relation. Relations on unmatched entities are false positives.

Gold relations are unique `(h, t, r)` triples; so are predicted ones (a duplicate is counted once).
"""

from __future__ import annotations

from collections.abc import Sequence

from dore.data.model import Document

Spans = frozenset  # of (start, end)
JOINT_MODES = ("strict", "strict_typed", "relaxed")


def entity_spans(doc: Document) -> list[Spans]:
    return [frozenset((m.start, m.end) for m in e.mentions) for e in doc.entities]


def relaxed_matching(gold: Sequence[Spans], predicted: Sequence[Spans]) -> dict[int, int]:
    """Predicted index -> gold index, one to one, greedily by shared spans (ties: lower indices)."""
    pairs = sorted(((len(g & p), gi, pi) for gi, g in enumerate(gold) for pi, p in enumerate(predicted) if g & p),
                   key=lambda x: (-x[0], x[1], x[2]))
    matched, used_gold = {}, set()
    for _, gi, pi in pairs:
        if pi not in matched and gi not in used_gold:
            matched[pi] = gi
            used_gold.add(gi)
    return matched


def joint_counts(gold: Document, predicted: Document, relations: Sequence[tuple[int, int, str]]) -> dict[str, list[int]]:
    """Per mode `[true positives, predicted, gold]` for one document."""
    gold_sets, pred_sets = entity_spans(gold), entity_spans(predicted)
    gold_rel = {(r.args[0], r.args[1], r.label) for r in gold.relations}
    pred_rel = set(relations)
    exact: dict[int, int] = {}  # predicted -> gold entity with exactly its spans
    for pi, spans in enumerate(pred_sets):
        for gi, g in enumerate(gold_sets):
            if g == spans:
                exact[pi] = gi
                break
    typed = {pi: gi for pi, gi in exact.items()
             if predicted.entities[pi].type == gold.entities[gi].type}
    relaxed = relaxed_matching(gold_sets, pred_sets)
    out = {}
    for mode, mapping in (("strict", exact), ("strict_typed", typed), ("relaxed", relaxed)):
        tp = sum(1 for h, t, r in pred_rel if h in mapping and t in mapping and (mapping[h], mapping[t], r) in gold_rel)
        out[mode] = [tp, len(pred_rel), len(gold_rel)]
    return out


def prf(tp: int, n_pred: int, n_gold: int) -> dict[str, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"p": 100 * p, "r": 100 * r, "f1": 100 * f, "tp": tp, "predicted": n_pred, "gold": n_gold}


def joint_scores(gold_docs: Sequence[Document], predicted_docs: Sequence[Document],
                 relations: Sequence[Sequence[tuple[int, int, str]]]) -> dict[str, dict]:
    """The three joint scores over documents paired by position (the same doc_id required)."""
    if len(gold_docs) != len(predicted_docs) or len(gold_docs) != len(relations):
        raise ValueError(f"{len(gold_docs)} gold, {len(predicted_docs)} predicted documents and "
                         f"{len(relations)} relation lists: they must pair up")
    totals = {mode: [0, 0, 0] for mode in JOINT_MODES}
    for gold, pred, rels in zip(gold_docs, predicted_docs, relations):
        if gold.doc_id != pred.doc_id:
            raise ValueError(f"documents out of order: gold {gold.doc_id!r}, predicted {pred.doc_id!r}")
        for mode, counts in joint_counts(gold, pred, rels).items():
            totals[mode] = [a + b for a, b in zip(totals[mode], counts)]
    return {mode: prf(*counts) for mode, counts in totals.items()}
