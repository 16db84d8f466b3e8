"""Generation: encode each document once, then decode its rows (or one sequence) under the
symbol constraint, with HF `generate` (beams) or the KV-cached greedy loop over the symbol head.

`generate_rows` / `generate_sequence` are the entry points (`dore.extract.Extractor` calls them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import LogitsProcessor, PreTrainedModel

from dore.decoding.constraint import Rules, SymbolConstraint
from dore.decoding.greedy import GreedyRows
from dore.decoding.head import SymbolHead
from dore.decoding.hf import generate_with_hf
from dore.model import entities
from dore.model.inputs import encode
from dore.symbolic.layout import IdLayout


@dataclass(frozen=True)
class Decoded:
    """One generated sequence in code space."""

    doc: int  # index of the document in the batch
    head: int | None  # the row's head slot; None for a single sequence
    codes: list[int]  # generated codes before EOS; -1: an id outside the symbol set (rule (h) off)
    probs: list[float]  # each code's probability under the constrained distribution (NaN for -1)
    finished: bool  # EOS was generated; False: cut by max_new_tokens



@torch.no_grad()
def fast_greedy(model: PreTrainedModel, encoder_hidden: Tensor, attention_mask: Tensor, decoder_input_ids: Tensor,
                constraint: SymbolConstraint, code_to_id: Tensor, max_new_tokens: int,
                code_bias: Tensor | None = None, row_doc: Tensor | None = None,
                source_ids: Tensor | None = None, compact: bool = True) -> tuple[Tensor, Tensor]:
    """Greedy decoding with a KV cache and an output layer over the symbol ids only.

    Picks the tokens `generate` picks with the full-vocabulary head masked by `constraint`
    (`code_bias` [n_codes] is added to the logits first). Returns codes [rows, T] (EOS repeated
    after a row finished) and their probabilities. With `row_doc` (the document of each row),
    `encoder_hidden` and `attention_mask` are per document and the cross-attention keys and
    values are projected once per document, then shared by its rows (as in training).
    `source_ids` (per document): needed by models with entity embeddings (`dore.model.entities`).
    `compact`: finished rows leave the batch (`dore.decoding.greedy`).
    """
    code_to_id = torch.as_tensor(code_to_id, dtype=torch.long, device=decoder_input_ids.device)
    head = SymbolHead(model, code_to_id)
    return GreedyRows(head, encoder_hidden, attention_mask, decoder_input_ids, constraint, max_new_tokens, code_bias,
                      row_doc, source_ids, compact=compact).run()


def _decode(model: PreTrainedModel, input_ids: Tensor, attention_mask: Tensor, doc_of_row: Tensor,
            prefixes: Tensor, constraint: SymbolConstraint, heads: list[int] | None, *, num_beams: int,
            length_penalty: float, max_new_tokens: int, symbol_head: bool, code_bias: Sequence[float] | Tensor | None,
            logits_processor: Sequence[LogitsProcessor], chunk_length: int | None = None,
            compact: bool = True) -> list[Decoded]:
    """Encode each document once, give each row its document's encoder states, decode."""
    code_bias = _checked_bias(code_bias, constraint)
    if symbol_head:
        if num_beams != 1 or logits_processor:
            raise ValueError("the symbol head decodes greedily, without extra logits processors (use code_bias)")
        state = start_greedy(model, input_ids, attention_mask, doc_of_row, prefixes, constraint, max_new_tokens,
                             code_bias, chunk_length, compact=compact)
        return decoded_rows(*state.run(), doc_of_row, heads, constraint.layout.eos_code)
    hidden = encode(model, input_ids, attention_mask, chunk_length)  # LED: global attention, as trained
    if entities.of(model) is not None:
        raise ValueError("a model with entity embeddings decodes with the symbol head (greedy, symbol_head=True); "
                         "HF generate (beam search) does not know its entity table")
    else:
        hidden, attention_mask = hidden.index_select(0, doc_of_row), attention_mask.index_select(0, doc_of_row)
        codes, probs = generate_with_hf(model, hidden, attention_mask, prefixes, constraint, num_beams=num_beams,
                                 length_penalty=length_penalty, max_new_tokens=max_new_tokens, code_bias=code_bias,
                                 logits_processor=logits_processor)
    return decoded_rows(codes, probs, doc_of_row, heads, constraint.layout.eos_code)


def _checked_bias(code_bias: Sequence[float] | Tensor | None, constraint: SymbolConstraint) -> Tensor | None:
    if code_bias is None:
        return None
    code_bias = torch.as_tensor(code_bias, dtype=torch.float, device=constraint.code_to_id.device)
    if code_bias.shape != constraint.code_to_id.shape:
        raise ValueError(f"code_bias needs one value per code ({len(constraint.code_to_id)})")
    return code_bias


def start_greedy(model: PreTrainedModel, input_ids: Tensor, attention_mask: Tensor, doc_of_row: Tensor,
                 prefixes: Tensor, constraint: SymbolConstraint, max_new_tokens: int,
                 code_bias: Sequence[float] | Tensor | None, chunk_length: int | None = None, *,
                 compact: bool = True, self_cache: bool = True) -> GreedyRows:
    """Encode the documents once; the greedy symbol-head state of their rows, before the first step."""
    hidden = encode(model, input_ids, attention_mask, chunk_length)  # LED: global attention, as trained
    return GreedyRows(SymbolHead(model, constraint.code_to_id), hidden, attention_mask, prefixes, constraint,
                      max_new_tokens, _checked_bias(code_bias, constraint), doc_of_row, input_ids,
                      compact=compact, self_cache=self_cache)


def decoded_rows(codes: Tensor, probs: Tensor, doc_of_row: Tensor, heads: Sequence[int] | None, eos: int,
                 rows: Sequence[int] | None = None) -> list[Decoded]:
    """`Decoded` of the rows (all, or the given row indices), cut at their first EOS."""
    rows = range(len(codes)) if rows is None else rows
    decoded = []
    for row in rows:
        row_codes, row_probs = codes[row].tolist(), probs[row].tolist()
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
                  budgets: Sequence[int] | None = None, compact: bool = True) -> list[Decoded]:
    """Parallel row generation: one sequence per (document, head), each document encoded once.

    `doc_slots`: bool [n_docs, n_slots] (`slot_mask`). Rows come back document by document, heads
    in the given order. `symbol_head`: greedy with the symbol-only output layer (`fast_greedy`).
    `code_bias` [n_codes] is added to the symbols' scores (e.g. to favour NA or EOS), with either
    head; `logits_processor` (full vocabulary, `generate` only) run before the constraint.
    The model should be in eval mode.
    """
    if len(heads_per_doc) != len(input_ids) or len(doc_slots) != len(input_ids):
        raise ValueError(f"{len(input_ids)} documents, {len(heads_per_doc)} head lists, {len(doc_slots)} slot masks")
    heads = [h for doc_heads in heads_per_doc for h in doc_heads]
    if not heads:
        return []
    doc_of_row, prefixes, constraint = row_setup(heads_per_doc, layout=layout, code_to_id=code_to_id,
                                                 decoder_prefix=decoder_prefix, doc_slots=doc_slots, rules=rules,
                                                 num_beams=num_beams, budgets=budgets, device=input_ids.device)
    return _decode(model, input_ids, attention_mask, doc_of_row, prefixes, constraint, heads, num_beams=num_beams,
                   length_penalty=length_penalty, max_new_tokens=max_new_tokens, symbol_head=symbol_head,
                   code_bias=code_bias, logits_processor=logits_processor, chunk_length=chunk_length, compact=compact)


def row_setup(heads_per_doc: Sequence[Sequence[int]], *, layout: IdLayout, code_to_id: Sequence[int] | Tensor,
              decoder_prefix: Sequence[int], doc_slots: Tensor, rules: Rules = Rules(), num_beams: int = 1,
              budgets: Sequence[int] | None = None,
              device: torch.device | str | None = None) -> tuple[Tensor, Tensor, SymbolConstraint]:
    """The document of each row, the rows' decoder prefixes (backbone prefix + head symbol) and
    their constraint."""
    heads = [h for doc_heads in heads_per_doc for h in doc_heads]
    if not all(0 <= h < layout.n_slots for h in heads):
        raise ValueError(f"head slots must lie in 0..{layout.n_slots - 1}")
    code_to_id = torch.as_tensor(code_to_id, dtype=torch.long, device=device)
    doc_of_row = torch.tensor([d for d, doc_heads in enumerate(heads_per_doc) for _ in doc_heads],
                              dtype=torch.long, device=device)
    head_ids = code_to_id[torch.tensor(heads, dtype=torch.long, device=device)]
    prefixes = torch.cat([torch.tensor(decoder_prefix, device=device).expand(len(heads), -1), head_ids[:, None]], 1)
    constraint = SymbolConstraint(layout, code_to_id, doc_slots.to(device)[doc_of_row], mode="rows",
                                  prefix_len=prefixes.shape[1], heads=heads, num_beams=num_beams, rules=rules,
                                  budgets=None if budgets is None else torch.tensor(budgets)[doc_of_row.cpu()])
    return doc_of_row, prefixes, constraint


@torch.no_grad()
def generate_sequence(model: PreTrainedModel, input_ids: Tensor, attention_mask: Tensor, *, layout: IdLayout,
                      code_to_id: Sequence[int] | Tensor, decoder_prefix: Sequence[int], doc_slots: Tensor,
                      rules: Rules = Rules(), num_beams: int = 1, length_penalty: float = 1.0,
                      max_new_tokens: int = 520, symbol_head: bool = False,
                      code_bias: Sequence[float] | Tensor | None = None,
                      logits_processor: Sequence[LogitsProcessor] = (), chunk_length: int | None = None,
                      budgets: Sequence[int] | None = None, compact: bool = True) -> list[Decoded]:
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
                   logits_processor=logits_processor, chunk_length=chunk_length, compact=compact)

