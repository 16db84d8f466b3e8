"""The one training loop every method runs (DORE, lexical generation, the classifier).

- A method (`Method`) turns documents into examples and batches and a batch into a loss; the
  loop owns everything else: AdamW with the method's parameter groups, linear warm-up and decay,
  gradient accumulation and clipping, bf16/fp16 where the hardware has it, through `accelerate`
  (`accelerate launch` or `torchrun`: each process takes every world-th document).
- Checkpoints are atomic (`dore.training.checkpoint`); `resume=True` continues from the newest
  one and reproduces the uninterrupted run (data order and RNG are restored). The time budget
  (`max_minutes`) sums the wall time of every resumed session and of the runs this one starts
  from (`spent_seconds`). With `lr_schedule="clock"` the
  learning rate warms up and decays over that budget instead of over steps (`clock_schedule`),
  so a run stopped by the clock ends at 0 when its budget does, however fast its steps turn out.
- Model selection on dev only: after each evaluated epoch the caller's `evaluate_dev(model, at)`
  returns dev metrics; when `select_metric` improves, `on_best(model, metrics)` saves the model.
  Only the main process evaluates, selects and writes; the others wait at a barrier.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedDataParallelKwargs, broadcast, send_to_device, set_seed
from transformers import get_linear_schedule_with_warmup

from dore.config import TrainConfig
from dore.data.model import Document, atomic_write_text
from dore.progress import Progress
from dore.training.batching import epoch_batches
from dore.training.checkpoint import Checkpointer

# Fault injection, for the tests of multi-process training: "<rank>:<step>" makes that process exit
# abruptly (status 137, as if killed) right after that optimizer step; the job must then fail
# rather than hang, and a rerun must resume from the last checkpoint.
FAULT_EXIT_AFTER_STEP = "DORE_FAULT_EXIT_AFTER_STEP"


class Method(Protocol):
    """What the loop needs from a method: its model, examples, batches and loss."""

    model: torch.nn.Module

    def examples(self, docs: Sequence[Document], counts: Counter) -> list[Any]:
        """One example per document (inputs encoded once); each has `input_ids` (for batching)."""

    def collate(self, examples: Sequence[Any], epoch: int, counts: Counter) -> dict[str, torch.Tensor] | None:
        """A micro-batch of tensors, or None when the examples give nothing to learn from."""

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        """(mean loss, number of items it averages over) of a batch under `model`."""

    def param_groups(self, cfg: TrainConfig) -> list[dict]:
        """AdamW parameter groups (learning rate and weight decay per group)."""


@dataclass
class TrainResult:
    steps: int
    epochs_done: float
    best_dev: dict | None
    history: list[dict]
    counts: dict
    seconds: float


class LossOf(torch.nn.Module):
    """A method's loss as one module's forward. DDP synchronises the gradients of what ran inside
    its wrapper's forward, and a method's loss reaches into the model (encoder, symbol head)
    rather than calling the model's own forward."""

    def __init__(self, method: Method):
        super().__init__()
        self.model, self.method = method.model, method

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        return self.method.loss(self.model, batch)


def processes() -> PartialState:
    """This process's place among those `torchrun` / `accelerate launch` started (one without
    them). Without a GPU, accelerate joins CPU processes (gloo) only when asked to."""
    return PartialState(cpu=not torch.cuda.is_available())


def mixed_precision(choice: str) -> str:
    """`auto`: bf16 (or fp16) on a GPU, full precision on CPU."""
    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def backward_and_step(accelerator: Accelerator, model, optimizer, scheduler, loss: torch.Tensor,
                      max_grad_norm: float) -> None:
    """One micro-batch inside `accelerator.accumulate`: clipping and the schedule only on the
    steps that really update (the last micro-batch of an accumulation)."""
    accelerator.backward(loss)
    if accelerator.sync_gradients:
        accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    if accelerator.sync_gradients:
        scheduler.step()
    optimizer.zero_grad()


def clock_schedule(optimizer: torch.optim.Optimizer, warmup_ratio: float, minutes: float,
                   seconds: Callable[[], float]) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over the first `warmup_ratio` of a `minutes` budget, then linear decay to 0
    at its end, read from `seconds()` (training time so far): a step-based schedule would need
    the step count of the budget in advance, and a wrong guess leaves the decay unfinished."""
    def factor(_step: int) -> float:
        done = min(seconds() / (60 * minutes), 1.0)
        if done < warmup_ratio:
            return done / warmup_ratio
        return (1.0 - done) / max(1.0 - warmup_ratio, 1e-9)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(cfg: TrainConfig, method: Method, train_docs: Sequence[Document], out_dir: str | Path, *,
          evaluate_dev: Callable[[torch.nn.Module, float], dict] | None = None, select_metric: str = "f1",
          on_best: Callable[[torch.nn.Module, dict], None] | None = None, resume: bool = True,
          on_log: Callable[[dict], None] | None = None, spent_seconds: float = 0.0) -> TrainResult:
    """Train `method.model` in place, checkpointing to `out_dir/checkpoints`, logging to
    `out_dir/train_log.jsonl`. `spent_seconds`: training time the runs this one starts from already
    used (`init_from`'s lineage); it counts inside `max_minutes`, so the clock stops and the clock
    schedule decays over what is left."""
    out_dir = Path(out_dir)
    minutes = None if cfg.max_minutes is None else cfg.max_minutes - spent_seconds / 60  # this run's share
    if minutes is not None and minutes <= 0:
        raise ValueError(f"max_minutes={cfg.max_minutes} is spent: the runs this one starts from trained "
                         f"{spent_seconds / 60:.1f} minutes")
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=mixed_precision(cfg.mixed_precision),
                              gradient_accumulation_steps=cfg.grad_accum,
                              # a method need not use every parameter in every batch (a pooler, a head)
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    set_seed(cfg.seed)
    counts: Counter = Counter()
    examples = method.examples(train_docs, counts)
    rank, world = accelerator.process_index, accelerator.num_processes
    batches_per_epoch = math.ceil(len(examples) // world / cfg.batch_docs)
    steps_per_epoch = max(1, batches_per_epoch // cfg.grad_accum)
    total_steps = cfg.max_steps or steps_per_epoch * cfg.epochs
    model = method.model  # what is checkpointed and selected; `loss_of` is what runs (DDP-wrapped with N processes)
    optimizer = torch.optim.AdamW(method.param_groups(cfg), lr=cfg.lr)
    clock = {"seconds": 0.0}  # training seconds as of the last step, the main process's (ranks agree on the lr)
    if cfg.lr_schedule == "clock":
        scheduler = clock_schedule(optimizer, cfg.warmup_ratio, minutes, lambda: clock["seconds"])
    else:
        scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    loss_of, optimizer = accelerator.prepare(LossOf(method), optimizer)
    ckpt = Checkpointer(out_dir / "checkpoints", cfg.keep_checkpoints)
    log_path = out_dir / "train_log.jsonl"
    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "best": None, "history": [], "seconds": 0.0}
    if resume and (latest := ckpt.latest()) is not None:
        state = Checkpointer.load(latest, model, optimizer, scheduler)
        counts = Counter(state.get("counts", counts))  # counted over the whole run, not this session only
        accelerator.print(f"resumed from {latest} (step {state['step']})")
        if accelerator.is_main_process:  # the log restarts from the checkpoint: no repeated steps
            atomic_write_text(log_path, "".join(json.dumps(r) + "\n" for r in state["history"]))
    elif accelerator.is_main_process and log_path.exists():
        log_path.unlink()  # a fresh run starts a fresh log
    # the budget counts training time over every resumed session, not just this one
    start = time.perf_counter() - state.get("seconds", 0.0)
    clock["seconds"] = state.get("seconds", 0.0)
    out_dir.mkdir(parents=True, exist_ok=True)

    def log(record: dict) -> None:
        state["history"].append(record)
        if accelerator.is_main_process:
            with open(log_path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        if on_log:
            on_log(record)

    stop = cfg.max_steps is not None and state["step"] >= cfg.max_steps  # a finished run resumes as finished
    fault = tuple(map(int, os.environ[FAULT_EXIT_AFTER_STEP].split(":"))) if FAULT_EXIT_AFTER_STEP in os.environ else None
    budget_left = None if minutes is None else minutes * 60 - state.get("seconds", 0.0)
    progress = Progress(total_steps, state["step"], enabled=accelerator.is_main_process, budget_seconds=budget_left)
    def budget_spent() -> bool:
        """The clock has run out before an epoch starts (a dev evaluation may end past the budget:
        no step follows it). The main process's clock decides for all."""
        if minutes is None:
            return False
        seconds = time.perf_counter() - start
        if world > 1:
            seconds = float(broadcast(torch.tensor([seconds], device=accelerator.device), from_process=0)[0])
        return seconds / 60 >= minutes

    loss_of.train()
    while not stop and state["epoch"] < cfg.epochs and not budget_spent():
        epoch = state["epoch"]
        batches = epoch_batches([len(e.input_ids) for e in examples], cfg.batch_docs, seed=cfg.seed, epoch=epoch,
                                rank=rank, world=world, group_by_length=cfg.group_by_length)
        if state["batch_in_epoch"] == 0:  # each epoch leaves out others
            counts["documents_left_out_for_even_shards"] += len(examples) % world
        loss_sum, weight_sum = 0.0, 0
        for b in range(state["batch_in_epoch"], len(batches)):
            batch = method.collate([examples[i] for i in batches[b]], epoch, counts)
            state["batch_in_epoch"] = b + 1
            if batch is None:  # e.g. the classifier's documents without a single entity pair
                counts["batches_without_items"] += 1
                continue
            batch = send_to_device(batch, accelerator.device)
            with accelerator.accumulate(loss_of):
                loss, weight = loss_of(batch)
                objective = loss
                if world > 1:  # DDP averages the processes' gradients: weigh each by its share of the global batch
                    total = accelerator.reduce(torch.tensor(float(weight), device=accelerator.device), "sum")
                    objective = loss * (weight * world / total.clamp(min=1))
                backward_and_step(accelerator, loss_of, optimizer, scheduler, objective, cfg.max_grad_norm)
            loss_sum, weight_sum = loss_sum + loss.item() * weight, weight_sum + weight
            if not accelerator.sync_gradients:
                continue
            state["step"] += 1
            record = None
            if state["step"] % cfg.log_every_steps == 0 or state["step"] == 1:
                record = {"step": state["step"], "epoch": epoch + (b + 1) / len(batches), "loss": loss.item(),
                          "lr": scheduler.get_last_lr()[0], "seconds": round(time.perf_counter() - start, 1)}
                log(record)
            progress.step(record)
            seconds = time.perf_counter() - start
            if world > 1:  # clocks differ across processes: the main one's decides the lr and the stop
                seconds = float(broadcast(torch.tensor([seconds], device=accelerator.device), from_process=0)[0])
            clock["seconds"] = seconds
            stop = (cfg.max_steps is not None and state["step"] >= cfg.max_steps) or \
                   (minutes is not None and seconds / 60 >= minutes)
            if fault == (rank, state["step"]):
                os._exit(137)
            state["seconds"], state["counts"] = time.perf_counter() - start, dict(counts)
            if (state["step"] % cfg.checkpoint_every_steps == 0 or stop) and accelerator.is_main_process:
                ckpt.save(state["step"], model, optimizer, scheduler, state)
            if stop:
                break
        epoch_done = state["batch_in_epoch"] >= len(batches)
        if epoch_done:
            state["epoch"], state["batch_in_epoch"] = epoch + 1, 0
            log({"step": state["step"], "epoch": epoch + 1, "train_loss": loss_sum / max(weight_sum, 1)})
        # evaluate at the end of an epoch, and also when the budget stops training mid-epoch, so a
        # budget shorter than an epoch still selects (and saves) a model
        due = epoch_done and ((epoch + 1) % cfg.eval_every_epochs == 0 or epoch + 1 == cfg.epochs)
        if evaluate_dev and (due or stop):
            at = epoch + 1 if epoch_done else round(epoch + state["batch_in_epoch"] / len(batches), 3)
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                loss_of.eval()
                metrics = evaluate_dev(model, at)
                loss_of.train()
                progress.dev(at, metrics)
                log({"step": state["step"], "epoch": at, **{f"dev_{k}": v for k, v in metrics.items()
                                                            if isinstance(v, (int, float))}})
                if state["best"] is None or metrics.get(select_metric, 0) > state["best"].get(select_metric, 0):
                    state["best"] = {"epoch": at, "step": state["step"], **metrics}
                    if on_best:
                        on_best(model, state["best"])
            accelerator.wait_for_everyone()
        state["counts"] = dict(counts)
        state["seconds"] = time.perf_counter() - start  # the dev evaluation just run counts in the budget too
        if (epoch_done or stop) and accelerator.is_main_process:
            ckpt.save(state["step"], model, optimizer, scheduler, state)
    progress.close()
    accelerator.wait_for_everyone()
    return TrainResult(state["step"], state["epoch"], state["best"], state["history"], dict(counts),
                       time.perf_counter() - start)
