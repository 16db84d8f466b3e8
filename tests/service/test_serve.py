"""A real `bentoml serve` process, with continuous and with adaptive batching: readiness, HTTP
extraction, and 50 concurrent clients batched together while bad requests mixed in are refused
on their own."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from dore.extract import Extractor
from tests.service.conftest import N_SLOTS, token_request

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module", params=["continuous", "on"])
def server(bento_store, tmp_path_factory, request):
    """A server with continuous row batching (the default) or adaptive batching (`on`)."""
    port, log = free_port(), tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "BENTOML_HOME": str(bento_store.home), "BENTOML_DO_NOT_TRACK": "true",
           "OMP_NUM_THREADS": "1", "DORE_BATCHING": request.param}
    with open(log, "wb") as out:
        # Its own process group, so the finalizer stops the server and its worker, and nothing else.
        proc = subprocess.Popen([sys.executable, "-m", "bentoml", "serve", "service:DoreService",
                                 "--host", "127.0.0.1", "--port", str(port)],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _ready(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"bentoml serve not ready (exit {proc.poll()}):\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def triples(relations) -> list[tuple]:
    return [(r["head"], r["tail"], r["label"]) for r in relations]


def batched_documents(metrics: str) -> tuple[float, float]:
    """(documents, batches) the adaptive-batching dispatcher of /extract_batch has run."""
    def value(kind: str) -> float:
        match = re.search(rf'^bentoml_service_adaptive_batch_size_{kind}{{[^}}]*method_name="extract_batch"[^}}]*}} (\S+)',
                          metrics, re.MULTILINE)
        return float(match.group(1)) if match else 0.0
    return value("sum"), value("count")


def test_served_model_answers_50_concurrent_clients_and_refuses_bad_requests_alone(server, bento_store):
    doc = bento_store.docs[0]
    good = {"json": {"documents": [token_request(doc)]}}
    expected = Extractor.from_pretrained(bento_store.model_dir).extract([doc])[0]
    bad = [  # (request, status) mixed in among the good ones
        ({"json": {"documents": [{"text": "Obama", "entities": [{"names": ["Michelle"]}]}]}}, 422),
        ({"content": b'{"documents": [{', "headers": {"content-type": "application/json"}}, 400),
        ({"json": {"documents": [{"tokens": [["w"] * 40], "entities": [
            {"mentions": [{"sent": 0, "start": i, "end": i + 1}]} for i in range(N_SLOTS + 1)]}]}}, 422),
        ({"json": {"documents": [{"text": "Obama", "entities": [{"spans": [{"start": 3, "end": 80}]}]}]}}, 422),
    ]
    with httpx.Client(base_url=server, timeout=60) as http:
        first = http.post("/extract", **good)
        assert first.status_code == 200, first.text
        relations = first.json()["documents"][0]["relations"]
        assert [(tuple(r["args"]), r["label"], r["confidence"]) for r in relations] == \
            [(p.args, p.label, p.confidence) for p in expected]

        jobs = [(good, 200)] * 50
        for k, job in enumerate(bad):
            jobs.insert(10 * k + 5, job)
        with ThreadPoolExecutor(max_workers=50) as pool:
            responses = list(pool.map(lambda job: http.post("/extract", **job[0]), jobs))

        for (_, status), response in zip(jobs, responses):
            assert response.status_code == status, response.text
            if status == 200:  # identical documents batched together: no padding, same decoding
                answer = response.json()["documents"][0]["relations"]
                assert triples(answer) == triples(relations)
                assert [r["confidence"] for r in answer] == pytest.approx([r["confidence"] for r in relations],
                                                                            abs=1e-5)
            else:
                assert response.json()["error"]
        info = http.get("/model").json()
        if info["adaptive_batching"]:  # continuous batching has no dispatcher; tests/code/test_continuous.py
            documents, batches = batched_documents(http.get("/metrics").text)
            assert documents >= 51 and batches < documents, "no request was batched with another"
        assert http.post("/extract", **good).status_code == 200
