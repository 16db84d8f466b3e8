"""ATLOP-style classification baseline (Zhou et al., 2021) on DORE's encoder and inputs.

- **Encoder and input**: the backbone's own encoder (`model.get_encoder()`) reads exactly DORE's
  input (`encode_document`: every mention wrapped in its entity's `<e_k>` marker, same
  truncation). ATLOP's `*` marker embedding is the hidden state at each mention's start marker.
- **Entity embedding**: logsumexp over the entity's mention start markers (zeros for an entity
  whose every mention was truncated away, as ATLOP).
- **Localized context pooling**: the last encoder layer's attention from the start markers,
  averaged over an entity's mentions; a pair's context is the hidden states weighted by the
  head-mean of head x tail attention, renormalised. Needs eager attention (set on the encoder);
  LED's windowed attention has another shape, so LED runs with `context_pooling=False`.
- **Group bilinear classifier**: `tanh(W [entity; context])` for head and tail, then a bilinear
  layer over groups of `block_size` (64, or the embedding size when smaller).
- **Adaptive threshold**: class 0 is ATLOP's TH class; `at_loss` is ATLoss, `at_predict` keeps
  the relations whose logit exceeds TH (at most `top_k`, ATLOP's 4).

Pairs are every ordered pair of distinct entities, or the document's `candidates` (CDR/GDA),
minus `excluded`. Training uses `dore.train`'s settings (AdamW, weight decay 0.01 off biases and
norms, linear warm-up and decay, clipping, seed, epochs / max_steps / max_minutes, gradient
accumulation, batches of `epoch_batches`) and selects on dev F1 of the official scorer. No
mid-run checkpoints: the selected weights are kept in memory and `on_best` may save them.
Weights are saved with safetensors only.

`train(params, *, resume)` and `evaluate(params, split)` are the baseline's `dore.pipeline.train`
/ `evaluate`: the same data, layout, backbone and budget, `train/train_log.jsonl` with dev F1 by
step, the selected model in `model/`, and the same `metrics.json` record (no decoder: 0 steps).
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from dore.data.model import DataError, Document, atomic_write_text
from dore.layout import IdLayout, SlotAssignment
from dore.train import TrainConfig, TrainResult

if TYPE_CHECKING:
    from dore.pipeline import PipelineParams

TH = 0  # the adaptive-threshold class; relation i of the layout is class i + 1
CONFIG_FILE = "classifier.json"
WEIGHTS_FILE = "classifier.safetensors"


# --- loss and decoding -----------------------------------------------------------------------

def at_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """ATLOP's adaptive-threshold loss. `labels` [pairs, classes] is multi-hot over relations;
    its TH column is ignored. Positives are ranked above TH (softmax over positives and TH),
    TH above the negatives (softmax over TH and negatives); mean over pairs."""
    logits, labels = logits.float(), labels.float().clone()
    labels[:, TH] = 0
    th = torch.zeros_like(labels)
    th[:, TH] = 1
    very_low = -1e30  # not -inf: 0 * -inf would be nan where a class is masked out
    positives = logits.masked_fill((labels + th) == 0, very_low)
    negatives = logits.masked_fill(labels == 1, very_low)
    loss_pos = -(positives.log_softmax(-1) * labels).sum(1)
    loss_th = -(negatives.log_softmax(-1) * th).sum(1)
    return (loss_pos + loss_th).mean()


def at_predict(logits: Tensor, top_k: int | None = None) -> Tensor:
    """Bool [pairs, classes]: the classes scored above TH (at most `top_k` of the highest);
    TH is set where no relation is."""
    keep = logits > logits[:, TH: TH + 1]
    if top_k:
        kth = logits.topk(min(top_k, logits.shape[1]), dim=1).values[:, -1:]
        keep &= logits >= kth
    keep[:, TH] = ~keep[:, TH + 1:].any(1)
    return keep


# --- the model -------------------------------------------------------------------------------

class ATLOP(nn.Module):
    """Encoder + logsumexp entities + localized context pooling + group bilinear classifier."""

    def __init__(self, encoder: PreTrainedModel, n_classes: int, *, emb_size: int | None = None,
                 block_size: int = 64, context_pooling: bool = True):
        super().__init__()
        hidden = encoder.config.hidden_size
        emb_size = emb_size or hidden
        block_size = min(block_size, emb_size)
        if emb_size % block_size:
            raise ValueError(f"block_size {block_size} does not divide emb_size {emb_size}")
        if context_pooling:
            _use_eager_attention(encoder)
        self.encoder, self.context_pooling = encoder, context_pooling
        self.emb_size, self.block_size, self.n_classes = emb_size, block_size, n_classes
        features = 2 * hidden if context_pooling else hidden
        self.head_extractor = nn.Linear(features, emb_size)
        self.tail_extractor = nn.Linear(features, emb_size)
        self.bilinear = nn.Linear(emb_size * block_size, n_classes)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, starts: Sequence[Sequence[Sequence[int]]],
                pairs: Sequence[Tensor]) -> Tensor:
        """Logits [all pairs of the batch, classes]. `starts[d][e]`: start-marker positions of
        entity e of document d; `pairs[d]` [n, 2] (head, tail) entity indices."""
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                           output_attentions=self.context_pooling, return_dict=True)
        hidden = out.last_hidden_state
        if self.context_pooling and not out.attentions:
            raise RuntimeError(f"{type(self.encoder).__name__} returned no attention weights for context pooling")
        heads, tails = [], []
        for d, doc_pairs in enumerate(pairs):
            attention = out.attentions[-1][d] if self.context_pooling else None  # [heads, L, L]
            emb, att = self._entities(hidden[d], attention, starts[d])
            h, t = doc_pairs[:, 0], doc_pairs[:, 1]
            if self.context_pooling:
                ht = (att[h] * att[t]).mean(1)  # [pairs, L]
                context = (ht / (ht.sum(1, keepdim=True) + 1e-5)) @ hidden[d]
                heads.append(torch.cat([emb[h], context], 1))
                tails.append(torch.cat([emb[t], context], 1))
            else:
                heads.append(emb[h])
                tails.append(emb[t])
        zh = torch.tanh(self.head_extractor(torch.cat(heads)))
        zt = torch.tanh(self.tail_extractor(torch.cat(tails)))
        return self.bilinear(self.group_bilinear_features(zh, zt))

    def group_bilinear_features(self, zh: Tensor, zt: Tensor) -> Tensor:
        """[n, emb] x [n, emb] -> [n, emb * block]: the outer product inside each group."""
        groups = (-1, self.emb_size // self.block_size, self.block_size)
        outer = zh.view(groups).unsqueeze(3) * zt.view(groups).unsqueeze(2)  # [n, groups, block, block]
        return outer.reshape(-1, self.emb_size * self.block_size)

    def _entities(self, hidden: Tensor, attention: Tensor | None,
                  starts: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor | None]:
        embs, atts = [], []
        for positions in starts:
            if positions:
                index = torch.tensor(positions, device=hidden.device)
                embs.append(hidden[index].logsumexp(0))
                if attention is not None:
                    atts.append(attention[:, index].mean(1))
            else:  # every mention truncated away
                embs.append(hidden.new_zeros(hidden.shape[-1]))
                if attention is not None:
                    atts.append(attention.new_zeros(attention.shape[0], attention.shape[-1]))
        return torch.stack(embs), torch.stack(atts) if attention is not None else None


def _use_eager_attention(encoder: PreTrainedModel) -> None:
    """Fused attention kernels (sdpa) return no weights. Every module's config is switched:
    EncoderDecoderModel gives its encoder a new config object after the layers took theirs, so
    `set_attn_implementation` alone leaves MiniLM's layers on sdpa."""
    encoder.set_attn_implementation("eager")
    for module in encoder.modules():
        if isinstance(getattr(module, "config", None), PretrainedConfig):
            module.config._attn_implementation = "eager"


# --- documents -> examples -------------------------------------------------------------------

@dataclass
class PairExample:
    doc: Document
    input_ids: list[int]
    starts: list[list[int]]  # per entity: positions of its mentions' start markers in input_ids
    pairs: list[tuple[int, int]]
    labels: Tensor  # bool [pairs, classes]; TH set where the pair has no relation


def mention_starts(doc: Document, assignment: SlotAssignment, input_ids: Sequence[int],
                   tokenizer: PreTrainedTokenizerBase, marker_ids: Sequence[int]) -> list[list[int]]:
    """Per entity, the positions of its mentions' start markers in `encode_document`'s output.

    Walks the words as `encode_document` lays them out: at each word boundary the end markers
    of the mentions ending there, then the start markers of those starting there (read from
    the ids, so their order does not matter), then the word's pieces. Stops at a truncation cut.
    """
    from dore.model.inputs import special_frame, word_pieces

    spans = {(m.start, m.end, slot) for e, slot in assignment.slot_of.items() for m in doc.entities[e].mentions}
    n_open, n_close = Counter(s for s, _, _ in spans), Counter(e for _, e, _ in spans)
    entity_of_id = {marker_ids[slot]: e for e, slot in assignment.slot_of.items()}
    prefix, suffix = special_frame(tokenizer)
    body_end = len(input_ids) - len(suffix)
    starts: list[list[int]] = [[] for _ in doc.entities]
    cursor = len(prefix)
    for position, pieces in enumerate([*word_pieces(tokenizer, doc.tokens), []]):
        cursor += n_close[position]
        for _ in range(n_open[position]):
            if cursor >= body_end:
                return starts
            if input_ids[cursor] not in entity_of_id:
                raise ValueError(f"document {doc.doc_id!r}: no entity marker at position {cursor}; "
                                 "were the ids made by encode_document with these markers?")
            starts[entity_of_id[input_ids[cursor]]].append(cursor)
            cursor += 1
        cursor += len(pieces)
    return starts


def candidate_pairs(doc: Document) -> list[tuple[int, int]]:
    """The pairs that are classified: `candidates` if given, else every ordered pair; minus `excluded`."""
    excluded = {tuple(p) for p in doc.excluded}
    pairs = ([tuple(p) for p in doc.candidates] if doc.candidates is not None else
             [(h, t) for h in range(len(doc.entities)) for t in range(len(doc.entities)) if h != t])
    return [p for p in pairs if p not in excluded]


# --- the classifier --------------------------------------------------------------------------

@dataclass
class RelationClassifier:
    """The model with what it needs to read documents: tokenizer, layout (markers, labels)."""

    model: ATLOP
    tokenizer: PreTrainedTokenizerBase
    layout: IdLayout
    backbone_config: PretrainedConfig  # the seq2seq config the encoder comes from (for loading)
    family: str
    max_source_length: int | None
    top_k: int | None = 4
    card: dict = field(default_factory=dict)  # provenance: training config, data hash, dev metrics

    @classmethod
    def from_backbone(cls, backbone, layout: IdLayout, *, emb_size: int | None = None, block_size: int = 64,
                      context_pooling: bool = True, top_k: int | None = 4, seed: int = 0,
                      max_source_length: int | None = None) -> "RelationClassifier":
        """A new head (seeded) on the backbone's encoder, which it shares and trains in place.
        `max_source_length`: the input cap (None: the backbone's positions)."""
        if layout.arity != 2:
            raise ValueError(f"the classifier scores pairs; layout {layout.name!r} has arity {layout.arity}")
        if backbone.family == "led" and context_pooling:
            raise ValueError("LED's windowed attention has no [L, L] map: use context_pooling=False")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = ATLOP(backbone.model.get_encoder(), layout.n_relations + 1, emb_size=emb_size,
                          block_size=block_size, context_pooling=context_pooling)
        return cls(model, backbone.tokenizer, layout, backbone.model.config, backbone.family,
                   max_source_length or backbone.max_source_length, top_k)

    @property
    def marker_ids(self) -> list[int]:
        return self.tokenizer.convert_tokens_to_ids(self.layout.token_names())

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    def examples(self, docs: Sequence[Document], counts: Counter | None = None) -> list[PairExample]:
        """Encode documents as DORE does and label their pairs. `counts`: truncated inputs, entities
        lost to truncation, gold relations outside the classified pairs (never silent)."""
        from dore.model.inputs import encode_document

        counts = Counter() if counts is None else counts
        markers = self.marker_ids
        out = []
        for doc in docs:
            assignment = self.layout.assign(doc)
            enc = encode_document(doc, assignment, self.tokenizer, markers, self.max_source_length)
            counts["truncated_inputs"] += int(enc.truncated)
            counts["entities_lost_to_truncation"] += len(enc.lost_entities)
            pairs = candidate_pairs(doc)
            row = {p: i for i, p in enumerate(pairs)}
            labels = torch.zeros((len(pairs), self.layout.n_relations + 1), dtype=torch.bool)
            for rel in doc.unique_relations():
                if (i := row.get(tuple(rel.args))) is None:
                    counts["relations_outside_pairs"] += 1
                    continue
                labels[i, self.layout.relation_code(rel.label) - self.layout.n_slots + 1] = True
            labels[:, TH] = ~labels[:, TH + 1:].any(1)
            out.append(PairExample(doc, enc.input_ids, mention_starts(doc, assignment, enc.input_ids, self.tokenizer,
                                                                      markers), pairs, labels))
        return out

    def collate(self, batch: Sequence[PairExample], device: torch.device | str = "cpu") -> dict:
        from torch.nn.utils.rnn import pad_sequence

        ids = pad_sequence([torch.tensor(ex.input_ids) for ex in batch], batch_first=True, padding_value=self.pad_id)
        lengths = torch.tensor([len(ex.input_ids) for ex in batch])
        return {"input_ids": ids.to(device),
                "attention_mask": (torch.arange(ids.shape[1])[None, :] < lengths[:, None]).long().to(device),
                "starts": [ex.starts for ex in batch],
                "pairs": [torch.tensor(ex.pairs, dtype=torch.long, device=device).view(-1, 2) for ex in batch]}

    @torch.no_grad()
    def predict(self, docs: Sequence[Document], *, batch_docs: int = 8,
                counts: Counter | None = None) -> dict[str, list[tuple[tuple[int, int], str]]]:
        """`{doc_id: [((head, tail), label)]}` in the documents' own entity numbering, for
        `dore.evaluate.score`; at most `top_k` labels per pair (None: no limit). `counts`: as `examples`."""
        self.model.eval()
        device = next(self.model.parameters()).device
        out = {}
        examples = self.examples(docs, counts)
        for start in range(0, len(examples), batch_docs):
            batch = examples[start: start + batch_docs]
            if not any(ex.pairs for ex in batch):
                out.update({ex.doc.doc_id: [] for ex in batch})
                continue
            keep = at_predict(self.model(**self.collate(batch, device)), self.top_k).cpu()
            offset = 0
            for ex in batch:
                rows = keep[offset: offset + len(ex.pairs)]
                offset += len(ex.pairs)
                out[ex.doc.doc_id] = [(ex.pairs[i], self.layout.relations[r])  # column r + 1 is relation r
                                      for i, r in rows[:, TH + 1:].nonzero().tolist()]
        return out

    # --- persistence ---------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, **card) -> Path:
        """Weights (safetensors), head shape, layout, tokenizer and the backbone's config, and the
        card (`card` merged over the current one); written to a temporary folder and renamed so a
        reader never sees half a model."""
        import shutil

        from safetensors.torch import save_model

        directory = Path(directory)
        tmp = directory.with_name(directory.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_model(self.model, str(tmp / WEIGHTS_FILE))  # drops shared copies (tied embeddings) itself
        self.tokenizer.save_pretrained(tmp)
        self.backbone_config.save_pretrained(tmp)
        m = self.model
        self.card = {**self.card, **card}
        atomic_write_text(tmp / CONFIG_FILE, json.dumps(
            {"family": self.family, "max_source_length": self.max_source_length, "top_k": self.top_k,
             "n_classes": m.n_classes, "emb_size": m.emb_size, "block_size": m.block_size,
             "context_pooling": m.context_pooling, "card": self.card}, indent=1, default=str))
        atomic_write_text(tmp / "layout.json", self.layout.to_json())
        shutil.rmtree(directory, ignore_errors=True)
        tmp.rename(directory)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "RelationClassifier":
        from safetensors.torch import load_model
        from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer

        directory = Path(directory)
        if not (directory / CONFIG_FILE).exists():
            raise FileNotFoundError(f"{directory} is not a saved classifier (no {CONFIG_FILE})")
        config = json.loads((directory / CONFIG_FILE).read_text())
        layout = IdLayout.from_dict(json.loads((directory / "layout.json").read_text()))
        tokenizer = AutoTokenizer.from_pretrained(directory)
        if config["n_classes"] != layout.n_relations + 1:
            raise DataError(f"{config['n_classes']} classes for {layout.n_relations} relations", file=directory,
                            field="n_classes")
        backbone_config = AutoConfig.from_pretrained(directory)
        encoder = AutoModelForSeq2SeqLM.from_config(backbone_config).get_encoder()  # weights come next
        model = ATLOP(encoder, config["n_classes"], emb_size=config["emb_size"], block_size=config["block_size"],
                      context_pooling=config["context_pooling"])
        load_model(model, str(directory / WEIGHTS_FILE))
        return cls(model, tokenizer, layout, backbone_config, config["family"], config["max_source_length"],
                   config["top_k"], config.get("card", {}))


# --- training --------------------------------------------------------------------------------

def param_groups(model: ATLOP, cfg: TrainConfig) -> list[dict]:
    """As `dore.train.param_groups`: no decay on biases and norms; the new head (extractors and
    bilinear) at `lr_new` (ATLOP: 1e-4 against the encoder's 5e-5), default `lr`."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim < 2 or "norm" in name.lower() or name.endswith(".bias")
        groups.setdefault((no_decay, not name.startswith("encoder.")), []).append(p)
    head_lr = cfg.lr if cfg.lr_new is None else cfg.lr_new
    return [{"params": ps, "weight_decay": 0.0 if nd else cfg.weight_decay, "lr": head_lr if new else cfg.lr}
            for (nd, new), ps in groups.items()]


def train_classifier(cfg: TrainConfig, classifier: RelationClassifier, train_docs: Sequence[Document],
                     dev_docs: Sequence[Document] | None = None, *, select_metric: str = "f1",
                     on_best: Callable[[RelationClassifier, dict], None] | None = None,
                     on_log: Callable[[dict], None] | None = None) -> TrainResult:
    """Train in place with `cfg`'s budget and optimizer settings; after each evaluated epoch score
    `dev_docs` with `dore.evaluate.score` and keep the best weights (restored at the end)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    from dore.evaluate import score
    from dore.train import _mixed_precision, backward_and_step, epoch_batches

    accelerator = Accelerator(mixed_precision=_mixed_precision(cfg.mixed_precision),
                              gradient_accumulation_steps=cfg.grad_accum)
    set_seed(cfg.seed)
    counts: Counter = Counter()
    examples = classifier.examples(train_docs, counts)
    rank, world = accelerator.process_index, accelerator.num_processes
    steps_per_epoch = max(1, math.ceil(len(examples[rank::world]) / cfg.batch_docs) // cfg.grad_accum)
    total_steps = cfg.max_steps or steps_per_epoch * cfg.epochs
    optimizer = torch.optim.AdamW(param_groups(classifier.model, cfg), lr=cfg.lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    model, optimizer = accelerator.prepare(classifier.model, optimizer)
    step, epochs_done, history, best, best_state = 0, 0, [], None, None
    start = time.perf_counter()

    def log(record: dict) -> None:
        history.append(record)
        if on_log:
            on_log(record)

    stop = False
    for epoch in range(cfg.epochs):
        model.train()
        loss_sum, n_batches = 0.0, 0
        batches = epoch_batches([len(e.input_ids) for e in examples], cfg.batch_docs, seed=cfg.seed, epoch=epoch,
                                rank=rank, world=world, group_by_length=cfg.group_by_length)
        for b, batch_index in enumerate(batches):
            batch = [examples[i] for i in batch_index if examples[i].pairs]
            if not batch:
                continue
            labels = torch.cat([ex.labels for ex in batch]).to(accelerator.device)
            with accelerator.accumulate(model):
                loss = at_loss(model(**classifier.collate(batch, accelerator.device)), labels)
                backward_and_step(accelerator, model, optimizer, scheduler, loss, cfg.max_grad_norm)
            loss_sum, n_batches = loss_sum + loss.item(), n_batches + 1
            if not accelerator.sync_gradients:
                continue
            step += 1
            if step % cfg.log_every_steps == 0 or step == 1:
                log({"step": step, "epoch": epoch + (b + 1) / len(batches), "loss": loss.item(),
                     "lr": scheduler.get_last_lr()[0], "seconds": round(time.perf_counter() - start, 1)})
            stop = (cfg.max_steps is not None and step >= cfg.max_steps) or \
                   (cfg.max_minutes is not None and (time.perf_counter() - start) / 60 >= cfg.max_minutes)
            if stop:
                break
        epochs_done = epoch + 1
        log({"step": step, "epoch": epoch + 1, "train_loss": loss_sum / max(n_batches, 1)})
        if dev_docs is not None and ((epoch + 1) % cfg.eval_every_epochs == 0 or epoch + 1 == cfg.epochs or stop):
            metrics = {k: v for k, v in score(classifier.predict(dev_docs), dev_docs, train_docs=train_docs).items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)}
            log({"step": step, "epoch": epoch + 1, **{f"dev_{k}": v for k, v in metrics.items()}})
            if best is None or metrics.get(select_metric, 0) > best.get(select_metric, 0):
                best = {"epoch": epoch + 1, "step": step, **metrics}
                best_state = {k: v.detach().clone() for k, v in classifier.model.state_dict().items()}
                if on_best and accelerator.is_main_process:
                    on_best(classifier, best)
        if stop:
            break
    if best_state is not None:
        classifier.model.load_state_dict(best_state)
    accelerator.wait_for_everyone()
    return TrainResult(step, epochs_done, best, history, dict(counts), time.perf_counter() - start)


# --- the pipeline stages ---------------------------------------------------------------------

def train(params: PipelineParams, *, resume: bool = True) -> dict:
    """As `dore.pipeline.train`: train on `train` with `params.train` (the generation-only
    settings `mode`, `sampling`, `order`, `symbol_loss` do not apply), select on dev F1, the
    selected model to `model/`. LED runs without context pooling (no [L, L] attention map).

    There are no mid-run checkpoints (`train_classifier`): `resume` finds nothing to resume, and
    an interrupted run starts over, its log with it.
    """
    from dore.datasets import get_setting
    from dore.pipeline import artifacts_dir, initial_backbone, load_layout, load_split, training_summary
    from dore.predict import training_data_hash

    cfg = params.train
    if cfg.chunk_length is not None:
        raise ValueError("the classifier encodes one window per document: chunk_length is not supported")
    layout = load_layout(params)
    train_docs, dev_docs = load_split(params, "train"), load_split(params, "dev")
    backbone = initial_backbone(cfg, layout)
    classifier = RelationClassifier.from_backbone(backbone, layout, context_pooling=backbone.family != "led",
                                                  seed=cfg.seed, max_source_length=cfg.max_source_length)
    out = artifacts_dir(params)
    log_path = out / "train" / "train_log.jsonl"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.unlink(missing_ok=True)
    data_hash = training_data_hash(train_docs)

    def on_log(record: dict) -> None:
        with open(log_path, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def on_best(trained: RelationClassifier, metrics: dict) -> None:
        trained.save_pretrained(out / "model", preset=cfg.model_dump(), training_data_sha256=data_hash,
                                dev_metrics=metrics, split_note=get_setting(params.dataset).split_note)

    result = train_classifier(cfg, classifier, train_docs, dev_docs, on_best=on_best, on_log=on_log)
    summary = {**training_summary(result), "context_pooling": classifier.model.context_pooling}
    atomic_write_text(out / "train" / "summary.json", json.dumps(summary, indent=1, default=str))
    return summary


def evaluate(params: PipelineParams, split: str = "test") -> dict:
    """As `dore.pipeline.evaluate`: the selected model on `split`, the same `metrics.json` record;
    one forward pass per document and no decoder (0 decoder steps). The record adds the input
    counts (truncated inputs, entities lost to truncation, gold relations outside the pairs)."""
    from dore.pipeline import artifacts_dir, load_split, write_evaluation

    classifier = RelationClassifier.from_pretrained(artifacts_dir(params) / "model")
    docs = load_split(params, split)
    counts: Counter = Counter()
    started = time.perf_counter()
    predictions = classifier.predict(docs, counts=counts)
    return write_evaluation(params, split, docs, predictions, seconds=time.perf_counter() - started, decoder_steps=0,
                            input_counts=dict(counts), dev_selected=classifier.card.get("dev_metrics"))
