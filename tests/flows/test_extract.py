"""The Prefect flow `extract-dore` on a local Dask cluster of 2 workers, against a test Prefect API:
its merged result equals `dore predict`, a rerun skips the shards already done, and a corrupt
shard fails alone, naming its file and line."""

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dore.cli import app

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "tests" / "golden" / "model"  # a tiny-bart DORE model on the Re-DocRED layout
CORPUS = [REPO / "tests" / "fixtures" / "docred" / f"{split}.jsonl" for split in ("train", "dev", "test")]


@pytest.fixture(scope="module")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_sharded_extraction_equals_dore_predict_and_reruns_skip(prefect_api, tmp_path):
    from flows.extract import extract_dore

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(path.read_text() for path in CORPUS))
    n_docs = len(corpus.read_text().splitlines())
    predicted = tmp_path / "predict.jsonl"
    result = CliRunner().invoke(app, ["predict", str(MODEL), str(corpus), "-o", str(predicted)])
    assert result.exit_code == 0, result.output

    first = extract_dore(str(MODEL), [str(corpus)], str(tmp_path / "out"), shard_docs=3)
    assert first["shards"] == 3 and first["skipped"] == 0 and first["documents"] == n_docs
    merged = Path(first["output"]).read_text()
    assert merged == predicted.read_text() and sum(json.loads(line)["relations"] != [] for line in merged.splitlines())
    again = extract_dore(str(MODEL), [str(corpus)], str(tmp_path / "out"), shard_docs=3)
    assert again["skipped"] == 3 and Path(again["output"]).read_text() == merged


def test_a_corrupt_shard_fails_alone_and_names_its_file(prefect_api, tmp_path):
    from flows.extract import extract_dore

    lines = "".join(path.read_text() for path in CORPUS).splitlines()
    lines[4] = lines[4][:40]  # a truncated document in the second shard
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(lines) + "\n")
    state = extract_dore(str(MODEL), [str(corpus)], str(tmp_path / "out"), shard_docs=3, return_state=True)
    assert state.is_failed()
    assert "1 of 3 shards failed" in state.message and "shard-00001.jsonl" in state.message and "line 2" in state.message
    results = sorted(p.name for p in (tmp_path / "out" / "results").iterdir())
    assert [name.split(".")[0] for name in results] == ["shard-00000", "shard-00002"]  # the others are saved
    shutil.rmtree(tmp_path / "out")


def test_the_cli_reaches_the_same_flow(prefect_api, tmp_path):
    result = CliRunner().invoke(app, ["extract", str(MODEL), str(CORPUS[2]), "-o", str(tmp_path / "out"),
                                      "--shard-docs", "1", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "2 documents in 2 shards (0 already done)" in result.output
    assert len((tmp_path / "out" / "relations.jsonl").read_text().splitlines()) == 2
