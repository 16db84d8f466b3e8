"""The golden runs: the only calls into `dore` made by the golden tests.

After a reorganisation of the package only the `from dore ...` imports below should need
updating. Each run trains a tiny model on real Re-DocRED documents (3 train / 2 dev / 2 test) for
4 optimizer steps through the public stage functions and returns a JSON-able
{"losses": [the training loss of every optimizer step], "dev_f1": [each dev evaluation],
 "selected_step": the dev-selected model's step, "predictions": {"test": [sorted relations], ...}}
where the predictions are the saved (selected) model's, reloaded as a user would.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch

from dore import stages
from dore.config import PipelineParams, artifacts_dir
from dore.extract import Extractor
from dore.methods import classifier as classifier_baseline
from dore.methods import lexical as lexical_baseline
from dore.stages import convert, load_split

DATA = Path(os.environ.get("DORE_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))

# Every run's parameters (PipelineParams); RUNS below adds a run's own `train` values.
CONFIG = {
    "dataset": "docred", "limit_train": 3, "limit_dev": 2, "limit_test": 2, "num_beams": 1, "tune_na_biases": [0.0],
    "train": {"backbone": "tiny-bart", "mode": "rows", "sampling": "none", "order": "row-column", "init": "number",
              "symbol_loss": True, "max_steps": 4, "epochs": 4, "batch_docs": 4, "lr": 3e-3, "lr_new": 1e-3,
              "mixed_precision": "no", "log_every_steps": 1, "checkpoint_every_steps": 1000, "seed": 42,
              # 3 documents, 4 per batch: every step is an epoch, scored on dev; the best dev F1 is
              # kept (the first on a tie), so the selection is part of what is checked
              "eval_every_epochs": 1},
}


def params(workdir: str | Path, **train) -> PipelineParams:
    return PipelineParams.model_validate({**CONFIG, "train": {**CONFIG["train"], **train},
                                          "artifacts": str(Path(workdir) / "artifacts")})


@contextlib.contextmanager
def environment(workdir: str | Path):
    """One torch thread (the sums, hence the digits, depend on it), the real data, a tokenizer
    cache inside `workdir` (the tiny tokenizer is trained here, not read from ~/.cache, and its
    corpus is named explicitly, not found relative to dore's own files); all restored after."""
    values = {"DORE_DATA": str(DATA), "DORE_SHARED_DATA": str(DATA), "DORE_CACHE": str(Path(workdir) / "cache"),
              "DORE_TINY_CORPUS": str(DATA / "redocred" / "dev_revised.json"), "TOKENIZERS_PARALLELISM": "false"}
    saved = {k: os.environ.get(k) for k in values}
    threads = torch.get_num_threads()
    os.environ.update(values)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def documents(workdir: str | Path, split: str = "test") -> list:
    """The split's documents as the runs see them (converted into `workdir`)."""
    with environment(workdir):
        p = params(workdir)
        convert(p)
        return load_split(p, split)


def model_dir(workdir: str | Path) -> Path:
    """Where a run in `workdir` saved its (dev-selected) model."""
    return artifacts_dir(params(workdir)) / "model"


def _training(p: PipelineParams) -> dict:
    """Per-step losses and each evaluation's dev F1 (the training log), the step of the selected model."""
    train = artifacts_dir(p) / "train"
    log = [json.loads(line) for line in (train / "train_log.jsonl").read_text().splitlines()]
    return {"losses": [r["loss"] for r in log if "loss" in r],  # epoch records hold `train_loss`
            "dev_f1": [r["dev_f1"] for r in log if "dev_f1" in r],
            "selected_step": json.loads((train / "summary.json").read_text())["best_dev"]["step"]}


def _relations(predictions: dict) -> list[list]:
    """{doc_id: [(args, label)]} -> sorted [doc_id, args, label]."""
    return sorted([doc_id, list(args), label] for doc_id, rels in predictions.items() for args, label in rels)


def dore_predictions(directory: str | Path, docs) -> list[list]:
    """A saved DORE model's relations with its card's decoding: sorted [doc_id, args, label, confidence]."""
    extractor = Extractor.from_pretrained(directory)
    return sorted([d.doc_id, list(r.args), r.label, r.confidence]  # confidence: rounded to 1e-6 by extract
                  for d, rels in zip(docs, extractor.extract(docs)) for r in rels)


def dore_rows(workdir: str | Path, **train) -> dict:
    """DORE in rows mode with the symbol loss (negatives of `random:p` are drawn from seed and epoch)."""
    with environment(workdir):
        p = params(workdir, **train)
        convert(p)
        stages.train(p, resume=False)
        return {**_training(p), "predictions": {"test": dore_predictions(model_dir(workdir), load_split(p, "test"))}}


def lexical(workdir: str | Path, **train) -> dict:
    """The lexical generation baseline. At this budget it writes no parseable triplet, so the
    generated texts and the parse counts are kept too."""
    with environment(workdir):
        p = params(workdir, **train)
        convert(p)
        stages.train(p, method="lexical", resume=False)
        backbone, layout, card = lexical_baseline.load_lexical(model_dir(workdir))
        docs = load_split(p, "test")
        predictions, counts = lexical_baseline.predict_lexical(backbone, layout, docs, **card["decoding"])
        texts = lexical_baseline.generate_lexical(backbone, layout, docs, **card["decoding"])
        return {**_training(p), "predictions": {"test": _relations(predictions), "counts": dict(sorted(counts.items())),
                                                "texts": dict(zip((d.doc_id for d in docs), texts))}}


def classifier(workdir: str | Path, **train) -> dict:
    """The ATLOP-style classifier baseline (adaptive threshold, at most 4 labels per pair)."""
    with environment(workdir):
        p = params(workdir, **train)
        convert(p)
        stages.train(p, method="classifier", resume=False)
        model = classifier_baseline.RelationClassifier.from_pretrained(model_dir(workdir))
        return {**_training(p), "predictions": {"test": _relations(model.predict(load_split(p, "test")))}}


# name -> (run, its `train` values over CONFIG's); "dore_rows" also gives the committed model/.
RUNS: dict[str, tuple[Callable[..., dict], dict]] = {
    "dore_rows": (dore_rows, {}),
    "dore_rows_random": (dore_rows, {"sampling": "random:0.1"}),
    "lexical": (lexical, {}),
    "classifier": (classifier, {}),
}


def run(name: str, workdir: str | Path) -> dict:
    function, train = RUNS[name]
    return function(workdir, **train)


def resolved(name: str) -> dict:
    """Every parameter of the run `name` (PipelineParams, defaults included), for the record."""
    return params(".", **RUNS[name][1]).model_dump(mode="json", exclude={"artifacts"})
