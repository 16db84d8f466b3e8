"""`dore train --entity-embeddings` then `dore tune` through the CLI, on 3 / 2 real documents (the
committed fixture's, from a data root of its raw files: convert runs, the real data is not read)."""

import json

from typer.testing import CliRunner

from dore.cli import app
from dore.model import entities
from tests.conftest import fixture_data_root

runner = CliRunner()


def test_train_with_entity_embeddings_then_tune_the_na_bias_on_dev(tmp_path, monkeypatch):
    fixture_data_root(monkeypatch, tmp_path / "data")
    common = ["--dataset", "docred", "--artifacts", str(tmp_path)]
    trained = runner.invoke(app, ["train", *common, "--backbone", "tiny-bart", "--max-steps", "2", "--epochs", "1",
                                  "--batch-docs", "2", "--limit-train", "3", "--limit-dev", "2", "--limit-test", "2",
                                  "--entity-embeddings"])
    assert trained.exit_code == 0, trained.output
    model = tmp_path / "docred" / "model"
    assert entities.saved_state(model)  # the table went into the safetensors

    tuned = runner.invoke(app, ["tune", *common, "--na-biases", "3,0,-3"])
    assert tuned.exit_code == 0, tuned.output
    sweep = json.loads((tmp_path / "docred" / "train" / "decoding_sweep.json").read_text())
    assert [row["na_bias"] for row in sweep] == [3.0, 0.0, -3.0] and all("f1" in row for row in sweep)
    card = json.loads((model / "dore_model.json").read_text())
    best = max(sweep, key=lambda r: (r["f1"], -abs(r["na_bias"])))
    assert card["decoding"]["na_bias"] == best["na_bias"] and card["decoding_tuned_on"] == "dev"
    assert "dev F1 by NA / EOS logit bias" in tuned.output

    refused = runner.invoke(app, ["tune", *common, "--na-biases", "1,x"])
    assert refused.exit_code == 2 and "not a comma-separated list" in refused.output
