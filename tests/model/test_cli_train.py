"""`dore train --entity-embeddings` then `dore tune` through the CLI, on 3 / 2 real documents (the
committed fixture's, from a data root of its raw files: convert runs, the real data is not read)."""

import json

import pytest
from typer.testing import CliRunner

from dore import stages
from dore.cli import app
from dore.config import TrainConfig
from dore.data.model import DataError
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
    assert "dev F1 by decoding" in tuned.output
    assert card["lineage_seconds"] > 0  # the training time a run started from this model counts (#13)
    assert stages.ancestor_seconds(TrainConfig(init_from=str(model), max_minutes=5)) == card["lineage_seconds"]
    del card["lineage_seconds"]
    (model / "dore_model.json").write_text(json.dumps(card))
    with pytest.raises(DataError, match="lineage_seconds"):  # a budget cannot count unknown time
        stages.ancestor_seconds(TrainConfig(init_from=str(model), max_minutes=5))
    assert stages.ancestor_seconds(TrainConfig(init_from=str(model))) == 0.0  # no budget, nothing to count

    refused = runner.invoke(app, ["tune", *common, "--na-biases", "1,x"])
    assert refused.exit_code == 2 and "not a comma-separated list" in refused.output
    for command in ("tune", "evaluate"):  # beam search through HF generate cannot read the entity table
        refused = runner.invoke(app, [command, *common, "--num-beams", "2"])
        assert refused.exit_code == 1 and "--recipe plain" in str(refused.exception), refused.output


def test_tune_the_length_penalty_with_beams_on_dev(tmp_path, monkeypatch):
    """With --num-beams > 1, after the NA bias: the length penalty α with those beams (the paper's
    A.3), chosen on dev and stored in the card; greedy evaluation never sweeps α."""
    fixture_data_root(monkeypatch, tmp_path / "data")
    common = ["--dataset", "docred", "--artifacts", str(tmp_path)]
    # the paper's model (`--recipe plain`): beam search needs a model without entity symbols
    trained = runner.invoke(app, ["train", *common, "--recipe", "plain", "--backbone", "tiny-bart", "--max-steps", "2",
                                  "--epochs", "1", "--batch-docs", "2", "--limit-train", "3", "--limit-dev", "2",
                                  "--limit-test", "2"])
    assert trained.exit_code == 0, trained.output
    sweep_file = tmp_path / "docred" / "train" / "decoding_sweep.json"
    greedy = runner.invoke(app, ["tune", *common, "--na-biases", "0,-1", "--length-penalties", "0.2,2"])
    assert greedy.exit_code == 0, greedy.output
    assert [row["num_beams"] for row in json.loads(sweep_file.read_text())] == [1, 1]  # no beams: no α sweep

    tuned = runner.invoke(app, ["tune", *common, "--na-biases", "0,-1", "--num-beams", "2",
                                "--length-penalties", "0.2,2"])
    assert tuned.exit_code == 0, tuned.output
    sweep = json.loads(sweep_file.read_text())
    assert [(row["num_beams"], row.get("length_penalty")) for row in sweep] == [(1, None), (1, None), (2, 0.2), (2, 2.0)]
    best_na = max(sweep[:2], key=lambda r: (r["f1"], -abs(r["na_bias"])))["na_bias"]
    assert all(row["na_bias"] == best_na for row in sweep[2:])  # α is tuned at the chosen NA bias
    best = max(sweep[2:], key=lambda r: (r["f1"], -abs(r["length_penalty"] - 1)))
    card = json.loads((tmp_path / "docred" / "model" / "dore_model.json").read_text())
    assert card["decoding"]["length_penalty"] == best["length_penalty"] and card["decoding"]["na_bias"] == best_na
