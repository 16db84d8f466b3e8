"""Salience of SciREX clusters: which clusters take part in the paper's results (issue #15, stage c).

SciREX annotates coreference for every typed entity but relations only over the **salient** ones
(`coref`); the rest are `coref_non_salient` (train copy only). A coreference backend finds both
kinds (string-match: about 140 clusters per document against a handful of salient ones), so the
chain keeps only the clusters a classifier calls salient before DORE relates them.

- `cluster_features`: per cluster, features computed from the words, sections and the cluster's
  own spans and type only, never from gold annotations, so the same function serves gold clusters
  (training), string-match clusters over gold NER mentions and fully predicted clusters.
- `SalienceModel`: a logistic regression over standardised features and a decision threshold,
  stored as plain JSON (`dore-salience/1`; no pickle). `fit_salience` (in `dore.coref.salience_fit`)
  trains and selects it.
- `apply_salience`: a coreference result with only the clusters called salient; the setting is kept.
- `salient_oracle`: the SciREX paper's oracle, the clusters that the official `match_clusters`
  maps to a gold salient cluster; setting `gold_salient_oracle`.
- `salient_cluster_scores`: P/R/F1 of predicted salient clusters under the official mapping.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from dore.coref.result import CorefDoc, CorefResult, Span, mention_type, span_types
from dore.coref.string_match import is_short_form, normalize
from dore.data.model import DataError, Document, atomic_write_text
from dore.data.scirex import SCIREX_TYPES, majority_type
from dore.scoring.scirex import match_clusters

FORMAT = "dore-salience/1"
FEATURES = ("log_mentions", "share_of_type_max", "inverse_rank_in_type", "share_of_doc_mentions", "first_position",
            "last_position", "spread", "in_title", "in_abstract", "section_share", "log_distinct_strings",
            "mean_mention_words", "short_form", *(f"type_{t}" for t in (*SCIREX_TYPES, "none")))


def cluster_features(doc: Document, clusters: Sequence[Sequence[Span]], types: Sequence[str | None]) -> np.ndarray:
    """A `(len(clusters), len(FEATURES))` float matrix, one row per cluster.

    Reads `doc.tokens`, and `doc.meta["sections"]` when present (SciREX: section 0 is the title,
    1 the abstract; without sections the whole paper is one section); nothing gold.
    """
    if len(types) != len(clusters):
        raise DataError(f"{len(clusters)} clusters need as many types, got {len(types)}", doc=doc.doc_id, field="types")
    n_words = len(doc.tokens)
    sections = [tuple(s) for s in doc.meta.get("sections") or [(0, n_words)]]
    starts = [s for s, _ in sections]
    sizes = [len({tuple(s) for s in c}) for c in clusters]
    total = sum(sizes) or 1
    rank: dict[int, tuple[int, float]] = {}
    for t in {*types}:
        of_type = sorted((i for i, u in enumerate(types) if u == t), key=lambda i: (-sizes[i], i))
        for r, i in enumerate(of_type):
            rank[i] = (r, sizes[i] / sizes[of_type[0]])
    rows = []
    for i, (cluster, ctype) in enumerate(zip(clusters, types)):
        spans = sorted({tuple(s) for s in cluster})
        if not spans:
            raise DataError("a cluster without spans", doc=doc.doc_id, field=f"clusters[{i}]")
        in_section = {int(np.searchsorted(starts, s, side="right")) - 1 for s, _ in spans}
        strings = {normalize(doc.tokens[s:e]) for s, e in spans}
        first, last = spans[0][0] / n_words, max(s for s, _ in spans) / n_words
        rows.append([math.log1p(len(spans)), rank[i][1], 1 / (1 + rank[i][0]), len(spans) / total, first, last,
                     last - first, float(0 in in_section), float(1 in in_section), len(in_section) / len(sections),
                     math.log1p(len(strings)), float(np.mean([e - s for s, e in spans])),
                     float(any(is_short_form(doc.tokens[s:e]) for s, e in spans)),
                     *(float(ctype == t) for t in (*SCIREX_TYPES, None))])
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(FEATURES))


def ner_types(doc: Document, clusters: Sequence[Sequence[Span]]) -> list[str | None]:
    """Each cluster's majority type over the document's mention types (`extra_mentions`, the NER
    in use: gold NER or a tagger's output), with the official IoU > 0.5 span mapping."""
    types = span_types(doc)
    ner_spans = [(m.start, m.end) for m in doc.extra_mentions]
    return [majority_type([mention_type(tuple(s), types, ner_spans) for s in c]) for c in clusters]


class SalienceModel(BaseModel):
    """Logistic regression on standardised `FEATURES`; a cluster is salient iff its probability ≥ threshold."""

    model_config = ConfigDict(extra="forbid")
    format: str = FORMAT
    features: list[str] = Field(default_factory=lambda: list(FEATURES))
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    threshold: float = Field(ge=0, le=1)
    provenance: dict = Field(default_factory=dict, description="config, training documents, selection scores")

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        if list(self.features) != list(FEATURES):
            raise DataError(f"the model's features {self.features} are not this version's {list(FEATURES)}",
                            field="features")
        z = (features - np.asarray(self.mean)) / np.asarray(self.scale)
        return 1 / (1 + np.exp(-(z @ np.asarray(self.coef) + self.intercept)))

    def salient(self, doc: Document, clusters: Sequence[Sequence[Span]], types: Sequence[str | None]) -> list[bool]:
        if not clusters:
            return []
        return [bool(p >= self.threshold) for p in self.probabilities(cluster_features(doc, clusters, types))]

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write_text(path, json.dumps(self.model_dump(mode="json"), indent=1, sort_keys=True))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SalienceModel":
        raw = json.loads(Path(path).read_text())
        if raw.get("format") != FORMAT:
            raise DataError(f"not a {FORMAT} salience model", file=path, field="format")
        return cls.model_validate(raw)


def _filtered(cdoc: CorefDoc, keep: Sequence[bool]) -> CorefDoc:
    clusters = [c for c, k in zip(cdoc.clusters, keep) if k]
    kept_spans = {s for c in clusters for s in c}
    return cdoc.model_copy(update={
        "clusters": clusters, "types": [t for t, k in zip(cdoc.types, keep) if k],
        "names": None if cdoc.names is None else [n for n, k in zip(cdoc.names, keep) if k],
        "mentions": None if cdoc.mentions is None else [m for m in cdoc.mentions if (m[0], m[1]) in kept_spans]})


def apply_salience(docs: Sequence[Document], result: CorefResult, model: SalienceModel) -> CorefResult:
    """`result` with only the clusters `model` calls salient; setting unchanged, counts in the provenance.

    `docs` give the words and sections (joined by doc_id); a document left with no salient
    cluster stays in the result with an empty cluster list.
    """
    by_id = {d.doc_id: d for d in docs}
    out, kept = [], 0
    for cdoc in result.docs:
        if cdoc.doc_id not in by_id:
            raise DataError("coreference result for an unknown document", doc=cdoc.doc_id, field="docs")
        keep = model.salient(by_id[cdoc.doc_id], cdoc.clusters, cdoc.types)
        kept += sum(keep)
        out.append(_filtered(cdoc, keep))
    report = {"clusters_in": sum(len(d.clusters) for d in result.docs), "clusters_kept": kept,
              "docs_without_salient_cluster": sum(not d.clusters for d in out)}
    return result.model_copy(update={"docs": out, "provenance": {
        **result.provenance, "salience": {"threshold": model.threshold, **report,
                                          "model": model.provenance.get("config", {})}}})


def _gold_clusters(doc: Document) -> dict[str, list[Span]]:
    return {e.id or str(i): [(m.start, m.end) for m in e.mentions] for i, e in enumerate(doc.entities) if e.mentions}


def map_to_gold(doc: Document, clusters: Sequence[Sequence[Span]]) -> dict[int, str]:
    """Cluster index -> the gold salient cluster name it maps to under the official `match_clusters`
    (gold NER spans as the span mapping); clusters that map nowhere are absent."""
    predicted = {str(i): [tuple(s) for s in c] for i, c in enumerate(clusters)}
    mapping = match_clusters(predicted, _gold_clusters(doc), [(m.start, m.end) for m in doc.extra_mentions])
    return {int(i): name for i, name in mapping.items()}


def salient_oracle(gold_docs: Sequence[Document], result: CorefResult) -> CorefResult:
    """The clusters of `result` that map to a gold salient cluster (the SciREX paper's oracle),
    labelled `gold_salient_oracle`. Reads the gold: never end-to-end."""
    out = []
    for doc, cdoc in zip(gold_docs, result.for_documents(gold_docs)):
        mapped = map_to_gold(doc, cdoc.clusters)
        out.append(_filtered(cdoc, [i in mapped for i in range(len(cdoc.clusters))]))
    return result.model_copy(update={"setting": "gold_salient_oracle", "docs": out, "provenance": {
        **result.provenance, "salience": {"oracle": "official match_clusters to the gold salient clusters",
                                          "from_setting": result.setting}}})


def salient_cluster_scores(gold_docs: Sequence[Document], predicted: Mapping[str, Sequence[Sequence[Span]]]) -> dict:
    """P/R/F1 (percent) of predicted salient clusters against the gold salient clusters.

    Gold: each document's salient (`coref`) clusters with at least one mention, sub-methods merged.
    A predicted cluster is correct iff the official `match_clusters` maps it to a gold cluster;
    recall counts the distinct gold clusters hit. Micro (pooled over documents) and macro (mean
    over documents, the official clustering score's averaging) are both given. A gold document
    missing from `predicted` has no predicted cluster.
    """
    unknown = sorted(set(predicted) - {d.doc_id for d in gold_docs})
    if unknown:
        raise DataError(f"{len(unknown)} predicted document(s) not in the gold", doc=unknown[0], field="predicted")
    totals = {"predicted": 0, "correct": 0, "gold": 0, "gold_found": 0}
    per_doc = []
    for doc in gold_docs:
        clusters = [c for c in predicted.get(doc.doc_id, ()) if c]
        mapped = map_to_gold(doc, clusters)
        row = {"predicted": len(clusters), "correct": len(mapped), "gold": len(_gold_clusters(doc)),
               "gold_found": len(set(mapped.values()))}
        per_doc.append(_prf(row))
        for k, v in row.items():
            totals[k] += v
    macro = {k: float(np.mean([r[k] for r in per_doc])) if per_doc else 0.0 for k in ("p", "r", "f1")}
    return {"scorer": "salient_clusters_official_mapping", "docs": len(gold_docs), **_prf(totals), **totals,
            "macro": macro}


def _prf(counts: Mapping[str, int]) -> dict[str, float]:
    p = counts["correct"] / counts["predicted"] if counts["predicted"] else 0.0
    r = counts["gold_found"] / counts["gold"] if counts["gold"] else 0.0
    return {"p": 100 * p, "r": 100 * r, "f1": 100 * (2 * p * r / (p + r) if p + r else 0.0)}
