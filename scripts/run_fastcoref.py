"""Run the `fastcoref` package (F-coref or LingMess) over SciREX documents, from a local model directory.

Writes the JSONL that `dore.coref` imports with backend `fastcoref` (setting `end_to_end`), one line
per document, sorted by doc_id:

    {"clusters": [[[start, end], ...], ...], "doc_key": "<SciREX doc_id>", "tokens": [...SciREX words...]}

The SciREX words go in pre-tokenised (`is_split_into_words=True`, no spaCy pipeline, so nothing is
downloaded), and for pre-tokenised input `get_clusters(as_strings=False)` gives word i the offsets
(i, i+1): the spans are word spans `[start, end)`. Results are joined by `text_idx`, never by
position; a document the model skipped (LingMess skips anything longer than its `max_doc_len`,
which is most of SciREX) is an error. A sidecar `<output>.meta.json` records the model (directory
name, sha256 of the weights) and the package versions; the importer copies it into the result's
provenance.

A separate environment: `fastcoref` 2.1.6 (the last release) does not work beside the project's
transformers 5: newer transformers build its encoder with SDPA attention, which its models do not
load with (fastcoref issue #59; the script asks for eager attention, the issue's workaround, known
to work up to transformers 4.45). So it imports nothing from `dore` and runs in its own virtual
environment:

    python3.11 -m venv .venv-fastcoref
    .venv-fastcoref/bin/pip install "fastcoref==2.1.6" "transformers>=4.31,<4.46" "torch>=2.1"
    HF_HUB_OFFLINE=1 .venv-fastcoref/bin/python scripts/run_fastcoref.py --model-dir models/f-coref \\
        --input ../shared/data/scirex/dev.jsonl --output artifacts/coref/fastcoref/dev.raw.jsonl

The model directory is a saved F-coref (`biu-nlp/f-coref`) or LingMess (`biu-nlp/lingmess-coref`)
checkpoint: `config.json` with a `coref_head` block, `model.safetensors` or `pytorch_model.bin`,
and the tokenizer files. Nothing is fetched from a hub: the script sets `HF_HUB_OFFLINE=1`. Then,
in the project environment:

    python -c "from dore.coref import run_coref; print(run_coref('fastcoref', '../shared/data/scirex/dev.jsonl', \\
        'artifacts/coref/fastcoref/dev.jsonl', import_path='artifacts/coref/fastcoref/dev.raw.jsonl'))"

Exit status 2, with a message naming everything that is missing, when the package or the model
directory (or a file in it) is absent.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json")  # either a fast tokenizer file or RoBERTa BPE files
MODELS = {"fcoref": "FCoref", "lingmess": "LingMessCoref"}
PIP = 'pip install "fastcoref==2.1.6" "transformers>=4.31,<4.46" "torch>=2.1" (in a separate environment)'


def missing_requirements(model_dir: Path) -> list[str]:
    """Everything that stops a run, in words; empty when the package and the model are there."""
    problems = []
    if importlib.util.find_spec("fastcoref") is None:
        problems.append(f"the Python package `fastcoref` is not installed: {PIP}")
    if not model_dir.is_dir():
        problems.append(f"the model directory {model_dir} does not exist (a saved F-coref or LingMess checkpoint)")
        return problems
    config = model_dir / "config.json"
    if not config.is_file():
        problems.append(f"{config} is missing")
    elif "coref_head" not in json.loads(config.read_text(encoding="utf-8")):
        problems.append(f"{config} has no `coref_head` block: not a fastcoref model")
    if not any((model_dir / name).is_file() for name in WEIGHT_FILES):
        problems.append(f"{model_dir} holds no weights ({' or '.join(WEIGHT_FILES)})")
    if not any((model_dir / name).is_file() for name in TOKENIZER_FILES):
        problems.append(f"{model_dir} holds no tokenizer ({' or '.join(TOKENIZER_FILES)})")
    return problems


def read_documents(path: Path) -> list[tuple[str, list[str]]]:
    """(doc_id, words) of each line of a SciREX jsonl file (gzip when the name ends in .gz)."""
    opener = gzip.open if path.suffix == ".gz" else open
    docs = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                raw = json.loads(line)
                if not isinstance(raw.get("doc_id"), str) or not isinstance(raw.get("words"), list):
                    raise SystemExit(f"{path} line {lineno}: expected a SciREX document with doc_id and words")
                docs.append((raw["doc_id"], raw["words"]))
    return docs


@contextmanager
def eager_attention():
    """fastcoref 2.1.6 builds its encoder with `AutoModel.from_config(config)`; from transformers 4.36
    on that may pick SDPA attention, which its models do not load with: ask for eager attention."""
    import transformers

    if tuple(int(x) for x in transformers.__version__.split(".")[:2]) < (4, 36):
        yield  # no attention choice before 4.36: eager is the only one
        return
    original = transformers.AutoModel.from_config

    def from_config(config, *args, **kwargs):
        kwargs.setdefault("attn_implementation", "eager")
        return original(config, *args, **kwargs)

    transformers.AutoModel.from_config = from_config
    try:
        yield
    finally:
        transformers.AutoModel.from_config = original


def predict(model_name: str, model_dir: Path, docs: list[tuple[str, list[str]]], device: str | None,
            max_tokens_in_batch: int) -> tuple[list[dict], int]:
    """One output line per document, and the number of mentions the package could not align."""
    import fastcoref

    with eager_attention():
        model = getattr(fastcoref, MODELS[model_name])(str(model_dir), device=device, nlp=None,
                                                       enable_progress_bar=False)
    results = model.predict([words for _, words in docs], is_split_into_words=True,
                            max_tokens_in_batch=max_tokens_in_batch)
    by_index = {result.text_idx: result for result in results}
    skipped = [doc_id for i, (doc_id, _) in enumerate(docs) if i not in by_index]
    if skipped:
        raise SystemExit(f"the model skipped {len(skipped)} document(s), e.g. {skipped[0]} (LingMess skips documents "
                         "longer than its max_doc_len); use F-coref for SciREX")
    lines, unaligned = [], 0
    for i, (doc_id, words) in enumerate(docs):
        clusters = []
        for cluster in by_index[i].get_clusters(as_strings=False):
            spans = [[int(s), int(e)] for s, e in (span for span in cluster if span is not None)]
            unaligned += len(cluster) - len(spans)
            if spans:
                clusters.append(spans)
        lines.append({"clusters": clusters, "doc_key": doc_id, "tokens": words})
    return sorted(lines, key=lambda line: line["doc_key"]), unaligned


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="local F-coref or LingMess checkpoint")
    parser.add_argument("--input", type=Path, required=True, help="SciREX jsonl (or .jsonl.gz)")
    parser.add_argument("--output", type=Path, required=True, help="JSONL for dore.coref backend `fastcoref`")
    parser.add_argument("--model", choices=sorted(MODELS), default="fcoref")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    parser.add_argument("--max-tokens-in-batch", type=int, default=10000)
    args = parser.parse_args(argv)

    problems = missing_requirements(args.model_dir)
    if not args.input.is_file():
        problems.append(f"the input file {args.input} does not exist")
    if problems:
        print("run_fastcoref.py cannot run:\n" + "\n".join(f"  - {p}" for p in problems), file=sys.stderr)
        return 2

    os.environ["HF_HUB_OFFLINE"] = "1"
    docs = read_documents(args.input)
    lines, unaligned = predict(args.model, args.model_dir, docs, args.device, args.max_tokens_in_batch)
    write_atomic(args.output, "".join(json.dumps(line, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                                      + "\n" for line in lines))
    weights = next(args.model_dir / name for name in WEIGHT_FILES if (args.model_dir / name).is_file())
    meta = {"model": args.model, "model_dir": args.model_dir.name, "weights": weights.name,
            "weights_sha256": sha256(weights), "unaligned_mentions_dropped": unaligned,
            "versions": {pkg: importlib.metadata.version(pkg) for pkg in ("fastcoref", "transformers", "torch")}}
    write_atomic(args.output.with_name(args.output.name + ".meta.json"), json.dumps(meta, indent=1, sort_keys=True))
    print(f"wrote {len(lines)} documents to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
