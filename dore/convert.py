"""Stage `convert`: a dataset file -> canonical JSONL documents plus their symbolic targets.

One implementation for the CLI (`dore convert`), the DVC stage and the Prefect task.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from dore.data.model import Document, atomic_write_text, write_jsonl
from dore.data.report import ReaderReport
from dore.layout import IdLayout, block_sizes_from, cdr_layout, docred_layout, gda_layout, scirex_layout
from dore.linearize import build_targets
from dore.sampling import SamplingConfig

FORMATS = ("docred", "pubtator", "eog", "renet", "scirex", "dore")


def detect_format(path: Path) -> str:
    """Guess the format from the file name (`--format` overrides)."""
    name = path.name.lower()
    if path.is_dir() and (path / "anns.txt").exists():
        return "renet"
    if "pubtator" in name:
        return "pubtator"
    if name.endswith(".data"):
        return "eog"
    if name.endswith((".jsonl", ".jsonl.gz")):
        with _open_text(path) as fh:
            first = json.loads(fh.readline() or "{}")
        return "dore" if "tokens" in first else "scirex"
    if name.endswith(".json"):
        return "docred"
    raise ValueError(f"cannot tell the format of {path}; pass --format (one of {', '.join(FORMATS)})")


def _open_text(path: Path):
    import gzip
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def read_any(path: str | Path, fmt: str | None = None) -> tuple[list[Document], ReaderReport, str]:
    """Read a dataset file of any supported format; returns (documents, report, format)."""
    path = Path(path)
    fmt = fmt or detect_format(path)
    if fmt == "docred":
        from dore.data.docred import read_docred
        docs, report = read_docred(path)
    elif fmt == "pubtator":
        from dore.data.bio import read_pubtator
        docs, report = read_pubtator(path)
    elif fmt == "eog":
        from dore.data.bio import read_eog
        docs, report = read_eog(path, dataset="gda" if "gda" in str(path).lower() else "cdr")
    elif fmt == "renet":
        from dore.data.bio import read_renet
        docs, report = read_renet(path)
    elif fmt == "scirex":
        from dore.data.scirex import read_scirex
        docs, report = read_scirex(path)
    elif fmt == "dore":
        from dore.data.model import read_jsonl
        docs = list(read_jsonl(path))
        report = ReaderReport(file=str(path))
        for d in docs:
            report.add_document(d)
    else:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return docs, report, fmt


def default_layout(docs: list[Document], fmt: str, rel_info: dict[str, str] | None = None) -> IdLayout:
    """The layout a format's documents are linearised with (typed blocks sized from `docs`)."""
    labels = {r.label for d in docs for r in d.relations}
    types = {e.type for d in docs for e in d.entities}
    if "CID" in labels or "Chemical" in types:
        s = block_sizes_from(docs, ["Chemical", "Disease"])
        return cdr_layout(s["Chemical"], s["Disease"])
    if "GDA" in labels or "Gene" in types:
        s = block_sizes_from(docs, ["Gene", "Disease"])
        return gda_layout(s["Gene"], s["Disease"])
    if fmt == "scirex" or "relevant" in labels:
        return scirex_layout(4, block_sizes_from(docs, ["Task", "Method", "Material", "Metric"]))
    if rel_info is None:
        rel_info = {lab: lab for lab in sorted(labels)}
    return docred_layout(rel_info, n_slots=max(100, max((len(d.entities) for d in docs), default=0)))


def convert(path: str | Path, out: str | Path, *, fmt: str | None = None, layout: IdLayout | None = None,
            rel_info: dict[str, str] | None = None, sampling: SamplingConfig | None = None,
            seed: int = 0, epoch: int = 0, progress=None) -> dict:
    """Write `out` (canonical documents) and `out` with `.targets.jsonl` (positive targets).

    Returns a summary of counts: the reader's report plus target statistics.
    """
    docs, report, fmt = read_any(path, fmt)
    layout = layout or default_layout(docs, fmt, rel_info)
    out = Path(out)
    write_jsonl(out, docs)
    lines, lost, lengths, n_positive = [], Counter(), [], 0
    for doc in (progress(docs) if progress else docs):
        t = build_targets(doc, layout, sampling, seed=seed, epoch=epoch)
        lost.update(t.lost)
        n_positive += len(t.positives)
        lengths.append(len(t.sequence()))
        lines.append(json.dumps({"doc_id": doc.doc_id, "sequence": t.render(t.sequence()),
                                 "rows": {layout.code_name(h): t.render(r) for h, r in t.rows().items()}},
                                sort_keys=True, ensure_ascii=False) + "\n")
    targets_path = out.with_name(out.name.removesuffix(".jsonl") + ".targets.jsonl")
    atomic_write_text(targets_path, "".join(lines))
    atomic_write_text(out.with_name(out.name.removesuffix(".jsonl") + ".layout.json"), layout.to_json())
    return {
        "file": str(path), "format": fmt, "layout": layout.name, "documents": report.documents,
        "entities": report.entities, "mentions": report.mentions, "relations": report.relations,
        "unique_relations": sum(len(d.unique_relations()) for d in docs),
        "positive_tuples": n_positive,
        "mean_target_length": round(sum(lengths) / max(len(lengths), 1), 1),
        "max_target_length": max(lengths, default=0),
        "lost_positives": dict(lost), "quirks": dict(report.quirks), "counts": dict(report.counts),
        "outputs": [str(out), str(targets_path)],
    }
