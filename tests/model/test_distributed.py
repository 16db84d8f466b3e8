"""Multi-process training (torchrun, 2 CPU processes over gloo): it completes, only the main process
writes, and 2 processes x batch b train exactly what 1 process x batch 2b trains (sampling none,
documents divisible by 2b, the loss averaged over the global batch's tokens, dropout off). A killed
process ends the job with an error instead of a hang, and the rerun resumes from the checkpoint to
the same weights as the uninterrupted run."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from dore import stages
from dore.config import PipelineParams
from dore.extract import Extractor
from dore.model.backbone import load_backbone

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
TRAIN = ["--dataset", "docred", "--sampling", "none", "--no-group-by-length", "--max-steps", "4", "--epochs", "4",
         "--lr", "3e-3", "--mixed-precision", "no", "--checkpoint-every-steps", "2", "--log-every-steps", "1",
         "--limit-train", "8", "--limit-dev", "2", "--limit-test", "2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(artifacts: Path, base: Path, processes: int, batch_docs: int, *extra: str,
           env: dict | None = None) -> subprocess.CompletedProcess:
    launcher = ([str(BIN / "torchrun"), "--nproc_per_node", str(processes), "--master_addr", "127.0.0.1",
                 "--master_port", str(_free_port()), "-m"] if processes > 1 else [sys.executable, "-m"])
    command = [*launcher, "dore.cli", "train", "--artifacts", str(artifacts), "--init-from", str(base),
               "--batch-docs", str(batch_docs), *TRAIN, *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def test_two_processes_train_what_one_process_trains(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("DORE_DATA", str(shared_data))
    params = PipelineParams(limit_train=8, limit_dev=2, limit_test=2, artifacts=str(tmp_path / "one"))
    stages.convert(params)
    layout = stages.load_layout(params)
    backbone = load_backbone("tiny-bart", layout, seed=0)
    backbone.model.config.dropout = 0.0  # dropout draws differ between processes; the comparison needs none
    base = Extractor(backbone, layout).save_pretrained(tmp_path / "base")

    one = _train(tmp_path / "one", base, processes=1, batch_docs=4)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _train(tmp_path / "two", base, processes=2, batch_docs=2)
    assert two.returncode == 0, two.stderr[-3000:]

    # rank 1 dies after step 3: the job fails (torchrun stops rank 0 from waiting on it), fast
    started = time.perf_counter()
    cut = _train(tmp_path / "cut", base, 2, 2, "--checkpoint-every-steps", "1",
                 env={"DORE_FAULT_EXIT_AFTER_STEP": "1:3"})
    assert cut.returncode != 0 and time.perf_counter() - started < 300
    assert "exitcode  : 137" in cut.stderr or "exitcode: 137" in cut.stderr.replace(" ", ""), cut.stderr[-3000:]
    resumed = _train(tmp_path / "cut", base, 2, 2, "--checkpoint-every-steps", "1")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout + resumed.stderr

    weights = [load_file(str(run / "docred" / "train" / "checkpoints" / "step-0000004" / "model.safetensors"))
               for run in (tmp_path / "one", tmp_path / "two", tmp_path / "cut")]
    start = load_file(str(base / "model.safetensors"))
    assert max((weights[0][k] - start[k]).abs().max() for k in start) > 1e-3  # it did train
    delta = max((weights[0][k] - weights[1][k]).abs().max().item() for k in weights[0])
    assert delta <= 1e-5, delta
    resumed_delta = max((weights[1][k] - weights[2][k]).abs().max().item() for k in weights[1])
    assert resumed_delta <= 1e-6, resumed_delta
    logs = (tmp_path / "two" / "docred" / "train" / "train_log.jsonl").read_text().splitlines()
    assert sum('"loss"' in line for line in logs) == 4  # one writer: no step logged twice
    assert (tmp_path / "two" / "docred" / "model" / "dore_model.json").exists()
