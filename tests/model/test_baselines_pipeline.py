"""The baselines as pipeline stages: the one training loop with the lexical method, and the
comparison runner's `lexical` and `classifier` rows on the shipped config's smoke section (tiny-bart,
3 / 2 / 2 real documents, 2 steps) -- trained, selected on dev, scored on test, with every column.
The documents are the committed fixture's (tests/fixtures/docred), installed as the runner's converted
smoke data: no real data is read."""

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
import torch

import dore.methods.lexical
from dore import experiments, stages
from dore.config import TrainConfig
from dore.extract import Extractor
from dore.methods.classifier import RelationClassifier
from dore.methods.lexical import LEXICAL_CARD, LexicalMethod, lexical_target_ids, relation_names_of
from dore.methods.seq2seq import IGNORE
from dore.model.backbone import load_backbone
from dore.training.loop import train
from tests.conftest import fixture_docs, fixture_layout, install_docred_fixture

CONFIG = Path(__file__).resolve().parents[2] / "experiments" / "comparisons.yaml"
RUNS = ("lexical-seed42", "classifier-seed42")
RECORD_KEYS = {"f1", "ign_f1", "p", "r", "decode_seconds", "docs_per_second", "decoder_steps_per_doc", "scorer",
               "setting", "split", "documents", "dev_selected"}


@pytest.fixture(scope="module")
def real():
    docs = fixture_docs("train", "dev")  # Re-DocRED dev_revised documents
    short = sorted((d for d in docs if d.unique_relations()), key=lambda d: len(d.tokens))[:2]
    return short, fixture_layout(n_slots=45)


def test_lexical_training_feeds_text_targets_to_a_full_vocabulary_loss(real, tmp_path, monkeypatch):
    docs, layout = real
    backbone = load_backbone("tiny-bart", layout, seed=0)
    calls = []
    real_loss = dore.methods.lexical.row_loss

    def spy(model, batch, **kwargs):
        calls.append((batch, kwargs))
        return real_loss(model, batch, **kwargs)

    monkeypatch.setattr(dore.methods.lexical, "row_loss", spy)
    # mode="rows" as given: the lexical method writes one sequence per document whatever the mode
    cfg = TrainConfig(mode="rows", max_steps=1, batch_docs=2, mixed_precision="no")
    method = LexicalMethod(cfg, backbone, layout)  # adds the separators
    assert method.cfg.mode == "sequence"
    result = train(cfg, method, docs, tmp_path, resume=False)
    assert result.steps == 1 and not +Counter(result.counts)  # nothing truncated or cut
    [(batch, kwargs)] = calls
    assert kwargs["code_to_id"] is None  # words, not symbols: the whole vocabulary
    names = relation_names_of(layout)
    expected = sorted(lexical_target_ids(d, backbone.tokenizer, names) + [backbone.eos_id] for d in docs)
    labels = batch["labels"]
    n_prefix = len(backbone.decoder_prefix)
    assert (labels[:, : n_prefix - 1] == IGNORE).all()  # the prefix is given, not predicted
    assert sorted(row[row != IGNORE].tolist() for row in labels) == expected
    assert len(batch["row_doc"]) == len(docs)  # one sequence per document, no row heads


@pytest.fixture(scope="module")
def baseline_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("baselines")
    install_docred_fixture(out / "_data" / "docred-train3-dev2-test2", limit_train=3)  # the smoke data, converted
    rows = experiments.run_all(CONFIG, out, only=list(RUNS), smoke=True)
    return out, {r["id"]: r for r in rows}


def test_baseline_rows_finish_with_every_column(baseline_rows):
    out, rows = baseline_rows
    assert list(rows) == list(RUNS)
    for row in rows.values():
        assert row["status"] == "done", row.get("reason")
        assert {key for key, _ in experiments.COLUMNS} <= set(row)
        assert all(row[key] is not None for key in ("f1", "ign_f1", "p", "r", "decoder_steps_per_doc",
                                                    "docs_per_second", "train_seconds", "decode_seconds",
                                                    "targets_over_decoder_length", "dev_f1", "dev_step"))
        assert 0 <= row["ign_f1"] <= row["f1"] <= 100
        assert row["optimizer_steps"] == 2 and not row["resumed"]
        assert "docred_official on test (2 docs)" in row["note"]
        record = json.loads((out / row["id"] / "docred" / "metrics.json").read_text())
        assert RECORD_KEYS <= set(record) and record["f1"] == row["f1"]
        assert record["dev_selected"]["f1"] == row["dev_f1"]
        log = [json.loads(line) for line in open(row["train_log"])]
        assert [r["step"] for r in log if "dev_f1" in r] == [1, 2]
    lex, clf = rows["lexical-seed42"], rows["classifier-seed42"]
    assert lex["decoder_steps_per_doc"] > 0 and clf["decoder_steps_per_doc"] == 0
    with open(out / experiments.CURVES_CSV) as fh:
        assert {(p["config"], p["step"]) for p in csv.DictReader(fh)} == {(r, s) for r in RUNS for s in ("1", "2")}


def test_lexical_record_counts_its_strings_and_lengths(baseline_rows):
    out, rows = baseline_rows
    record = json.loads((out / "lexical-seed42" / "docred" / "metrics.json").read_text())
    repairs = Counter(record["parse_repairs"])
    budget = 1024 - 2  # tiny-bart's decoder positions minus its prefix
    generated = record["decoder_steps_per_doc"] * record["documents"]
    assert repairs["unfinished"] * budget <= generated <= record["documents"] * budget  # an unfinished one used it all
    assert repairs["unfinished"] == 0 or repairs["malformed"] + repairs["unmatched_strings"] > 0
    assert rows["lexical-seed42"]["parse_repairs"] == record["parse_repairs"]
    lengths = record["target_lengths"]
    assert lengths["documents"] == 2 and lengths["max_len"] == 1024 and lengths["max"] > 0
    summary = json.loads((out / "lexical-seed42" / "docred" / "train" / "summary.json").read_text())
    assert summary["target_lengths"]["documents"] == 3 and summary["steps"] == 2


def test_lexical_model_is_its_own_format_and_resumes_as_finished(baseline_rows):
    out, _ = baseline_rows
    model = out / "lexical-seed42" / "docred" / "model"
    card = json.loads((model / LEXICAL_CARD).read_text())
    assert card["target_format"] == "lexical" and card["preset"]["mode"] == "sequence"
    assert card["decoding"]["num_beams"] == 1 and card["dev_metrics"]["step"] in (1, 2)
    with pytest.raises(FileNotFoundError, match="not a saved DORE model"):
        Extractor.from_pretrained(model)  # DORE's decoder would read its text as symbols
    params = next(r.params for r in experiments.plan(experiments.load_config(CONFIG, smoke=True), out)
                  if r.id == "lexical-seed42")
    log = (out / "lexical-seed42" / "docred" / "train" / "train_log.jsonl").read_text()
    summary = stages.train(params, method="lexical", resume=True)  # the step-2 checkpoint loads into the grown vocabulary
    assert summary["steps"] == 2 and summary["best_dev"]["step"] == card["dev_metrics"]["step"]
    assert (out / "lexical-seed42" / "docred" / "train" / "train_log.jsonl").read_text() == log


def test_classifier_model_reloads_with_its_card(baseline_rows):
    out, rows = baseline_rows
    classifier = RelationClassifier.from_pretrained(out / "classifier-seed42" / "docred" / "model")
    assert classifier.card["dev_metrics"]["f1"] == rows["classifier-seed42"]["dev_f1"]
    assert classifier.card["training_data_sha256"] and classifier.model.context_pooling
    record = json.loads((out / "classifier-seed42" / "docred" / "metrics.json").read_text())
    assert record["input_counts"].get("relations_outside_pairs", 0) == 0


def test_dore_predict_answers_with_a_saved_classifier_in_the_official_format(baseline_rows, tmp_path):
    """`dore predict` on a classifier folder writes the classifier's own predictions as DocRED's
    result.json or as `dore predict`'s JSON lines (what experiments/record.py commits, by dataset);
    other outputs are refused with a reason."""
    from typer.testing import CliRunner

    from dore.cli import app
    from dore.data.docred import read_docred_result
    from dore.data.model import read_jsonl
    from dore.model.atlop import TH
    from dore.scoring.score import read_prediction_lines

    out, _ = baseline_rows
    run = out / "classifier-seed42" / "docred"
    classifier = RelationClassifier.from_pretrained(run / "model")
    with torch.no_grad():  # the 2-step model answers NA everywhere: lower the threshold class so it answers
        classifier.model.bilinear.bias[TH] -= 1e3
    classifier.save_pretrained(tmp_path / "model")
    docs = list(read_jsonl(run / "docs" / "test.jsonl"))
    expected = {(d, h, t, label) for d, rels in classifier.predict(docs).items() for (h, t), label in rels}
    assert expected

    runner = CliRunner()
    answered = runner.invoke(app, ["predict", str(tmp_path / "model"), str(run / "docs" / "test.jsonl"),
                                   "-o", str(tmp_path / "result.json")])
    assert answered.exit_code == 0, answered.output
    written = {(p.title, p.h_idx, p.t_idx, p.r) for p in read_docred_result(tmp_path / "result.json")}
    assert written == expected
    lines = runner.invoke(app, ["predict", str(tmp_path / "model"), str(run / "docs" / "test.jsonl"),
                                "-o", str(tmp_path / "predictions.jsonl")])
    assert lines.exit_code == 0, lines.output
    as_lines = {(d, *args, label) for d, rels in read_prediction_lines(tmp_path / "predictions.jsonl").items()
                for args, label in rels}
    assert as_lines == expected
    refused = runner.invoke(app, ["predict", str(tmp_path / "model"), str(run / "docs" / "test.jsonl"),
                                  "-o", str(tmp_path / "out.txt")])
    assert refused.exit_code != 0 and "official result.json" in refused.output


def test_a_dore_run_starts_its_encoder_from_the_classifier_and_counts_its_time(baseline_rows):
    """`init_encoder_from` (the teacher lever): DORE's encoder starts as the trained classifier's,
    the decoder as the backbone's, and the classifier's training time counts in the budget."""
    from dore.data.model import DataError
    from dore.model.backbone import initial_backbone, load_classifier_encoder

    out, _ = baseline_rows
    model_dir = out / "classifier-seed42" / "docred" / "model"
    classifier = RelationClassifier.from_pretrained(model_dir)
    params = next(r.params for r in experiments.plan(experiments.load_config(CONFIG, smoke=True), out)
                  if r.id == "classifier-seed42")
    layout = stages.load_layout(params)
    cfg = TrainConfig(**{**params.train.model_dump(), "init_encoder_from": str(model_dir), "max_minutes": 5.0})
    warm = initial_backbone(cfg, layout).model
    fresh = initial_backbone(TrainConfig(**{**cfg.model_dump(), "init_encoder_from": None}), layout).model
    taught = classifier.model.encoder.state_dict()
    assert all(torch.equal(value, taught[key]) for key, value in warm.get_encoder().state_dict().items())
    assert any(not torch.equal(value, taught[key]) for key, value in fresh.get_encoder().state_dict().items())
    decoder = fresh.get_decoder().state_dict()
    assert all(torch.equal(value, decoder[key]) for key, value in warm.get_decoder().state_dict().items()
               if "embed_tokens" not in key)  # BART's decoder shares the (taught) token embeddings
    assert stages.ancestor_seconds(cfg) == classifier.card["lineage_seconds"] > 0
    with pytest.raises(DataError, match="another symbol layout"):
        load_classifier_encoder(fresh, model_dir, fixture_layout(n_slots=12))
