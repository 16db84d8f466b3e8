"""The flow beside the main job: a run without `artifacts` writes its own `runs/<time>/`, leaves the
DVC-tracked `artifacts/` and the served `dore-docred:latest` alone; a failed run ends with its
reason, one line, as the Failed state's message, before any task runs."""

import json
import time
from pathlib import Path

import pytest

from dore import stages
from dore.model import backbone

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def checkout(tmp_path, monkeypatch, shared_data):
    """An empty working folder (the flow's `runs/` and `artifacts/` are relative to it)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DORE_DATA", str(shared_data))
    return tmp_path


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_tiny_run_leaves_the_main_job_alone(prefect_api, checkout, store, tiny_overrides):
    import bentoml

    from flows.train import train_dore

    main = checkout / "artifacts" / "docred"  # what `make pipeline` left: DVC outputs and the served model
    (main / "model").mkdir(parents=True)
    (main / "model" / "dore_model.json").write_text(json.dumps({"family": "bert2bert"}))
    (main / "metrics.json").write_text(json.dumps({"f1": 42.0}))
    served = stages.package_model(main / "model", "dore-docred")
    before = files(checkout / "artifacts")

    state = train_dore(dataset="docred", overrides=tiny_overrides, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    run = Path(result["model_dir"]).parents[1]
    assert run.parent == checkout / "runs" and (run / "docred" / "metrics.json").exists()
    assert files(checkout / "artifacts") == before  # dvc status: the main job's stages still up to date
    assert str(bentoml.models.get("dore-docred:latest").tag) == served  # bentoml serve: still the main job's model
    assert bentoml.models.get(result["bento_tag"]).path  # the run's model is packaged under its own tag


def test_a_misspelt_override_fails_with_its_reason_before_any_task(prefect_api, checkout, monkeypatch):
    from flows.train import train_dore

    monkeypatch.setattr(stages, "validate", lambda params: pytest.fail("a task ran"))
    state = train_dore(dataset="docred", overrides={"train": {"lerning_rate": 0.1}}, return_state=True)
    assert state.is_failed()
    assert state.message == "bad parameter: train.lerning_rate: Extra inputs are not permitted (got 0.1)"
    assert not (checkout / "runs").exists()


def test_the_paper_preset_offline_fails_in_seconds(prefect_api, checkout, monkeypatch):
    from flows.train import train_dore

    monkeypatch.setattr(backbone, "is_offline_mode", lambda: True)
    monkeypatch.setattr(backbone, "try_to_load_from_cache", lambda repo, filename: None)
    monkeypatch.setattr(stages, "validate", lambda params: pytest.fail("a task ran"))
    started = time.perf_counter()
    state = train_dore(dataset="docred", preset="paper", return_state=True)
    assert state.is_failed() and time.perf_counter() - started < 10
    assert state.message.startswith("backbone t5-large is not available offline; pass a local directory")
    assert not (checkout / "runs").exists()
