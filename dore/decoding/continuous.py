"""Continuous row batching: documents join the decoder while others are still being decoded.

A batch decoded to its end (`generate_rows`) holds every document until its slowest row has
finished, and a document that arrives meanwhile waits for the whole batch. `ContinuousRows`
keeps cohorts (documents admitted together, encoded together, one `GreedyRows` each, finished
rows compacted away) and advances all of them by one step per `step()`; a document is handed
back as soon as its own rows have finished, and new documents start a cohort at the next step.
A cohort decodes exactly as a batch of its documents would, and a document's output does not
depend on its batch (per-document budgets), so the outputs are those of one-by-one decoding.

Cohorts are kept apart because their rows are at different steps: merging them would need
padded self-attention caches and shifted positions. Each step thus runs one decoder call per
cohort; under load a cohort holds every document that arrived during one step.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import PreTrainedModel

from dore.decoding.constraint import Rules
from dore.decoding.generate import Decoded, decoded_rows, row_setup, start_greedy
from dore.decoding.greedy import GreedyRows
from dore.symbolic.layout import IdLayout


@dataclass
class _Cohort:
    state: GreedyRows | None  # None: no document of the cohort has a row
    keys: list[Hashable]  # the caller's key of each document
    doc_of_row: Tensor
    heads: list[int]
    rows_left: list[int]  # per document: rows not finished yet


class ContinuousRows:
    """Greedy symbol-head row decoding of documents added at any step (see the module doc)."""

    def __init__(self, model: PreTrainedModel, *, layout: IdLayout, code_to_id: Sequence[int] | Tensor,
                 decoder_prefix: Sequence[int], rules: Rules = Rules(), code_bias: Tensor | None = None,
                 chunk_length: int | None = None, compact: bool = True):
        self.model, self.layout, self.rules = model, layout, rules
        self.code_to_id, self.decoder_prefix = torch.as_tensor(code_to_id, dtype=torch.long), list(decoder_prefix)
        self.code_bias, self.chunk_length, self.compact = code_bias, chunk_length, compact
        self.cohorts: list[_Cohort] = []

    @property
    def active_rows(self) -> int:
        return sum(len(c.state.active) for c in self.cohorts if c.state is not None)

    @property
    def idle(self) -> bool:
        return not self.cohorts

    @torch.no_grad()
    def add(self, keys: Sequence[Hashable], input_ids: Tensor, attention_mask: Tensor,
            heads_per_doc: Sequence[Sequence[int]], doc_slots: Tensor, budgets: Sequence[int]) -> None:
        """Start a cohort: documents `keys` (padded `input_ids` [docs, S]), encoded now and decoded
        from the next `step()` on."""
        heads = [h for doc_heads in heads_per_doc for h in doc_heads]
        doc_of_row, prefixes, constraint = row_setup(heads_per_doc, layout=self.layout, code_to_id=self.code_to_id,
                                                     decoder_prefix=self.decoder_prefix, doc_slots=doc_slots,
                                                     rules=self.rules, budgets=budgets, device=input_ids.device)
        state = None
        if heads:
            state = start_greedy(self.model, input_ids, attention_mask, doc_of_row, prefixes, constraint,
                                 max(budgets) + 1, self.code_bias, self.chunk_length, compact=self.compact)
        self.cohorts.append(_Cohort(state, list(keys), doc_of_row, heads, [len(h) for h in heads_per_doc]))

    @torch.no_grad()
    def step(self) -> list[tuple[Hashable, list[Decoded]]]:
        """One decoder step of every cohort; the documents that finished, with their rows."""
        finished = []
        for cohort in self.cohorts:
            if cohort.state is not None:
                for row in cohort.state.step().tolist():
                    cohort.rows_left[int(cohort.doc_of_row[row])] -= 1
            if cohort.state is None or cohort.state.done:  # the rest was cut by the token budget
                cohort.rows_left = [min(left, 0) for left in cohort.rows_left]
            for doc, left in enumerate(cohort.rows_left):
                if left == 0:
                    finished.append((cohort.keys[doc], self._rows_of(cohort, doc)))
                    cohort.rows_left[doc] = -1  # handed back
        self.cohorts = [c for c in self.cohorts if any(left >= 0 for left in c.rows_left)]
        return finished

    def _rows_of(self, cohort: _Cohort, doc: int) -> list[Decoded]:
        if cohort.state is None:
            return []
        codes, probs = cohort.state.result()
        rows = (cohort.doc_of_row == doc).nonzero().squeeze(1).tolist()
        return decoded_rows(codes, probs, cohort.doc_of_row, cohort.heads, self.layout.eos_code, rows)
