"""What every coreference backend returns: per document, clusters of word spans with a type each.

Spans are word-level `[start, end)` into the SciREX `words`, like every span in `dore`. A result is
in **canonical form**, so identical inputs give identical bytes on disk:

- inside a cluster, spans are de-duplicated and sorted;
- clusters are sorted by first mention (start, then end), then by their full span list;
- a span belongs to at most one cluster, except in the gold setting, where SciREX's own clusters
  overlap (a merged parent method holds its sub-methods' spans);
- documents are sorted by `doc_id`.

Each result carries its **setting**, the label every number computed from it must report:
`gold_input` (the dataset's clusters and types), `gold_mentions_pred_clusters` (predicted clusters
over the gold NER mentions: not end-to-end), `gold_salient_oracle` (predicted clusters kept only
when they map to a gold salient cluster: the SciREX paper's salience oracle) or `end_to_end`
(nothing gold at test time: predicted mentions, clusters and salience).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dore.data.model import DataError, Document
from dore.data.scirex import majority_type
from dore.scoring.scirex import map_span_to_gold

Span = tuple[int, int]
Setting = Literal["gold_input", "gold_mentions_pred_clusters", "gold_salient_oracle", "end_to_end"]
SETTINGS: tuple[str, ...] = get_args(Setting)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CorefDoc(_Strict):
    doc_id: str
    clusters: list[list[Span]] = Field(description="word spans [start, end), canonical order")
    types: list[str | None] = Field(description="one per cluster: majority NER type (gold: the entity's type)")
    names: list[str] | None = Field(default=None, description="gold setting only: the SciREX cluster names")
    mentions: list[tuple[int, int, str | None]] | None = Field(
        default=None, description="end_to_end only: every predicted mention with the type it was given")

    @model_validator(mode="after")
    def _one_type_and_name_per_cluster(self) -> "CorefDoc":
        if len(self.types) != len(self.clusters) or (self.names is not None and len(self.names) != len(self.clusters)):
            raise ValueError(f"{len(self.clusters)} clusters need as many types (and names, when given)")
        return self


class CorefResult(_Strict):
    backend: str
    setting: Setting
    provenance: dict = Field(default_factory=dict, description="what produced it: version, parameters, input hashes")
    docs: list[CorefDoc]

    def by_id(self) -> dict[str, CorefDoc]:
        return {d.doc_id: d for d in self.docs}

    def for_documents(self, docs: Iterable[Document]) -> list[CorefDoc]:
        """The clusters of each of `docs`, in their order; DataError naming the first one missing."""
        by_id = self.by_id()
        docs = list(docs)
        missing = next((d.doc_id for d in docs if d.doc_id not in by_id), None)
        if missing is not None:
            raise DataError(f"missing from the {self.backend!r} coreference result", doc=missing, field="docs")
        return [by_id[d.doc_id] for d in docs]


def canonical_clusters(clusters: Iterable[Iterable[Sequence[int]]]) -> list[list[Span]]:
    """De-duplicate and sort each cluster, drop empty ones, sort clusters by first mention."""
    out = [sorted({(int(s), int(e)) for s, e in cluster}) for cluster in clusters]
    return sorted((c for c in out if c), key=lambda c: (c[0], c))


def span_types(doc: Document) -> dict[Span, str]:
    """The document's NER type per span (`extra_mentions`; the first type wins for a repeated span)."""
    types: dict[Span, str] = {}
    for m in doc.extra_mentions:
        if m.type is not None:
            types.setdefault((m.start, m.end), m.type)
    return types


def mention_type(span: Span, types: dict[Span, str], ner_spans: Sequence[Span]) -> str | None:
    """The NER type of a span: exact match, else that of the first NER span with IoU > 0.5 (the
    official SciREX span mapping), else None."""
    if span in types:
        return types[span]
    return types.get(map_span_to_gold(span, ner_spans))


def typed_doc(doc: Document, clusters: Iterable[Iterable[Sequence[int]]], *, with_mentions: bool) -> CorefDoc:
    """A canonical `CorefDoc` whose clusters are typed by majority vote of their mentions' NER types.

    Ties go to the first type in `SCIREX_TYPES` order (Task, Method, Material, Metric); a cluster
    with no typed mention gets None. With `with_mentions` (end-to-end) every span is listed with
    its own type.
    """
    clusters = canonical_clusters(clusters)
    seen: set[Span] = set()
    for cluster in clusters:
        repeated = seen.intersection(cluster)
        if repeated:
            raise DataError(f"span {min(repeated)} is in two clusters", doc=doc.doc_id, field="clusters")
        seen.update(cluster)
        bad = [(s, e) for s, e in cluster if not 0 <= s < e <= len(doc.tokens)]
        if bad:
            raise DataError(f"span {bad[0]} is not a span of the {len(doc.tokens)} words", doc=doc.doc_id,
                            field="clusters")
    types = span_types(doc)
    ner_spans = [(m.start, m.end) for m in doc.extra_mentions]
    per_span = {span: mention_type(span, types, ner_spans) for cluster in clusters for span in cluster}
    return CorefDoc(doc_id=doc.doc_id, clusters=clusters,
                    types=[majority_type([per_span[s] for s in cluster]) for cluster in clusters],
                    mentions=sorted((s, e, t) for (s, e), t in per_span.items()) if with_mentions else None)

