"""A coreference result on disk: one canonical JSONL file that DVC can cache and compare.

Line 1 is the header `{"backend", "format", "provenance", "setting"}`; then one `CorefDoc` per
line, sorted by doc_id. Keys are sorted, separators compact, absent optional fields left out, and
nothing run-dependent (no time, no path) is written, so identical runs give identical bytes. The
file is written atomically: a reader never sees half of it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import ValidationError

from dore.coref.result import CorefDoc, CorefResult
from dore.data.model import DataError, atomic_write_text, iter_json_objects

FORMAT = "dore-coref/1"


def _dumps(obj: dict) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def dumps_result(result: CorefResult) -> str:
    header = {"backend": result.backend, "format": FORMAT, "provenance": result.provenance, "setting": result.setting}
    docs = sorted(result.docs, key=lambda d: d.doc_id)
    return "".join(_dumps(line) + "\n" for line in
                   [header, *(d.model_dump(mode="json", exclude_none=True) for d in docs)])


def write_result(path: str | os.PathLike, result: CorefResult) -> Path:
    return atomic_write_text(path, dumps_result(result))


def read_result(path: str | os.PathLike) -> CorefResult:
    """Read a file written by `write_result`; DataError names the line and field of any problem."""
    path = Path(path)
    lines = list(iter_json_objects(path))
    if not lines:
        raise DataError("empty file (expected a header line)", file=path)
    header = lines[0][1]
    if header.get("format") != FORMAT:
        raise DataError(f"not a {FORMAT} coreference result", file=path, line=lines[0][0], field="format")
    docs = []
    for lineno, raw in lines[1:]:
        try:
            docs.append(CorefDoc.model_validate(raw))
        except ValidationError as exc:
            err = exc.errors()[0]
            raise DataError(err["msg"], file=path, line=lineno, doc=raw.get("doc_id"),
                            field=".".join(map(str, err["loc"]))) from exc
    ids = [d.doc_id for d in docs]
    if len(set(ids)) != len(ids):
        repeated = next(i for i in ids if ids.count(i) > 1)
        raise DataError("doc_id appears on two lines", file=path, doc=repeated, field="doc_id")
    try:
        return CorefResult(backend=header.get("backend"), setting=header.get("setting"),
                           provenance=header.get("provenance", {}), docs=docs)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise DataError(err["msg"], file=path, line=lines[0][0], field=".".join(map(str, err["loc"]))) from exc
