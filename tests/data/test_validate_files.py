"""`dore validate FILE...`: any dataset file, every document a reader refuses (up to a cap) in the
same report as the great-expectations results, failures first; the file itself is never touched."""

import gzip
import json
from pathlib import Path

from typer.testing import CliRunner

from dore.cli import app
from dore.data.salvage import MAX_ERRORS, read_salvaging

runner = CliRunner()


def fail_lines(output: str) -> list[str]:
    return [line.strip() for line in output.splitlines() if line.strip().startswith(("FAIL", "PASS"))]


def test_every_bad_docred_document_is_reported_and_the_rest_validated(shared_data, tmp_path):
    raw = json.loads((shared_data / "redocred" / "test_revised.json").read_text(encoding="utf-8"))
    raw[5]["vertexSet"][2][0]["pos"] = [0, 999]
    raw[9]["vertexSet"][0][0]["sent_id"] = 99
    del raw[20]["title"]
    path = tmp_path / "test_revised.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    before = path.read_bytes()

    result = runner.invoke(app, ["validate", str(path), "--report-dir", str(tmp_path / "reports")])
    assert result.exit_code == 1, result.output
    lines = fail_lines(result.output)
    assert [line.split(":")[0] for line in lines[:3]] == ["FAIL reader"] * 3  # failures lead, in file order
    assert f"document {raw[5]['title']!r}; field 'vertexSet[2][0].pos'" in lines[0]
    assert f"document {raw[9]['title']!r}; field 'vertexSet[0][0].sent_id'" in lines[1]
    assert "document 20; field 'title': Field required" in lines[2]
    assert "3 documents the reader refused" in result.output and "497 documents" in result.output  # the rest, judged
    assert lines[3].startswith("PASS mentions.text_key") and "tolerated" in lines[3]  # then the tolerated quirk
    assert "1 of 1 files failed validation" in result.output
    page = (tmp_path / "reports" / "test_revised.json.html").read_text(encoding="utf-8")
    assert page.count("<td>reader</td>") == 3 and "3 documents the reader refused" in page
    assert path.read_bytes() == before


def test_pubtator_errors_name_their_lines_in_the_original(shared_data, tmp_path):
    lines = (shared_data / "cdr" / "raw" / "CDR_TestSet.PubTator.txt").read_text(encoding="utf-8").splitlines()
    mentions = [i for i, line in enumerate(lines) if line.count("\t") >= 5]
    bad = [mentions[3], mentions[400]]  # two mentions in two documents
    for i in bad:
        cols = lines[i].split("\t")
        lines[i] = "\t".join([cols[0], "x", *cols[2:]])
    path = tmp_path / "CDR_TestSet.PubTator.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    docs, errors, fmt = read_salvaging(path)
    assert fmt == "pubtator" and [e.line for e in errors] == [i + 1 for i in bad]
    assert all(e.file == str(path) and e.message == "not an integer: 'x'" for e in errors)
    assert len(docs) == 500 - 2


def test_jsonl_errors_name_their_lines_even_gzipped(shared_data, tmp_path):
    lines = (shared_data / "scirex" / "dev.jsonl").read_text(encoding="utf-8").splitlines()
    lines[3] = lines[3][:50]  # truncated JSON
    path = tmp_path / "dev.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    docs, errors, fmt = read_salvaging(path)
    assert fmt == "scirex" and [(e.file, e.line) for e in errors] == [(str(path), 4)]
    assert len(docs) == len(lines) - 1


def test_the_errors_stop_at_the_cap(shared_data, tmp_path):
    lines = (shared_data / "gda" / "processed" / "test.data").read_text(encoding="utf-8").splitlines()
    lines[:MAX_ERRORS + 10] = [f"{i}\tsome words\tnot a pair block" for i in range(MAX_ERRORS + 10)]
    path = tmp_path / "gda" / "test.data"
    path.parent.mkdir()
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _, errors, _ = read_salvaging(path)
    assert len(errors) == MAX_ERRORS and [e.line for e in errors] == list(range(1, MAX_ERRORS + 1))


def test_a_clean_file_passes_and_a_missing_one_is_named(shared_data, tmp_path):
    clean = runner.invoke(app, ["validate", str(shared_data / "cdr" / "processed" / "test_filter.data")])
    assert clean.exit_code == 0 and "passed all 13 expectations" in clean.output, clean.output
    missing = runner.invoke(app, ["validate", str(tmp_path / "nothing.json")])
    assert missing.exit_code == 1 and f"error: {tmp_path / 'nothing.json'}: no such file" in missing.output


def test_validating_a_dataset_works_as_before(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("DORE_DATA", str(shared_data))
    result = runner.invoke(app, ["validate", "--dataset", "cdr", "--artifacts", str(tmp_path)])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "cdr" / "validation" / "summary.json").read_text())
    assert {split: s["success"] for split, s in summary.items()} == {"train": True, "dev": True, "test": True}
    assert Path(summary["test"]["report"]).exists()
