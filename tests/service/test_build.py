"""`bentoml build` of bentofile.yaml: the service, the dore source, the pinned packages, the model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_bentoml_build_packs_service_source_pins_and_model(bento_store):
    env = {**os.environ, "BENTOML_HOME": str(bento_store.home), "BENTOML_DO_NOT_TRACK": "true"}
    build = subprocess.run([sys.executable, "-m", "bentoml", "build", "--output", "tag"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr[-3000:]
    name, version = build.stdout.strip().splitlines()[-1].removeprefix("__tag__:").split(":")
    bento = bento_store.home / "bentos" / name / version
    assert (bento / "src" / "service.py").exists() and (bento / "src" / "dore" / "serving.py").exists()
    assert not (bento / "src" / "tests").exists()
    manifest = yaml.safe_load((bento / "bento.yaml").read_text())
    assert [m["tag"] for m in manifest["models"]] == [bento_store.tag]
    assert {r["route"] for r in manifest["schema"]["routes"]} >= {"/extract", "/extract_batch"}
    requirements = (bento / "env" / "python" / "requirements.txt").read_text().split()
    assert {"torch==2.13.0+cpu", "transformers==5.23.0", "bentoml==1.4.39"} <= set(requirements)
