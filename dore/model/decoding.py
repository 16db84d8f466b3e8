"""Constrained decoding of symbol sequences: one vectorised LogitsProcessor, rows, a symbol head.

A target is a sequence of layout codes (dore.layout): tuples `e_1 .. e_k r` then EOS, k = the
layout's arity, in row-column order. Two modes:

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
dore.layout with rule (b) on, and rule (f) is used together with (c).

Generation: `generate_rows` / `generate_sequence` encode each document once and call
`model.generate` with the constraint, or with `symbol_head=True` run `fast_greedy`, a KV-cached
greedy loop whose output layer covers only the symbol ids. `allowed_tokens_fn` is the same
constraint as a per-hypothesis Python `prefix_allowed_tokens_fn`, the baseline that
`time_constraint_step` measures against.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from transformers import (BertLMHeadModel, EncoderDecoderModel, GenerationConfig, LogitsProcessor,
                          LogitsProcessorList, PreTrainedModel, PrefixConstrainedLogitsProcessor,
                          RobertaForCausalLM)
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.bert.modeling_bert import BertCrossAttention
from transformers.models.roberta.modeling_roberta import gelu

from dore.layout import IdLayout
from dore.model import entities
from dore.model.inputs import encode_chunks

Mode = Literal["sequence", "rows"]
_NEG_INF = float("-inf")


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


@dataclass(frozen=True)
class Decoded:
    """One generated sequence in code space."""

    doc: int  # index of the document in the batch
    head: int | None  # the row's head slot; None for a single sequence
    codes: list[int]  # generated codes before EOS; -1: an id outside the symbol set (rule (h) off)
    probs: list[float]  # each code's probability under the constrained distribution (NaN for -1)
    finished: bool  # EOS was generated; False: cut by max_new_tokens


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

def _block_index(layout: IdLayout) -> Tensor:
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
            block_of = _block_index(layout)
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

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        allowed = self.allowed_codes(input_ids)
        symbols = scores[:, self.code_to_id].masked_fill(~allowed, _NEG_INF)
        out = torch.full_like(scores, _NEG_INF) if self.rules.symbols_only else scores.clone()
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


# --- the per-hypothesis Python baseline ------------------------------------------------------

def allowed_tokens_fn(layout: IdLayout, code_to_id: Sequence[int], doc_slots: Sequence[Collection[int]], *,
                      mode: Mode, prefix_len: int, vocab_size: int, heads: Sequence[int] | None = None,
                      rules: Rules = Rules()) -> Callable[[int, Tensor], list[int]]:
    """`SymbolConstraint` as a `prefix_allowed_tokens_fn`: plain Python, one hypothesis per call.

    Independent of the vectorised version in how it counts completions: it enumerates each
    document's cells explicitly. `doc_slots[i]` / `heads[i]` belong to batch item i (before beams).
    """
    k, n_slots, n_rel = layout.arity, layout.n_slots, layout.n_relations + 1
    code_of = {i: c for c, i in enumerate(code_to_id)}
    non_symbols = [] if rules.symbols_only else [i for i in range(vocab_size) if i not in code_of]
    block_of = _block_index(layout).tolist()
    slot_types = [layout.slot_type(s) for s in range(n_slots)]

    def fits(prefix: tuple[int, ...], v: int, slots: Collection[int]) -> bool:
        j = len(prefix)
        if rules.document_slots:
            if v not in slots:
                return False
            if layout.arg_types and slot_types[v] != layout.arg_types[j]:
                return False
            if not layout.arg_types and j and (layout.ordered_types and block_of[v] <= block_of[prefix[0]]
                                               or k > 2 and v <= prefix[-1]):
                return False
        return not (rules.distinct_args and v in prefix)

    def prefix_counts(slots: Collection[int], head: int | None) -> Counter:
        """Cells of the document's domain with each argument prefix."""
        counts: Counter = Counter()

        def walk(prefix: tuple[int, ...]) -> None:
            if len(prefix) == k:
                counts.update(prefix[:i] for i in range(1, k + 1))
                return
            for v in range(n_slots):
                if fits(prefix, v, slots):
                    walk(prefix + (v,))

        if head is None:
            walk(())
        elif fits((), head, slots):
            walk((head,))
        return counts

    domains = [prefix_counts(set(slots), None if heads is None else heads[i]) for i, slots in enumerate(doc_slots)]

    def can_exceed(prev: tuple[int, ...], start: int, counts: Counter) -> bool:
        return (prev[k] - n_slots < n_rel - 2
                or any(counts[prev[:a] + (u,)] for a in range(start, k) for u in range(prev[a] + 1, n_slots)))

    def entities(tuples: list[tuple[int, ...]], current: tuple[int, ...], counts: Counter) -> list[int]:
        j, prev = len(current), tuples[-1] if tuples else None
        used = Counter(t[:j + 1] for t in tuples)
        out = []
        for v in range(n_slots):
            cells = counts[current + (v,)]
            if not cells:
                continue
            if prev and j == 0 and rules.sorted_heads and v < prev[0]:
                continue
            if prev and rules.strict_order and current == prev[:j] and (
                    j and v < prev[j] or v == prev[j] and not can_exceed(prev, j + 1, counts)):
                continue
            if rules.no_repeat and used[current + (v,)] >= cells * n_rel:
                continue
            out.append(v)
        return out

    def relations(tuples: list[tuple[int, ...]], current: tuple[int, ...]) -> list[int]:
        out = []
        for code in range(n_slots, n_slots + n_rel):
            if rules.no_repeat and current + (code,) in tuples:
                continue
            if rules.strict_order and tuples:
                if current == tuples[-1][:k] and code <= tuples[-1][k]:
                    continue
                if code == layout.na_code and any(t[:k] == current for t in tuples):
                    continue
            out.append(code)
        return out

    def allowed(batch_id: int, sent: Tensor) -> list[int]:
        gen = [code_of.get(i, -1) for i in sent[prefix_len:].tolist()]
        if layout.eos_code in gen:  # finished: what follows is padding
            return [code_to_id[layout.eos_code]]
        start = (heads[batch_id],) if mode == "rows" else ()
        per_tuple = k - len(start) + 1
        n_done, part = divmod(len(gen), per_tuple)
        tuples = [start + tuple(gen[i * per_tuple:(i + 1) * per_tuple]) for i in range(n_done)]
        current = start + tuple(gen[n_done * per_tuple:])
        entity_codes, relation_codes = list(range(n_slots)), list(range(n_slots, n_slots + n_rel))
        if len(current) < k:
            codes = entities(tuples, current, domains[batch_id]) + ([] if rules.slot_kinds else relation_codes)
        else:
            codes = relations(tuples, current) + ([] if rules.slot_kinds else entity_codes)
        if part == 0 or not rules.eos_at_boundary:
            codes.append(layout.eos_code)
        return [code_to_id[c] for c in codes] + non_symbols

    return allowed


# --- generation ------------------------------------------------------------------------------

class _SymbolLogProbs(LogitsProcessor):
    """Records each step's log-probabilities of the symbol ids (after the constraint), leaving the
    scores as they are: keeping `output_scores` would hold steps x hypotheses x vocabulary floats."""

    def __init__(self, code_to_id: Tensor):
        self.code_to_id = code_to_id
        self.steps: list[Tensor] = []

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        self.steps.append(scores.log_softmax(-1)[:, self.code_to_id])
        return scores


class _Renormalize(LogitsProcessor):
    """Log-probabilities over the allowed tokens only. Beam search normalises over the whole
    vocabulary before the processors run; a model trained with the symbol loss never learned to
    push ordinary words down, so their mass must not enter the beam scores."""

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        return scores.log_softmax(-1)


class _CodeBias(LogitsProcessor):
    """Adds a fixed bias to the symbol ids' scores."""

    def __init__(self, code_to_id: Tensor, bias: Tensor):
        self.code_to_id, self.bias = code_to_id, bias

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        return scores.index_add(1, self.code_to_id, self.bias.expand(len(scores), -1))


@contextmanager
def _only_generation_config(model: PreTrainedModel, config: GenerationConfig) -> Iterator[None]:
    """`generate` fills unset options from `model.generation_config`; a checkpoint's text defaults
    there (BART's forced BOS/EOS, no_repeat_ngram_size, beams) would fight the constraint."""
    saved = model.generation_config
    model.generation_config = config
    try:
        yield
    finally:
        model.generation_config = saved


def _pad_id(model: PreTrainedModel) -> int | None:
    pad = model.generation_config.pad_token_id
    return model.config.pad_token_id if pad is None else pad


def _generate(model: PreTrainedModel, hidden: Tensor, attention_mask: Tensor, prefixes: Tensor,
              constraint: SymbolConstraint, *, num_beams: int, length_penalty: float, max_new_tokens: int,
              code_bias: Tensor | None, logits_processor: Sequence[LogitsProcessor]) -> tuple[Tensor, Tensor]:
    """`model.generate` under the constraint: codes [rows, T] and their probabilities [rows, T]."""
    recorder = _SymbolLogProbs(constraint.code_to_id)
    bias = [] if code_bias is None else [_CodeBias(constraint.code_to_id, code_bias)]
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, num_beams=num_beams, length_penalty=length_penalty, do_sample=False,
        eos_token_id=int(constraint.code_to_id[constraint.layout.eos_code]), pad_token_id=_pad_id(model),
        decoder_start_token_id=int(prefixes[0, 0]), return_dict_in_generate=True)
    with _only_generation_config(model, config):
        out = model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=hidden), attention_mask=attention_mask,
                             decoder_input_ids=prefixes, generation_config=config,
                             logits_processor=LogitsProcessorList([*logits_processor, *bias, constraint,
                                                                   _Renormalize(), recorder]))
    codes = constraint.codes_of(out.sequences[:, prefixes.shape[1]:])
    n_steps = codes.shape[1]
    source = (out.beam_indices.clamp(min=0) if num_beams > 1  # the flat beam each token came from
              else torch.arange(len(codes), device=codes.device)[:, None].expand_as(codes))
    logp = torch.stack(recorder.steps[:n_steps], 1)  # [flat beams, T, n_codes]
    picked = logp[source, torch.arange(n_steps, device=codes.device), codes.clamp(min=0)]
    return codes, picked.exp().masked_fill(codes < 0, float("nan"))


class SymbolHead:
    """The decoder stack of a seq2seq model and its output layer restricted to the symbol ids.

    Used by `fast_greedy` and by training with `symbol_loss` (the softmax over the symbols the
    constrained decoder can choose from). Build it per step in training: it gathers the current
    output weights."""

    def __init__(self, model: PreTrainedModel, code_to_id: Tensor):
        self.scale, self.bias, self.cross_projection = 1.0, None, None
        self.transform: Callable[[Tensor], Tensor] = nn.Identity()
        if isinstance(model, EncoderDecoderModel):
            lm = model.decoder
            if isinstance(lm, BertLMHeadModel):
                self.transform = lm.cls.predictions.transform
                output = lm.cls.predictions.decoder
            elif isinstance(lm, RobertaForCausalLM):
                self.transform = lambda h: lm.lm_head.layer_norm(gelu(lm.lm_head.dense(h)))
                output = lm.lm_head.decoder
            else:
                raise ValueError(f"no symbol head for an encoder-decoder with a {type(lm).__name__} decoder")
            self.decoder = lm.base_model
            if (model.encoder.config.hidden_size != lm.config.hidden_size
                    and getattr(lm.config, "cross_attention_hidden_size", None) is None):
                self.cross_projection = model.enc_to_dec_proj  # as EncoderDecoderModel.forward does
        elif model.config.model_type in ("t5", "bart", "led"):
            self.decoder = model.get_decoder()
            output = model.get_output_embeddings()
            if getattr(model.config, "scale_decoder_outputs", False):  # T5 with tied embeddings
                self.scale = model.config.d_model ** -0.5
            if hasattr(model, "final_logits_bias"):  # BART, LED
                self.bias = model.final_logits_bias[0, code_to_id]
        else:
            raise ValueError(f"no symbol head for model type {model.config.model_type!r}")
        self.weight = output.weight[code_to_id]
        if output.bias is not None:
            self.bias = output.bias[code_to_id] + (0 if self.bias is None else self.bias)
        self.entities = entities.of(model)  # document-aware entity symbols, when attached
        self.code_to_id = code_to_id
        self.slot_of_id = None if self.entities is None else entities.slot_lookup(
            code_to_id, self.entities.n_slots, model.get_decoder().get_input_embeddings().num_embeddings)

    def logits(self, hidden: Tensor, table: Tensor | None = None) -> Tensor:
        """Symbol logits of decoder states [rows, (T,) H]; `table` [rows, n_slots, H]: the rows'
        entity table, dotted with the states and added to the slots' logits (a pointer)."""
        hidden = self.transform(hidden * self.scale)
        logits = hidden @ self.weight.T
        if table is not None:
            pointer = torch.einsum("r...h,rnh->r...n", hidden, table.to(hidden.dtype))
            logits = torch.cat([logits[..., :pointer.shape[-1]] + pointer, logits[..., pointer.shape[-1]:]], -1)
        return (logits if self.bias is None else logits + self.bias).float()

    def entity_table(self, source_ids: Tensor | None, encoder_hidden: Tensor, row_doc: Tensor | None) -> Tensor | None:
        """The rows' entity table [rows, n_slots, H], or None without the module. `encoder_hidden`
        as the encoder wrote it (before any projection), per document."""
        if self.entities is None:
            return None
        if source_ids is None:
            raise ValueError("a model with entity embeddings needs the source ids to decode")
        table = self.entities.table(source_ids, encoder_hidden, self.code_to_id[:self.entities.n_slots])
        return table if row_doc is None else table.index_select(0, row_doc)

    def forward(self, encoder_hidden: Tensor, encoder_attention_mask: Tensor, decoder_input_ids: Tensor,
                decoder_attention_mask: Tensor, row_doc: Tensor | None = None,
                source_ids: Tensor | None = None) -> Tensor:
        """Teacher-forced symbol logits [rows, T, n_codes].

        With `row_doc` (the document of each row), `encoder_hidden` and its mask are per document
        and the cross-attention keys and values are projected once per document, then shared by
        its rows: with ~20 rows per document that projection was most of a training step. (Grouping
        the rows' cross-attention as in decoding gained nothing here: T queries per row already
        amortise reading the keys/values.)
        """
        table = self.entity_table(source_ids, encoder_hidden, row_doc)
        if self.cross_projection is not None:
            encoder_hidden = self.cross_projection(encoder_hidden)
        cache = None
        if row_doc is not None:
            cache = shared_cross_attention_cache(self.decoder, encoder_hidden, row_doc)
            encoder_hidden = encoder_hidden.index_select(0, row_doc)
            encoder_attention_mask = encoder_attention_mask.index_select(0, row_doc)
        with entities.reading(table, self.slot_of_id):
            out = self.decoder(input_ids=decoder_input_ids, attention_mask=decoder_attention_mask,
                               encoder_hidden_states=encoder_hidden, encoder_attention_mask=encoder_attention_mask,
                               past_key_values=cache, use_cache=cache is not None)
        return self.logits(out.last_hidden_state, table)


def _cross_attentions(decoder: nn.Module) -> list[tuple[nn.Module, nn.Linear, nn.Linear, int]]:
    """(module, key projection, value projection, head size) of each decoder cross-attention."""
    found = []
    for name, module in decoder.named_modules():
        if isinstance(module, BertCrossAttention):  # BERT / RoBERTa-style warm-started decoders
            found.append((module, module.key, module.value, module.attention_head_size))
        elif name.endswith("encoder_attn"):  # BART, LED
            found.append((module, module.k_proj, module.v_proj, module.head_dim))
        elif name.endswith("EncDecAttention"):  # T5
            found.append((module, module.k, module.v, module.key_value_proj_dim))
    return found


def shared_cross_attention_cache(decoder: nn.Module, encoder_hidden: Tensor, row_doc: Tensor, *,
                                 per_document: bool = False) -> EncoderDecoderCache:
    """A cache whose cross-attention keys/values are projected per document and gathered per row
    (autograd flows through the gather); the decoder's attention layers then skip the projection.
    `per_document`: keep them per document, for `grouped_cross_attention`."""
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    docs, length = encoder_hidden.shape[:2]
    for module, key, value, head_size in sorted(_cross_attentions(decoder), key=lambda m: m[0].layer_idx):
        k = key(encoder_hidden).view(docs, length, -1, head_size).transpose(1, 2)
        v = value(encoder_hidden).view(docs, length, -1, head_size).transpose(1, 2)
        if not per_document:
            k, v = k.index_select(0, row_doc), v.index_select(0, row_doc)
        cache.cross_attention_cache.update(k, v, module.layer_idx)
        cache.is_updated[module.layer_idx] = True
    return cache


@dataclass(frozen=True)
class _RowGroups:
    """Rows laid out as query blocks of their documents: row i is query `slot[i]` of `row_doc[i]`."""

    row_doc: Tensor  # [rows]
    slot: Tensor  # [rows]
    width: int  # the most rows of one document
    mask: Tensor | None  # bool [docs, 1, 1, S] (True: attend), None when nothing is padded


_ROW_GROUPS: ContextVar[_RowGroups | None] = ContextVar("dore_row_groups", default=None)


def _row_groups(row_doc: Tensor, encoder_mask: Tensor) -> _RowGroups:
    counts = torch.bincount(row_doc, minlength=len(encoder_mask))
    order = torch.argsort(row_doc, stable=True)
    slot = torch.empty_like(row_doc)
    slot[order] = torch.arange(len(row_doc), device=row_doc.device) - (counts.cumsum(0) - counts)[row_doc[order]]
    mask = None if bool(encoder_mask.all()) else encoder_mask.bool()[:, None, None, :]
    return _RowGroups(row_doc, slot, int(counts.max()), mask)


def _grouped_bert_cross_attention(module: BertCrossAttention, original: Callable, hidden_states: Tensor,
                                  encoder_hidden_states: Tensor | None = None, attention_mask: Tensor | None = None,
                                  past_key_values: EncoderDecoderCache | None = None, **kwargs):
    """BertCrossAttention.forward (inference: no dropout) with the rows of a document as queries of
    one attention over its keys/values, cached per document: read once per document per step, not
    copied per row. At one query per row and step, those copies were half of decoding on CPU."""
    groups = _ROW_GROUPS.get()
    if groups is None or past_key_values is None or not past_key_values.is_updated.get(module.layer_idx):
        return original(hidden_states, encoder_hidden_states=encoder_hidden_states, attention_mask=attention_mask,
                        past_key_values=past_key_values, **kwargs)
    layer = past_key_values.cross_attention_cache.layers[module.layer_idx]
    keys, values = layer.keys, layer.values  # [docs, heads, S, head size]
    (rows, length), (docs, heads, _, size) = hidden_states.shape[:2], keys.shape
    query = module.query(hidden_states).view(rows, length, heads, size)
    grouped = query.new_zeros(docs, groups.width, length, heads, size).index_put((groups.row_doc, groups.slot), query)
    grouped = grouped.permute(0, 3, 1, 2, 4).reshape(docs, heads, groups.width * length, size)
    out = F.scaled_dot_product_attention(grouped, keys, values, attn_mask=groups.mask, scale=module.scaling)
    out = out.view(docs, heads, groups.width, length, size).permute(0, 2, 3, 1, 4)[groups.row_doc, groups.slot]
    return out.reshape(rows, length, heads * size), None


def grouped_cross_attention(decoder: nn.Module) -> bool:
    """Let the decoder's cross-attention read per-document keys/values for all rows at once while
    `_ROW_GROUPS` is set (BERT-style decoders, the embedded default); False where unsupported."""
    modules = [m for m, *_ in _cross_attentions(decoder)]
    if not modules or any(type(m) is not BertCrossAttention for m in modules):
        return False
    for m in modules:
        if not getattr(m, "_dore_grouped", False):  # idempotent; plain calls fall through to the original
            m.forward = functools.partial(_grouped_bert_cross_attention, m, m.forward)
            m._dore_grouped = True
    return True


@torch.no_grad()
def fast_greedy(model: PreTrainedModel, encoder_hidden: Tensor, attention_mask: Tensor, decoder_input_ids: Tensor,
                constraint: SymbolConstraint, code_to_id: Tensor, max_new_tokens: int,
                code_bias: Tensor | None = None, row_doc: Tensor | None = None,
                source_ids: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Greedy decoding with a KV cache and an output layer over the symbol ids only.

    Picks the tokens `generate` picks with the full-vocabulary head masked by `constraint`
    (`code_bias` [n_codes] is added to the logits first). Returns codes [rows, T] (EOS repeated
    after a row finished) and their probabilities. With `row_doc` (the document of each row),
    `encoder_hidden` and `attention_mask` are per document and the cross-attention keys and
    values are projected once per document, then shared by its rows (as in training).
    `source_ids` (per document): needed by models with entity embeddings (`dore.model.entities`).
    """
    code_to_id = torch.as_tensor(code_to_id, dtype=torch.long, device=decoder_input_ids.device)
    head = SymbolHead(model, code_to_id)
    table = head.entity_table(source_ids, encoder_hidden, row_doc)
    if head.cross_projection is not None:
        encoder_hidden = head.cross_projection(encoder_hidden)
    cache, groups = None, None
    if row_doc is not None:
        per_document = grouped_cross_attention(head.decoder)
        cache = shared_cross_attention_cache(head.decoder, encoder_hidden, row_doc, per_document=per_document)
        groups = _row_groups(row_doc, attention_mask) if per_document else None
        encoder_hidden, attention_mask = encoder_hidden.index_select(0, row_doc), attention_mask.index_select(0, row_doc)
    token = _ROW_GROUPS.set(groups)
    try:
        with entities.reading(table, head.slot_of_id):
            return _greedy_loop(head, encoder_hidden, attention_mask, decoder_input_ids, constraint, code_to_id,
                                max_new_tokens, code_bias, cache, table)
    finally:
        _ROW_GROUPS.reset(token)


def _greedy_loop(head: SymbolHead, encoder_hidden: Tensor, attention_mask: Tensor, decoder_input_ids: Tensor,
                 constraint: SymbolConstraint, code_to_id: Tensor, max_new_tokens: int, code_bias: Tensor | None,
                 cache: EncoderDecoderCache | None, table: Tensor | None) -> tuple[Tensor, Tensor]:
    eos = constraint.layout.eos_code
    ids, step_ids = decoder_input_ids, decoder_input_ids
    finished = torch.zeros(len(ids), dtype=torch.bool, device=ids.device)
    codes, probs = [], []
    for _ in range(max_new_tokens):
        out = head.decoder(input_ids=step_ids, encoder_hidden_states=encoder_hidden,
                           encoder_attention_mask=attention_mask, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        logits = head.logits(out.last_hidden_state[:, -1], table)
        if code_bias is not None:
            logits = logits + code_bias
        logp = logits.masked_fill(~constraint.allowed_codes(ids), _NEG_INF)
        best = logp.log_softmax(-1).max(-1)
        code = best.indices.masked_fill(finished, eos)
        codes.append(code)
        probs.append(best.values.exp())
        finished |= code == eos
        step_ids = code_to_id[code][:, None]
        ids = torch.cat([ids, step_ids], 1)
        if finished.all():
            break
    return torch.stack(codes, 1), torch.stack(probs, 1)


def _decode(model: PreTrainedModel, input_ids: Tensor, attention_mask: Tensor, doc_of_row: Tensor,
            prefixes: Tensor, constraint: SymbolConstraint, heads: list[int] | None, *, num_beams: int,
            length_penalty: float, max_new_tokens: int, symbol_head: bool, code_bias: Sequence[float] | Tensor | None,
            logits_processor: Sequence[LogitsProcessor], chunk_length: int | None = None) -> list[Decoded]:
    """Encode each document once, give each row its document's encoder states, decode."""
    if code_bias is not None:
        code_bias = torch.as_tensor(code_bias, dtype=torch.float, device=input_ids.device)
        if code_bias.shape != constraint.code_to_id.shape:
            raise ValueError(f"code_bias needs one value per code ({len(constraint.code_to_id)})")
    hidden = encode_chunks(model.get_encoder(), input_ids, attention_mask, chunk_length)
    if symbol_head:
        if num_beams != 1 or logits_processor:
            raise ValueError("the symbol head decodes greedily, without extra logits processors (use code_bias)")
        codes, probs = fast_greedy(model, hidden, attention_mask, prefixes, constraint, constraint.code_to_id,
                                   max_new_tokens, code_bias, row_doc=doc_of_row, source_ids=input_ids)
    elif entities.of(model) is not None:
        raise ValueError("a model with entity embeddings decodes with the symbol head (greedy, symbol_head=True); "
                         "HF generate (beam search) does not know its entity table")
    else:
        hidden, attention_mask = hidden.index_select(0, doc_of_row), attention_mask.index_select(0, doc_of_row)
        codes, probs = _generate(model, hidden, attention_mask, prefixes, constraint, num_beams=num_beams,
                                 length_penalty=length_penalty, max_new_tokens=max_new_tokens, code_bias=code_bias,
                                 logits_processor=logits_processor)
    eos = constraint.layout.eos_code
    decoded = []
    for row, (row_codes, row_probs) in enumerate(zip(codes.tolist(), probs.tolist())):
        end = row_codes.index(eos) if eos in row_codes else len(row_codes)
        decoded.append(Decoded(doc=int(doc_of_row[row]), head=None if heads is None else heads[row],
                               codes=row_codes[:end], probs=row_probs[:end], finished=end < len(row_codes)))
    return decoded


@torch.no_grad()
def generate_rows(model: PreTrainedModel, input_ids: Tensor, attention_mask: Tensor,
                  heads_per_doc: Sequence[Sequence[int]], *, layout: IdLayout, code_to_id: Sequence[int] | Tensor,
                  decoder_prefix: Sequence[int], doc_slots: Tensor, rules: Rules = Rules(), num_beams: int = 1,
                  length_penalty: float = 1.0, max_new_tokens: int = 64, symbol_head: bool = False,
                  code_bias: Sequence[float] | Tensor | None = None,
                  logits_processor: Sequence[LogitsProcessor] = (), chunk_length: int | None = None,
                  budgets: Sequence[int] | None = None) -> list[Decoded]:
    """Parallel row generation: one sequence per (document, head), each document encoded once.

    `doc_slots`: bool [n_docs, n_slots] (`slot_mask`). Rows come back document by document, heads
    in the given order. `symbol_head`: greedy with the symbol-only output layer (`fast_greedy`).
    `code_bias` [n_codes] is added to the symbols' scores (e.g. to favour NA or EOS), with either
    head; `logits_processor` (full vocabulary, `generate` only) run before the constraint.
    The model should be in eval mode.
    """
    if len(heads_per_doc) != len(input_ids) or len(doc_slots) != len(input_ids):
        raise ValueError(f"{len(input_ids)} documents, {len(heads_per_doc)} head lists, {len(doc_slots)} slot masks")
    device = input_ids.device
    heads = [h for doc_heads in heads_per_doc for h in doc_heads]
    if not heads:
        return []
    if not all(0 <= h < layout.n_slots for h in heads):
        raise ValueError(f"head slots must lie in 0..{layout.n_slots - 1}")
    code_to_id = torch.as_tensor(code_to_id, dtype=torch.long, device=device)
    doc_of_row = torch.tensor([d for d, doc_heads in enumerate(heads_per_doc) for _ in doc_heads], device=device)
    head_ids = code_to_id[torch.tensor(heads, device=device)]
    prefixes = torch.cat([torch.tensor(decoder_prefix, device=device).expand(len(heads), -1), head_ids[:, None]], 1)
    constraint = SymbolConstraint(layout, code_to_id, doc_slots.to(device)[doc_of_row], mode="rows",
                                  prefix_len=prefixes.shape[1], heads=heads, num_beams=num_beams, rules=rules,
                                  budgets=None if budgets is None else torch.tensor(budgets)[doc_of_row.cpu()])
    return _decode(model, input_ids, attention_mask, doc_of_row, prefixes, constraint, heads, num_beams=num_beams,
                   length_penalty=length_penalty, max_new_tokens=max_new_tokens, symbol_head=symbol_head,
                   code_bias=code_bias, logits_processor=logits_processor, chunk_length=chunk_length)


@torch.no_grad()
def generate_sequence(model: PreTrainedModel, input_ids: Tensor, attention_mask: Tensor, *, layout: IdLayout,
                      code_to_id: Sequence[int] | Tensor, decoder_prefix: Sequence[int], doc_slots: Tensor,
                      rules: Rules = Rules(), num_beams: int = 1, length_penalty: float = 1.0,
                      max_new_tokens: int = 520, symbol_head: bool = False,
                      code_bias: Sequence[float] | Tensor | None = None,
                      logits_processor: Sequence[LogitsProcessor] = (), chunk_length: int | None = None,
                      budgets: Sequence[int] | None = None) -> list[Decoded]:
    """Single-sequence generation: the whole relation matrix of each document as one sequence
    (one row per document, options as in `generate_rows`)."""
    if len(doc_slots) != len(input_ids):
        raise ValueError(f"{len(input_ids)} documents, {len(doc_slots)} slot masks")
    device = input_ids.device
    code_to_id = torch.as_tensor(code_to_id, dtype=torch.long, device=device)
    prefixes = torch.tensor(decoder_prefix, device=device).expand(len(input_ids), -1)
    constraint = SymbolConstraint(layout, code_to_id, doc_slots.to(device), mode="sequence",
                                  prefix_len=prefixes.shape[1], num_beams=num_beams, rules=rules, budgets=budgets)
    return _decode(model, input_ids, attention_mask, torch.arange(len(input_ids), device=device), prefixes,
                   constraint, None, num_beams=num_beams, length_penalty=length_penalty,
                   max_new_tokens=max_new_tokens, symbol_head=symbol_head, code_bias=code_bias,
                   logits_processor=logits_processor, chunk_length=chunk_length)


# --- states and timing -----------------------------------------------------------------------

def random_walk(constraint: SymbolConstraint, prefixes: Tensor, steps: int,
                generator: torch.Generator | None = None) -> Tensor:
    """Extend `prefixes` [N, P] by `steps` codes drawn uniformly among those the constraint allows,
    EOS only when nothing else is: decoding states for tests and timing."""
    ids = prefixes
    for _ in range(steps):
        allowed = constraint.allowed_codes(ids)
        noise = torch.rand(allowed.shape, generator=generator, device=ids.device)
        noise[:, constraint.layout.eos_code] -= 1
        code = noise.masked_fill(~allowed, _NEG_INF).argmax(1)
        ids = torch.cat([ids, constraint.code_to_id[code][:, None]], 1)
    return ids


def time_constraint_step(layout: IdLayout, slots_per_row: Sequence[Collection[int]], *, mode: Mode,
                         heads: Sequence[int] | None = None, num_beams: int = 1, generated: int = 30,
                         vocab_size: int = 32128, rules: Rules = Rules(), repeats: int = 10,
                         device: str = "cpu", seed: int = 0) -> dict[str, float]:
    """Time one decoding step of `SymbolConstraint` and of the `allowed_tokens_fn` baseline.

    The symbols take the last ids of a `vocab_size` vocabulary (as added tokens do), EOS id 1;
    the state is a random walk of `generated` tokens after a one-token prefix, for
    len(slots_per_row) x num_beams hypotheses. Raises if the two masks differ on a row still running.
    """
    code_to_id = list(range(vocab_size - layout.n_codes + 1, vocab_size)) + [1]
    prefix_len = 2 if mode == "rows" else 1  # decoder start (+ the head)
    constraint = SymbolConstraint(layout, code_to_id, slot_mask(layout, slots_per_row, device), mode=mode,
                                  prefix_len=prefix_len, heads=heads, num_beams=num_beams, rules=rules)
    baseline = PrefixConstrainedLogitsProcessor(
        allowed_tokens_fn(layout, code_to_id, slots_per_row, mode=mode, prefix_len=prefix_len,
                          vocab_size=vocab_size, heads=heads, rules=rules), num_beams)
    n = len(slots_per_row) * num_beams
    prefixes = torch.zeros(n, 1, dtype=torch.long, device=device)
    if mode == "rows":
        prefixes = torch.cat([prefixes, constraint.code_to_id[constraint.heads][:, None]], 1)
    generator = torch.Generator(device).manual_seed(seed)
    input_ids = random_walk(constraint, prefixes, generated, generator)
    scores = torch.zeros(n, vocab_size, device=device)

    def seconds(processor: Callable[[Tensor, Tensor], Tensor]) -> float:
        processor(input_ids, scores)  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            processor(input_ids, scores)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / repeats

    running = ~(constraint.codes_of(input_ids[:, prefix_len:]) == layout.eos_code).any(1)
    masks = [processor(input_ids, scores)[running].isinf() for processor in (constraint, baseline)]
    if not torch.equal(*masks):
        raise AssertionError("SymbolConstraint and allowed_tokens_fn disagree on this state")
    vectorised, python = seconds(constraint), seconds(baseline)
    return {"hypotheses": n, "generated": generated, "vectorised_ms": 1e3 * vectorised,
            "python_ms": 1e3 * python, "speedup": python / vectorised}
