"""Entity recognition metrics (torch-free): mention detection and coreference on predicted mentions.

- **Mentions**: micro P/R/F1 (percent) over the corpus, each mention a `(doc_id, start, end)` word
  span (`span`) or `(doc_id, start, end, type)` (`span_type`; a mention's type is its own `type`,
  else its entity's). Spans are de-duplicated per document on each side: DocRED lists a few spans
  in two entities, and a span predicted once is found once.
- **Coreference**: CoNLL scoring (MUC, B³, CEAF-e and their mean F1, `dore.scoring.scirex.
  clustering_quality`) of the predicted entities against **all** gold entities, mentions pooled
  over documents as `(doc_id, start, end)`. Predicted mentions that are no gold mention stay in
  the response (they cost precision), gold mentions not predicted cost recall: coreference scored
  end to end on predicted mentions, no SciREX salient filter.

Documents are joined by `doc_id`; a gold document missing from the predictions is an error.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from dore.data.model import DataError, Document
from dore.scoring.scirex import clustering_quality

SCORER = "entities_micro_conll"


def prf(correct: int, predicted: int, gold: int) -> dict[str, float]:
    """P/R/F1 in percent with the counts behind them (0 where a denominator is 0)."""
    p = correct / predicted if predicted else 0.0
    r = correct / gold if gold else 0.0
    return {"p": 100 * p, "r": 100 * r, "f1": 100 * (2 * p * r / (p + r) if p + r else 0.0),
            "correct": correct, "predicted": predicted, "gold": gold}


def mention_items(doc: Document, typed: bool) -> set[tuple]:
    """The document's distinct mentions, as spans or typed spans."""
    return {(doc.doc_id, m.start, m.end, *((m.type or e.type,) if typed else ()))
            for e in doc.entities for m in e.mentions}


def entity_clusters(doc: Document) -> list[list[tuple[str, int, int]]]:
    """The document's entities as clusters of `(doc_id, start, end)`; a span already in an earlier
    entity is left out of later ones (the scorer needs a partition)."""
    seen: set[tuple[int, int]] = set()
    clusters = []
    for e in doc.entities:
        spans = [(m.start, m.end) for m in e.mentions]
        cluster = [(doc.doc_id, s, t) for s, t in dict.fromkeys(spans) if (s, t) not in seen]
        seen.update(spans)
        if cluster:
            clusters.append(cluster)
    return clusters


def joined(gold_docs: Sequence[Document], predicted_docs: Iterable[Document]) -> list[tuple[Document, Document]]:
    by_id = {d.doc_id: d for d in predicted_docs}
    missing = [d.doc_id for d in gold_docs if d.doc_id not in by_id]
    if missing:
        raise DataError(f"{len(missing)} gold document(s) have no prediction", doc=missing[0], field="doc_id")
    return [(g, by_id[g.doc_id]) for g in gold_docs]


def mention_scores(gold_docs: Sequence[Document], predicted_docs: Iterable[Document]) -> dict:
    """Micro P/R/F1 of the mentions, on exact span and on span + type."""
    out = {}
    pairs = joined(gold_docs, predicted_docs)
    for name, typed in (("span", False), ("span_type", True)):
        correct = predicted = gold = 0
        for g, p in pairs:
            gold_items, predicted_items = mention_items(g, typed), mention_items(p, typed)
            correct += len(gold_items & predicted_items)
            predicted += len(predicted_items)
            gold += len(gold_items)
        out[name] = prf(correct, predicted, gold)
    return out


def coref_scores(gold_docs: Sequence[Document], predicted_docs: Iterable[Document]) -> dict:
    """MUC, B³, CEAF-e (P/R/F1, percent) and their mean F1 over all gold entities."""
    key, response = [], []
    for g, p in joined(gold_docs, predicted_docs):
        key += entity_clusters(g)
        response += entity_clusters(p)
    return clustering_quality(key, response)


def entity_scores(gold_docs: Sequence[Document], predicted_docs: Iterable[Document]) -> dict:
    """Both, labelled: `{"scorer", "docs", "mentions": {...}, "coref": {...}}`."""
    predicted_docs = list(predicted_docs)
    return {"scorer": SCORER, "docs": len(gold_docs), "mentions": mention_scores(gold_docs, predicted_docs),
            "coref": coref_scores(gold_docs, predicted_docs)}


def headline(scores: dict) -> dict[str, float]:
    """The flat numbers of `entity_scores` (for logs and model selection)."""
    m, c = scores["mentions"], scores["coref"]
    return {"mention_span_f1": m["span"]["f1"], "mention_f1": m["span_type"]["f1"],
            "mention_p": m["span_type"]["p"], "mention_r": m["span_type"]["r"],
            "muc_f1": c["muc"]["f1"], "b3_f1": c["b3"]["f1"], "ceafe_f1": c["ceafe"]["f1"], "coref_f1": c["avg_f1"]}
