"""Training: resume after an interruption reproduces the uninterrupted run; checkpoints are atomic."""

import json
from collections import Counter

import pytest

from dore.config import TrainConfig
from dore.methods.dore import DoreMethod
from dore.model.backbone import load_backbone
from dore.training.checkpoint import Checkpointer
from dore.training.loop import train
from tests.conftest import fixture_docs, fixture_layout


@pytest.fixture(scope="module")
def small():
    """The fixture's 6 train and dev documents (129-130 tokens, 8-26 relations), shortest first."""
    docs = sorted(fixture_docs("train", "dev"), key=lambda d: len(d.tokens))
    assert len(docs) == 6
    return docs, fixture_layout(n_slots=40)


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
    return train(cfg, DoreMethod(cfg, backbone, layout), docs, out, on_log=on_log)


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


@pytest.mark.parametrize("family", ["tiny-t5", "tiny-bart", "minilm"])
def test_symbol_loss_and_length_buckets_equal_the_full_forward(small, family):
    """The symbol loss is the full model's cross-entropy renormalised over the symbol ids, and
    decoding rows in length buckets changes nothing but the padding."""
    import torch

    from dore.methods.dore import decoder_sequences
    from dore.methods.seq2seq import IGNORE, collate, make_examples, row_forward, row_loss, token_loss
    from dore.symbolic.sampling import SamplingConfig

    docs, layout = small
    backbone = load_backbone(family, layout, seed=0)
    model = backbone.model.eval()
    examples = make_examples(docs[:3], backbone, layout, None, Counter())
    prefix = list(backbone.decoder_prefix)
    batch = collate([(e, decoder_sequences(e, layout, SamplingConfig.parse("dynamic"), "rows", seed=0, epoch=0,
                                           prefix=prefix, code_to_id=backbone.code_to_id, max_len=None,
                                           counts=Counter())) for e in examples], backbone.pad_id, len(prefix) + 1)
    lengths = batch["decoder_attention_mask"].sum(1)
    assert lengths.max() > 2 * lengths.min()  # buckets really differ in width
    ids = torch.tensor(backbone.code_to_id)
    with torch.no_grad():
        logits = row_forward(model, batch)
        full, n = token_loss(logits, batch["labels"], 0.0)
        to_code = torch.full((int(ids.max()) + 1,), IGNORE)
        to_code[ids] = torch.arange(len(ids))
        labels = batch["labels"]
        restricted, _ = token_loss(logits[..., ids], torch.where(labels == IGNORE, labels, to_code[labels.clamp(min=0)]), 0.0)
        bucketed, n_b = row_loss(model, batch, bucket=True)
        symbol, n_s = row_loss(model, batch, code_to_id=ids, bucket=True)
    assert n == n_b == n_s
    assert bucketed.item() == pytest.approx(full.item(), abs=1e-4)
    assert symbol.item() == pytest.approx(restricted.item(), abs=1e-4)
    assert symbol.item() < full.item()  # the ordinary words' probability mass is gone


def test_attention_dropout_switch_reaches_every_attention(small):
    """`attention_dropout` 0 with the hidden dropout off too: a training-mode step is the eval-mode
    step (the grouped cross-attention of training included); left at MiniLM's 0.1, it is not."""
    import torch

    from dore.methods.dore import DoreMethod
    from dore.model.backbone import initial_backbone

    docs, layout = small
    losses = {}
    for rate in (None, 0.0):
        cfg = TrainConfig(backbone="minilm", sampling="none", entity_embeddings=True, pair_logits=True,
                          attention_dropout=rate, mixed_precision="no")
        method = DoreMethod(cfg, initial_backbone(cfg, layout), layout)
        for name, module in method.model.named_modules():  # hidden-state dropout off: `*.self.dropout`
            if isinstance(module, torch.nn.Dropout) and not name.endswith("self.dropout"):  # is the attention's
                module.p = 0.0
        batch = method.collate(method.examples(docs[:2], Counter()), 0, Counter())
        with torch.no_grad():
            torch.manual_seed(0)
            train_loss = method.loss(method.model.train(), batch)[0].item()
            losses[rate] = (train_loss, method.loss(method.model.eval(), batch)[0].item())
    assert losses[0.0][0] == pytest.approx(losses[0.0][1], abs=1e-5)
    assert abs(losses[None][0] - losses[None][1]) > 1e-4


def test_length_grouped_batches_are_a_shuffled_partition():
    from dore.training.batching import epoch_batches

    lengths = [(i * 37) % 101 for i in range(103)]
    batches = epoch_batches(lengths, 4, seed=1, epoch=0, group_by_length=True)
    assert sorted(i for b in batches for i in b) == list(range(103))
    assert batches != epoch_batches(lengths, 4, seed=1, epoch=1, group_by_length=True)
    assert batches == epoch_batches(lengths, 4, seed=1, epoch=0, group_by_length=True)
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches)
    plain = epoch_batches(lengths, 4, seed=1, epoch=0)
    assert spread < sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in plain) / 4


def test_a_budget_that_stops_mid_epoch_still_selects_a_model(small, tmp_path):
    docs, layout = small
    cfg = TrainConfig(backbone="tiny-t5", epochs=3, max_steps=2, batch_docs=2, log_every_steps=1, mixed_precision="no")
    selected = []
    result = train(cfg, DoreMethod(cfg, load_backbone("tiny-t5", layout, seed=0), layout), docs, tmp_path,
                   evaluate_dev=lambda model, epoch: {"f1": 1.0}, on_best=lambda model, m: selected.append(m))
    assert result.steps == 2 and result.epochs_done == 0
    assert [m["epoch"] for m in selected] == [pytest.approx(2 / 3, abs=1e-3)] and result.best_dev["step"] == 2
    again = train(cfg, DoreMethod(cfg, load_backbone("tiny-t5", layout, seed=0), layout), docs, tmp_path, resume=False)
    logged = (tmp_path / "train_log.jsonl").read_text().splitlines()
    assert len(logged) == len(again.history)  # a fresh run does not append to the old log


def test_the_dev_evaluation_counts_in_the_time_a_resumed_run_starts_from(small, tmp_path):
    """Budget B includes dev evaluation: the checkpoint after an epoch's evaluation carries its time,
    so a run resumed from there (e.g. with more epochs) does not get that time back."""
    import time

    docs, layout = small
    cfg = TrainConfig(backbone="tiny-t5", epochs=1, batch_docs=3, log_every_steps=1, mixed_precision="no")

    def slow_dev(model, epoch):
        time.sleep(1.5)
        return {"f1": 1.0}

    result = train(cfg, DoreMethod(cfg, load_backbone("tiny-t5", layout, seed=0), layout), docs, tmp_path,
                   evaluate_dev=slow_dev)
    saved = json.loads((Checkpointer(tmp_path / "checkpoints").latest() / "state.json").read_text())
    assert result.steps == 2 and saved["step"] == 2 and saved["seconds"] >= 1.5


def test_no_step_follows_a_dev_evaluation_that_ends_past_the_budget(small, tmp_path):
    """A clock budget that runs out during an epoch's dev evaluation ends the run there: no further
    step, and no second evaluation of an almost unchanged model past the budget."""
    import time

    docs, layout = small
    cfg = TrainConfig(backbone="tiny-t5", epochs=1000, max_minutes=1.5 / 60, batch_docs=3, log_every_steps=1,
                      mixed_precision="no")
    evaluated = []

    def slow_dev(model, epoch):
        time.sleep(3.0)  # past the 1.5-second budget
        evaluated.append(epoch)
        return {"f1": 1.0}

    result = train(cfg, DoreMethod(cfg, load_backbone("tiny-t5", layout, seed=0), layout), docs, tmp_path,
                   evaluate_dev=slow_dev)
    assert len(evaluated) == 1 and result.best_dev["step"] == result.steps


@pytest.mark.parametrize("spec", ["tiny-bart", "minilm"])
def test_entity_embeddings_train_save_and_reload(small, tmp_path, spec):
    """The entity table learns (in the lr_new group), is saved in the safetensors and restored by
    `Extractor.from_pretrained`, which then extracts exactly what the trained model extracted."""
    import torch

    from dore.config import DecodingConfig
    from dore.extract import Extractor
    from dore.model import entities
    from dore.model.backbone import initial_backbone

    docs, layout = small
    cfg = TrainConfig(backbone=spec, max_steps=2, epochs=2, lr=1e-4, lr_new=1e-2, batch_docs=2, log_every_steps=1,
                      checkpoint_every_steps=10**6, mixed_precision="no", entity_embeddings=True)
    backbone = initial_backbone(cfg, layout)
    train(cfg, DoreMethod(cfg, backbone, layout), docs[:4], tmp_path / "train")
    trained = entities.of(backbone.model)
    assert trained is not None and float(trained.project.weight.detach().abs().sum()) > 0  # zero at the start
    extractor = Extractor(backbone, layout, DecodingConfig(mode="rows", symbol_head=True))
    extractor.save_pretrained(tmp_path / "model")
    reloaded = Extractor.from_pretrained(tmp_path / "model")
    restored = entities.of(reloaded.backbone.model)
    assert restored is not None and torch.equal(restored.project.weight, trained.project.weight)
    assert reloaded.extract(docs[:2]) == extractor.extract(docs[:2])

    plain = Extractor(load_backbone("tiny-bart", layout, seed=0), layout)
    plain.save_pretrained(tmp_path / "plain")
    assert entities.of(Extractor.from_pretrained(tmp_path / "plain").backbone.model) is None


def test_entity_embeddings_need_the_symbol_loss(small):
    from dore.model.backbone import initial_backbone

    with pytest.raises(ValueError, match="symbol_loss"):
        initial_backbone(TrainConfig(backbone="tiny-bart", symbol_loss=False, entity_embeddings=True), small[1])


def test_a_batch_without_any_target_row_is_skipped_not_a_crash():
    from dore.methods.seq2seq import collate

    assert collate([(None, []), (None, [])], pad_id=0, n_prefix=1) is None


def test_the_clock_schedule_follows_the_share_of_the_budget_spent():
    import torch

    from dore.training.loop import clock_schedule

    seconds = [0.0]
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = clock_schedule(optimizer, warmup_ratio=0.1, minutes=10, seconds=lambda: seconds[0])
    lrs = {}
    for at in (0, 30, 60, 300, 540, 600, 700):
        seconds[0] = at
        optimizer.step()
        scheduler.step()
        lrs[at] = optimizer.param_groups[0]["lr"]
    assert lrs == pytest.approx({0: 0.0, 30: 0.5, 60: 1.0, 300: 5 / 9, 540: 1 / 9, 600: 0.0, 700: 0.0})


def test_a_clock_budgeted_run_decays_its_lr_over_the_budget(small, tmp_path):
    """Stopped by the clock with epochs that never bind: the lr rises, then falls towards 0 by the
    end of the budget (a step schedule over 1000 epochs would still be warming up)."""
    docs, layout = small
    cfg = TrainConfig(backbone="tiny-bart", epochs=1000, max_minutes=0.15, lr_schedule="clock", warmup_ratio=0.2,
                      lr=1e-3, batch_docs=2, log_every_steps=1, checkpoint_every_steps=10**6, mixed_precision="no")
    result = train(cfg, DoreMethod(cfg, load_backbone("tiny-bart", layout, seed=0), layout), docs, tmp_path)
    lrs = [r["lr"] for r in result.history if "lr" in r]
    assert 0.15 * 60 <= result.seconds < 0.15 * 60 + 10 and len(lrs) > 10
    peak = lrs.index(max(lrs))
    assert 0 < peak < len(lrs) - 1 and max(lrs) > 0.7e-3 and lrs[-1] < 0.15e-3


def test_the_clock_schedule_needs_a_budget():
    with pytest.raises(ValueError, match="max_minutes"):
        TrainConfig(lr_schedule="clock")


def test_the_runs_a_model_starts_from_count_inside_its_budget(small, tmp_path):
    """`spent_seconds` (an init_from model's lineage) comes off `max_minutes`: with all but 10 ms of
    a minute spent, the clock stops the run after its first step; with none spent, max_steps binds;
    with more than the budget spent, the run is refused before it starts."""
    docs, layout = small
    cfg = TrainConfig(backbone="tiny-bart", epochs=1000, max_steps=4, max_minutes=1.0, lr=1e-3, batch_docs=2,
                      log_every_steps=1, checkpoint_every_steps=10**6, mixed_precision="no")

    def fresh(out, spent):
        return train(cfg, DoreMethod(cfg, load_backbone("tiny-bart", layout, seed=0), layout), docs, out,
                     spent_seconds=spent)

    assert fresh(tmp_path / "none", 0.0).steps == 4
    assert fresh(tmp_path / "most", 59.99).steps == 1
    with pytest.raises(ValueError, match="spent"):
        fresh(tmp_path / "all", 61.0)
