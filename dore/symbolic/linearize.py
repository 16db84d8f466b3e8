"""Relation matrix -> symbolic, row-column ordered target (paper §3.1-3.3).

A *tuple* is `(slot_1, ..., slot_k, code)`: entity slots (layout codes) then a relation code
or the NA code. Targets are the document's positive tuples plus the sampled negatives,
sorted lexicographically: by head, then tail (then further arguments), then relation code.
Two views of the same tuples:

- `sequence()`: `h t r h t r ... EOS` (the whole matrix in one sequence);
- `rows()`: for each head h, `t r t r ... EOS` (parallel row generation; h is the prefix).

Everything here is deterministic: the same document, config, seed and epoch give
byte-identical targets. `convert_file` writes a dataset file's documents and positive targets
(`dore convert`).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

from dore.data.formats import read_any
from dore.data.model import Document, atomic_write_text, write_jsonl
from dore.symbolic.layout import IdLayout, SlotAssignment, default_layout
from dore.symbolic.sampling import SamplingConfig, derived_seed, sample_negatives

Tuple_ = tuple[int, ...]


@dataclass
class Targets:
    layout: IdLayout
    assignment: SlotAssignment
    tuples: list[Tuple_]  # positives and NA negatives, in the target order (row-column: sorted)
    row_heads: list[int]  # every slot that heads a row (empty rows included)
    strategy: str = "none"  # the sampling strategy actually applied
    lost: Counter = field(default_factory=Counter)  # positives that cannot be targets, by reason

    @property
    def positives(self) -> list[Tuple_]:
        return [t for t in self.tuples if t[-1] != self.layout.na_code]

    def sequence(self) -> list[int]:
        return [c for t in self.tuples for c in t] + [self.layout.eos_code]

    def rows(self) -> dict[int, list[int]]:
        """Head slot -> its row's generated codes (the head itself is the decoder prefix)."""
        out: dict[int, list[int]] = {h: [] for h in self.row_heads}
        for t in self.tuples:
            out[t[0]].extend(t[1:])
        eos = self.layout.eos_code
        return {h: codes + [eos] for h, codes in out.items()}

    def render(self, codes: list[int]) -> str:
        return " ".join(self.layout.code_name(c) for c in codes)


def positive_tuples(doc: Document, layout: IdLayout, assignment: SlotAssignment) -> tuple[list[Tuple_], Counter]:
    """The document's relations as de-duplicated slot tuples, plus what could not be placed.

    A binary layout over 4-ary relations (SciREX binary) projects each relation onto its
    argument pairs, earlier type block first.
    """
    out, lost = {}, Counter()  # insertion-ordered: the dataset's annotation order survives
    for rel in doc.relations:
        code = layout.relation_code(rel.label)
        if layout.arity == 2 and len(rel.args) > 2:
            groups = [g for g in combinations(rel.args, 2)]
        else:
            groups = [rel.args]
        for args in groups:
            if len(set(args)) < len(args):
                lost["repeated_entity"] += 1
                continue
            if any(a not in assignment.slot_of for a in args):
                lost["entity_without_slot"] += 1
                continue
            slots = tuple(assignment.slot_of[a] for a in args)
            if layout.ordered_types:
                slots = tuple(sorted(slots))
            out.setdefault((*slots, code), None)
    return list(out), lost


ORDERS = ("row-column", "annotation", "random")


def build_targets(doc: Document, layout: IdLayout, sampling: SamplingConfig | None = None, *,
                  seed: int = 0, epoch: int = 0, assignment: SlotAssignment | None = None,
                  order: str = "row-column") -> Targets:
    """Positives plus negatives sampled for (seed, epoch, document), in `order`:

    - `row-column` (DORE): sorted by head, then tail, then relation;
    - `annotation` (ablation): positives in the dataset file's order, then the negatives sorted;
    - `random` (ablation): all tuples shuffled, redrawn every epoch.

    In rows mode each row keeps its tuples' relative order.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, not {order!r}")
    assignment = assignment or layout.assign(doc)
    positives, lost = positive_tuples(doc, layout, assignment)
    domain = layout.cell_domain(assignment.slots)
    excluded = {tuple(assignment.slot_of.get(a, -1) for a in pair) for pair in doc.excluded}
    filled = {t[:-1] for t in positives}
    empty = [c for c in domain if c not in filled and c not in excluded]
    strategy = "none"
    negatives: list[Tuple_] = []
    if sampling is not None and sampling.strategy != "none":
        rng = random.Random(derived_seed(seed, epoch, doc.doc_id))
        chosen, strategy = sample_negatives(empty, _ranks(layout, assignment), sampling, rng,
                                            same_axis=layout.arity == 2 and not layout.typed)
        negatives = [(*c, layout.na_code) for c in chosen]
    heads = sorted(set(layout.row_heads(assignment.slots)) | {t[0] for t in positives})
    if order == "row-column":
        tuples = sorted(positives + negatives)
    elif order == "annotation":
        tuples = positives + sorted(negatives)
    else:
        tuples = positives + negatives
        random.Random(derived_seed(seed, epoch, doc.doc_id) + 1).shuffle(tuples)
    return Targets(layout, assignment, tuples, heads, strategy, lost)


def _ranks(layout: IdLayout, assignment: SlotAssignment) -> dict[int, int]:
    """Slot -> its coordinate on the matrix axis (rank within its type block)."""
    rank, seen = {}, Counter()
    for slot in assignment.slots:
        block = layout.slot_type(slot)
        rank[slot] = seen[block]
        seen[block] += 1
    return rank


def convert_file(path: str | Path, out: str | Path, *, fmt: str | None = None, layout: IdLayout | None = None,
            rel_info: dict[str, str] | None = None, sampling: SamplingConfig | None = None,
            seed: int = 0, epoch: int = 0, progress=None) -> dict:
    """Write `out` (canonical documents) and `out` with `.targets.jsonl` (positive targets).

    Returns a summary of counts: the reader's report plus target statistics.
    """
    docs, report, fmt = read_any(path, fmt)
    layout = layout or default_layout(docs, fmt, rel_info)
    out = Path(out)
    write_jsonl(out, docs)
    lines, lost, lengths, n_positive = [], Counter(), [], 0
    for doc in (progress(docs) if progress else docs):
        t = build_targets(doc, layout, sampling, seed=seed, epoch=epoch)
        lost.update(t.lost)
        n_positive += len(t.positives)
        lengths.append(len(t.sequence()))
        lines.append(json.dumps({"doc_id": doc.doc_id, "sequence": t.render(t.sequence()),
                                 "rows": {layout.code_name(h): t.render(r) for h, r in t.rows().items()}},
                                sort_keys=True, ensure_ascii=False) + "\n")
    targets_path = out.with_name(out.name.removesuffix(".jsonl") + ".targets.jsonl")
    atomic_write_text(targets_path, "".join(lines))
    atomic_write_text(out.with_name(out.name.removesuffix(".jsonl") + ".layout.json"), layout.to_json())
    return {
        "file": str(path), "format": fmt, "layout": layout.name, "documents": report.documents,
        "entities": report.entities, "mentions": report.mentions, "relations": report.relations,
        "unique_relations": sum(len(d.unique_relations()) for d in docs),
        "positive_tuples": n_positive,
        "mean_target_length": round(sum(lengths) / max(len(lengths), 1), 1),
        "max_target_length": max(lengths, default=0),
        "lost_positives": dict(lost), "quirks": dict(report.quirks), "counts": dict(report.counts),
        "outputs": [str(out), str(targets_path)],
    }
