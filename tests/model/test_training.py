"""Training: resume after an interruption reproduces the uninterrupted run; checkpoints are atomic."""

import json

import pytest

from dore.data.docred import load_rel_info, read_docred
from dore.layout import docred_layout
from dore.model.backbone import load_backbone
from dore.train import Checkpointer, TrainConfig, train


@pytest.fixture(scope="module")
def small(shared_data):
    docs = sorted(read_docred(shared_data / "redocred" / "dev_revised.json")[0], key=lambda d: len(d.tokens))[:6]
    return docs, docred_layout(load_rel_info(shared_data / "docred" / "rel_info.json"), n_slots=40)


class Interrupt(Exception):
    pass


def run(small, out, *, stop_at=None):
    docs, layout = small
    cfg = TrainConfig(backbone="tiny-t5", sampling="dynamic", epochs=4, lr=3e-3, batch_docs=2,
                      checkpoint_every_steps=3, log_every_steps=1, mixed_precision="no", seed=7)

    def on_log(record):
        if stop_at is not None and record.get("step") == stop_at and "loss" in record:
            raise Interrupt  # as if killed right after the checkpoint of step stop_at - 1

    backbone = load_backbone("tiny-t5", layout, seed=0)
    return train(cfg, backbone, layout, docs, out, on_log=on_log)


def step_losses(history):
    return {r["step"]: r["loss"] for r in history if "loss" in r}


def test_resume_reproduces_the_uninterrupted_losses(small, tmp_path):
    full = step_losses(run(small, tmp_path / "full").history)
    with pytest.raises(Interrupt):
        run(small, tmp_path / "cut", stop_at=4)
    resumed = step_losses(run(small, tmp_path / "cut").history)
    assert len(full) == 12 and set(resumed) == set(full)
    for step in range(4, 13):
        assert resumed[step] == pytest.approx(full[step], abs=1e-5), step
    logged = [json.loads(line)["step"] for line in (tmp_path / "cut" / "train_log.jsonl").read_text().splitlines()
              if "loss" in line and "train_loss" not in line]
    assert logged == sorted(set(logged))  # the log restarts at the checkpoint: no repeated steps


def test_half_written_checkpoint_is_ignored(tmp_path):
    ckpt = Checkpointer(tmp_path)
    (tmp_path / "step-0000009.tmp").mkdir()  # a kill during a write leaves only this
    assert ckpt.latest() is None
