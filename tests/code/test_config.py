"""Every parameter is declared once (dore.config): the CLI derives its options from it, a bad value
fails when the config loads, and `dore pipeline` runs the stage functions `dvc repro` runs, with the
same parameters."""

import time
import typing
from pathlib import Path

import pytest
import typer
from pydantic import ValidationError
from typer.testing import CliRunner

from dore import stages
from dore.cli import app
from dore.config import PipelineParams, TrainConfig
from dore.presets import RECIPES, load_section, resolve

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _options(command_name: str) -> dict:
    command = typer.main.get_command(app).commands[command_name]
    return {p.name: p for p in command.params if p.param_type_name == "option"}


@pytest.mark.parametrize("command", ["train", "pipeline"])
def test_every_train_config_field_is_an_option(command):
    options = _options(command)
    assert set(TrainConfig.model_fields) <= set(options)
    assert options["entity_embeddings"].secondary_opts == ["--no-entity-embeddings"]
    for name, field in TrainConfig.model_fields.items():
        literal = [a for a in (field.annotation, *typing.get_args(field.annotation))
                   if typing.get_origin(a) is typing.Literal]
        for choice in typing.get_args(literal[0]) if literal else ():
            assert choice in options[name].help, (name, choice)  # the full list of choices, not cut


def test_the_options_reach_the_config(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(stages, "train", lambda params, **kw: seen.update(params=params, **kw) or
                        {"steps": 0, "best_dev": None})
    (tmp_path / "docred" / "docs").mkdir(parents=True)
    (tmp_path / "docred" / "docs" / "train.jsonl").write_text("")
    result = runner.invoke(app, ["train", "--artifacts", str(tmp_path), "--lr", "0.003", "--sampling", "random:0.2",
                                 "--entity-embeddings", "--mode", "sequence", "--method", "classifier"])
    assert result.exit_code == 0, result.output
    cfg = seen["params"].train
    assert (cfg.lr, cfg.sampling, cfg.entity_embeddings, cfg.mode) == (0.003, "random:0.2", True, "sequence")
    assert cfg.lr_new == TrainConfig().lr_new and seen["method"] == "classifier"  # unset: the config's default


def _trained_config(monkeypatch, tmp_path, *args: str) -> TrainConfig:
    """The `TrainConfig` `dore train ARGS` hands the train stage (which does not run)."""
    seen = {}
    monkeypatch.setattr(stages, "train", lambda params, **kw: seen.update(params=params) or
                        {"steps": 0, "best_dev": None})
    result = runner.invoke(app, ["train", "--artifacts", str(tmp_path / str(len(list(tmp_path.iterdir())))), *args])
    assert result.exit_code == 0, result.output
    return seen["params"].train


def test_dore_train_without_options_uses_the_datasets_best_recipe(monkeypatch, tmp_path):
    docred = _trained_config(monkeypatch, tmp_path)
    assert (docred.sampling, docred.entity_embeddings, docred.pair_logits) == ("none", True, True)
    assert RECIPES["docred"] == {"sampling": "none", "entity_embeddings": True, "pair_logits": True}
    scirex = _trained_config(monkeypatch, tmp_path, "--dataset", "scirex")  # 4-ary: no pair term
    assert (scirex.sampling, scirex.entity_embeddings, scirex.pair_logits, scirex.max_source_length) == (
        "random:0.1", True, False, 512)
    # an option overrides one switch and keeps the others; `plain` and the baselines take none of them
    mine = _trained_config(monkeypatch, tmp_path, "--sampling", "random:0.1")
    assert (mine.sampling, mine.entity_embeddings, mine.pair_logits) == ("random:0.1", True, True)
    assert _trained_config(monkeypatch, tmp_path, "--recipe", "plain") == TrainConfig()
    assert _trained_config(monkeypatch, tmp_path, "--method", "classifier") == TrainConfig()
    # the embedded preset (params.yaml, the main job, the flows' defaults) trains each dataset with it
    for dataset, recipe in RECIPES.items():
        embedded = resolve("embedded", dataset).train.model_dump()
        assert {k: embedded[k] for k in recipe} == recipe, dataset


def test_defaults_live_in_the_config_only():
    assert TrainConfig().lr == 1e-4 and TrainConfig().lr_new == 1e-3
    for option in _options("train").values():
        if option.name in TrainConfig.model_fields:
            assert option.default is None  # never a second default on the command line


@pytest.mark.parametrize("bad", [{"sampling": "dynamc"}, {"sampling": "random:2"}, {"mode": "row"},
                                 {"learning_rate": 1e-3}, {"entity_embeddings": True, "symbol_loss": False}])
def test_a_bad_value_fails_when_the_config_loads(bad):
    with pytest.raises(ValidationError):
        TrainConfig(**bad)


def test_a_typo_fails_before_any_data_or_model_is_read(monkeypatch, tmp_path):
    monkeypatch.setattr(stages, "convert", lambda *a, **k: pytest.fail("convert ran"))
    started = time.perf_counter()
    result = runner.invoke(app, ["train", "--artifacts", str(tmp_path), "--sampling", "dynamc"])
    assert result.exit_code != 0 and "dynamc" in str(result.exception)
    assert time.perf_counter() - started < 2


def test_pipeline_runs_the_dvc_stages_with_the_params_yaml_section(monkeypatch, tmp_path):
    calls = []
    for name in stages.PIPELINE_ORDER:
        monkeypatch.setitem(stages.STAGES, name, lambda params, name=name: calls.append((name, params)) or {})
    result = runner.invoke(app, ["pipeline", "--params", str(REPO / "params.yaml"), "--artifacts", str(tmp_path),
                                 "--backbone", "tiny-bart", "--limit-train", "3", "--no-package"])
    assert result.exit_code == 0, result.output
    assert [name for name, _ in calls] == ["validate", "convert", "train", "evaluate"]
    want = load_section(REPO / "params.yaml", "docred", artifacts=str(tmp_path))
    want = want.model_copy(update={"limit_train": 3, "train": want.train.model_copy(update={"backbone": "tiny-bart"})})
    assert all(params == want for _, params in calls)  # dvc repro's parameters, with the two overrides
    assert stages.STAGES is not None and isinstance(calls[0][1], PipelineParams)
