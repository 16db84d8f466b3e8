"""Training and selecting the salience classifier (`dore.coref.salience.SalienceModel`) on SciREX train.

- **Training examples**: every cluster of the training documents: the salient (`coref`) clusters
  with a mention are positives, the `coref_non_salient` clusters negatives. Types are the majority
  NER type of the cluster's mentions, as they are for predicted clusters.
- **Model**: scikit-learn's `LogisticRegression` on standardised features (`StandardScaler`),
  stored as JSON coefficients.
- **Selection** (C and the threshold): on the held-out documents (the last 30 of train), by the
  micro F1 of `salient_cluster_scores`. The candidates scored there are `config.select_on`:
  `string-match` (string-match clusters over the held-out NER mentions: what the chain feeds the
  classifier) or `gold` (the held-out salient and non-salient clusters). The dev file (our test)
  is never read here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from dore.coref.salience import SalienceModel, cluster_features, ner_types, salient_cluster_scores
from dore.coref.string_match import StringMatch
from dore.data.model import DataError, Document

Span = tuple[int, int]


class SalienceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    c_grid: tuple[float, ...] = Field(default=(0.01, 0.1, 1.0, 10.0), description="inverse L2 strengths tried")
    thresholds: tuple[float, ...] = Field(default=tuple(round(0.05 * i, 2) for i in range(1, 20)),
                                          description="decision thresholds tried on the held-out documents")
    class_weight: Literal["balanced", "none"] = "balanced"
    select_on: Literal["string-match", "gold"] = "string-match"
    max_iter: int = Field(default=2000, gt=0)


def gold_training_clusters(doc: Document, non_salient: Sequence[Sequence[Span]]
                           ) -> tuple[list[list[Span]], list[int]]:
    """(clusters, labels): the salient clusters with a mention (1), then the non-salient ones (0)."""
    salient = [sorted({(m.start, m.end) for m in e.mentions}) for e in doc.entities if e.mentions]
    others = [sorted({tuple(s) for s in c}) for c in non_salient if c]
    return salient + others, [1] * len(salient) + [0] * len(others)


def _examples(docs: Sequence[Document], non_salient: Mapping[str, Sequence[Sequence[Span]]]
              ) -> tuple[np.ndarray, np.ndarray]:
    features, labels = [], []
    for doc in docs:
        if doc.doc_id not in non_salient:
            raise DataError("no coref_non_salient clusters for this training document", doc=doc.doc_id,
                            field="coref_non_salient")
        clusters, y = gold_training_clusters(doc, non_salient[doc.doc_id])
        features.append(cluster_features(doc, clusters, ner_types(doc, clusters)))
        labels += y
    return np.concatenate(features), np.asarray(labels)


def candidate_clusters(docs: Sequence[Document], non_salient: Mapping[str, Sequence[Sequence[Span]]],
                       select_on: str) -> dict[str, tuple[list[list[Span]], list[str | None]]]:
    """doc_id -> (clusters, types) the threshold is selected on."""
    if select_on == "gold":
        out = {}
        for doc in docs:
            clusters, _ = gold_training_clusters(doc, non_salient.get(doc.doc_id, ()))
            out[doc.doc_id] = (clusters, ner_types(doc, clusters))
        return out
    return {c.doc_id: (c.clusters, c.types) for c in StringMatch().resolve(docs)}


def fit_salience(train_docs: Sequence[Document], heldout_docs: Sequence[Document],
                 non_salient: Mapping[str, Sequence[Sequence[Span]]],
                 config: SalienceConfig | None = None) -> tuple[SalienceModel, dict]:
    """Fit on `train_docs`, select C and the threshold on `heldout_docs`; returns the model and a
    report (example counts, held-out F1 per C at its best threshold)."""
    config = config or SalienceConfig()
    x, y = _examples(train_docs, non_salient)
    if len(set(y.tolist())) < 2:
        raise DataError("salience training needs salient and non-salient clusters", field="coref_non_salient")
    scaler = StandardScaler().fit(x)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    candidates = candidate_clusters(heldout_docs, non_salient, config.select_on)
    by_id = {d.doc_id: d for d in heldout_docs}
    heldout_features = {doc_id: cluster_features(by_id[doc_id], clusters, types)
                        for doc_id, (clusters, types) in candidates.items()}
    best: tuple | None = None
    tried = []
    for c in config.c_grid:
        regression = LogisticRegression(C=c, max_iter=config.max_iter,
                                        class_weight=None if config.class_weight == "none" else "balanced")
        regression.fit((x - scaler.mean_) / scale, y)
        model = SalienceModel(mean=scaler.mean_.tolist(), scale=scale.tolist(), coef=regression.coef_[0].tolist(),
                              intercept=float(regression.intercept_[0]), threshold=0.5)
        model, tried_c = select_threshold(model, heldout_docs, candidates, heldout_features, config.thresholds)
        tried += [{"c": c, **row} for row in tried_c]
        selected_c = {"c": c, **max(tried_c, key=lambda row: row["f1"])}
        if best is None or selected_c["f1"] > best[0]["f1"]:
            best = (selected_c, model)
    assert best is not None
    selected, model = best
    report = {"train_docs": len(train_docs), "heldout_docs": len(heldout_docs), "examples": int(len(y)),
              "positives": int(y.sum()), "selected": selected, "select_on": config.select_on,
              "heldout_f1_per_c": {str(c): max(t["f1"] for t in tried if t["c"] == c) for c in config.c_grid}}
    model = model.model_copy(update={"provenance": {"config": config.model_dump(mode="json"), **report}})
    return model, report


def select_threshold(model: SalienceModel, gold_docs: Sequence[Document],
                     candidates: Mapping[str, tuple[Sequence[Sequence[Span]], Sequence[str | None]]],
                     features: Mapping[str, np.ndarray], thresholds: Sequence[float]
                     ) -> tuple[SalienceModel, list[dict]]:
    """`model` with the threshold whose kept candidates (doc_id -> clusters, types; `features` their
    `cluster_features`) score the best salient-cluster F1 against `gold_docs` (ties: the first tried),
    and the P/R/F1 of every threshold."""
    probabilities = {doc_id: model.probabilities(f) if len(f) else np.zeros(0) for doc_id, f in features.items()}
    tried = []
    for threshold in thresholds:
        kept = {doc_id: [cl for cl, p in zip(candidates[doc_id][0], probabilities[doc_id]) if p >= threshold]
                for doc_id in candidates}
        scores = salient_cluster_scores(gold_docs, kept)
        tried.append({"threshold": threshold, "p": scores["p"], "r": scores["r"], "f1": scores["f1"]})
    best = max(tried, key=lambda row: row["f1"])  # the first of equals
    return model.model_copy(update={"threshold": best["threshold"]}), tried
