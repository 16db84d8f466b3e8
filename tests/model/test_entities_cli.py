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


def test_every_entity_and_train_field_is_an_option_and_reaches_the_config(tmp_path, monkeypatch):
    import typer

    from dore import stages
    from dore.config import EntityParams, TrainConfig

    command = typer.main.get_command(app).commands["entities"].commands["train"]
    options = {p.name for p in command.params if p.param_type_name == "option"}
    assert set(TrainConfig.model_fields) | set(EntityParams.model_fields) - {"dataset", "train"} <= options
    seen = {}
    monkeypatch.setattr(stages, "train_entities", lambda params, **kw: seen.update(params=params) or
                        {"best_dev": None})
    result = runner.invoke(app, ["entities", "train", "--preset", "embedded", "--artifacts", str(tmp_path),
                                 "--stride", "100", "--coref-weight", "0.5", "--lr", "0.003"])
    assert result.exit_code == 0, result.output
    params = seen["params"]
    assert (params.stride, params.coref_weight, params.train.lr) == (100, 0.5, 0.003)
    assert params.limit_train == 120 and params.train.max_minutes == 3.0  # unset: the preset's values
    refused = runner.invoke(app, ["entities", "train", "--artifacts", str(tmp_path), "--stride", "600"])
    assert refused.exit_code != 0 and "stride" in str(refused.exception or refused.output)
