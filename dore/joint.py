"""Text in, relations out, measured (`dore evaluate-joint`, the DVC stage `evaluate-joint@docred`).

Each test document is read from its own sentences with no entity information (the entities,
relations and every other gold field are dropped before the model sees it), goes through the
entity recognizer (mentions, coreference) and DORE, and is scored against the gold:

- mentions: micro P/R/F1 on exact span and on span + type;
- coreference: MUC, B³, CEAF-e and their mean, on the predicted mentions, over all gold entities;
- joint relations: `strict`, `strict_typed`, `relaxed` (dore/scoring/joint.py);
- beside them, the same DORE model on the gold entities (official DocRED scorer), and the speed of
  both paths in documents per second.

The predictions are written as `predictions.jsonl.gz`, one line per document: `title`, `entities`
(`[{"type", "mentions": [{"sent_id", "pos", "type"}]}]`, DocRED token positions; a mention's own
predicted type beside its entity's majority) and `relations` (`[{"h", "t", "r"}]`): enough to
score them again (`read_predictions`).
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Sequence
from pathlib import Path

from dore.config import PipelineParams, artifacts_dir
from dore.data.model import DataError, Document, Entity, Mention, atomic_write_text
from dore.extract import Extractor, TextExtraction
from dore.scoring.entities import entity_scores
from dore.scoring.joint import joint_scores
from dore.scoring.score import score
from dore.stages import load_split

JOINT_SCORER = "joint relations over predicted entities (strict = JEREX rel, strict_typed = JEREX rel_nec, relaxed)"


def without_gold(doc: Document) -> Document:
    """What the joint setting gives the model: the document's words and sentences, nothing else."""
    return Document(doc_id=doc.doc_id, tokens=doc.tokens, sentences=doc.sentences, entities=[], title=doc.title)


def joint_predict(extractor: Extractor, gold_docs: Sequence[Document]) -> list[TextExtraction]:
    return extractor.extract_text([without_gold(doc) for doc in gold_docs])


def prediction_record(result: TextExtraction) -> dict:
    doc = result.document
    entities = [{"type": e.type, "mentions": [{"sent_id": m.sent_id, "pos": [m.start - doc.sentences[m.sent_id][0],
                                                                             m.end - doc.sentences[m.sent_id][0]],
                                               "type": m.type or e.type}  # what the mention scorer reads
                                              for m in e.mentions]} for e in doc.entities]
    return {"title": doc.doc_id, "entities": entities,
            "relations": [{"h": r.args[0], "t": r.args[1], "r": r.label} for r in result.relations]}


def write_predictions(path: Path, results: Sequence[TextExtraction]) -> Path:
    payload = "".join(json.dumps(prediction_record(r)) + "\n" for r in results).encode()
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(gzip.compress(payload, mtime=0))
    tmp.replace(path)
    return path


def read_predictions(path: str | Path, gold_docs: Sequence[Document]
                     ) -> tuple[list[Document], list[list[tuple[int, int, str]]]]:
    """A `predictions.jsonl.gz` back as documents (words and sentences from `gold_docs`, by title)
    and their relations, in the order of `gold_docs`, for `joint_metrics`-style scoring."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        lines = {(record := json.loads(line))["title"]: record for line in fh if line.strip()}
    docs, relations = [], []
    for gold in gold_docs:
        if gold.doc_id not in lines:
            raise DataError("no prediction for this document", file=path, doc=gold.doc_id, field="title")
        record = lines[gold.doc_id]

        def mention(m: dict) -> Mention:
            first = gold.sentences[m["sent_id"]][0]
            start, end = first + m["pos"][0], first + m["pos"][1]
            return Mention(start=start, end=end, text=" ".join(gold.tokens[start:end]), sent_id=m["sent_id"],
                           type=m.get("type"))

        entities = [Entity(type=e["type"], mentions=[mention(m) for m in e["mentions"]]) for e in record["entities"]]
        docs.append(Document(doc_id=gold.doc_id, tokens=gold.tokens, sentences=gold.sentences, entities=entities,
                             title=gold.title))
        relations.append([(r["h"], r["t"], r["r"]) for r in record["relations"]])
    return docs, relations


def joint_metrics(gold_docs: Sequence[Document], results: Sequence[TextExtraction]) -> dict:
    predicted = [r.document for r in results]
    relations = [[(r.args[0], r.args[1], r.label) for r in res.relations] for res in results]
    return {"entities": entity_scores(gold_docs, predicted),
            "relations": joint_scores(gold_docs, predicted, relations),
            "entities_dropped": sum(r.entities_dropped for r in results)}


def evaluate_joint(params: PipelineParams, split: str = "test", out: str | Path | None = None) -> dict:
    """The joint setting on `split`: metrics in `metrics_joint.json`, predictions in
    `joint/predictions.jsonl.gz` (under the run, unless `out` names a folder)."""
    run = artifacts_dir(params)
    out = Path(out) if out is not None else run / "joint"
    extractor = Extractor.from_pretrained(run / "model")
    gold = load_split(params, split)
    started = time.perf_counter()
    results = joint_predict(extractor, gold)
    text_seconds = time.perf_counter() - started
    started = time.perf_counter()
    gold_entity = score(extractor.predictions(gold), gold, train_docs=load_split(params, "train"))
    gold_seconds = time.perf_counter() - started
    metrics = {"setting": f"{params.dataset} {split}: entities and relations from each document's own sentences",
               "split": split, "scorer": JOINT_SCORER, "documents": len(gold),
               **joint_metrics(gold, results),
               "gold_entities": {k: gold_entity.get(k) for k in ("scorer", "f1", "ign_f1", "p", "r")},
               "speed_docs_per_s": {"text": len(gold) / text_seconds, "gold_entities": len(gold) / gold_seconds}}
    write_predictions(out / "predictions.jsonl.gz", results)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1))
    return metrics
