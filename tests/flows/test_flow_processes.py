"""The flow's train task starts N training processes through a parameter (torchrun, gloo on CPU)."""

import json

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_the_train_task_runs_two_processes(prefect_api, shared_data, tmp_path, monkeypatch, tiny_overrides):
    from flows.train import train_dore

    monkeypatch.setenv("DORE_DATA", str(shared_data))  # the training processes read the same data
    overrides = {**tiny_overrides, "train": {**tiny_overrides["train"], "epochs": 2}}  # 2 docs a process: 1 step an epoch
    state = train_dore(dataset="docred", overrides=overrides, artifacts=str(tmp_path), package_model=False,
                       train_processes=2, return_state=True)
    assert state.is_completed(), state.message
    out = tmp_path / "docred"
    section = (out / "train_params.yaml").read_text()
    assert "tiny-bart" in section and "max_steps: 2" in section  # what the processes were given
    summary = json.loads((out / "train" / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["counts"]["documents_left_out_for_even_shards"] == 0
    logged = [json.loads(line) for line in (out / "train" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "loss" in r] == [1, 2]  # one writer: no step logged twice
    assert json.loads((out / "metrics.json").read_text())["documents"] == 2
