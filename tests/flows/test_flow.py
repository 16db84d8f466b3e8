"""The Prefect flow `train-dore` end to end on a tiny model, against a test Prefect API."""

import csv
import json

import pytest

from tests.conftest import DOCRED_FIXTURE, fixture_data_root

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def finished(prefect_api, tmp_path_factory, tiny_overrides):
    """One flow run; its packaged model leaves the BentoML store afterwards."""
    import bentoml

    from flows.train import train_dore

    artifacts = tmp_path_factory.mktemp("artifacts")
    with pytest.MonkeyPatch.context() as mp:
        fixture_data_root(mp, tmp_path_factory.mktemp("data"))
        state = train_dore(dataset="docred", overrides=tiny_overrides, artifacts=str(artifacts), return_state=True)
    yield state, artifacts / "docred"
    if state.is_completed():
        bentoml.models.delete(state.result()["bento_tag"])


def test_flow_completes_and_writes_every_stage_output(finished):
    state, out = finished
    assert state.is_completed(), state.message
    result = state.result()
    assert len((out / "docs" / "train.jsonl").read_text().splitlines()) == 4  # the overrides reached convert
    for name in ("train.jsonl", "dev.jsonl", "test.jsonl", "layout.json", "summary.json"):  # the fixture's files
        assert (out / "docs" / name).read_bytes() == (DOCRED_FIXTURE / name).read_bytes(), name
    assert (out / "validation" / "summary.json").exists()
    assert result["model_dir"] == str((out / "model").resolve()) and (out / "model" / "dore_model.json").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["documents"] == 2 and result["metrics"]["f1"] == pytest.approx(metrics["f1"], abs=1e-4)
    assert json.loads((out / "package.json").read_text())["tag"] == result["bento_tag"]
    losses = list(csv.DictReader((out / "plots" / "train_loss.csv").open()))
    assert [int(r["step"]) for r in losses] == [1, 2]
    assert [int(r["epoch"]) for r in csv.DictReader((out / "plots" / "dev_f1.csv").open())] == [1]


def test_metrics_are_published_as_a_table_artifact(finished):
    from prefect.artifacts import Artifact

    state, out = finished
    artifact = Artifact.get("dore-docred-metrics")
    assert artifact is not None and artifact.type == "table"
    rows = {r["metric"]: r["value"] for r in json.loads(artifact.data)}
    assert rows["f1"] == pytest.approx(json.loads((out / "metrics.json").read_text())["f1"], abs=1e-4)
    assert {"ign_f1", "p", "r", "documents"} <= set(rows)
    assert state.result()["bento_tag"] in artifact.description


def test_task_results_are_persisted_as_json(finished):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    state, _ = finished
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    assert sorted(r.name.rsplit("-", 1)[0] for r in runs) == ["convert", "evaluate", "package", "train", "validate"]
    for run in runs:
        assert run.state.is_completed()
        assert run.state.data.serializer.type == "json", run.name  # never pickles


def test_only_io_failures_are_retried():
    from prefect.states import Failed

    from dore.data.model import DataError
    from flows.train import is_io_error

    assert is_io_error(None, None, Failed(data=OSError("disk full")))
    assert not is_io_error(None, None, Failed(data=DataError("train.json: doc 3: field vertexSet")))


def test_scirex_flow_also_scores_each_coreference_setting(prefect_api, tmp_path, tiny_overrides):
    from prefect.artifacts import Artifact

    from flows.train import train_dore

    overrides = {**tiny_overrides, "limit_dev": 1, "train": {**tiny_overrides["train"], "chunk_length": 256}}
    state = train_dore(dataset="scirex", overrides=overrides, artifacts=str(tmp_path), package_model=False,
                       coref_backends=["gold", "string-match"], return_state=True)
    assert state.is_completed(), state.message
    coref = state.result()["coref"]
    assert {b: r["setting"] for b, r in coref.items()} == {"gold": "gold_input",
                                                            "string-match": "gold_mentions_pred_clusters"}
    for backend in coref:
        assert (tmp_path / "scirex" / f"metrics_{backend}.json").exists()
        artifact = Artifact.get(f"dore-scirex-{backend}-metrics")
        assert artifact is not None and coref[backend]["setting"] in artifact.description


def test_scirex_chain_publishes_one_artifact_per_setting(prefect_api, tmp_path, tiny_overrides):
    """`prefect deployment run train-dore/scirex` (chain: true), tiny: a tiny-bart DORE model and
    recognizer, the chain on 2 test documents; every setting is scored and published."""
    from prefect.artifacts import Artifact

    from flows.train import train_dore

    overrides = {**tiny_overrides, "limit_dev": 1, "train": {**tiny_overrides["train"], "chunk_length": 256}}
    recognizer = {"limit_train": 2, "limit_dev": 1, "window": 128, "stride": 96, "train_chunk_words": 120,
                  "train": {"backbone": "tiny-bart", "max_steps": 2, "max_minutes": None, "batch_docs": 2}}
    state = train_dore(dataset="scirex", overrides=overrides, artifacts=str(tmp_path), package_model=False,
                       chain=True, chain_overrides=recognizer, chain_limit=2, salience_train_limit=6,
                       return_state=True)
    assert state.is_completed(), state.message
    chain = state.result()["chain"]
    assert set(chain) == {"gold_mentions_pred_clusters", "gold_salient_oracle", "end_to_end"}
    assert chain["gold_salient_oracle"]["salient_clusters"]["p"] == 100.0
    assert chain["gold_mentions_pred_clusters"]["mentions"]["f1"] == 100.0  # the gold NER, read as given
    for setting in chain:
        artifact = Artifact.get(f"dore-scirex-chain-{setting.replace('_', '-')}-metrics")
        assert artifact is not None and setting in artifact.description
        assert set(chain[setting]["relations"]) == {"scirex_official", "dore_micro"}
    assert (tmp_path / "scirex" / "entities" / "model" / "entities.json").exists()
    assert (tmp_path / "scirex" / "chain" / "predicted-salience-model" / "salient.jsonl").exists()
