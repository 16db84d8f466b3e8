"""Errors a person can act on: an expected error ends a `dore` command with a line or two (what,
where, what to do) and status 1, never a traceback; `--debug` or DORE_DEBUG=1 brings the
traceback back. Parameters, the backbone and the data folder are checked before any stage runs,
so these fail in the first second and leave nothing on disk."""

import json
import time

import pytest
import yaml
from typer.testing import CliRunner

from dore import stages
from dore.cli import app
from dore.config import TrainConfig
from dore.data.model import DataError
from dore.model import backbone
from dore.presets import render

runner = CliRunner()
HINT = "(dore --debug ... shows the traceback)"


def short_error(result, status: int = 1) -> str:
    """The error line a command ended with, after checking it ended the short way."""
    assert result.exit_code == status, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit), result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1] == HINT and lines[-2].startswith("error: "), result.output
    return lines[-2].removeprefix("error: ")


@pytest.fixture
def bad_docred(tmp_path):
    """A DocRED file whose second document has a mention past the end of its sentence."""
    docs = [{"title": t, "sents": [["Bob", "ran", "."]], "labels": [],
             "vertexSet": [[{"name": "Bob", "pos": [0, 1], "sent_id": 0, "type": "PER"}]]} for t in ("A", "B")]
    docs[1]["vertexSet"][0][0]["pos"] = [0, 9]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(docs))
    return path


@pytest.fixture
def offline_hub(monkeypatch):
    """Offline, with an empty local hub cache, whatever this machine has."""
    monkeypatch.setattr(backbone, "is_offline_mode", lambda: True)
    monkeypatch.setattr(backbone, "try_to_load_from_cache", lambda repo, filename: None)


def test_a_reader_error_names_file_document_and_field(bad_docred, tmp_path):
    before = bad_docred.read_bytes()
    result = runner.invoke(app, ["convert", str(bad_docred), "-o", str(tmp_path / "out")])
    assert short_error(result) == (f"file {bad_docred}; document 'B'; field 'vertexSet[0][0].pos': "
                                   "pos [0, 9] outside sentence 0 (3 tokens)")
    assert bad_docred.read_bytes() == before and not (tmp_path / "out").exists()


@pytest.mark.parametrize(("option", "env"), [(["--debug"], {}), ([], {"DORE_DEBUG": "1"})], ids=["option", "env"])
def test_debug_brings_the_traceback_back(bad_docred, tmp_path, option, env):
    result = runner.invoke(app, [*option, "convert", str(bad_docred), "-o", str(tmp_path / "out")], env=env)
    assert result.exit_code == 1 and isinstance(result.exception, DataError)  # raised on: typer shows the traceback
    assert HINT not in result.output


@pytest.mark.parametrize("command", [["validate", "--dataset", "docred"], ["train", "--backbone", "tiny-bart"]])
def test_a_missing_data_folder_says_how_to_get_the_data(tmp_path, monkeypatch, command):
    monkeypatch.setenv("DORE_DATA", str(tmp_path / "nowhere"))
    monkeypatch.chdir(tmp_path)
    started = time.perf_counter()
    message = short_error(runner.invoke(app, command))
    assert message.startswith(f"file {tmp_path / 'nowhere' / 'redocred' / 'dev_revised.json'}: no such file")
    assert "`dore data import`" in message and "DORE_DATA" in message
    assert time.perf_counter() - started < 2
    assert not (tmp_path / "runs").exists()  # no run directory claimed


def test_an_offline_hub_backbone_fails_in_the_first_second(tmp_path, monkeypatch, offline_hub):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(stages, "convert", lambda *a, **k: pytest.fail("a stage ran"))
    started = time.perf_counter()
    message = short_error(runner.invoke(app, ["train", "--backbone", "t5-large"]))
    assert message.startswith("backbone t5-large is not available offline; pass a local directory")
    assert time.perf_counter() - started < 2 and not (tmp_path / "runs").exists()


def test_the_paper_preset_offline_stops_the_dvc_chain_at_its_first_stage(tmp_path, monkeypatch, offline_hub):
    (tmp_path / "params.yaml").write_text(render("paper"))
    monkeypatch.setitem(stages.STAGES, "validate", lambda params: pytest.fail("validation ran"))
    result = runner.invoke(app, ["stage", "validate", "--section", "docred", "--params", str(tmp_path / "params.yaml"),
                                 "--artifacts", str(tmp_path / "artifacts")])
    assert short_error(result).startswith("backbone t5-large is not available offline; pass a local directory")
    assert not (tmp_path / "artifacts").exists()


def test_a_backbone_path_that_is_not_there_is_named():
    with pytest.raises(backbone.BackboneUnavailable, match=r"backbone /no/such/t5: no such directory"):
        backbone.check_backbone(TrainConfig(backbone="/no/such/t5"))
    backbone.check_backbone(TrainConfig(backbone="tiny-bart"))  # the shipped specs need nothing


def test_a_bad_parameter_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = short_error(runner.invoke(app, ["train", "--sampling", "dynamc"]))
    assert message.startswith("bad parameter: ") and "(got 'dynamc')" in message
    assert not (tmp_path / "runs").exists()


def test_a_misspelt_params_key_is_named(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"docred": {"train": {"lerning_rate": 0.1}}}))
    result = runner.invoke(app, ["stage", "train", "--section", "docred", "--params", str(tmp_path / "params.yaml")])
    assert short_error(result) == "bad parameter: train.lerning_rate: Extra inputs are not permitted (got 0.1)"


def test_an_unknown_dataset_is_a_usage_error():
    result = runner.invoke(app, ["evaluate", "--dataset", "docred2"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "'docred2' is not one of 'docred', 'cdr', 'gda', 'scirex', 'scirex-binary'" in result.output


def test_no_trained_model_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert short_error(runner.invoke(app, ["evaluate"])) == (
        "no trained docred model under runs/: train one (`dore train --dataset docred`) or name a run with --artifacts")
    (tmp_path / "empty" / "docred").mkdir(parents=True)
    message = short_error(runner.invoke(app, ["evaluate", "--artifacts", str(tmp_path / "empty")]))
    assert message == f"{tmp_path / 'empty' / 'docred' / 'model'} is not a saved DORE model (no dore_model.json)"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["docred", "empty"]  # nothing written


def test_a_missing_input_file_is_named(tmp_path):
    message = short_error(runner.invoke(app, ["score", str(tmp_path / "result.json"), str(tmp_path / "gold.json")]))
    assert message == f"{tmp_path / 'gold.json'}: no such file or directory"
