"""Generated codes -> relation tuples, with written repair rules.

Every tuple ends with a relation (or NA) code, so relation codes delimit tuples: a malformed
tuple is dropped whole and can never shift the tuples after it. Rules, in order:

1. Everything after the first EOS is ignored (`after_eos` counts those codes).
2. A run of entity codes not closed by a relation code at the end is a truncated tuple.
3. A segment whose entity count differs from the tuple's arity is `malformed`.
4. A slot this document does not have (beyond its entities) is `unknown_entity`.
5. A tuple naming one entity twice (t = h) is `repeated_entity`.
6. A tuple seen before is a `duplicate` (first kept).
7. NA tuples are removed (`na`): they say "no relation".
Counts of each rule are returned so that repairs are never silent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from dore.symbolic.layout import IdLayout

Tuple_ = tuple[int, ...]


def parse_codes(codes: Sequence[int], layout: IdLayout, valid_slots: Iterable[int], *,
                head: int | None = None, counts: Counter | None = None) -> list[Tuple_]:
    """Parse one generated sequence (or one row when `head` is given) into relation tuples."""
    counts = Counter() if counts is None else counts
    valid = set(valid_slots)
    prefix = () if head is None else (head,)
    n_slots, eos = layout.n_slots, layout.eos_code
    out, seen, pending = [], set(), []
    for i, code in enumerate(codes):
        if code == eos:
            counts["after_eos"] += len(codes) - i - 1
            break
        if code < n_slots:
            pending.append(code)
            continue
        if code > layout.na_code:  # not a layout code at all (cannot happen under constraints)
            counts["malformed"] += 1
            pending = []
            continue
        args, pending = (*prefix, *pending), []
        if len(args) != layout.arity:
            counts["malformed"] += 1
        elif any(a not in valid for a in args):
            counts["unknown_entity"] += 1
        elif len(set(args)) < len(args):
            counts["repeated_entity"] += 1
        elif (*args, code) in seen:
            counts["duplicate"] += 1
        else:
            seen.add((*args, code))
            if code == layout.na_code:
                counts["na"] += 1
            else:
                out.append((*args, code))
    if pending:
        counts["truncated"] += 1
    return out


def parse_rows(rows: dict[int, Sequence[int]], layout: IdLayout, valid_slots: Iterable[int],
               counts: Counter | None = None) -> list[Tuple_]:
    """Parse every row of a document and concatenate, in row-column order."""
    valid = set(valid_slots)
    out: list[Tuple_] = []
    for head in sorted(rows):
        out.extend(parse_codes(rows[head], layout, valid, head=head, counts=counts))
    return sorted(out)


def tuples_to_relations(tuples: Iterable[Tuple_], layout: IdLayout, entity_of: dict[int, int]):
    """Slot tuples -> (entity indices, relation label) in the document's own entity numbering."""
    return [(tuple(entity_of[s] for s in t[:-1]), layout.relations[t[-1] - layout.n_slots]) for t in tuples]
