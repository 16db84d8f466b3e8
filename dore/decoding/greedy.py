"""Greedy decoding with the symbol head as a state that advances one step at a time.

`GreedyRows` holds what the KV-cached greedy loop needs between steps: the rows' self-attention
cache (reused across steps: each step feeds only the new token), the cross-attention keys and
values (projected once per document), the constraint's per-row state and the codes so far.
With `compact` (the default), rows that wrote EOS leave the batch: a row that has finished
costs nothing more, however long the other rows of its batch run. The kept rows compute
what they computed before (each row attends only to its own cache and its document), so the
codes do not change; probabilities may differ in the last float bits, as between batch sizes.

`dore.decoding.continuous` keeps several of these states (cohorts) stepping side by side, so
new documents start while others are still being decoded.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from dore.decoding.constraint import NEG_INF, SymbolConstraint
from dore.decoding.head import ROW_GROUPS, SymbolHead, grouped_cross_attention, row_groups, shared_cross_attention_cache
from dore.model import entities

COMPACT_SHARE = 1 / 8  # compact once this share of the batch's rows has finished (each compaction copies the cache)


class GreedyRows:
    """Greedy symbol-head decoding of `decoder_input_ids` [rows, P] (see `fast_greedy`).

    `encoder_hidden` / `attention_mask` are per document when `row_doc` (the document of each row)
    is given, else per row. `self_cache=False` feeds the whole prefix at every step instead of
    reusing the self-attention cache (for measuring what the cache saves)."""

    def __init__(self, head: SymbolHead, encoder_hidden: Tensor, attention_mask: Tensor, decoder_input_ids: Tensor,
                 constraint: SymbolConstraint, max_new_tokens: int, code_bias: Tensor | None = None,
                 row_doc: Tensor | None = None, source_ids: Tensor | None = None, *, compact: bool = True,
                 self_cache: bool = True):
        self.head, self.constraint, self.code_bias = head, constraint, code_bias
        self.max_new_tokens, self.compact, self.self_cache = max_new_tokens, compact, self_cache
        self.code_to_id = constraint.code_to_id
        rows = len(decoder_input_ids)
        device = decoder_input_ids.device
        self.table, self.pair_features = head.entity_inputs(source_ids, encoder_hidden, row_doc)
        self.tail_logits = None  # pair-aware tail logits [rows, n_slots], with a model trained with them
        if self.pair_features is not None:
            if constraint.mode != "rows":
                raise ValueError("pair-aware relation logits decode rows (a row's head is its prefix)")
            self.head_slot = head.pair_slots(decoder_input_ids)[0]
            self.tail_logits = head.tail_term(self.pair_features, self.head_slot)  # per row, fixed while it decodes
        if head.cross_projection is not None:
            encoder_hidden = head.cross_projection(encoder_hidden)
        self.cache, self.doc_mask, self.row_doc, self.groups, self.per_document = None, None, row_doc, None, False
        if row_doc is not None:
            per_document = grouped_cross_attention(head.decoder)
            self.cache = shared_cross_attention_cache(head.decoder, encoder_hidden, row_doc, per_document=per_document)
            self.per_document = per_document
            if per_document:  # the grouped cross-attention reads the per-document cache: no per-row copy of the states
                self.doc_mask = attention_mask
                self.groups = row_groups(row_doc, attention_mask)
                self.first_states = encoder_hidden[:1]
                encoder_hidden = self.first_states.expand(rows, -1, -1)
            else:
                encoder_hidden = encoder_hidden.index_select(0, row_doc)
            attention_mask = attention_mask.index_select(0, row_doc)
        self.cross = None if self.cache is None else [(layer.keys, layer.values)
                                                      for layer in self.cache.cross_attention_cache.layers]
        self.encoder_hidden, self.attention_mask = encoder_hidden, attention_mask
        self.ids, self.step_ids = decoder_input_ids, decoder_input_ids
        self.active = torch.arange(rows, device=device)  # original index of each row still in the batch
        self.finished = torch.zeros(rows, dtype=torch.bool, device=device)  # of the rows in the batch
        eos = constraint.layout.eos_code
        self.codes = torch.full((rows, max_new_tokens), eos, dtype=torch.long, device=device)
        self.probs = torch.ones(rows, max_new_tokens, device=device)
        self.steps = 0

    @property
    def done(self) -> bool:
        return len(self.active) == 0 or self.steps >= self.max_new_tokens

    def step(self) -> Tensor:
        """One decoder step for every row still in the batch; the original indices of the rows
        that finished in it."""
        head, eos = self.head, self.constraint.layout.eos_code
        token = ROW_GROUPS.set(self.groups)
        try:
            with entities.reading(self.table, head.slot_of_id):
                cache = self.cache if self.self_cache else self._fresh_cache()
                out = head.decoder(input_ids=self.step_ids if self.self_cache else self.ids,
                                   encoder_hidden_states=self.encoder_hidden,
                                   encoder_attention_mask=self.attention_mask, past_key_values=cache, use_cache=True)
        finally:
            ROW_GROUPS.reset(token)
        if self.self_cache:
            self.cache = out.past_key_values
        pair = at_tail = tail_term = at_choice = None
        if self.pair_features is not None:  # the last token read is a tail: the pair term scores its relation
            tail = head.slot_of_id[self.step_ids[:, -1]] if self.steps else torch.full_like(self.head_slot, -1)
            pair, at_tail = head.pair_logits(self.pair_features, self.head_slot, tail[:, None])[:, 0], tail >= 0
            if self.tail_logits is not None:  # the last token read is the head or a relation: the next is a tail or EOS
                tail_term = self.tail_logits
                at_choice = head.is_relation_id[self.step_ids[:, -1]] | (self.steps == 0)
        logits = head.logits(out.last_hidden_state[:, -1], self.table, pair, at_tail, tail_term, at_choice)
        if self.code_bias is not None:
            logits = logits + self.code_bias
        logp = logits.masked_fill(~self.constraint.allowed_codes(self.ids), NEG_INF)
        best = logp.log_softmax(-1).max(-1)
        code = best.indices.masked_fill(self.finished, eos)
        self.codes[self.active, self.steps] = code
        self.probs[self.active, self.steps] = best.values.exp()
        newly = ~self.finished & (code == eos)
        self.finished |= newly
        self.steps += 1
        self.step_ids = self.code_to_id[code][:, None]
        self.ids = torch.cat([self.ids, self.step_ids], 1)
        ended = self.active[newly]
        if self.steps >= self.max_new_tokens or self.finished.all():
            self.active = self.active[:0]
        elif self.compact and int(self.finished.sum()) >= max(1, COMPACT_SHARE * len(self.finished)):
            self._keep(~self.finished)
        return ended

    def run(self) -> tuple[Tensor, Tensor]:
        while not self.done:
            self.step()
        return self.result()

    def result(self) -> tuple[Tensor, Tensor]:
        """Codes [rows, steps] (EOS repeated after a row finished) and their probabilities."""
        return self.codes[:, :self.steps], self.probs[:, :self.steps]

    def _keep(self, keep: Tensor) -> None:
        """Drop the rows not in `keep` (bool over the batch) from every per-row tensor."""
        index = keep.nonzero().squeeze(1)
        self.active, self.finished = self.active[index], self.finished[index]
        self.ids, self.step_ids = self.ids[index], self.step_ids[index]
        self.attention_mask = self.attention_mask[index]
        self.encoder_hidden = (self.first_states.expand(len(index), -1, -1) if self.per_document
                               else self.encoder_hidden[index])
        if self.table is not None:
            self.table = self.table[index]
        if self.pair_features is not None:
            self.pair_features = tuple(f[index] for f in self.pair_features)
            self.head_slot = self.head_slot[index]
            self.tail_logits = None if self.tail_logits is None else self.tail_logits[index]
        self.constraint = self.constraint.select(index)
        if self.row_doc is not None:
            self.row_doc = self.row_doc[index]
            if self.groups is not None:
                self._drop_finished_documents()
                self.groups = row_groups(self.row_doc, self.doc_mask)
        if self.cache is not None:
            self.cache.self_attention_cache.reorder_cache(index)
            if self.row_doc is None or not self.per_document:
                self.cache.cross_attention_cache.reorder_cache(index)
        if self.cross is not None and not self.per_document:
            self.cross = [(k[index], v[index]) for k, v in self.cross]

    def _drop_finished_documents(self) -> None:
        """Per-document cross-attention keys/values: keep only the documents with rows left (the
        grouped attention would still attend over the others' keys, with no query to answer)."""
        live = torch.unique(self.row_doc)
        docs = len(self.doc_mask)
        if len(live) == docs:
            return
        renumber = torch.full((docs,), -1, dtype=torch.long, device=live.device)
        renumber[live] = torch.arange(len(live), device=live.device)
        self.row_doc, self.doc_mask = renumber[self.row_doc], self.doc_mask[live]
        for layer in self.cache.cross_attention_cache.layers:
            layer.keys, layer.values = layer.keys[live], layer.values[live]
        self.cross = [(k[live], v[live]) for k, v in self.cross]

    def _fresh_cache(self):
        """A cache with only the cross-attention keys/values (no self-attention reuse)."""
        if self.cross is None:
            return None
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        for layer, (k, v) in enumerate(self.cross):
            cache.cross_attention_cache.update(k, v, layer)
            cache.is_updated[layer] = True
        return cache
