"""`SymbolConstraint`'s rules as a per-hypothesis Python `prefix_allowed_tokens_fn`: the reference
the vectorised constraint is tested against, and the baseline its speed is measured against."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence

import torch
from torch import Tensor
from transformers import PrefixConstrainedLogitsProcessor

from dore.decoding.constraint import Mode, Rules, SymbolConstraint, block_index, random_walk, slot_mask
from dore.symbolic.layout import IdLayout


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
    block_of = block_index(layout).tolist()
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
