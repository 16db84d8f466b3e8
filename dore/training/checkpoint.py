"""Atomic, resumable training checkpoints: weights as safetensors, trainer state without pickles
of arbitrary objects (`torch.load(weights_only=True)`), and the RNG states, so a resumed run
reproduces the uninterrupted one."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from dore.data.model import atomic_write_text


class Checkpointer:
    """Atomic checkpoints: write `step-N.tmp/`, fsync, rename to `step-N/`, then point `latest` at it."""

    def __init__(self, folder: Path, keep: int = 1):
        self.folder, self.keep = Path(folder), keep

    def latest(self) -> Path | None:
        pointer = self.folder / "latest"
        if not pointer.exists():
            return None
        path = self.folder / pointer.read_text().strip()
        return path if (path / "state.json").exists() else None

    def save(self, step: int, model, optimizer, scheduler, state: dict) -> Path:
        final = self.folder / f"step-{step:07d}"
        tmp = self.folder / f"step-{step:07d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(_untie(weights), str(tmp / "model.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state(), "python_rng": _py_rng_state()}, tmp / "trainer.pt")
        (tmp / "state.json").write_text(json.dumps(state))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        atomic_write_text(self.folder / "latest", final.name)
        for old in sorted(self.folder.glob("step-*"))[: -self.keep]:
            if old != final and not old.name.endswith(".tmp"):
                shutil.rmtree(old, ignore_errors=True)
        return final

    @staticmethod
    def load(path: Path, model, optimizer, scheduler) -> dict:
        model.load_state_dict(load_file(str(path / "model.safetensors")), strict=False)
        # Our own trainer state (tensors and plain numbers only): weights_only forbids arbitrary objects.
        blob = torch.load(path / "trainer.pt", weights_only=True)
        optimizer.load_state_dict(blob["optimizer"])
        scheduler.load_state_dict(blob["scheduler"])
        torch.set_rng_state(blob["torch_rng"])
        random.setstate(_py_rng_from(blob["python_rng"]))
        return json.loads((path / "state.json").read_text())


def _untie(weights: dict) -> dict:
    """safetensors refuses shared storage: give tied tensors their own copy."""
    seen, out = {}, {}
    for k, v in weights.items():
        key = (v.data_ptr(), tuple(v.shape))
        out[k] = v.clone() if key in seen else v
        seen[key] = k
    return out


def _py_rng_state():
    version, state, gauss = random.getstate()
    return {"version": version, "state": torch.tensor(state, dtype=torch.long), "gauss": gauss}


def _py_rng_from(d):
    return d["version"], tuple(int(x) for x in d["state"].tolist()), d["gauss"]

