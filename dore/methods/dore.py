"""DORE: relations as symbol sequences generated row by row (the paper's method).

Each document's targets are re-sampled every epoch from (seed, epoch, document): positives plus
the negatives of `TrainConfig.sampling` (docs/method.md), in row-column order, one decoder
sequence per head entity (`mode="rows"`) or the whole matrix as one (`mode="sequence"`). With
`symbol_loss` the softmax covers the symbol ids only, as the constrained decoder does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

from dore.config import DecodingConfig, TrainConfig
from dore.data.model import Document, candidate_pairs
from dore.extract import Extractor, Predictions
from dore.methods.seq2seq import Example, collate, make_examples, param_groups, row_loss
from dore.model.backbone import Backbone
from dore.symbolic.layout import IdLayout
from dore.symbolic.linearize import build_targets
from dore.symbolic.sampling import SamplingConfig

NAME = "dore"


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


def pair_targets(examples: Sequence[Example], layout: IdLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """The pair term's dense targets (`TrainConfig.pair_loss`), in slots: multi-hot labels
    [docs, n_slots, n_slots, n_relations + 1] (the last column NA: no gold relation) and the pairs
    scored [docs, n_slots, n_slots] (each document's candidate pairs whose entities have slots)."""
    n, n_relations = layout.n_slots, layout.n_relations
    labels = torch.zeros(len(examples), n, n, n_relations + 1, dtype=torch.bool)
    pairs = torch.zeros(len(examples), n, n, dtype=torch.bool)
    for d, ex in enumerate(examples):
        slot = ex.assignment.slot_of
        for h, t in candidate_pairs(ex.doc):
            if h in slot and t in slot:
                pairs[d, slot[h], slot[t]] = True
        for rel in ex.doc.relations:
            h, t = rel.args
            if h in slot and t in slot:
                labels[d, slot[h], slot[t], layout.relation_code(rel.label) - n] = True
    labels[..., n_relations] = ~labels[..., :n_relations].any(-1)
    return labels, pairs


class DoreMethod:
    """DORE's training contract (`dore.training.loop.Method`) plus dev prediction and saving."""

    def __init__(self, cfg: TrainConfig, backbone: Backbone, layout: IdLayout):
        self.cfg, self.backbone, self.layout = cfg, backbone, layout
        self.model = backbone.model
        self.sampling = SamplingConfig.parse(cfg.sampling)
        self.prefix = list(backbone.decoder_prefix)
        self.symbol_ids = torch.tensor(backbone.code_to_id) if cfg.symbol_loss else None
        # selection decodes greedily with the symbol head: the same choices as full-vocabulary greedy, faster
        decoding = DecodingConfig(mode=cfg.mode, num_beams=1, symbol_head=True, order=cfg.order,
                                  chunk_length=cfg.chunk_length, max_source_length=cfg.max_source_length)
        self.extractor = Extractor(backbone, layout, decoding)

    def examples(self, docs: Sequence[Document], counts: Counter) -> list[Example]:
        return make_examples(docs, self.backbone, self.layout, self.cfg.max_source_length, counts,
                             self.cfg.chunk_length)

    def sequences(self, example: Example, epoch: int, counts: Counter) -> list[list[int]]:
        bb, cfg = self.backbone, self.cfg
        return decoder_sequences(example, self.layout, self.sampling, cfg.mode, seed=cfg.seed, epoch=epoch,
                                 prefix=self.prefix, code_to_id=bb.code_to_id, max_len=bb.max_target_length,
                                 counts=counts, order=cfg.order)

    def collate(self, examples: Sequence[Example], epoch: int, counts: Counter) -> dict | None:
        n_prefix = len(self.prefix) + (self.cfg.mode == "rows")  # the row's head is given, not predicted
        batch = collate([(ex, self.sequences(ex, epoch, counts)) for ex in examples], self.backbone.pad_id, n_prefix)
        if batch is not None and self.cfg.pair_loss:
            batch["pair_labels"], batch["pair_mask"] = pair_targets(examples, self.layout)
        return batch

    def loss(self, model, batch: dict) -> tuple[torch.Tensor, int]:
        symbol_ids = None if self.symbol_ids is None else self.symbol_ids.to(batch["input_ids"].device)
        return row_loss(model, batch, label_smoothing=self.cfg.label_smoothing, code_to_id=symbol_ids,
                        bucket=self.cfg.group_by_length, chunk_length=self.cfg.chunk_length,
                        pair_loss=self.cfg.pair_loss)

    def param_groups(self, cfg: TrainConfig) -> list[dict]:
        return param_groups(self.model, cfg)

    def predict(self, docs: Sequence[Document]) -> Predictions:
        return self.extractor.predictions(docs)

    def save(self, directory: str | Path, **card) -> Path:
        return self.extractor.save_pretrained(directory, **card)

    def summary(self) -> dict:
        return {}


class DorePredictor:
    """A saved DORE model scoring a split: `Extractor` with the model card's decoding."""

    def __init__(self, directory: str | Path):
        self.extractor = Extractor.from_pretrained(directory)
        self.card = self.extractor.card

    def predict_split(self, docs: Sequence[Document], num_beams: int) -> tuple[Predictions, int, dict]:
        """(predictions, decoder steps, what the metrics record adds)."""
        ex = self.extractor
        decoding = ex.decoding.model_copy(update={"num_beams": num_beams,
                                                  "symbol_head": ex.decoding.symbol_head and num_beams == 1})
        predictions = ex.predictions(docs, decoding)
        return predictions, ex.stats.decoder_steps, {
            "parse_repairs": dict(ex.stats.parse), "outputs_cut": ex.stats.outputs_cut,
            "entities_dropped_by_layout": sum(len(ex.layout.assign(d).dropped) for d in docs)}


def load(directory: str | Path) -> DorePredictor:
    return DorePredictor(directory)
