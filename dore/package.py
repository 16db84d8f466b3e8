"""Stage `package`: put a saved DORE model into the BentoML model store (served by service.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def package(model_dir: str | Path, name: str) -> str:
    """Copy the model directory into a new BentoML model version; returns its tag."""
    import bentoml

    model_dir = Path(model_dir)
    card = json.loads((model_dir / "dore_model.json").read_text())
    metadata = {k: card[k] for k in ("family", "training_data_sha256", "split_note") if k in card}
    metadata["dev_metrics"] = {k: v for k, v in (card.get("dev_metrics") or {}).items() if isinstance(v, (int, float))}
    with bentoml.models.create(name=name, labels={"framework": "dore"}, metadata=metadata) as bento_model:
        shutil.copytree(model_dir, bento_model.path, dirs_exist_ok=True)
    return str(bento_model.tag)
