"""Reading past bad documents, for `dore validate FILE`.

A reader stops at the first structural error (DataError), which is what training and scoring
want. To report every bad document of a file, a file that fails is read again one document at a
time: each document (a DocRED list item, a JSON line, an EoG line, a PubTator block) is written
alone to a scratch copy at the same path below a scratch folder (so a reader that looks at the
path, EoG's cdr / gda, sees the same) and read with the same reader. Each error names the
original file, line and document. What only the whole file shows (a doc_id repeated across
documents) is left to the content checks (dore.validate). A RENET folder, or a file whose JSON
does not parse as a whole, is not split: its first error is all there is.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dore.data.formats import detect_format, read_any
from dore.data.model import DataError, Document

MAX_ERRORS = 50  # a file with more bad documents is broken as a whole; the first ones say how


@dataclass(frozen=True)
class _Unit:
    """One document's text as its own file, and where it starts in the original."""

    text: str
    index: int  # document position in the file
    first_line: int | None  # None: a format whose errors name no line (DocRED)


def read_salvaging(path: str | Path, fmt: str | None = None, max_errors: int = MAX_ERRORS,
                   ) -> tuple[list[Document], list[DataError], str]:
    """The documents of `path` that read, the DataErrors of those that do not (the first
    `max_errors`, in file order; empty when the file reads), and the format."""
    path = Path(path)
    fmt = fmt or detect_format(path)
    try:
        return read_any(path, fmt)[0], [], fmt
    except DataError as first:
        units = _units(path, fmt)
        if units is None:
            return [], [first], fmt
    # Named by the process id, not random letters, so the copy's path holds no stray "gda" or "cdr".
    scratch = Path(tempfile.gettempdir()) / f"dore-salvage-{os.getpid()}"
    relative = path.resolve().relative_to(path.resolve().anchor)
    copy = scratch / (relative.with_suffix("") if path.suffix == ".gz" else relative)  # copies are plain text
    copy.parent.mkdir(parents=True, exist_ok=True)
    docs, errors = [], []
    try:
        for unit in units:
            copy.write_text(unit.text, encoding="utf-8")
            try:
                docs += read_any(copy, fmt)[0]
            except DataError as exc:
                errors.append(_in_original(exc, path, unit))
                if len(errors) == max_errors:
                    break
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return docs, errors, fmt


def _in_original(exc: DataError, path: Path, unit: _Unit) -> DataError:
    """`exc`, raised reading `unit` alone, naming the original file, line and document."""
    line = unit.first_line + exc.line - 1 if unit.first_line is not None and exc.line is not None else exc.line
    doc = unit.index if isinstance(exc.doc, int) else exc.doc  # a position in the copy is 0
    return DataError(exc.message, file=path, line=line, doc=doc, field=exc.field)


def _units(path: Path, fmt: str) -> list[_Unit] | None:
    """The file's documents as separate texts in its own format, or None where it does not split."""
    if fmt == "renet" or not path.is_file():
        return None
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        text = fh.read()
    if fmt == "docred":
        try:
            items = json.loads(text)
        except json.JSONDecodeError:
            return None
        return [_Unit(json.dumps([item]), i, None) for i, item in enumerate(items)] if isinstance(items, list) else None
    if fmt == "pubtator":
        return list(_blocks(text))
    numbered = [(lineno, line) for lineno, line in enumerate(text.splitlines(), 1) if line.strip()]
    return [_Unit(line + "\n", i, lineno) for i, (lineno, line) in enumerate(numbered)]  # a document per line


def _blocks(text: str) -> Iterator[_Unit]:
    """PubTator documents: runs of lines between blank lines."""
    lines, start, index = [], 0, 0
    for lineno, line in enumerate([*text.splitlines(), ""], 1):
        if line.strip():
            start = start or lineno
            lines.append(line)
        elif lines:
            yield _Unit("\n".join(lines) + "\n\n", index, start)
            lines, start, index = [], 0, index + 1
