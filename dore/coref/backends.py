"""The backend interface, the `gold` backend and the registry that builds a backend by name.

A backend takes SciREX documents (`dore` Documents from `read_scirex`, NER mentions in
`extra_mentions`) and returns one `CorefDoc` per document. `resolve` wraps that in a
`CorefResult` labelled with the backend's setting and provenance. Results are joined to documents
by `doc_id`, never by position.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import dore
from dore.coref.importers import FastcorefJsonl, FastCorefLog
from dore.coref.result import CorefDoc, CorefResult, Setting, canonical_clusters
from dore.coref.string_match import StringMatch
from dore.data.model import DataError, Document


class CorefBackend(Protocol):
    name: str
    setting: Setting

    def parameters(self) -> dict:
        """What, besides the input documents, determines the output (written to the provenance)."""

    def resolve(self, docs: Sequence[Document]) -> list[CorefDoc]:
        """One `CorefDoc` per document, in any order."""

    def report(self) -> dict:
        """After `resolve`: counts of what the backend had to adjust (e.g. duplicate spans dropped)."""


class Gold:
    """The dataset's own salient clusters and types (`gold_input`).

    Clusters are the `read_scirex` entities with at least one mention: method sub-relations
    merged into their parent (so clusters can overlap), table-only entities left out. Types are
    the entities' types (the relation slot they fill), not a vote; names are the SciREX cluster
    names, so relations over them score in the official gold-input setting.
    """

    name = "gold"
    setting = "gold_input"

    def parameters(self) -> dict:
        return {}

    def report(self) -> dict:
        return {}

    def resolve(self, docs: Sequence[Document]) -> list[CorefDoc]:
        out = []
        for doc in docs:
            entities = [e for e in doc.entities if e.mentions]
            spans = [sorted({(m.start, m.end) for m in e.mentions}) for e in entities]
            order = sorted(range(len(entities)), key=lambda i: (spans[i][0], spans[i], entities[i].id or ""))
            out.append(CorefDoc(doc_id=doc.doc_id, clusters=[spans[i] for i in order],
                                types=[entities[i].type for i in order],
                                names=[_name(doc, entities[i].id) for i in order]))
        return out


def _name(doc: Document, name: str | None) -> str:
    if name is None:
        raise DataError("a gold SciREX entity needs its cluster name as id", doc=doc.doc_id, field="entities")
    return name


BACKENDS = ("gold", "string-match", "fast-coref-log", "fastcoref")


def make_backend(name: str, import_path: str | Path | None = None) -> CorefBackend:
    """The backend called `name`; the importers (`fast-coref-log`, `fastcoref`) read `import_path`.

    No fallback: an unknown name, or an importer without its file, raises.
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown coreference backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name in ("fast-coref-log", "fastcoref"):
        if import_path is None:
            raise ValueError(f"backend {name!r} imports a file: pass import_path")
        return (FastCorefLog if name == "fast-coref-log" else FastcorefJsonl)(import_path)
    if import_path is not None:
        raise ValueError(f"backend {name!r} reads no file, but import_path={str(import_path)!r} was given")
    return Gold() if name == "gold" else StringMatch()


def resolve(backend: CorefBackend, docs: Sequence[Document], *, provenance: dict | None = None) -> CorefResult:
    """Run a backend and label its output; every input document must come back exactly once."""
    out = backend.resolve(docs)
    wanted = {d.doc_id for d in docs}
    got = [d.doc_id for d in out]
    if len(set(got)) != len(got) or set(got) != wanted:
        extra, missing = sorted(set(got) - wanted), sorted(wanted - set(got))
        raise DataError(f"backend {backend.name!r} returned the wrong documents "
                        f"({len(missing)} missing, {len(extra)} unknown, {len(got) - len(set(got))} repeated)",
                        doc=(missing or extra or [None])[0], field="docs")
    for d in out:
        if canonical_clusters(d.clusters) != d.clusters:
            raise DataError("clusters are not in canonical form (dore.coref.result.canonical_clusters)",
                            doc=d.doc_id, field="clusters")
    return CorefResult(backend=backend.name, setting=backend.setting,
                       provenance={"dore_version": dore.__version__, "parameters": backend.parameters(),
                                   "report": backend.report(), **(provenance or {})},
                       docs=sorted(out, key=lambda d: d.doc_id))
