"""The comparison runner on the shipped config's smoke section (tiny-bart, 3 / 2 / 2 real documents,
2 steps): rows with every column, the rendered table and curves, skipping finished runs, resuming an
interrupted one, and the one-factor rule. The documents are the committed fixture's
(tests/fixtures/docred), installed as the runner's converted smoke data: no real data is read."""

import csv
import json
import re
import shlex
from pathlib import Path

import pytest
import torch

import dore.methods.dore
from dore import experiments, stages
from dore.model import entities
from dore.training.checkpoint import Checkpointer
from tests.conftest import install_docred_fixture

CONFIG = Path(__file__).resolve().parents[2] / "experiments" / "comparisons.yaml"
BASE, VARIANT = "base-seed42", "sampling-none-seed42"


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    """Base runs whole; the variant is interrupted after step 1, then a run of both resumes it."""
    out = tmp_path_factory.mktemp("comparisons")
    trained, loaded = [], []
    real_train, real_loop, real_load = stages.train, stages.train_loop, Checkpointer.load

    def counting_train(params, **kwargs):
        trained.append(Path(params.artifacts).name)
        return real_train(params, **kwargs)

    def killed_at_step_2(*args, **kwargs):
        def on_log(record):
            if record.get("step") == 2 and "loss" in record:  # the step-1 checkpoint is on disk
                raise Interrupt
        return real_loop(*args, on_log=on_log, **kwargs)

    def counting_load(path, *args):
        loaded.append(Path(path).name)
        return real_load(path, *args)

    install_docred_fixture(out / "_data" / "docred-train3-dev2-test2", limit_train=3)  # the smoke data, converted
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stages, "train", counting_train)
        experiments.run_all(CONFIG, out, only=[BASE], smoke=True)
        with mp.context() as cut:
            cut.setattr(stages, "train_loop", killed_at_step_2)
            with pytest.raises(Interrupt):
                experiments.run_all(CONFIG, out, only=[VARIANT], smoke=True)
        interrupted_rows = json.loads((out / "results.json").read_text())
        trained_before = list(trained)
        mp.setattr(Checkpointer, "load", staticmethod(counting_load))
        rows = experiments.run_all(CONFIG, out, only=[BASE, VARIANT], smoke=True)
    return {"out": out, "rows": {r["id"]: r for r in rows}, "interrupted_rows": interrupted_rows,
            "trained_before": trained_before, "trained": trained, "loaded": loaded}


def test_rows_have_every_column(comparison):
    rows = comparison["rows"]
    assert set(rows) == {BASE, VARIANT}
    for row in rows.values():
        assert row["status"] == "done"
        assert {key for key, _ in experiments.COLUMNS} <= set(row)
        assert all(row[key] is not None for key in ("f1", "ign_f1", "p", "r", "decoder_steps_per_doc",
                                                    "docs_per_second", "train_seconds", "decode_seconds",
                                                    "targets_over_decoder_length", "dev_f1"))
        assert 0 <= row["ign_f1"] <= row["f1"] <= 100 and row["decoder_steps_per_doc"] > 0
        assert row["optimizer_steps"] == 2  # the smoke budget, the same for both
        assert re.fullmatch(r"[0-9a-f]{40}", row["git_revision"])
        assert "docred_official on test (2 docs)" in row["note"] and "dev_revised minus its last 50" in row["note"]
    assert rows[BASE]["factor"] == "base" and (rows[VARIANT]["factor"], rows[VARIANT]["value"]) == ("sampling", "none")
    assert rows[BASE]["config_hash"] != rows[VARIANT]["config_hash"]
    shared = (comparison["out"] / "_data" / "docred-train3-dev2-test2" / "docred" / "docs").resolve()
    for run in (BASE, VARIANT):  # both read the one converted copy
        docs = comparison["out"] / run / "docred" / "docs"
        assert docs.is_symlink() and docs.resolve() == shared


def test_the_command_of_a_row_plans_that_same_run(comparison, capsys):
    row = comparison["rows"][VARIANT]
    argv = shlex.split(row["command"])
    assert argv[:2] == ["python", "experiments/run.py"]
    experiments.main(argv[2:] + ["--list"])
    listed = capsys.readouterr().out.split()
    assert listed[0] == VARIANT and listed[-1] == row["config_hash"]


def test_table_and_dev_curves_render(comparison):
    out = comparison["out"]
    table = (out / "results.md").read_text().splitlines()
    header = next(line for line in table if line.startswith("| run |"))
    assert "| F1 | Ign F1 | P | R |" in header and "targets over decoder length" in header
    body = [line for line in table if line.startswith(f"| {BASE} ") or line.startswith(f"| {VARIANT} ")]
    assert len(body) == 2 and all(line.count(" | ") == header.count(" | ") for line in body)
    with open(out / "dev_curves.csv") as fh:
        points = list(csv.DictReader(fh))
    assert {(p["config"], p["step"]) for p in points} == {(r, s) for r in (BASE, VARIANT) for s in ("1", "2")}
    assert (out / "dev_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dev_curves_are_kept_in_the_rows(comparison):
    """The table renders the same curves on a machine that lacks the runs' training logs."""
    rows = list(comparison["rows"].values())
    with_logs = experiments.dev_curves(rows)
    assert len(with_logs) == 4 and all(row["dev_curve"] for row in rows)
    without_logs = [{**row, "train_log": "/nonexistent/train_log.jsonl"} for row in rows]
    assert experiments.dev_curves(without_logs) == with_logs


def test_interrupted_run_resumes_from_its_checkpoint(comparison):
    assert [r["id"] for r in comparison["interrupted_rows"]] == [BASE]  # no row for the killed run
    assert comparison["trained_before"] == [BASE, VARIANT]
    assert comparison["trained"][len(comparison["trained_before"]):] == [VARIANT]  # the base was skipped
    assert comparison["loaded"] == ["step-0000001"]
    assert comparison["rows"][VARIANT]["resumed"] and not comparison["rows"][BASE]["resumed"]


def test_rerun_skips_finished_runs(comparison, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(stages, "train", no_training)
    monkeypatch.setattr(stages, "evaluate", no_training)
    rows = experiments.run_all(CONFIG, comparison["out"], only=[BASE, VARIANT], smoke=True)
    assert {r["id"]: r for r in rows} == comparison["rows"]


def test_a_folder_of_another_configuration_is_refused(tmp_path):
    """Resuming its checkpoints would mix two configurations."""
    (tmp_path / BASE).mkdir()
    (tmp_path / BASE / experiments.RUN_FILE).write_text(json.dumps({"config_hash": "0123456789abcdef"}))
    with pytest.raises(RuntimeError, match="another configuration"):
        experiments.run_all(CONFIG, tmp_path, only=[BASE], smoke=True)
    assert not (tmp_path / "_data").exists()  # refused before converting or training anything


@pytest.mark.parametrize("variant, error", [
    ({"name": "two", "factor": "sampling", "train": {"sampling": "none", "order": "random"}}, "changes"),
    ({"name": "same", "factor": "sampling", "train": {"sampling": "dynamic"}}, "nothing"),
    ({"name": "time", "factor": "sampling", "train": {"sampling": "none", "max_minutes": 5}}, "max_steps alone"),
    ({"name": "typo", "factor": "sampling", "train": {"sampling": "diagnoal:1"}}, "diagnoal"),
])
def test_plan_refuses_a_variant_that_is_not_one_factor(tmp_path, variant, error):
    config = experiments.Comparisons(seeds=[1], base={"tune_na_biases": [0.0], "train": {"max_steps": 4}},
                                     variants=[variant])
    with pytest.raises(ValueError, match=error):
        experiments.plan(config, tmp_path)


def test_plan_refuses_tuned_decoding(tmp_path):
    config = experiments.Comparisons(seeds=[1], base={"train": {"max_steps": 4}})  # the pipeline's default sweep
    with pytest.raises(ValueError, match="tune_na_biases"):
        experiments.plan(config, tmp_path)


def test_every_switch_trains_decodes_and_scores_end_to_end(tmp_path, monkeypatch):
    """Each DORE variant of the shipped config (smoke size) trains, decodes test and is scored, and its
    switch reaches the model: its training targets (or, for init, its initial entity-id embedding)
    differ from the base's."""
    config = experiments.load_config(CONFIG, smoke=True)
    names = ["base"] + [v.name for v in config.variants if v.kind == "dore"]
    assert {"sampling-none", "sampling-random-0.1", "sampling-diagonal-1", "sampling-all", "order-annotation",
            "order-random", "mode-sequence", "init-random", "entity-embeddings"} <= set(names)
    current, targets, first_entity = [""], {}, {}
    real_train, real_sequences, real_backbone = (stages.train, dore.methods.dore.decoder_sequences,
                                                 stages.initial_backbone)

    def tagging_train(params, **kwargs):
        current[0] = Path(params.artifacts).name
        return real_train(params, **kwargs)

    def recording_sequences(ex, *args, epoch, **kwargs):
        seqs = real_sequences(ex, *args, epoch=epoch, **kwargs)
        if epoch == 0:
            targets.setdefault(current[0], {})[ex.doc.doc_id] = seqs
        return seqs

    def recording_backbone(cfg, layout):
        backbone = real_backbone(cfg, layout)
        first_entity[current[0]] = backbone.model.get_input_embeddings().weight[backbone.code_to_id[0]].detach().clone()
        return backbone

    install_docred_fixture(tmp_path / "_data" / "docred-train3-dev2-test2", limit_train=3)
    monkeypatch.setattr(stages, "train", tagging_train)
    monkeypatch.setattr(dore.methods.dore, "decoder_sequences", recording_sequences)
    monkeypatch.setattr(stages, "initial_backbone", recording_backbone)
    rows = {r["name"]: r for r in experiments.run_all(CONFIG, tmp_path, only=[BASE] + names[1:], smoke=True)}
    assert set(rows) == set(names)
    for name, row in rows.items():
        assert row["status"] == "done", name
        assert 0 <= row["ign_f1"] <= row["f1"] <= 100 and row["decoder_steps_per_doc"] > 0, name
        assert "docred_official on test (2 docs)" in row["note"], name
    base = targets["base-seed42"]
    assert len(base) == 3 and all(len(seqs) > 1 for seqs in base.values())  # rows: one sequence per head
    for name in names[1:]:
        run = f"{name}-seed42"
        if name == "init-random":
            assert targets[run] == base
            assert not torch.equal(first_entity[run], first_entity["base-seed42"])
        elif name == "entity-embeddings":  # same targets and symbols; the trained model carries the table
            assert targets[run] == base and torch.equal(first_entity[run], first_entity["base-seed42"])
            assert entities.saved_state(tmp_path / run / "docred" / "model")
            assert not entities.saved_state(tmp_path / "base-seed42" / "docred" / "model")
        else:
            assert targets[run] != base, name
            assert torch.equal(first_entity[run], first_entity["base-seed42"]), name
    assert all(len(seqs) == 1 for seqs in targets["mode-sequence-seed42"].values())
    total = {run: sum(len(s) for seqs in t.values() for s in seqs) for run, t in targets.items()}
    assert total["sampling-all-seed42"] > total["base-seed42"] > total["sampling-none-seed42"]


def test_the_committed_rows_match_the_plan():
    """Every configuration of the shipped plan but the newest has its finished row in results.json
    under the hash the plan computes now (a new switch at its default must not change old hashes,
    or `run.py` would train them all again)."""
    runs = experiments.plan(experiments.load_config(CONFIG), "runs/comparisons")
    recorded = {(r["id"], r["config_hash"]) for r in json.loads((CONFIG.parent / "results.json").read_text())
                if r["status"] == "done"}
    missing = [run.id for run in runs if (run.id, run.config_hash) not in recorded]
    assert len(runs) == 14 and missing in ([], ["entity-embeddings-seed42"])
