"""Coreference quality of a backend's clusters against SciREX's gold salient clusters.

The gold annotates coreference only for **salient** entities (the `coref` clusters), so quality is
measured on the mentions that overlap a gold salient mention:

- **key**: the gold salient clusters with at least one mention (sub-methods merged, as read by
  `read_scirex`);
- **response**: the backend's clusters, each predicted span replaced by the gold salient span it
  overlaps under the official SciREX span mapping (the span itself when it is one, else the first
  salient span, in cluster order, with IoU > 0.5); spans that overlap none are left out.

MUC, B³ and CEAF-e need partitions, but SciREX's salient clusters overlap (a merged parent holds
its sub-methods' spans; a few mentions sit in two clusters). So on each side a span that is in
several clusters is kept only in the **smallest** of them (the most specific entity; on ties the
one whose sorted span list sorts first), and clusters left empty are dropped. The gold backend therefore scores
exactly 100.

Scores are corpus-level (mentions pooled over documents as `(doc_id, start, end)`), in percent,
from `dore.scoring.scirex.clustering_quality`.
"""

from __future__ import annotations

from collections.abc import Sequence

from dore.coref.result import CorefResult, Span
from dore.data.model import DataError, Document
from dore.scoring.scirex import clustering_quality, map_span_to_gold


def coref_quality(gold_docs: Sequence[Document], result: CorefResult) -> dict:
    """MUC, B³, CEAF-e (P/R/F1) and their mean F1 of `result` against the gold salient clusters.

    Every gold document must be in the result (joined by doc_id). Also returns the counts behind
    the scores: gold salient mentions, predicted mentions kept (those overlapping one) and left out.
    """
    predicted = result.by_id()
    missing = [d.doc_id for d in gold_docs if d.doc_id not in predicted]
    if missing:
        raise DataError(f"{len(missing)} gold document(s) missing from the {result.backend!r} result",
                        doc=missing[0], field="docs")
    key: list[list[tuple[str, int, int]]] = []
    response: list[list[tuple[str, int, int]]] = []
    kept = left_out = 0
    for doc in gold_docs:
        gold = _partition([[(m.start, m.end) for m in e.mentions] for e in doc.entities])
        salient = [span for cluster in gold for span in cluster]
        salient_spans = set(salient)
        mapped = []
        for cluster in predicted[doc.doc_id].clusters:
            spans = [span if span in salient_spans else map_span_to_gold(span, salient) for span in map(tuple, cluster)]
            on_gold = [span for span in spans if span in salient_spans]
            kept += len(on_gold)
            left_out += len(spans) - len(on_gold)
            mapped.append(on_gold)
        key += [[(doc.doc_id, *span) for span in cluster] for cluster in gold]
        response += [[(doc.doc_id, *span) for span in cluster] for cluster in _partition(mapped)]
    scores = clustering_quality(key, response)
    return {**scores, "backend": result.backend, "setting": result.setting, "docs": len(gold_docs),
            "gold_mentions": sum(map(len, key)), "predicted_mentions_kept": kept,
            "predicted_mentions_left_out": left_out}


def _partition(clusters: Sequence[Sequence[Span]]) -> list[list[Span]]:
    """Each span only in the smallest cluster holding it (ties: the one with the smallest sorted span
    list, so the outcome does not depend on cluster order); empty clusters dropped."""
    sets = [sorted({tuple(span) for span in cluster}) for cluster in clusters]
    owner: dict[Span, int] = {}
    for i in sorted(range(len(sets)), key=lambda i: (len(sets[i]), sets[i])):
        for span in sets[i]:
            owner.setdefault(span, i)
    out = [[span for span in spans if owner[span] == i] for i, spans in enumerate(sets)]
    return [c for c in out if c]
