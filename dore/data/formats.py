"""Every dataset file format dore reads, told apart by name (and by content for JSON lines):
DocRED JSON, PubTator, EoG `.data`, a RENET folder, SciREX JSON lines, dore's own JSON lines."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from dore.data.bio import read_eog, read_pubtator, read_renet
from dore.data.docred import read_docred
from dore.data.model import DataError, Document, read_jsonl
from dore.data.report import ReaderReport
from dore.data.scirex import read_scirex

FORMATS = ("docred", "pubtator", "eog", "renet", "scirex", "dore")


def format_by_name(path: Path) -> str | None:
    """The biomedical formats, told by their file name alone (plain text to a content sniffer)."""
    name = path.name.lower()
    if path.is_dir() and (path / "anns.txt").exists():
        return "renet"
    if "pubtator" in name:
        return "pubtator"
    if name.endswith(".data"):
        return "eog"
    return None


def detect_format(path: Path) -> str:
    """Guess the format from the file name (`--format` overrides)."""
    if by_name := format_by_name(path):
        return by_name
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz")):
        with _open_text(path) as fh:
            first = json.loads(fh.readline() or "{}")
        return "dore" if "tokens" in first else "scirex"
    if name.endswith(".json"):
        return "docred"
    raise DataError(f"cannot tell its format; pass --format (one of {', '.join(FORMATS)})", file=path)


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def read_any(path: str | Path, fmt: str | None = None) -> tuple[list[Document], ReaderReport, str]:
    """Read a dataset file of any supported format; returns (documents, report, format)."""
    path = Path(path)
    fmt = fmt or detect_format(path)
    if fmt == "docred":
        docs, report = read_docred(path)
    elif fmt == "pubtator":
        docs, report = read_pubtator(path)
    elif fmt == "eog":
        docs, report = read_eog(path, dataset="gda" if "gda" in str(path).lower() else "cdr")
    elif fmt == "renet":
        docs, report = read_renet(path)
    elif fmt == "scirex":
        docs, report = read_scirex(path)
    elif fmt == "dore":
        docs = list(read_jsonl(path))
        report = ReaderReport(file=str(path))
        for d in docs:
            report.add_document(d)
    else:
        raise DataError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}", file=path)
    return docs, report, fmt
