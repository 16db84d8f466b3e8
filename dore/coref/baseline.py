"""The all-candidates baseline of SciREX relation extraction (issue #15).

Over the gold salient clusters with at least one mention (the `gold` backend, `gold_input`), predict
**every** Task × Method × Material × Metric combination as a 4-ary relation, and every pair of
clusters of two different types as a binary one. It needs no model, so it is the floor that a
gold-input DORE model must beat under the official macro metric: `scirex_official` ignores the
(type combination, document) cells without gold, so predicting everything loses precision only in
cells that have gold, and recall is perfect.

Scored exactly as DORE's output is (`dore.coref.compose.score_relations`): `scirex_official`
(macro) and `dore_micro` (`dore_compat=False`), binary and 4-ary.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations, product

from dore.coref.backends import Gold, resolve
from dore.coref.compose import clusters_to_documents, score_relations
from dore.data.model import Document
from dore.data.scirex import SCIREX_TYPES
from dore.scoring.scirex import OFFICIAL_SLOT_ORDER, PAIR_LABELS


def all_candidates(doc: Document) -> list[tuple[tuple[int, ...], str]]:
    """Every 4-ary combination (args in `SCIREX_TYPES` order) and every pair of entities of two
    different SciREX types (`h < t`, labelled by type pair) over `doc`'s typed entities."""
    by_type = {t: [i for i, e in enumerate(doc.entities) if e.type == t] for t in SCIREX_TYPES}
    out: list[tuple[tuple[int, ...], str]] = [(args, "relevant") for args in product(*by_type.values())]
    for types in combinations(OFFICIAL_SLOT_ORDER, 2):
        for a, b in product(by_type[types[0]], by_type[types[1]]):
            out.append(((min(a, b), max(a, b)), PAIR_LABELS[types]))
    return out


def all_candidates_scores(gold_docs: Sequence[Document]) -> dict:
    """The all-candidates baseline's scores on `gold_docs` (read by `read_scirex`), setting `gold_input`.

    Returns `score_relations`' dict (setting, `scirex_official` and `dore_micro` for 2ary and 4ary)
    plus the number of documents and of candidates predicted per arity.
    """
    pred_docs = clusters_to_documents(gold_docs, resolve(Gold(), gold_docs))
    predictions = {d.doc_id: all_candidates(d) for d in pred_docs}
    scores = score_relations(gold_docs, pred_docs, predictions)
    counts = {f"{n}ary": sum(len(args) == n for rels in predictions.values() for args, _ in rels) for n in (2, 4)}
    return {"baseline": "all_candidates", **scores, "documents": len(gold_docs), "candidates": counts}
