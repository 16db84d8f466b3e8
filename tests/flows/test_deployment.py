"""Integration: a real local Prefect server, the deployments of prefect.yaml and a process worker
(all started by scripts/prefect_local.sh, as a user would), and one run of `train-dore/docred`."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "prefect_local.sh"
BIN = Path(sys.executable).parent  # the environment running the tests
PREFECT = BIN / "prefect"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def started_pids(prefect_home: Path) -> set[int]:
    """The server and worker the script started, with every process below them."""
    pids = {int(f.read_text()) for f in (prefect_home / "server.pid", prefect_home / "worker.pid") if f.exists()}
    for pid in list(pids):
        try:
            pids |= {child.pid for child in psutil.Process(pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            pass
    return pids


@pytest.fixture
def stack(tmp_path):
    """`prefect_local.sh up` on a free port with a temporary PREFECT_HOME; `down` afterwards, and
    whatever it started still alive is killed, even when `up` or the test failed."""
    home, port = tmp_path / "prefect", free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_PORT": str(port),
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "BENTOML_HOME": str(tmp_path / "bentoml"),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "DO_NOT_TRACK": "1",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "VENV": str(BIN.parent)}
    pids: set[int] = set()
    try:
        up = subprocess.run([SCRIPT, "up"], env=env, capture_output=True, text=True, timeout=240)
        pids = started_pids(home)
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        yield env
    finally:
        pids |= started_pids(home)
        subprocess.run([SCRIPT, "down"], env=env, capture_output=True, timeout=90)
        for pid in pids:
            try:
                psutil.Process(pid).kill()
            except psutil.NoSuchProcess:
                pass


def test_docred_deployment_completes_and_publishes_metrics(stack, tmp_path, tiny_overrides):
    artifacts = tmp_path / "artifacts"
    params = {"overrides": tiny_overrides, "artifacts": str(artifacts)}
    run = subprocess.run([PREFECT, "deployment", "run", "train-dore/docred", "--watch", "--watch-interval", "2",
                          "--watch-timeout", "240", "--params", json.dumps(params)],
                         env=stack, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    api = stack["PREFECT_API_URL"]
    flow_runs = httpx.post(f"{api}/flow_runs/filter", json={"deployments": {"name": {"any_": ["docred"]}}}).json()
    assert [r["state_type"] for r in flow_runs] == ["COMPLETED"]
    found = httpx.post(f"{api}/artifacts/filter", json={"artifacts": {"key": {"any_": ["dore-docred-metrics"]}}}).json()
    assert len(found) == 1 and found[0]["type"] == "table" and found[0]["flow_run_id"] == flow_runs[0]["id"]
    rows = {r["metric"]: r["value"] for r in json.loads(found[0]["data"])}
    metrics = json.loads((artifacts / "docred" / "metrics.json").read_text())
    assert metrics["documents"] == 2 and rows["f1"] == pytest.approx(metrics["f1"], abs=1e-4)
    assert (artifacts / "docred" / "package.json").exists()

    # the corpus-extraction deployment, on the model just trained, on the local Dask cluster
    corpus = artifacts / "docred" / "docs" / "test.jsonl"
    params = {"model_dir": str(artifacts / "docred" / "model"), "inputs": [str(corpus)],
              "out_dir": str(tmp_path / "extract"), "shard_docs": 1}
    run = subprocess.run([PREFECT, "deployment", "run", "extract-dore/corpus", "--watch", "--watch-interval", "2",
                          "--watch-timeout", "240", "--params", json.dumps(params)],
                         env=stack, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    lines = (tmp_path / "extract" / "relations.jsonl").read_text().splitlines()
    assert [json.loads(line)["doc_id"] for line in lines] == [json.loads(line)["doc_id"]
                                                            for line in corpus.read_text().splitlines()]
    assert len(list((tmp_path / "extract" / "results").iterdir())) == 2  # one result per shard
