"""The symbol constraint: which codes a hypothesis may generate next, for all hypotheses at once.

A target is a sequence of layout codes (dore.symbolic.layout): tuples `e_1 .. e_k r` then EOS,
k = the layout's arity, in row-column order. Two modes:

- **sequence**: one decoder sequence per document, `h t r h t r ... EOS`;
- **rows**: one decoder sequence per head entity h, decoder prefix = backbone prefix + `<e_h>`,
  generated part `t r t r ... EOS`; the head is never generated.

`SymbolConstraint` derives every hypothesis' state from `input_ids` with tensor ops only, so it is
safe under beam reordering and costs no host sync. Its rules (each switchable in `Rules`):

(a) the position in the tuple decides the codes: entity slots, or relations plus NA;
(b) entities come from this document's slots and the layout's domain: typed blocks per position
    (CDR: Chemical then Disease; SciREX gold 4-ary: one block per position), a later block for the
    tail (SciREX gold binary), increasing slots for untyped n-ary (a < b < c < d);
(c) heads never decrease (sequence mode);
(d) no entity twice in a tuple (tail != head);
(e) no tuple twice;
(f) strict row-column order: within a head each tuple is lexicographically larger than the one
    before (tails non-decreasing, a repeated cell needs a larger relation), NA only on a cell with
    no earlier tuple;
(g) EOS only at a tuple boundary;
(h) nothing outside the symbol codes (pad, BOS, the decoder start, ordinary words).

On top of the rules a lookahead keeps decoding free of dead ends: an entity is offered only if the
tuple can still be finished, given the document's cells and the tuples generated so far. It never
removes a feasible code, and it is complete (no hypothesis is ever left without a code mid-tuple)
whenever each argument's domain depends only on the previous argument, true of every layout in
dore.symbolic.layout with rule (b) on, and rule (f) is used together with (c).
`dore.decoding.reference` holds the same rules as plain per-hypothesis Python, the baseline the
property tests compare against.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from transformers import LogitsProcessor

from dore.symbolic.layout import IdLayout

Mode = Literal["sequence", "rows"]
NEG_INF = float("-inf")


@dataclass(frozen=True)
class Rules:
    """Which rules `SymbolConstraint` applies; all but the optional strict order are on by default."""

    slot_kinds: bool = True  # (a) the tuple position decides entity vs relation codes
    document_slots: bool = True  # (b) this document's slots, typed blocks / argument order
    sorted_heads: bool = True  # (c) heads never decrease (sequence mode)
    distinct_args: bool = True  # (d) no entity twice in a tuple
    no_repeat: bool = True  # (e) no tuple twice
    strict_order: bool = False  # (f) lexicographically increasing tuples within a head; NA on fresh cells only
    eos_at_boundary: bool = True  # (g) EOS only between tuples
    symbols_only: bool = True  # (h) every id outside the symbol codes is masked



def slot_mask(layout: IdLayout, slots_per_doc: Sequence[Collection[int]],
              device: torch.device | str | None = None) -> Tensor:
    """Bool [n_docs, n_slots]: the slots each document uses (`SlotAssignment.slots`)."""
    mask = torch.zeros(len(slots_per_doc), layout.n_slots, dtype=torch.bool)
    for i, slots in enumerate(slots_per_doc):
        if any(not 0 <= s < layout.n_slots for s in slots):
            raise ValueError(f"document {i}: slots {sorted(slots)} outside 0..{layout.n_slots - 1}")
        mask[i, list(slots)] = True
    return mask.to(device)



# --- the vectorised constraint ---------------------------------------------------------------

def block_index(layout: IdLayout) -> Tensor:
    """The block of every slot."""
    return torch.cat([torch.full((b.size,), i) for i, b in enumerate(layout.blocks)])


def _type_mask(layout: IdLayout, type_: str) -> Tensor:
    mask = torch.zeros(layout.n_slots, dtype=torch.bool)
    block = layout.block_range(type_)
    mask[block.start:block.stop] = True
    return mask


def _static_domain(layout: IdLayout, rules: Rules) -> tuple[Tensor, Tensor]:
    """Slots allowed as first argument [S], and argument i+1 given argument i [k-1, S, S].

    Everything here is independent of the document: slots not in it are masked separately.
    """
    n, k = layout.n_slots, layout.arity
    first = torch.ones(n, dtype=torch.bool)
    step = torch.ones(k - 1, n, n, dtype=torch.bool)
    if rules.document_slots:
        if layout.arg_types:
            in_type = [_type_mask(layout, t) for t in layout.arg_types]
            first = in_type[0]
            step &= torch.stack(in_type[1:])[:, None, :]
        elif layout.ordered_types:  # tail from a later type block than the head
            block_of = block_index(layout)
            step &= block_of[None, None, :] > block_of[None, :, None]
        elif k > 2:  # untyped n-ary cells are combinations: increasing slots
            step &= torch.ones(n, n, dtype=torch.bool).triu(1)
    if rules.distinct_args:
        step &= ~torch.eye(n, dtype=torch.bool)
    return first, step


def _count(index: Tensor, weight: Tensor, size: int) -> Tensor:
    """Float [N, size]: per row, the summed weight of each index value; index -1 is ignored."""
    out = torch.zeros(index.shape[0], size + 1, device=index.device)
    out.scatter_add_(1, torch.where(index >= 0, index, size), weight.float())
    return out[:, :size]


class SymbolConstraint(LogitsProcessor):
    """Masks (-inf) every token the rules forbid, for all hypotheses at once.

    `doc_slots`: bool [rows, n_slots], the slots of each row's document (rows = sequences before
    beam expansion; `num_beams` copies of each follow one another, as in `generate`).
    `prefix_len`: decoder tokens before the first generated one. `heads` (rows mode): the head
    slot of each row. `code_to_id`: layout code -> vocabulary id, EOS code -> the backbone's EOS.
    """

    def __init__(self, layout: IdLayout, code_to_id: Tensor | Sequence[int], doc_slots: Tensor, *,
                 mode: Mode, prefix_len: int, heads: Tensor | Sequence[int] | None = None,
                 num_beams: int = 1, rules: Rules = Rules(), budgets: Tensor | Sequence[int] | None = None):
        device = doc_slots.device
        code_to_id = torch.as_tensor(code_to_id, dtype=torch.long, device=device)
        if mode not in ("sequence", "rows"):
            raise ValueError(f"mode must be 'sequence' or 'rows', not {mode!r}")
        if code_to_id.shape != (layout.n_codes,) or code_to_id.unique().numel() != layout.n_codes:
            raise ValueError(f"code_to_id needs {layout.n_codes} distinct ids for layout {layout.name!r}")
        if doc_slots.ndim != 2 or doc_slots.shape[1] != layout.n_slots:
            raise ValueError(f"doc_slots must be [rows, {layout.n_slots}], not {list(doc_slots.shape)}")
        if (mode == "rows") != (heads is not None):
            raise ValueError("heads are required in rows mode and only there")
        self.layout, self.rules, self.mode, self.prefix_len = layout, rules, mode, prefix_len
        # per-row limits on generated tokens: a row ends (EOS) at the first tuple boundary where
        # another tuple would not fit, so its output never depends on the batch it decodes in
        self.budgets = None if budgets is None else \
            torch.as_tensor(budgets, dtype=torch.long, device=device).repeat_interleave(num_beams)
        self.k, self.n_slots, self.n_rel_codes = layout.arity, layout.n_slots, layout.n_relations + 1
        self.code_to_id = code_to_id
        self.id_to_code = torch.full((int(code_to_id.max()) + 1,), -1, dtype=torch.long, device=device)
        self.id_to_code[code_to_id] = torch.arange(layout.n_codes, device=device)
        self._slot_values = torch.arange(self.n_slots, device=device)
        self._rel_values = torch.arange(self.n_rel_codes, device=device)

        doc = doc_slots.bool().repeat_interleave(num_beams, 0)
        self.doc = doc if rules.document_slots else torch.ones_like(doc)
        first, step = _static_domain(layout, rules)
        self.first, self.step = first.to(device), step.to(device)
        # completions[j][n, v]: how many cells finish a tuple whose argument j is v (one for the last)
        completions = [torch.ones_like(self.doc, dtype=torch.float64)]
        for j in range(self.k - 2, -1, -1):
            completions.insert(0, (self.doc * completions[0]) @ self.step[j].double().T)
        self.completions = completions
        if mode == "rows":
            self.heads = torch.as_tensor(heads, dtype=torch.long, device=device).repeat_interleave(num_beams)
            if self.heads.shape != (self.doc.shape[0],):
                raise ValueError(f"{self.heads.numel() // num_beams} heads for {doc_slots.shape[0]} rows")
            if len(self.heads) and not 0 <= int(self.heads.min()) <= int(self.heads.max()) < self.n_slots:
                raise ValueError(f"head slots must lie in 0..{self.n_slots - 1}")
            rows = torch.arange(len(self.heads), device=device)
            # a head that cannot start a cell of this document leaves its row empty (EOS only)
            self.row_ok = (self.first[self.heads] & self.doc[rows, self.heads]
                           & (completions[0][rows, self.heads] > 0))[:, None]

    def select(self, rows: Tensor) -> "SymbolConstraint":
        """The constraint of the hypotheses `rows` only (their per-row state), for a batch that
        drops finished rows."""
        out = copy.copy(self)
        out.doc = self.doc[rows]
        out.completions = [c[rows] for c in self.completions]
        if self.budgets is not None:
            out.budgets = self.budgets[rows]
        if self.mode == "rows":
            out.heads, out.row_ok = self.heads[rows], self.row_ok[rows]
        return out

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        allowed = self.allowed_codes(input_ids)
        symbols = scores[:, self.code_to_id].masked_fill(~allowed, NEG_INF)
        out = torch.full_like(scores, NEG_INF) if self.rules.symbols_only else scores.clone()
        out[:, self.code_to_id] = symbols
        return out

    def codes_of(self, ids: Tensor) -> Tensor:
        """Vocabulary ids -> codes; -1 for ids outside the symbol set."""
        known = ids < len(self.id_to_code)
        return torch.where(known, self.id_to_code[ids.clamp(max=len(self.id_to_code) - 1)], -1)

    def allowed_codes(self, input_ids: Tensor) -> Tensor:
        """Bool [hypotheses, n_codes]: the codes each hypothesis may generate next."""
        gen = self.codes_of(input_ids[:, self.prefix_len:])
        n, k, s = gen.shape[0], self.k, self.n_slots
        per_tuple = k if self.mode == "rows" else k + 1
        n_done, part = divmod(gen.shape[1], per_tuple)
        done = gen[:, :n_done * per_tuple].view(n, n_done, per_tuple)
        current = gen[:, n_done * per_tuple:]
        if self.mode == "rows":  # the head is the prefix's last token: put it back in every tuple
            done = torch.cat([self.heads[:, None, None].expand(n, n_done, 1), done], 2)
            current = torch.cat([self.heads[:, None], current], 1)
        args = torch.where((done[..., :k] >= 0) & (done[..., :k] < s), done[..., :k], -1)
        rels = done[..., k] - s
        rels = torch.where((rels >= 0) & (rels < self.n_rel_codes), rels, -1)
        current = torch.where((current >= 0) & (current < s), current, -1)

        allowed = torch.zeros(n, self.layout.n_codes, dtype=torch.bool, device=gen.device)
        relations = slice(s, s + self.n_rel_codes)
        if current.shape[1] < k:
            allowed[:, :s] = self._entities(args, rels, current)
            if not self.rules.slot_kinds:
                allowed[:, relations] = True
        else:
            allowed[:, relations] = self._relations(args, rels, current)
            if not self.rules.slot_kinds:
                allowed[:, :s] = True
        allowed[:, self.layout.eos_code] = part == 0 or not self.rules.eos_at_boundary
        if self.budgets is not None and part == 0:
            full = gen.shape[1] + per_tuple > self.budgets
            allowed[full] = False
            allowed[full, self.layout.eos_code] = True
        return allowed

    def _candidates(self, prefix: Tensor) -> Tensor:
        """Bool [N, S]: slots for the argument after `prefix` [N, j] that rules (b), (d) allow and
        that can still be completed to a cell of the document."""
        j = prefix.shape[1]
        ok = self.doc & (self.first if j == 0 else self.step[j - 1][prefix[:, -1].clamp(min=0)])
        if self.rules.distinct_args and j:
            ok = ok & (_count(prefix, torch.ones_like(prefix), self.n_slots) == 0)
        if self.mode == "rows":
            ok = ok & self.row_ok
        return ok & (self.completions[j] > 0)

    def _can_exceed(self, prev_args: Tensor, prev_rel: Tensor, start: int) -> Tensor:
        """Bool [N]: can a tuple sharing prev's arguments before `start` still end up larger than prev?"""
        ok = prev_rel < self.n_rel_codes - 2  # a larger relation (NA is not allowed on a used cell)
        for a in range(start, self.k):
            larger = self._candidates(prev_args[:, :a]) & (self._slot_values > prev_args[:, a:a + 1])
            ok = ok | larger.any(1)
        return ok

    def _entities(self, args: Tensor, rels: Tensor, current: Tensor) -> Tensor:
        j = current.shape[1]
        ok = self._candidates(current)
        if args.shape[1] == 0:
            return ok
        prev_args, prev_rel, values = args[:, -1], rels[:, -1], self._slot_values
        prev_j = prev_args[:, j:j + 1]
        if j == 0 and self.rules.sorted_heads:
            ok = ok & (values >= prev_j)
        if self.rules.strict_order:
            tight = (current == prev_args[:, :j]).all(1, keepdim=True)  # the tuple so far equals prev's start
            below = values < prev_j if j else torch.zeros_like(ok)  # at j = 0 that is rule (c)
            dead_end = (values == prev_j) & ~self._can_exceed(prev_args, prev_rel, j + 1)[:, None]
            ok = ok & ~(tight & (below | dead_end))
        if self.rules.no_repeat:  # a value whose every completion was generated already is exhausted
            same_start = (args[:, :, :j] == current[:, None, :]).all(2)
            used = _count(args[:, :, j], same_start, self.n_slots)
            ok = ok & (used < self.completions[j] * self.n_rel_codes)
        return ok

    def _relations(self, args: Tensor, rels: Tensor, current: Tensor) -> Tensor:
        ok = torch.ones(current.shape[0], self.n_rel_codes, dtype=torch.bool, device=current.device)
        if args.shape[1] == 0:
            return ok
        same_cell = (args == current[:, None, :]).all(2)
        if self.rules.no_repeat:
            ok = ok & (_count(rels, same_cell, self.n_rel_codes) == 0)
        if self.rules.strict_order:
            ok = ok & ~(same_cell[:, -1:] & (self._rel_values <= rels[:, -1:]))
            ok[:, -1] &= ~same_cell.any(1)  # NA only on a cell with no earlier tuple
        return ok



# --- decoding states for tests and timing -----------------------------------------------------------------------

def random_walk(constraint: SymbolConstraint, prefixes: Tensor, steps: int,
                generator: torch.Generator | None = None) -> Tensor:
    """Extend `prefixes` [N, P] by `steps` codes drawn uniformly among those the constraint allows,
    EOS only when nothing else is: decoding states for tests and timing."""
    ids = prefixes
    for _ in range(steps):
        allowed = constraint.allowed_codes(ids)
        noise = torch.rand(allowed.shape, generator=generator, device=ids.device)
        noise[:, constraint.layout.eos_code] -= 1
        code = noise.masked_fill(~allowed, NEG_INF).argmax(1)
        ids = torch.cat([ids, constraint.code_to_id[code][:, None]], 1)
    return ids

