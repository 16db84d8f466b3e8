"""`dore entities train` then `dore entities evaluate` through the CLI on the committed fixture's raw
documents (a data root of them: the real data is not read)."""

import dataclasses
import gzip
import json
import shutil

from typer.testing import CliRunner

from dore.cli import app
from dore.data import datasets
from tests.conftest import DOCRED_FIXTURE, fixture_data_root

runner = CliRunner()


def test_entities_train_then_evaluate(tmp_path, monkeypatch):
    root = fixture_data_root(monkeypatch, tmp_path / "data")
    shutil.copyfile(DOCRED_FIXTURE / "raw" / "train.json", root / "docred" / "test.json")  # DocRED test.json's part
    setting = datasets.ENTITY_SETTINGS["docred"]
    parts = {**setting.parts, "train": (("docred/test.json", 0, None), ("redocred/dev_revised.json", 0, -2)),
             "dev": (("redocred/dev_revised.json", -2, None),)}
    monkeypatch.setitem(datasets.ENTITY_SETTINGS, "docred", dataclasses.replace(setting, parts=parts))
    trained = runner.invoke(app, ["entities", "train", "--preset", "embedded", "--artifacts", str(tmp_path),
                                  "--backbone", "tiny-bart", "--max-steps", "2", "--batch-docs", "2",
                                  "--window", "64", "--stride", "32"])
    assert trained.exit_code == 0, trained.output
    out = tmp_path / "docred" / "entities"
    summary = json.loads((out / "train" / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["default_coref"] in ("learned", "string-match")
    card = json.loads((out / "model" / "entities.json").read_text())["card"]
    assert card["train_docs"] == 10 and card["dev_docs"] == 2 and card["params"]["window"] == 64

    evaluated = runner.invoke(app, ["entities", "evaluate", "--artifacts", str(tmp_path), "--split", "test"])
    assert evaluated.exit_code == 0, evaluated.output
    record = json.loads((out / "eval" / "metrics-test.json").read_text())
    assert record["docs"] == 4 and set(record["coref"]) == {"learned", "string-match"}
    assert {"span", "span_type"} <= set(record["mentions"]) and "end_to_end" in record["setting"]
    lines = gzip.decompress((out / "eval" / "predictions-test.jsonl.gz").read_bytes()).decode().splitlines()
    assert len(lines) == 4 and all({"title", "entities"} <= set(json.loads(line)) for line in lines)
