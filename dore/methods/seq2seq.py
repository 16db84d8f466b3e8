"""What the two generative methods (DORE's symbols, lexical text) share: documents encoded once,
decoder sequences padded into a batch, and the loss that encodes each document once and decodes
all its rows (or its one sequence) against the shared encoder states."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers.modeling_outputs import BaseModelOutput

from dore.config import TrainConfig
from dore.data.model import Document
from dore.decoding.head import SymbolHead
from dore.model import entities
from dore.model.inputs import encode, encode_document
from dore.symbolic.layout import IdLayout, SlotAssignment

IGNORE = -100


@dataclass
class Example:
    """One training document, encoded once (inputs do not change across epochs)."""

    doc: Document
    assignment: SlotAssignment
    input_ids: list[int]



def make_examples(docs: Sequence[Document], backbone, layout: IdLayout, max_source_length: int | None,
                  counts: Counter, chunk_length: int | None = None) -> list[Example]:
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


def collate(batch: list[tuple[Example, list[list[int]]]], pad_id: int, n_prefix: int) -> dict | None:
    """Pad a micro-batch: documents for the encoder, their rows for the decoder. None when no
    document has a target (e.g. no entity and sampling `none`): the loop skips and counts it."""
    if not any(seqs for _, seqs in batch):
        return None
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


def row_forward(model, batch: dict, chunk_length: int | None = None) -> torch.Tensor:
    """Encode each document once, decode all its rows against the expanded encoder states."""
    hidden = encode(model, batch["input_ids"], batch["attention_mask"], chunk_length)
    row_doc = batch["row_doc"]
    out = model(encoder_outputs=BaseModelOutput(last_hidden_state=hidden.index_select(0, row_doc)),
                attention_mask=batch["attention_mask"].index_select(0, row_doc),
                decoder_input_ids=batch["decoder_input_ids"],
                decoder_attention_mask=batch["decoder_attention_mask"].long())
    return out.logits



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


def row_loss(model, batch: dict, *, label_smoothing: float = 0.0,
             code_to_id: torch.Tensor | None = None, bucket: bool = False,
             chunk_length: int | None = None, pair_loss: float = 0.0) -> tuple[torch.Tensor, int]:
    """Mean token cross-entropy of a collated batch, encoding each document once.

    `code_to_id`: take the softmax over these ids only (the symbol head); `bucket`: decode rows in
    length buckets, each cut to its own longest row, instead of padding all to the longest;
    `pair_loss`: add this weight times the pair term's loss over every pair of the batch's documents
    (`entities.dense_pair_loss`, on the same encoder states; the batch carries `pair_labels`, `pair_mask`).
    """
    if code_to_id is None and entities.of(model) is not None:
        raise ValueError("entity embeddings train with the symbol loss (symbol_loss=True)")
    if code_to_id is None and not bucket:
        return token_loss(row_forward(model, batch, chunk_length), batch["labels"], label_smoothing)
    hidden = encode(model, batch["input_ids"], batch["attention_mask"], chunk_length)
    mask = batch["decoder_attention_mask"].long()
    groups = length_buckets(mask.sum(1)) if bucket else [torch.arange(len(mask))]
    head = SymbolHead(model, code_to_id) if code_to_id is not None else None
    if head is not None:
        to_code = torch.full((int(code_to_id.max()) + 1,), IGNORE, dtype=torch.long, device=code_to_id.device)
        to_code[code_to_id] = torch.arange(len(code_to_id), device=code_to_id.device)
    # the entity table and pair features of each document once, not once per group of rows
    document_entities = None if head is None else head.entity_inputs(batch["input_ids"], hidden, None)
    total, n_total = hidden.new_zeros((), dtype=torch.float), 0
    for rows in groups:
        rows = rows.to(hidden.device)
        width = int(mask[rows].sum(1).max())
        docs = batch["row_doc"][rows]
        dec_in, dec_mask = batch["decoder_input_ids"][rows, :width], mask[rows, :width]
        labels = batch["labels"][rows, :width]
        if head is not None:  # cross-attention keys/values once per document
            logits = head.forward(hidden, batch["attention_mask"], dec_in, dec_mask, row_doc=docs,
                                  source_ids=batch["input_ids"], document_entities=document_entities)
            labels = torch.where(labels == IGNORE, labels, to_code[labels.clamp(min=0)])
        else:
            logits = model(encoder_outputs=BaseModelOutput(last_hidden_state=hidden.index_select(0, docs)),
                           attention_mask=batch["attention_mask"].index_select(0, docs),
                           decoder_input_ids=dec_in, decoder_attention_mask=dec_mask).logits
        loss, n = token_loss(logits, labels, label_smoothing)
        total, n_total = total + loss * n, n_total + n
    mean = total / max(n_total, 1)
    if pair_loss:
        module = entities.of(model)
        mean = mean + pair_loss * entities.dense_pair_loss(module, batch["input_ids"], hidden,
                                                           code_to_id[:module.n_slots], batch["pair_labels"],
                                                           batch["pair_mask"])
    return mean, n_total


def token_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float) -> tuple[torch.Tensor, int]:
    n = int((labels != IGNORE).sum())
    loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1),
                                             ignore_index=IGNORE, label_smoothing=label_smoothing, reduction="sum")
    return loss / max(n, 1), n


def param_groups(model, cfg: TrainConfig) -> list[dict]:
    """AdamW groups: no decay on biases/norms; `lr_new` for parameters the backbone did not have
    pretrained (cross-attention of a warm-started decoder, the output layer); `pair_lr`, when set,
    for the pair term (`dore_entities.pair.`)."""
    new_markers = ("crossattention", "cross_attn", "encoder_attn", "EncDecAttention", "enc_to_dec_proj",
                   "dore_entities")
    lr_of = {"pretrained": cfg.lr, "new": cfg.lr if cfg.lr_new is None else cfg.lr_new,
             "pair": cfg.pair_lr if cfg.pair_lr is not None else (cfg.lr if cfg.lr_new is None else cfg.lr_new)}
    groups: dict[tuple[bool, str], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim < 2 or "norm" in name.lower() or name.endswith(".bias")
        if cfg.pair_lr is not None and name.startswith(entities.PREFIX + "pair."):
            kind = "pair"
        else:
            kind = "new" if cfg.lr_new is not None and any(m in name for m in new_markers) else "pretrained"
        groups.setdefault((no_decay, kind), []).append(p)
    return [{"params": ps, "weight_decay": 0.0 if nd else cfg.weight_decay, "lr": lr_of[kind]}
            for (nd, kind), ps in groups.items()]

