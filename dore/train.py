"""Stage `train`: fine-tune a seq2seq backbone to generate DORE targets.

- Parallel rows (default): each document is encoded once per step, its rows are decoded as a
  batch that shares the (expanded, not copied) encoder states. `mode="sequence"` trains the
  whole matrix as one sequence, for comparison. `target_format="lexical"` trains the lexical
  generation baseline instead (relations as text, `dore.baselines.lexical`; mode="sequence").
- Negatives are re-sampled every epoch from (seed, epoch, document).
- AdamW (weight decay 0.01), linear warm-up and decay, gradient accumulation and clipping,
  bf16/fp16 where the hardware has it, through `accelerate` (multi-GPU / multi-node with
  `accelerate launch` or `torchrun`: each process takes every world-th document).
- Checkpoints are written to a temporary folder and renamed (atomic), so `kill -9` never
  leaves a half checkpoint; `resume=True` continues from the newest one and reproduces the
  uninterrupted run (data order and dropout RNG are restored).
- Model selection on dev only (the caller passes a dev evaluation function).
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from dore.data.model import Document, atomic_write_text
from dore.layout import IdLayout, SlotAssignment
from dore.linearize import build_targets
from dore.sampling import SamplingConfig

IGNORE = -100


class TrainConfig(BaseModel):
    """Training hyper-parameters (the CLI, DVC params and Prefect parameters all map onto this)."""

    model_config = ConfigDict(extra="forbid")
    backbone: str = "minilm"
    mode: Literal["rows", "sequence"] = "rows"
    target_format: Literal["symbolic", "lexical"] = Field(
        "symbolic", description="symbolic: DORE's symbol targets; lexical: relations written as text (the lexical "
        "generation baseline, dore.baselines.lexical: one sequence per document, needs mode=sequence)")
    sampling: str = Field("dynamic", description="negative sampling spec, e.g. dynamic, diagonal:1, random:0.1, all")
    order: Literal["row-column", "annotation", "random"] = Field(
        "row-column", description="target tuple order (annotation / random: the paper's order ablations)")
    epochs: int = 10
    max_steps: int | None = Field(None, description="stop after this many optimizer steps")
    max_minutes: float | None = Field(None, description="stop after this much training wall time, summed over resumed runs")
    lr: float = 5e-5
    lr_new: float | None = Field(None, description="learning rate of newly initialised parameters (cross-attention, new embeddings' owners); default lr")
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    batch_docs: int = 4
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    label_smoothing: float = 0.0
    symbol_loss: bool = Field(True, description="softmax over the symbol tokens only: the constrained decoder never "
                              "chooses anything else, and the output layer shrinks from the vocabulary to ~100 rows")
    group_by_length: bool = Field(True, description="batch documents of similar length and decode rows in length "
                                  "buckets, so little compute goes to padding")
    max_source_length: int | None = None
    chunk_length: int | None = Field(None, description="encode long documents in windows of this many tokens and "
                                     "concatenate their states (Fusion-in-Decoder); max_source_length caps the total")
    seed: int = 42
    init: Literal["number", "random"] = "number"
    init_from: str | None = Field(None, description="start from a trained DORE model directory (distant pre-training -> fine-tuning)")
    entity_embeddings: bool = Field(False, description="document-aware entity symbols: each slot's input and output "
                                    "embedding gets its projected mean encoder state at its markers (dore.model.entities)")
    mixed_precision: Literal["no", "bf16", "fp16", "auto"] = "auto"
    eval_every_epochs: int = 1
    checkpoint_every_steps: int = 50
    keep_checkpoints: int = 1
    log_every_steps: int = 10

    @model_validator(mode="after")
    def _entity_table_needs_the_symbol_head(self) -> "TrainConfig":
        if self.entity_embeddings and not self.symbol_loss:
            raise ValueError("entity_embeddings needs symbol_loss: the entity table enters through the symbol head")
        return self


@dataclass
class Example:
    """One training document, encoded once (inputs do not change across epochs)."""

    doc: Document
    assignment: SlotAssignment
    input_ids: list[int]


@dataclass
class TrainResult:
    steps: int
    epochs_done: float
    best_dev: dict | None
    history: list[dict]
    counts: dict
    seconds: float


def make_examples(docs: Sequence[Document], backbone, layout: IdLayout, max_source_length: int | None,
                  counts: Counter, chunk_length: int | None = None) -> list[Example]:
    from dore.model.inputs import encode_document

    out = []
    for doc in docs:
        assignment = layout.assign(doc)
        enc = encode_document(doc, assignment, backbone.tokenizer, backbone.code_to_id,
                              max_source_length or (None if chunk_length else backbone.max_source_length),
                              chunk_length=chunk_length, pad_id=backbone.pad_id)
        counts["truncated_inputs"] += int(enc.truncated)
        counts["entities_lost_to_truncation"] += len(enc.lost_entities)
        out.append(Example(doc, assignment, enc.input_ids))
    return out


def decoder_sequences(ex: Example, layout: IdLayout, sampling: SamplingConfig, mode: str, *, seed: int,
                      epoch: int, prefix: list[int], code_to_id: Sequence[int], max_len: int | None,
                      counts: Counter, order: str = "row-column") -> list[list[int]]:
    """Full decoder token sequences (prefix + head + target) of one document for one epoch."""
    t = build_targets(ex.doc, layout, sampling, seed=seed, epoch=epoch, assignment=ex.assignment, order=order)
    counts.update({f"lost_{k}": v for k, v in t.lost.items()})
    if mode == "rows":
        seqs = [prefix + [code_to_id[h]] + [code_to_id[c] for c in codes] for h, codes in t.rows().items()]
    else:
        seqs = [prefix + [code_to_id[c] for c in t.sequence()]]
    if max_len is not None:
        tuple_len = layout.arity - (mode == "rows") + 1
        for i, s in enumerate(seqs):
            if len(s) > max_len:  # cut at a tuple boundary and keep EOS; counted, never silent
                keep = len(prefix) + (mode == "rows") + ((max_len - len(prefix) - (mode == "rows") - 1) // tuple_len) * tuple_len
                seqs[i] = s[:keep] + [s[-1]]
                counts["targets_over_decoder_length"] += 1
    return seqs


def epoch_batches(lengths: Sequence[int], batch_docs: int, *, seed: int, epoch: int, rank: int = 0, world: int = 1,
                  group_by_length: bool = False) -> list[list[int]]:
    """This process's batches of document indices for one epoch, a pure function of (seed, epoch).

    With `group_by_length`, each window of 16 batches is sorted by length before it is cut into
    batches, and the batches are then shuffled (HF's LengthGroupedSampler idea): far less padding,
    still a random order.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    mine = order[rank::world]
    if group_by_length:
        window = batch_docs * 16
        mine = [i for k in range(0, len(mine), window) for i in sorted(mine[k: k + window], key=lambda i: -lengths[i])]
    batches = [mine[i: i + batch_docs] for i in range(0, len(mine), batch_docs)]
    if group_by_length:
        rng.shuffle(batches)
    return batches


def collate(batch: list[tuple[Example, list[list[int]]]], pad_id: int, n_prefix: int) -> dict:
    """Pad a micro-batch: documents for the encoder, their rows for the decoder."""
    src_len = max(len(ex.input_ids) for ex, _ in batch)
    input_ids = torch.full((len(batch), src_len), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), src_len), dtype=torch.long)
    rows, row_doc = [], []
    for d, (ex, seqs) in enumerate(batch):
        input_ids[d, : len(ex.input_ids)] = torch.tensor(ex.input_ids)
        attention[d, : len(ex.input_ids)] = input_ids[d, : len(ex.input_ids)] != pad_id  # chunks hold padding
        rows.extend(seqs)
        row_doc.extend([d] * len(seqs))
    dec_len = max(len(s) for s in rows) - 1
    dec_in = torch.full((len(rows), dec_len), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), dec_len), IGNORE, dtype=torch.long)
    dec_mask = torch.zeros((len(rows), dec_len), dtype=torch.bool)
    for i, s in enumerate(rows):
        s = torch.tensor(s)
        dec_mask[i, : len(s) - 1] = True  # by length: T5's decoder start token is the pad id
        dec_in[i, : len(s) - 1] = s[:-1]
        labels[i, : len(s) - 1] = s[1:]
        labels[i, : n_prefix - 1] = IGNORE  # the prefix (and row head) is given, not predicted
    return {"input_ids": input_ids, "attention_mask": attention, "row_doc": torch.tensor(row_doc),
            "decoder_input_ids": dec_in, "decoder_attention_mask": dec_mask,
            "labels": labels}


def row_forward(model, family: str, batch: dict, chunk_length: int | None = None) -> torch.Tensor:
    """Encode each document once, decode all its rows against the expanded encoder states."""
    from transformers.modeling_outputs import BaseModelOutput

    hidden = encode(model, family, batch, chunk_length)
    row_doc = batch["row_doc"]
    out = model(encoder_outputs=BaseModelOutput(last_hidden_state=hidden.index_select(0, row_doc)),
                attention_mask=batch["attention_mask"].index_select(0, row_doc),
                decoder_input_ids=batch["decoder_input_ids"],
                decoder_attention_mask=batch["decoder_attention_mask"].long())
    return out.logits


def encode(model, family: str, batch: dict, chunk_length: int | None = None) -> torch.Tensor:
    from dore.model.inputs import encode_chunks

    extra = {}
    if family == "led":
        glob = torch.zeros_like(batch["attention_mask"])
        glob[:, :: chunk_length or glob.shape[1]] = 1  # the first token of every window
        extra["global_attention_mask"] = glob
    return encode_chunks(model.get_encoder(), batch["input_ids"], batch["attention_mask"], chunk_length, **extra)


def length_buckets(lengths: torch.Tensor, ratio: float = 1.5) -> list[torch.Tensor]:
    """Row indices grouped so that no row is padded past `ratio` x its own length (rows of a
    document differ a lot: a head with no relation has one token, a busy one forty)."""
    order = lengths.argsort().tolist()
    buckets, current = [], []
    for i in order:
        if current and lengths[i] > ratio * lengths[current[0]]:
            buckets.append(current)
            current = []
        current.append(i)
    return [torch.tensor(b, dtype=torch.long) for b in buckets + [current] if b]


def row_loss(model, family: str, batch: dict, *, label_smoothing: float = 0.0,
             code_to_id: torch.Tensor | None = None, bucket: bool = False,
             chunk_length: int | None = None) -> tuple[torch.Tensor, int]:
    """Mean token cross-entropy of a collated batch, encoding each document once.

    `code_to_id`: take the softmax over these ids only (the symbol head); `bucket`: decode rows in
    length buckets, each cut to its own longest row, instead of padding all to the longest.
    """
    from dore.model import entities
    from dore.model.decoding import SymbolHead

    if code_to_id is None and entities.of(model) is not None:
        raise ValueError("entity embeddings train with the symbol loss (symbol_loss=True)")
    if code_to_id is None and not bucket:
        return token_loss(row_forward(model, family, batch, chunk_length), batch["labels"], label_smoothing)
    hidden = encode(model, family, batch, chunk_length)
    mask = batch["decoder_attention_mask"].long()
    groups = length_buckets(mask.sum(1)) if bucket else [torch.arange(len(mask))]
    head = SymbolHead(model, code_to_id) if code_to_id is not None else None
    if head is not None:
        to_code = torch.full((int(code_to_id.max()) + 1,), IGNORE, dtype=torch.long, device=code_to_id.device)
        to_code[code_to_id] = torch.arange(len(code_to_id), device=code_to_id.device)
    total, n_total = hidden.new_zeros((), dtype=torch.float), 0
    for rows in groups:
        rows = rows.to(hidden.device)
        width = int(mask[rows].sum(1).max())
        docs = batch["row_doc"][rows]
        dec_in, dec_mask = batch["decoder_input_ids"][rows, :width], mask[rows, :width]
        labels = batch["labels"][rows, :width]
        if head is not None:  # cross-attention keys/values once per document
            logits = head.forward(hidden, batch["attention_mask"], dec_in, dec_mask, row_doc=docs,
                                  source_ids=batch["input_ids"])
            labels = torch.where(labels == IGNORE, labels, to_code[labels.clamp(min=0)])
        else:
            from transformers.modeling_outputs import BaseModelOutput
            logits = model(encoder_outputs=BaseModelOutput(last_hidden_state=hidden.index_select(0, docs)),
                           attention_mask=batch["attention_mask"].index_select(0, docs),
                           decoder_input_ids=dec_in, decoder_attention_mask=dec_mask).logits
        loss, n = token_loss(logits, labels, label_smoothing)
        total, n_total = total + loss * n, n_total + n
    return total / max(n_total, 1), n_total


def token_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float) -> tuple[torch.Tensor, int]:
    n = int((labels != IGNORE).sum())
    loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1),
                                             ignore_index=IGNORE, label_smoothing=label_smoothing, reduction="sum")
    return loss / max(n, 1), n


def param_groups(model, cfg: TrainConfig) -> list[dict]:
    """AdamW groups: no decay on biases/norms; `lr_new` for parameters the backbone did not have
    pretrained (cross-attention of a warm-started decoder, the output layer)."""
    new_markers = ("crossattention", "cross_attn", "encoder_attn", "EncDecAttention", "enc_to_dec_proj",
                   "dore_entities")
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim < 2 or "norm" in name.lower() or name.endswith(".bias")
        is_new = cfg.lr_new is not None and any(m in name for m in new_markers)
        groups.setdefault((no_decay, is_new), []).append(p)
    return [{"params": ps, "weight_decay": 0.0 if nd else cfg.weight_decay,
             "lr": cfg.lr_new if new else cfg.lr} for (nd, new), ps in groups.items()]


def backward_and_step(accelerator, model, optimizer, scheduler, loss: torch.Tensor, max_grad_norm: float) -> None:
    """One micro-batch inside `accelerator.accumulate`: clipping and the schedule only on the
    steps that really update (the last micro-batch of an accumulation)."""
    accelerator.backward(loss)
    if accelerator.sync_gradients:
        accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    if accelerator.sync_gradients:
        scheduler.step()
    optimizer.zero_grad()


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
        from safetensors.torch import save_file

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
                import os
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
        from safetensors.torch import load_file

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


def _mixed_precision(choice: str) -> str:
    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def train(cfg: TrainConfig, backbone, layout: IdLayout, train_docs: Sequence[Document], out_dir: str | Path, *,
          evaluate_dev: Callable[[object, int], dict] | None = None, select_metric: str = "f1",
          on_best: Callable[[object, dict], None] | None = None, resume: bool = True,
          on_log: Callable[[dict], None] | None = None) -> TrainResult:
    """Train `backbone.model` in place, checkpointing to `out_dir/checkpoints`.

    After each evaluated epoch `evaluate_dev(model, epoch)` returns dev metrics (percent); when
    `select_metric` improves, `on_best(model, metrics)` is called (it saves the selected model).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    if cfg.target_format == "lexical" and cfg.mode != "sequence":
        raise ValueError(f"target_format='lexical' writes one sequence per document: it needs mode='sequence', "
                         f"not {cfg.mode!r}")
    out_dir = Path(out_dir)
    accelerator = Accelerator(mixed_precision=_mixed_precision(cfg.mixed_precision),
                              gradient_accumulation_steps=cfg.grad_accum)
    set_seed(cfg.seed)
    counts: Counter = Counter()
    examples = make_examples(train_docs, backbone, layout, cfg.max_source_length, counts, cfg.chunk_length)
    sampling = SamplingConfig.parse(cfg.sampling)
    rank, world = accelerator.process_index, accelerator.num_processes
    batches_per_epoch = math.ceil(len(examples[rank::world]) / cfg.batch_docs)
    steps_per_epoch = max(1, batches_per_epoch // cfg.grad_accum)
    total_steps = cfg.max_steps or steps_per_epoch * cfg.epochs
    model = backbone.model
    optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    ckpt = Checkpointer(out_dir / "checkpoints", cfg.keep_checkpoints)
    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "best": None, "history": [], "seconds": 0.0}
    if resume and (latest := ckpt.latest()) is not None:
        state = Checkpointer.load(latest, accelerator.unwrap_model(model), optimizer, scheduler)
        counts = Counter(state.get("counts", counts))  # counted over the whole run, not this session only
        accelerator.print(f"resumed from {latest} (step {state['step']})")
        if accelerator.is_main_process:  # the log restarts from the checkpoint: no repeated steps
            atomic_write_text(out_dir / "train_log.jsonl", "".join(json.dumps(r) + "\n" for r in state["history"]))
    elif accelerator.is_main_process and (out_dir / "train_log.jsonl").exists():
        (out_dir / "train_log.jsonl").unlink()  # a fresh run starts a fresh log
    prefix = list(backbone.decoder_prefix)
    lexical = cfg.target_format == "lexical"
    symbol_ids = None  # lexical targets are words: the softmax covers the whole vocabulary
    if cfg.symbol_loss and not lexical:
        symbol_ids = torch.tensor(backbone.code_to_id, device=accelerator.device)
    n_prefix = len(prefix) + (cfg.mode == "rows")
    if lexical:
        from dore.baselines.lexical import lexical_sequences, relation_names_of

        relation_names = relation_names_of(layout)

    def sequences(ex: Example, epoch: int) -> list[list[int]]:
        if lexical:  # no negatives: the same target every epoch
            return lexical_sequences(ex.doc, backbone.tokenizer, relation_names, prefix=prefix,
                                     eos_id=backbone.eos_id, max_len=backbone.max_target_length, counts=counts,
                                     order=cfg.order)
        return decoder_sequences(ex, layout, sampling, cfg.mode, seed=cfg.seed, epoch=epoch, prefix=prefix,
                                 code_to_id=backbone.code_to_id, max_len=backbone.max_target_length, counts=counts,
                                 order=cfg.order)

    # the budget counts training time over every resumed session, not just this one
    start = time.perf_counter() - state.get("seconds", 0.0)
    log_path = out_dir / "train_log.jsonl"
    out_dir.mkdir(parents=True, exist_ok=True)

    def log(record: dict) -> None:
        state["history"].append(record)
        if accelerator.is_main_process:
            with open(log_path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        if on_log:
            on_log(record)

    stop = cfg.max_steps is not None and state["step"] >= cfg.max_steps  # a finished run resumes as finished
    model.train()
    while not stop and state["epoch"] < cfg.epochs:
        epoch = state["epoch"]
        batches = epoch_batches([len(e.input_ids) for e in examples], cfg.batch_docs, seed=cfg.seed, epoch=epoch,
                                rank=rank, world=world, group_by_length=cfg.group_by_length)
        loss_sum, tok_sum = 0.0, 0
        for b in range(state["batch_in_epoch"], len(batches)):
            batch = collate([(examples[i], sequences(examples[i], epoch)) for i in batches[b]], backbone.pad_id,
                            n_prefix)
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            with accelerator.accumulate(model):
                loss, n_tok = row_loss(model, backbone.family, batch, label_smoothing=cfg.label_smoothing,
                                       code_to_id=symbol_ids, bucket=cfg.group_by_length,
                                       chunk_length=cfg.chunk_length)
                backward_and_step(accelerator, model, optimizer, scheduler, loss, cfg.max_grad_norm)
            loss_sum, tok_sum = loss_sum + loss.item() * n_tok, tok_sum + n_tok
            state["batch_in_epoch"] = b + 1
            if not accelerator.sync_gradients:
                continue
            state["step"] += 1
            if state["step"] % cfg.log_every_steps == 0 or state["step"] == 1:
                log({"step": state["step"], "epoch": epoch + (b + 1) / len(batches), "loss": loss.item(),
                     "lr": scheduler.get_last_lr()[0], "seconds": round(time.perf_counter() - start, 1)})
            minutes = (time.perf_counter() - start) / 60
            stop = (cfg.max_steps is not None and state["step"] >= cfg.max_steps) or \
                   (cfg.max_minutes is not None and minutes >= cfg.max_minutes)
            state["seconds"], state["counts"] = time.perf_counter() - start, dict(counts)
            if state["step"] % cfg.checkpoint_every_steps == 0 or stop:
                if accelerator.is_main_process:
                    ckpt.save(state["step"], accelerator.unwrap_model(model), optimizer, scheduler, state)
            if stop:
                break
        epoch_done = state["batch_in_epoch"] >= len(batches)
        if epoch_done:
            state["epoch"], state["batch_in_epoch"] = epoch + 1, 0
            log({"step": state["step"], "epoch": epoch + 1, "train_loss": loss_sum / max(tok_sum, 1)})
        # evaluate at the end of an epoch, and also when the budget stops training mid-epoch, so a
        # budget shorter than an epoch still selects (and saves) a model
        due = epoch_done and ((epoch + 1) % cfg.eval_every_epochs == 0 or epoch + 1 == cfg.epochs)
        if evaluate_dev and (due or stop):
            at = epoch + 1 if epoch_done else round(epoch + state["batch_in_epoch"] / len(batches), 3)
            model.eval()
            metrics = evaluate_dev(accelerator.unwrap_model(model), at)
            model.train()
            log({"step": state["step"], "epoch": at, **{f"dev_{k}": v for k, v in metrics.items()
                                                        if isinstance(v, (int, float))}})
            if state["best"] is None or metrics.get(select_metric, 0) > state["best"].get(select_metric, 0):
                state["best"] = {"epoch": at, "step": state["step"], **metrics}
                if on_best and accelerator.is_main_process:
                    on_best(accelerator.unwrap_model(model), state["best"])
        state["counts"] = dict(counts)
        if (epoch_done or stop) and accelerator.is_main_process:
            ckpt.save(state["step"], accelerator.unwrap_model(model), optimizer, scheduler, state)
    accelerator.wait_for_everyone()
    return TrainResult(state["step"], state["epoch"], state["best"], state["history"], dict(counts),
                       time.perf_counter() - start)
