"""Mention detection and coreference trained through the one loop (`dore.training.loop.train`).

`EntityMethod` is the loop's contract for `dore.entities.EntityRecognizer`: one example per
document (its windows, BIO tags and gold mentions), a batch's loss = tagging cross-entropy +
`coref_weight` x antecedent loss, the encoder at `lr` and the new heads at `lr_new` (no decay on
biases and norms). Dev evaluation reads each document with its entities removed (`blind`), so
it measures exactly what a user with plain tokens gets; both coreference backends are scored
from the same mentions.
"""

from __future__ import annotations

import gzip
import json
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from dore.config import EntityParams, TrainConfig
from dore.data.datasets import get_entity_setting
from dore.data.model import Document, atomic_write_text
from dore.entities import EntityRecognizer
from dore.entities.coref import COREF_BACKENDS
from dore.entities.recognizer import EntityExample
from dore.extract import training_data_hash
from dore.scoring.entities import entity_scores, headline
from dore.training.loop import train as train_loop


def blind(doc: Document) -> Document:
    """The document as a user would bring it: tokens and sentences, no entity information."""
    return doc.model_copy(update={"entities": [], "relations": [], "candidates": None, "excluded": [],
                                  "extra_mentions": []})


def entity_types(docs: Sequence[Document]) -> list[str]:
    """The mention types of the training data, sorted (DocRED: LOC MISC NUM ORG PER TIME)."""
    return sorted({m.type or e.type for d in docs for e in d.entities for m in e.mentions if m.type or e.type})


def evaluate(recognizer: EntityRecognizer, gold_docs: Sequence[Document], *, batch_docs: int = 8) -> dict:
    """Scores of both backends on `gold_docs` read blind: `{backend: entity_scores}` and the
    predicted documents of each backend."""
    predicted = recognizer.recognize_backends([blind(d) for d in gold_docs], COREF_BACKENDS, batch_docs=batch_docs)
    return {"scores": {b: entity_scores(gold_docs, docs) for b, docs in predicted.items()}, "predicted": predicted}


def flat_dev_metrics(scores: dict) -> dict[str, float]:
    """Mention numbers (shared by the backends) and each backend's coreference mean F1, flat."""
    first = headline(scores[COREF_BACKENDS[0]])
    out = {k: v for k, v in first.items() if k.startswith("mention")}
    for backend, s in scores.items():
        out[f"coref_f1_{backend.replace('-', '_')}"] = s["coref"]["avg_f1"]
    return out


class EntityMethod:
    def __init__(self, params: EntityParams, types: Sequence[str]):
        cfg = params.train
        self.params = params
        self.recognizer = EntityRecognizer.new(cfg.backbone, types, window=params.window, stride=params.stride,
                                               mention_size=params.mention_size,
                                               word_shapes=params.word_shapes, seed=cfg.seed)
        self.model = self.recognizer.model

    def examples(self, docs: Sequence[Document], counts: Counter) -> list[EntityExample]:
        return [self.recognizer.example(d, counts, gold=True) for d in docs]

    def collate(self, examples: Sequence[EntityExample], epoch: int, counts: Counter) -> dict:
        return self.recognizer.training_batch(examples)

    def loss(self, model, batch: dict) -> tuple[Tensor, int]:
        tag_loss, coref_loss = EntityRecognizer.loss(model, batch)
        return tag_loss + self.params.coref_weight * coref_loss, len(batch["word_counts"])

    def param_groups(self, cfg: TrainConfig) -> list[dict]:
        groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                no_decay = p.ndim < 2 or "norm" in name.lower() or name.endswith(".bias")
                groups.setdefault((no_decay, not name.startswith("encoder.")), []).append(p)
        head_lr = cfg.lr if cfg.lr_new is None else cfg.lr_new
        return [{"params": ps, "weight_decay": 0.0 if nd else cfg.weight_decay, "lr": head_lr if new else cfg.lr}
                for (nd, new), ps in groups.items()]

    def evaluate(self, gold_docs: Sequence[Document]) -> dict:
        return evaluate(self.recognizer, gold_docs)

    def save(self, directory: str | Path, **card) -> Path:
        return self.recognizer.save_pretrained(directory, **card)


# --- the stages' work (dore.stages.train_entities / evaluate_entities call these) --------------

def entities_dir(params: EntityParams) -> Path:
    """Where the entity stages write: `<artifacts>/<dataset>/entities/` (model/, train/, eval/)."""
    return Path(params.artifacts) / params.dataset / "entities"


def read_splits(params: EntityParams, splits: Sequence[str]) -> dict[str, list[Document]]:
    docs = get_entity_setting(params.dataset).read_splits(splits)
    limits = {"train": params.limit_train, "dev": params.limit_dev, "test": params.limit_test}
    out = {s: d[: limits[s]] if limits[s] else d for s, d in docs.items()}
    if params.train_chunk_words and "train" in out:
        out["train"] = [c for d in out["train"] for c in chunk_document(d, params.train_chunk_words)]
    return out


def chunk_document(doc: Document, max_words: int) -> list[Document]:
    """`doc` cut into runs of whole sentences of at most `max_words` words (a longer sentence is a
    run of its own), each a document `<doc_id>#<k>` with the mentions inside it, shifted; an
    entity keeps its mentions in the run (none there: left out of that run). Relations dropped."""
    runs: list[list[int]] = []
    for k, (s, e) in enumerate(doc.sentences):
        if runs and e - doc.sentences[runs[-1][0]][0] <= max_words:
            runs[-1].append(k)
        else:
            runs.append([k])
    if len(runs) == 1:
        return [doc.model_copy(update={"relations": []})]
    out = []
    for r, run in enumerate(runs):
        first, last = doc.sentences[run[0]][0], doc.sentences[run[-1]][1]
        entities = []
        for entity in doc.entities:
            inside = [m.model_copy(update={"start": m.start - first, "end": m.end - first,
                                           "sent_id": None if m.sent_id is None else m.sent_id - run[0]})
                      for m in entity.mentions if first <= m.start and m.end <= last]
            if inside:
                entities.append(entity.model_copy(update={"mentions": inside}))
        out.append(Document(doc_id=f"{doc.doc_id}#{r}", tokens=doc.tokens[first:last],
                            sentences=[(s - first, e - first) for s, e in (doc.sentences[k] for k in run)],
                            entities=entities).check())
    return out


def train_entities(params: EntityParams, *, resume: bool = True, fresh: bool = False) -> dict:
    """Train on `train`, select on `dev` (`select_metric`), then choose the default coreference
    backend on dev (the higher CoNLL mean F1); the selected recognizer goes to `entities/model`."""
    out = entities_dir(params)
    if fresh:
        shutil.rmtree(out / "train", ignore_errors=True)
    splits = read_splits(params, ("train", "dev"))
    train_docs, dev_docs = splits["train"], splits["dev"]
    method = EntityMethod(params, entity_types(train_docs))
    card = {"params": params.model_dump(mode="json"), "split_note": get_entity_setting(params.dataset).split_note,
            "training_data_sha256": training_data_hash(train_docs), "train_docs": len(train_docs),
            "dev_docs": len(dev_docs)}
    dev_scores: dict = {}

    def evaluate_dev(model, at) -> dict:
        scores = method.evaluate(dev_docs)["scores"]
        dev_scores[at] = scores
        return flat_dev_metrics(scores)

    def on_best(model, metrics: dict) -> None:
        method.recognizer.default_coref = best_backend(dev_scores[metrics["epoch"]])
        method.save(out / "model", **card, dev_metrics=metrics, dev_scores=dev_scores[metrics["epoch"]])

    result = train_loop(params.train, method, train_docs, out / "train", evaluate_dev=evaluate_dev,
                        select_metric=params.select_metric, on_best=on_best, resume=resume and not fresh)
    summary = {"steps": result.steps, "epochs": result.epochs_done, "seconds": round(result.seconds, 1),
               "best_dev": result.best_dev, "counts": result.counts, "types": method.recognizer.types}
    if (out / "model").exists():
        summary["default_coref"] = EntityRecognizer.from_pretrained(out / "model").default_coref
    atomic_write_text(out / "train" / "summary.json", json.dumps(summary, indent=1, default=str))
    return summary


def best_backend(scores: dict) -> str:
    """The coreference backend with the higher CoNLL mean F1 (ties: the first of COREF_BACKENDS)."""
    return max(COREF_BACKENDS, key=lambda b: (scores[b]["coref"]["avg_f1"], -COREF_BACKENDS.index(b)))


def prediction_line(doc: Document) -> dict:
    """One predicted document as DocRED positions: `{title, entities: [{type, mentions: [{sent_id, pos}]}]}`."""
    starts = [s for s, _ in doc.sentences]
    return {"title": doc.title or doc.doc_id, "entities": [
        {"type": e.type, "score": score, "mentions": [
            {"sent_id": m.sent_id, "pos": [m.start - starts[m.sent_id], m.end - starts[m.sent_id]], "type": m.type,
             "name": m.text} for m in e.mentions]}
        for e, score in zip(doc.entities, doc.meta.get("entity_scores", [None] * len(doc.entities)))]}


def evaluate_entities(params: EntityParams, split: str = "test", model_dir: str | Path | None = None) -> dict:
    """Read `split` blind with the trained recognizer, score both backends; writes
    `entities/eval/metrics-<split>.json` and the default backend's predicted entities as
    `entities/eval/predictions-<split>.jsonl.gz`."""
    out = entities_dir(params)
    recognizer = EntityRecognizer.from_pretrained(model_dir or out / "model")
    gold = read_splits(params, (split,))[split]
    start = time.perf_counter()
    result = evaluate(recognizer, gold)
    seconds = time.perf_counter() - start
    scores = result["scores"]
    record = {"scorer": "entities_micro_conll", "split": split, "docs": len(gold),
              "setting": "end_to_end: predicted mentions and predicted coreference from each document's own sentences",
              "split_note": get_entity_setting(params.dataset).split_note, "default_coref": recognizer.default_coref,
              "mentions": scores[recognizer.default_coref]["mentions"],
              "coref": {b: s["coref"] for b, s in scores.items()},
              "seconds": round(seconds, 1), "docs_per_s": round(len(gold) / seconds, 2),
              "model_card": {k: recognizer.card.get(k) for k in ("dev_metrics", "split_note", "train_docs")}}
    lines = "".join(json.dumps(prediction_line(d)) + "\n" for d in result["predicted"][recognizer.default_coref])
    (out / "eval").mkdir(parents=True, exist_ok=True)
    (out / "eval" / f"predictions-{split}.jsonl.gz").write_bytes(gzip.compress(lines.encode(), mtime=0))
    atomic_write_text(out / "eval" / f"metrics-{split}.json", json.dumps(record, indent=1))
    return record
