"""The five lifecycle stages as the DVC pipeline and the Prefect flow run them.

Each stage is the one function of `dore.pipeline` (or `dore.package`), plus the small files the
DVC pipeline declares: training curves and per-relation F1 as plot data, and a record of the
packaged model. `dore stage <name>` (DVC) and the Prefect tasks call `STAGES[name](params)`.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Callable

from dore import pipeline
from dore.data.model import atomic_write_text
from dore.pipeline import PipelineParams, artifacts_dir


validate = pipeline.validate  # these two write nothing beyond the pipeline's own files
convert = pipeline.convert


def train(params: PipelineParams) -> dict:
    """A fresh training run (DVC removes a stage's outputs before it runs; this does the same
    for the flow, since the trainer appends to an existing log); then the plot data."""
    shutil.rmtree(artifacts_dir(params) / "train", ignore_errors=True)
    summary = pipeline.train(params, resume=False)
    export_training_curves(params)
    return summary


def evaluate(params: PipelineParams) -> dict:
    """The test split's metrics; `per_relation.json` exists for every dataset (a plot of dvc.yaml)."""
    record = pipeline.evaluate(params, "test")
    if record["scorer"] != "docred_official":  # pipeline.evaluate writes DocRED's own table
        rows = single_relation_rows(record, {r.label for d in pipeline.load_split(params, "test") for r in d.relations})
        atomic_write_text(artifacts_dir(params) / "per_relation.json", json.dumps(rows, indent=1))
    return record


def package(params: PipelineParams) -> dict:
    """Put the selected model into the BentoML store; `package.json` records where it went."""
    import bentoml

    from dore.package import package as package_model

    model_dir = artifacts_dir(params) / "model"
    tag = package_model(model_dir, f"dore-{params.dataset}")
    record = {"tag": tag, "bento_path": str(bentoml.models.get(tag).path), "model_dir": str(model_dir.resolve())}
    atomic_write_text(artifacts_dir(params) / "package.json", json.dumps(record, indent=1))
    return record


STAGES: dict[str, Callable[[PipelineParams], dict]] = {
    "validate": validate, "convert": convert, "train": train, "evaluate": evaluate, "package": package,
}


def export_training_curves(params: PipelineParams) -> None:
    """`train/train_log.jsonl` -> `plots/train_loss.csv` (loss by step) and `plots/dev_f1.csv`
    (dev metrics by epoch): DVC plots read CSV, not JSON lines."""
    out = artifacts_dir(params)
    records = [json.loads(line) for line in (out / "train" / "train_log.jsonl").read_text().splitlines() if line]
    steps = [{k: r[k] for k in ("step", "epoch", "loss", "lr")} for r in records if "loss" in r]
    dev = [{k: v for k, v in r.items() if k in ("step", "epoch") or k.startswith("dev_")}
           for r in records if "dev_f1" in r]
    atomic_write_text(out / "plots" / "train_loss.csv", _csv(steps, ["step", "epoch", "loss", "lr"]))
    atomic_write_text(out / "plots" / "dev_f1.csv", _csv(dev, ["epoch", "step", "dev_f1"]))


def single_relation_rows(record: dict, labels: set[str]) -> list[dict]:
    """Per-relation rows (the shape of DocRED's table) for datasets scored as one relation:
    CDR / GDA (their one label), SciREX (binary and 4-ary tuples)."""
    if record["scorer"] == "scirex_official":
        return [{"relation": "binary", "p": record["p"], "r": record["r"], "f1": record["f1"]},
                {"relation": "4-ary", "f1": record["f1_4ary"]}]
    return [{"relation": "/".join(sorted(labels)) or record["dataset"], "p": record["p"], "r": record["r"],
             "f1": record["f1"]}]


def _csv(rows: list[dict], first: list[str]) -> str:
    """CSV with the `first` columns leading (present even without rows), then any others."""
    columns = first + sorted({k for r in rows for k in r} - set(first))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
