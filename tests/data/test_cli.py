"""`dore convert` and `dore score` on the real files, through the CLI."""

import json

import pytest
from typer.testing import CliRunner

from dore.cli import app

runner = CliRunner()


def test_convert_writes_documents_targets_and_counts(shared_data, tmp_path):
    result = runner.invoke(app, ["convert", str(shared_data / "redocred" / "test_revised.json"),
                                 str(shared_data / "cdr" / "raw" / "CDR_TestSet.PubTator.txt"), "-o", str(tmp_path),
                                 "--preview-sampling", "dynamic", "--preview-docs", "1"])
    assert result.exit_code == 0, result.output
    assert "17448" in result.output and "1066" in result.output
    targets = [json.loads(line) for line in (tmp_path / "test_revised.targets.jsonl").read_text().splitlines()]
    assert len(targets) == 500 and targets[0]["sequence"].endswith("</eos>")
    assert len((tmp_path / "test_revised.jsonl").read_text().splitlines()) == 500


@pytest.mark.parametrize("gold", ["redocred/test_revised.json", "cdr/processed/test_filter.data",
                                  "gda/processed/test.data", "scirex/dev.jsonl"])
def test_gold_scored_against_itself_is_100(shared_data, tmp_path, gold):
    path = str(shared_data / gold)
    out = tmp_path / "metrics.json"
    result = runner.invoke(app, ["score", path, path, "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert metrics["f1"] == pytest.approx(100, abs=1e-3)
    if metrics["scorer"] == "scirex_official":
        assert metrics["f1_4ary"] == pytest.approx(100, abs=1e-3)


def test_official_result_json_round_trip(shared_data, tmp_path):
    from dore.data.docred import read_docred, write_docred_result

    gold = shared_data / "redocred" / "test_revised.json"
    docs, _ = read_docred(gold)
    write_docred_result(tmp_path / "result.json", [{"title": d.doc_id, "h_idx": r.args[0], "t_idx": r.args[1],
                                                    "r": r.label, "evidence": r.evidence} for d in docs[:50]
                                                   for r in d.relations])
    out = tmp_path / "m.json"
    result = runner.invoke(app, ["score", str(tmp_path / "result.json"), str(gold), "--out", str(out)])
    assert result.exit_code == 0, result.output
    m = json.loads(out.read_text())
    assert m["p"] == pytest.approx(100) and 0 < m["r"] < 15 and m["evi_f1"] > 0


def test_carved_splits_read_their_source_file_once(shared_data, monkeypatch):
    from dore.data.datasets import get_setting

    setting = get_setting("docred")
    calls = []
    original = type(setting).read_file
    monkeypatch.setattr(type(setting), "read_file", lambda self, path: calls.append(path) or original(self, path))
    splits = setting.read_splits(root=shared_data)
    assert len(calls) == 2  # dev_revised (train + dev) and test_revised
    assert [d.doc_id for d in splits["train"] + splits["dev"]] == [d.doc_id for d in original(setting, calls[0])[0]]


def test_score_reads_gzip_compressed_predictions(shared_data, tmp_path):
    """Committed predictions are gzip-compressed: `dore score` rescoring them gives the same numbers."""
    import gzip

    gold = shared_data / "redocred" / "test_revised.json"
    docs = json.loads(gold.read_text())[:3]
    gold_3 = tmp_path / "gold.json"
    gold_3.write_text(json.dumps(docs))
    records = [{"title": d["title"], "h_idx": lab["h"], "t_idx": lab["t"], "r": lab["r"]}
               for d in docs for lab in d["labels"]][::2]  # half the facts: not a trivial 100
    plain, packed = tmp_path / "result.json", tmp_path / "result.json.gz"
    plain.write_text(json.dumps(records))
    with gzip.open(packed, "wt", encoding="utf-8") as fh:
        json.dump(records, fh)
    scores = []
    for path in (plain, packed):
        out = tmp_path / f"{path.name}.metrics.json"
        result = runner.invoke(app, ["score", str(path), str(gold_3), "--out", str(out)])
        assert result.exit_code == 0, result.output
        scores.append(json.loads(out.read_text())["f1"])
    assert scores[0] == scores[1] and 0 < scores[0] < 100


def test_score_reads_the_prediction_lines_of_dore_predict(shared_data, tmp_path):
    """`dore predict`'s JSON lines (how CDR claims are committed, gzip-compressed) score like the same
    relations given as documents, with the dataset's own scorer (CDR: ATLOP's candidate-pair F1)."""
    import gzip

    from dore.data.formats import read_any
    from dore.data.model import write_jsonl

    docs = read_any(shared_data / "cdr" / "processed" / "test_filter.data")[0][:6]
    gold = write_jsonl(tmp_path / "gold.jsonl", docs)
    kept = [d.model_copy(update={"relations": d.relations[::2]}) for d in docs]  # not a trivial 100
    as_documents = write_jsonl(tmp_path / "pred_docs.jsonl", kept)
    lines = tmp_path / "predictions.jsonl.gz"
    with gzip.open(lines, "wt", encoding="utf-8") as fh:
        for d in kept:
            fh.write(json.dumps({"doc_id": d.doc_id, "relations": [
                {"args": list(r.args), "label": r.label, "confidence": 1.0} for r in d.relations]}) + "\n")
    scores = []
    for path in (as_documents, lines):
        out = tmp_path / f"{path.name}.metrics.json"
        result = runner.invoke(app, ["score", str(path), str(gold), "--out", str(out)])
        assert result.exit_code == 0, result.output
        metrics = json.loads(out.read_text())
        assert metrics["scorer"] == "atlop_candidate_f1"
        scores.append((metrics["f1"], metrics["p"], metrics["r"]))
    assert scores[0] == scores[1] and 0 < scores[0][0] < 100


def test_score_names_the_line_of_a_malformed_prediction(tmp_path):
    from dore.data.model import DataError
    from dore.scoring.score import read_prediction_lines

    path = tmp_path / "predictions.jsonl"
    path.write_text('{"doc_id": "a", "relations": []}\n{"doc_id": "b", "relations": [{"args": ["x", 1], "label": "P1"}]}\n')
    with pytest.raises(DataError, match=r"line 2.*document 'b'.*relations\[0\]"):
        read_prediction_lines(path)


def test_predict_inputs_in_cdrs_formats_are_read_as_datasets_not_as_text(shared_data, tmp_path):
    """CDR's `.data` lines and PubTator lines do not start with JSON, as plain text does: the
    name decides, so `dore predict` gets the gold entities and not a recognizer's."""
    from dore.batch import read_inputs

    head = tmp_path / "test_filter.data"
    head.write_text("".join((shared_data / "cdr" / "processed" / "test_filter.data").open().readlines()[:3]))
    docs = read_inputs(head)
    assert len(docs) == 3 and all(d.entities for d in docs)
    assert docs[0].doc_id == head.read_text().split("\t")[0]
    plain = tmp_path / "abstracts.txt"
    plain.write_text(head.read_text())
    assert [d.entities for d in read_inputs(plain)] == [[]]  # any other name: one plain text
