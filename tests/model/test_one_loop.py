"""The one training loop runs every method with checkpoints: an interrupted classifier resumes
and ends where the uninterrupted run ends (it had no checkpoints before the loops were one)."""

import json

import pytest

from dore import methods, stages
from dore.config import PipelineParams, artifacts_dir
from dore.model.backbone import initial_backbone
from dore.training.loop import train

pytestmark = pytest.mark.slow


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("method", ["classifier", "lexical"])
def test_an_interrupted_run_resumes_to_the_uninterrupted_result(shared_data, tmp_path, monkeypatch, method):
    monkeypatch.setenv("DORE_DATA", str(shared_data))
    params = PipelineParams(limit_train=4, limit_dev=2, limit_test=2, artifacts=str(tmp_path),
                            train={"backbone": "tiny-bart", "max_steps": 4, "epochs": 4, "batch_docs": 2, "lr": 3e-3,
                                   "mixed_precision": "no", "log_every_steps": 1, "checkpoint_every_steps": 1})
    stages.convert(params)
    layout, docs = stages.load_layout(params), stages.load_split(params, "train")

    def run(out, on_log=None, resume=True):
        trainer = methods.get(method).Method(params.train, initial_backbone(params.train, layout), layout)
        result = train(params.train, trainer, docs, out, on_log=on_log, resume=resume)
        return result, trainer.model

    def stop_at_step_3(record):
        if record.get("step") == 3 and "loss" in record:
            raise Interrupt

    whole, whole_model = run(tmp_path / "whole")
    with pytest.raises(Interrupt):
        run(tmp_path / "cut", on_log=stop_at_step_3)
    resumed, resumed_model = run(tmp_path / "cut")
    losses = lambda path: [r["loss"] for r in map(json.loads, path.read_text().splitlines()) if "loss" in r]
    assert resumed.steps == whole.steps == 4
    assert losses(tmp_path / "cut" / "train_log.jsonl") == pytest.approx(losses(tmp_path / "whole" / "train_log.jsonl"),
                                                                          abs=1e-6)
    for (name, a), b in zip(whole_model.state_dict().items(), resumed_model.state_dict().values()):
        assert (a - b).abs().max() <= 1e-6, name
    assert artifacts_dir(params).exists()


def test_progress_is_a_plain_line_per_logged_step_outside_a_terminal(capsys):
    from dore.progress import Progress

    class Pipe:  # what DVC, Prefect and CI give a process: not a terminal
        def __init__(self):
            self.text = ""

        def write(self, text):
            self.text += text

        def flush(self):
            pass

        def isatty(self):
            return False

    pipe = Pipe()
    progress = Progress(4, 0, enabled=True, stream=pipe)
    progress.step({"loss": 1.5, "lr": 1e-4})
    progress.step(None)
    progress.dev(1, {"f1": 12.5})
    progress.close()
    lines = pipe.text.splitlines()
    assert lines[0].startswith("train step 1/4 loss 1.5000 lr 1.00e-04") and "eta" in lines[0]
    assert lines[1].startswith("train dev at epoch 1: step 2/4") and "dev_f1 12.50" in lines[1]
    assert len(lines) == 2 and "\r" not in pipe.text  # no bar redraws in a log file
    silent = Pipe()
    Progress(4, 0, enabled=False, stream=silent).step({"loss": 1.0, "lr": 1e-4})
    assert silent.text == ""  # the other processes of a multi-process run
    budgeted = Pipe()
    Progress(10**6, 0, enabled=True, stream=budgeted, budget_seconds=60).step({"loss": 1.0, "lr": 1e-4})
    eta = float(budgeted.text.split("eta ")[1].split(" s")[0])
    assert 0 < eta <= 60  # a clock-stopped run: what is left of its budget, not a million steps
