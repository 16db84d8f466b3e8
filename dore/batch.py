"""Corpus extraction in shards: the work the Prefect flow `extract-dore` (flows/extract.py) maps
over a Dask cluster, one function per step, each safe to rerun.

- `write_shards`: input files -> `shards/shard-NNNNN.jsonl` of at most `shard_docs` documents.
  JSON-lines inputs are cut by line without being parsed, so a corrupt line fails only its shard;
  other formats (DocRED JSON, PubTator, ...) are read whole, and a reader error names the file.
- `extract_shard`: one shard -> `results/shard-NNNNN.<model fingerprint>.jsonl` (the lines
  `dore predict` writes), written atomically. A shard already extracted by the same model is
  skipped, so a rerun does only what is missing; a failure names the shard file and the document.
- `merge`: the shards' results, in corpus order, into one file equal to `dore predict`'s.

Documents that come without entities (plain text, `{"id", "text"}` lines, DocRED without
`vertexSet`) go through the model's entity recognizer: their lines carry the entities found.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from dore.config import DecodingConfig
from dore.data.formats import detect_format, format_by_name, read_any
from dore.data.model import DataError, Document, atomic_write_text, read_jsonl
from dore.data.text import is_text_file, read_texts
from dore.extract import MODEL_CARD, Extractor, PredictedRelation


def model_fingerprint(model_dir: str | Path) -> str:
    """A short hash of a saved model's card and weights: results are keyed by it."""
    digest = hashlib.sha256()
    for path in sorted(Path(model_dir).iterdir()):
        if path.name == MODEL_CARD or path.suffix == ".safetensors":
            digest.update(path.name.encode())
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


def write_shards(inputs: Sequence[str | Path], out_dir: str | Path, shard_docs: int = 50) -> list[Path]:
    """Cut the corpus into shard files under `out_dir/shards/` (rewritten each time: cheap, and
    the shard boundaries then follow the current inputs)."""
    if shard_docs < 1:
        raise ValueError(f"shard_docs must be at least 1, not {shard_docs}")
    lines: list[str] = []
    for path in map(Path, inputs):
        if holds_text(path):
            lines += [doc.to_json() for doc in read_texts(path)]
        elif detect_format(path) == "dore":
            lines += [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            lines += [doc.to_json() for doc in read_any(path)[0]]
    folder = Path(out_dir) / "shards"
    shards = []
    for n, start in enumerate(range(0, len(lines), shard_docs)):
        shards.append(atomic_write_text(folder / f"shard-{n:05d}.jsonl",
                                        "".join(line + "\n" for line in lines[start: start + shard_docs])))
    for stale in set(folder.glob("shard-*.jsonl")) - set(shards):
        stale.unlink()
    return shards


def result_path(shard: str | Path, fingerprint: str) -> Path:
    shard = Path(shard)
    return shard.parent.parent / "results" / f"{shard.stem}.{fingerprint}.jsonl"


@functools.lru_cache(maxsize=2)
def _extractor(model_dir: str, fingerprint: str) -> Extractor:
    """One loaded model per worker process and model version."""
    return Extractor.from_pretrained(model_dir)


def read_inputs(path: str | Path, fmt: str | None = None) -> list[Document]:
    """The documents of a file: text documents (plain text, `{"id", "text"}` lines; told apart
    by content, `--format text` forces it) or any dataset format dore reads."""
    path = Path(path)
    if fmt == "text" or (fmt is None and holds_text(path)):
        return read_texts(path)
    return read_any(path, fmt)[0]


def holds_text(path: Path) -> bool:
    """Plain text or text lines, unless the name says a biomedical format (CDR's `.data` and
    PubTator lines do not start with JSON either)."""
    return format_by_name(path) is None and is_text_file(path)


def prediction_lines(docs, relations: Sequence[Sequence[PredictedRelation]]) -> str:
    """`dore predict`'s JSON lines for documents given with their entities: `{"doc_id", "relations"}`."""
    return "".join(json.dumps({"doc_id": d.doc_id, "relations": [r.model_dump() for r in rels]}) + "\n"
                   for d, rels in zip(docs, relations))


def predict_lines(extractor: Extractor, docs: Sequence[Document], decoding: DecodingConfig | None = None) -> str:
    """`dore predict`'s JSON lines, in input order: documents given with entities as
    `prediction_lines`; the others (no entities given) with the entities found,
    `{"doc_id", "entities", "relations", "entities_dropped"}` (`TextExtraction.to_dict`)."""
    given = [d for d in docs if d.entities]
    found = iter(extractor.extract_text([d for d in docs if not d.entities], decoding)
                 if len(given) < len(docs) else [])
    relations = iter(extractor.extract(given, decoding) if given else [])
    lines = []
    for doc in docs:
        if doc.entities:
            lines.append(prediction_lines([doc], [next(relations)]))
        else:
            lines.append(json.dumps(next(found).to_dict()) + "\n")
    return "".join(lines)


def extract_shard(model_dir: str | Path, shard: str | Path, fingerprint: str) -> dict:
    """Extract one shard's relations (skipped when this model's result exists)."""
    out = result_path(shard, fingerprint)
    if out.exists():
        return {"shard": str(shard), "output": str(out), "skipped": True}
    docs = list(read_jsonl(shard))  # a corrupt line raises DataError naming the file and line
    try:
        lines = predict_lines(_extractor(str(model_dir), fingerprint), docs)
    except ValueError as exc:  # a document the model cannot take: the message names it
        raise DataError(str(exc), file=shard) from exc
    atomic_write_text(out, lines)
    return {"shard": str(shard), "output": str(out), "skipped": False, "documents": len(docs),
            "relations": sum(len(json.loads(line)["relations"]) for line in lines.splitlines())}


def merge(outputs: Sequence[str | Path], merged: str | Path) -> Path:
    """The shards' results, concatenated in shard order, into `merged` (atomically)."""
    return atomic_write_text(merged, "".join(Path(p).read_text(encoding="utf-8") for p in sorted(map(str, outputs))))
