"""Runs never overwrite each other: without --artifacts a CLI run writes under its own
`runs/<time>/`, commands that read a trained model take the latest run, an explicit output is
used as given, and `dvc repro`'s `dore stage` keeps `artifacts/`. Packaging moves
`dore-<dataset>:latest` (what `bentoml serve` loads) only when asked. One model store: the
checkout's `.bentoml`, set in dore/env.py."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dore import stages
from dore.cli import app

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture
def fake_stages(tmp_path, monkeypatch):
    """Run in an empty folder with the training and evaluation stages recorded, not run: training
    leaves a model directory where a real run would."""
    monkeypatch.chdir(tmp_path)
    seen = []

    def train(params, **kwargs):
        seen.append(("train", params.artifacts))
        (Path(params.artifacts) / params.dataset / "model").mkdir(parents=True)
        return {"steps": 2, "best_dev": {"f1": 1.0}, "decoding_tuned_on_dev": {"na_bias": -2.0, "eos_bias": 0.0}}

    monkeypatch.setattr(stages, "train", train)
    monkeypatch.setattr(stages, "evaluate", lambda params, split: seen.append(("evaluate", params.artifacts)) or
                        {"scorer": "docred_official", "setting": "", "f1": 1.0})
    monkeypatch.setitem(stages.STAGES, "convert", lambda params: seen.append(("stage convert", params.artifacts)) or {})
    return seen


def test_each_training_run_gets_its_own_directory_and_evaluate_reads_the_latest(fake_stages, tmp_path):
    first = runner.invoke(app, ["train", "--backbone", "tiny-bart"])
    second = runner.invoke(app, ["train", "--backbone", "tiny-bart"])
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    runs = [artifacts for name, artifacts in fake_stages if name == "train"]
    assert len(set(runs)) == 2 and all(Path(r).parent == Path("runs") for r in runs)
    assert f"model: {runs[1]}/docred/model" in second.output

    assert runner.invoke(app, ["evaluate"]).exit_code == 0
    assert fake_stages[-1] == ("evaluate", runs[1])  # the newest run
    assert runner.invoke(app, ["evaluate", "--artifacts", runs[0]]).exit_code == 0
    assert fake_stages[-1] == ("evaluate", runs[0])  # a named run, as given
    assert not (tmp_path / "artifacts").exists()


def test_an_explicit_output_is_used_as_given_and_dvc_stages_keep_artifacts(fake_stages, tmp_path):
    assert runner.invoke(app, ["train", "--artifacts", "mine"]).exit_code == 0
    assert runner.invoke(app, ["stage", "convert", "--section", "docred", "--params", str(REPO / "params.yaml")]
                         ).exit_code == 0
    assert fake_stages == [("train", "mine"), ("stage convert", "artifacts")]
    assert not (tmp_path / "runs").exists()


def test_the_end_of_training_table_shows_the_na_bias_tuned_on_dev(fake_stages):
    result = runner.invoke(app, ["train", "--backbone", "tiny-bart"])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "tuned on dev: na_bias" in line)
    assert "-2.00" in row


def test_runs_started_in_the_same_second_get_different_directories(tmp_path, monkeypatch):
    monkeypatch.setattr(stages.time, "strftime", lambda fmt: "20260101-120000")
    runs = [stages.new_run(tmp_path) for _ in range(3)]
    assert [r.name for r in runs] == ["20260101-120000", "20260101-120000-2", "20260101-120000-3"]
    assert all(r.is_dir() for r in runs)


def test_the_latest_run_is_the_one_whose_model_was_saved_last(tmp_path):
    for name, mtime in (("b", 100), ("a", 200), ("c", 150)):
        (tmp_path / name / "docred" / "model").mkdir(parents=True)
        os.utime(tmp_path / name / "docred" / "model", (mtime, mtime))
    (tmp_path / "d" / "cdr" / "model").mkdir(parents=True)  # another dataset's
    (tmp_path / "e" / "docred").mkdir(parents=True)  # a run that never saved a model
    assert stages.latest_run("docred", tmp_path) == tmp_path / "a"
    with pytest.raises(FileNotFoundError, match="no trained gda model"):
        stages.latest_run("gda", tmp_path)


def test_help_fits_80_columns_and_lists_every_choice():
    result = runner.invoke(app, ["train", "--help"], terminal_width=80)
    assert result.exit_code == 0
    assert max(map(len, result.output.splitlines())) <= 80 and "…" not in result.output
    text = " ".join(result.output.split())
    for choice in ("minilm", "tiny-t5", "tiny-bart", "tiny-led", "asymmetric_flipped", "--checkpoint-every-steps",
                   "--no-group-by-length", "[config default: 50]"):
        assert choice in text, choice


# --- the model store ------------------------------------------------------------------------------

def saved_model(path: Path) -> Path:
    """What packaging copies: a folder with a model card."""
    path.mkdir(parents=True)
    (path / "dore_model.json").write_text(json.dumps({"family": "bart", "dev_metrics": {"f1": 1.0}}))
    return path


def test_packaging_moves_latest_only_when_asked(store, tmp_path):
    import bentoml

    def latest() -> str:
        return str(bentoml.models.get("dore-docred:latest").tag)

    main_job = stages.package_model(saved_model(tmp_path / "main"), "dore-docred")
    assert latest() == main_job  # the first version of a name is its latest
    other = stages.package_model(saved_model(tmp_path / "other"), "dore-docred", move_latest=False)
    assert latest() == main_job and bentoml.models.get(other).path  # tagged, stored, not served
    asked = stages.package_model(saved_model(tmp_path / "asked"), "dore-docred", move_latest=True)
    assert latest() == asked


def test_dore_package_says_how_to_serve_a_model_it_did_not_make_latest(store, tmp_path, monkeypatch):
    import bentoml

    main_job = stages.package_model(saved_model(tmp_path / "main"), "dore-docred")
    saved_model(tmp_path / "run" / "docred" / "model")
    result = runner.invoke(app, ["package", "--artifacts", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    tag = json.loads((tmp_path / "run" / "docred" / "package.json").read_text())["tag"]
    assert str(bentoml.models.get("dore-docred:latest").tag) == main_job
    text = " ".join(result.output.split())
    assert f"dore-docred:latest stays {main_job}" in text and f"DORE_BENTO_MODEL={tag}" in text


def _env_without(*names: str) -> dict:
    return {k: v for k, v in os.environ.items() if k not in names}


def test_every_dore_process_uses_the_checkouts_model_store():
    shown = subprocess.run([sys.executable, "-m", "dore.env"], env=_env_without("BENTOML_HOME"), cwd="/",
                           capture_output=True, text=True, check=True).stdout
    assert f"export BENTOML_HOME={REPO / '.bentoml'}" in shown.splitlines()  # from any folder
    shown = subprocess.run([sys.executable, "-m", "dore.env"], env={**os.environ, "BENTOML_HOME": "/elsewhere"},
                           capture_output=True, text=True, check=True).stdout
    assert "export BENTOML_HOME=/elsewhere" in shown.splitlines()  # the user's choice wins


def test_the_cli_is_offline_before_the_hub_library_reads_the_switch():
    code = "import dore.cli, huggingface_hub.constants as c, os; print(c.HF_HUB_OFFLINE, os.environ['BENTOML_HOME'])"
    shown = subprocess.run([sys.executable, "-c", code], env=_env_without("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                                                                           "BENTOML_HOME"),
                           capture_output=True, text=True, check=True).stdout.split()
    assert shown == ["True", str(REPO / ".bentoml")]
