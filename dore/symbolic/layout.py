"""The symbol layout: which special symbol stands for which entity slot and relation.

DORE writes a relation matrix as a sequence of *symbols*: one per entity slot, one per
relation label, one for "no relation" (NA), and EOS. This module numbers them with small
layout-local integer **codes**, independent of any tokenizer:

    code 0 .. n_slots-1                      entity slots (typed settings: one block per type)
    code n_slots .. n_slots+n_relations-1    relation labels, in the layout's fixed order
    code n_slots+n_relations                 NA ("irrelevant")
    code n_slots+n_relations+1               EOS

Each code has a token *name* (`<e_1>`, `<r_3>`, `<r_na>`); a backbone adds these names as
special tokens and `LayoutVocab` maps codes to its vocabulary ids via `convert_tokens_to_ids`.
No vocabulary offset is written anywhere else.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations

from dore.data.model import Document

NA_NAME = "irrelevant"


class LayoutError(ValueError):
    """A document does not fit the layout (too many entities for a block, unknown type or label)."""


@dataclass(frozen=True)
class EntityBlock:
    type: str | None  # None: the type-agnostic block of an untyped layout
    size: int


@dataclass(frozen=True)
class IdLayout:
    """Entity slots, relation symbols and the shape of the relation matrix for one setting.

    `arity` 2: cells are (head, tail) pairs; 4: cells are 4-tuples of entities (SciREX).
    `arg_types` gives the entity type of each argument position in typed settings
    (CDR: ("Chemical", "Disease")); None means any entity. `ordered_types` (SciREX gold
    binary) makes the pair's types follow block order instead of fixed positions.
    """

    name: str
    blocks: tuple[EntityBlock, ...]
    relations: tuple[str, ...]  # labels as they appear in Relation.label (e.g. "P17", "CID")
    relation_names: tuple[str, ...]  # natural-language names, for embedding initialisation
    arity: int = 2
    arg_types: tuple[str | None, ...] | None = None
    ordered_types: bool = False  # pairs of any two distinct types, earlier block first
    overflow: str = "error"  # "error" or "drop": what to do with entities past a block's size
    _rel_index: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        if len(self.relations) != len(self.relation_names):
            raise ValueError("relations and relation_names differ in length")
        if self.overflow not in ("error", "drop"):
            raise ValueError(f"overflow must be 'error' or 'drop', not {self.overflow!r}")
        self._rel_index.update({r: i for i, r in enumerate(self.relations)})

    # --- sizes and codes ----------------------------------------------------------------
    @property
    def n_slots(self) -> int:
        return sum(b.size for b in self.blocks)

    @property
    def n_relations(self) -> int:
        return len(self.relations)

    @property
    def na_code(self) -> int:
        return self.n_slots + self.n_relations

    @property
    def eos_code(self) -> int:
        return self.na_code + 1

    @property
    def n_codes(self) -> int:
        return self.eos_code + 1

    @property
    def typed(self) -> bool:
        return any(b.type is not None for b in self.blocks)

    def relation_code(self, label: str) -> int:
        try:
            return self.n_slots + self._rel_index[label]
        except KeyError:
            raise LayoutError(f"relation {label!r} is not in layout {self.name!r}") from None

    def block_range(self, type_: str | None) -> range:
        """Slot range of the block for an entity type (the whole block of an untyped layout)."""
        start = 0
        for b in self.blocks:
            if b.type == type_ or b.type is None:
                return range(start, start + b.size)
            start += b.size
        raise LayoutError(f"entity type {type_!r} has no block in layout {self.name!r}")

    def slot_type(self, slot: int) -> str | None:
        start = 0
        for b in self.blocks:
            if slot < start + b.size:
                return b.type
            start += b.size
        raise IndexError(slot)

    def token_names(self) -> list[str]:
        """Special-token names for every code but EOS (which is the backbone's own)."""
        return ([f"<e_{i + 1}>" for i in range(self.n_slots)]
                + [f"<r_{i + 1}>" for i in range(self.n_relations)] + ["<r_na>"])

    def code_name(self, code: int) -> str:
        return "</eos>" if code == self.eos_code else self.token_names()[code]

    def symbol_names(self) -> dict[str, str]:
        """Each relation/NA token name -> the words its embedding is initialised from."""
        names = self.token_names()[self.n_slots:]
        return dict(zip(names, [*self.relation_names, NA_NAME]))

    # --- documents -> slots ---------------------------------------------------------------
    def assign(self, doc: Document) -> "SlotAssignment":
        """Entity index -> slot, numbered by first appearance (within its type's block).

        Entities without any mention (SciREX table-only entities) get no slot: they cannot be
        marked in the input. Past a block's size: LayoutError, or with overflow="drop" the
        later entities get no slot and are counted in `dropped`.
        """
        slot_of: dict[int, int] = {}
        unmentioned, dropped = [], []
        next_free: dict[int, int] = {}
        for idx in doc.entity_order():
            ent = doc.entities[idx]
            if not ent.mentions:
                unmentioned.append(idx)
                continue
            block = self.block_range(ent.type if self.typed else None)
            used = next_free.get(block.start, 0)
            if used >= len(block):
                if self.overflow == "error":
                    what = f"type {ent.type!r}" if self.typed else "the entity block"
                    raise LayoutError(
                        f"document {doc.doc_id!r} has more entities of {what} than the {len(block)} slots "
                        f"of layout {self.name!r} (set overflow='drop' to drop and count them)")
                dropped.append(idx)
                continue
            slot_of[idx] = block.start + used
            next_free[block.start] = used + 1
        return SlotAssignment(slot_of=slot_of, unmentioned=tuple(unmentioned), dropped=tuple(dropped))

    def cell_domain(self, slots: Sequence[int]) -> list[tuple[int, ...]]:
        """Every cell of this document's matrix, in row-column order (the negatives' universe)."""
        slots = sorted(slots)
        if self.arity == 2:
            if self.ordered_types:
                return [(h, t) for h, t in combinations(slots, 2) if self.slot_type(h) != self.slot_type(t)]
            if self.arg_types:
                heads = [s for s in slots if self.slot_type(s) == self.arg_types[0]]
                tails = [s for s in slots if self.slot_type(s) == self.arg_types[1]]
                return [(h, t) for h in heads for t in tails]
            return [(h, t) for h in slots for t in slots if h != t]
        if self.arg_types:  # typed n-ary: the product of the type blocks
            per_type = [[s for s in slots if self.slot_type(s) == t] for t in self.arg_types]
            cells: list[tuple[int, ...]] = [()]
            for group in per_type:
                cells = [c + (s,) for c in cells for s in group]
            return cells
        return list(combinations(slots, self.arity))

    def row_heads(self, slots: Sequence[int]) -> list[int]:
        """The slots that head a row: every first argument of a cell of this document's matrix."""
        return sorted({cell[0] for cell in self.cell_domain(slots)})

    # --- persistence --------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"name": self.name, "blocks": [[b.type, b.size] for b in self.blocks],
                "relations": list(self.relations), "relation_names": list(self.relation_names),
                "arity": self.arity, "arg_types": list(self.arg_types) if self.arg_types else None,
                "ordered_types": self.ordered_types, "overflow": self.overflow}

    @classmethod
    def from_dict(cls, d: dict) -> "IdLayout":
        return cls(name=d["name"], blocks=tuple(EntityBlock(t, s) for t, s in d["blocks"]),
                   relations=tuple(d["relations"]), relation_names=tuple(d["relation_names"]),
                   arity=d["arity"], arg_types=tuple(d["arg_types"]) if d["arg_types"] else None,
                   ordered_types=d["ordered_types"], overflow=d["overflow"])

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)


@dataclass(frozen=True)
class SlotAssignment:
    slot_of: dict[int, int]  # entity index -> slot
    unmentioned: tuple[int, ...] = ()
    dropped: tuple[int, ...] = ()

    @property
    def entity_of(self) -> dict[int, int]:
        return {s: e for e, s in self.slot_of.items()}

    @property
    def slots(self) -> list[int]:
        return sorted(self.slot_of.values())


# --- the settings of the paper's four datasets --------------------------------------------

def docred_layout(rel_info: dict[str, str], n_slots: int = 100) -> IdLayout:
    """DocRED / Re-DocRED: one type-agnostic block, relations in rel_info.json key order."""
    return IdLayout("docred", (EntityBlock(None, n_slots),), tuple(rel_info), tuple(rel_info.values()))


def cdr_layout(n_chemical: int = 50, n_disease: int = 50) -> IdLayout:
    return IdLayout("cdr", (EntityBlock("Chemical", n_chemical), EntityBlock("Disease", n_disease)),
                    ("CID",), ("chemical-induced disease",), arg_types=("Chemical", "Disease"))


def gda_layout(n_gene: int = 50, n_disease: int = 50) -> IdLayout:
    return IdLayout("gda", (EntityBlock("Gene", n_gene), EntityBlock("Disease", n_disease)),
                    ("GDA",), ("gene-disease association",), arg_types=("Gene", "Disease"))


SCIREX_TYPES = ("Task", "Method", "Material", "Metric")  # the paper's block order


def scirex_layout(arity: int, sizes: dict[str, int] | None = None) -> IdLayout:
    """SciREX gold input: per-type blocks (Task, Method, Material, Metric), sized from training.

    Binary cells are pairs of entities of two different types (earlier block first); 4-ary
    cells are the Task x Method x Material x Metric product. A paper with more entities of a
    type than training had keeps the first ones; the rest are dropped and counted.
    """
    sizes = sizes or {"Task": 10, "Method": 10, "Material": 50, "Metric": 10}
    blocks = tuple(EntityBlock(t, sizes[t]) for t in SCIREX_TYPES)
    if arity == 2:
        return IdLayout("scirex-binary", blocks, ("relevant",), ("relevant",), arity=2, ordered_types=True,
                        overflow="drop")
    return IdLayout("scirex-4ary", blocks, ("relevant",), ("relevant",), arity=4, arg_types=SCIREX_TYPES,
                    overflow="drop")


def block_sizes_from(docs: Sequence[Document], types: Sequence[str], margin: float = 1.0) -> dict[str, int]:
    """Size typed blocks from training maxima (mentioned entities per document and type)."""
    sizes = {}
    for t in types:
        most = max((sum(1 for e in d.entities if e.type == t and e.mentions) for d in docs), default=0)
        sizes[t] = max(1, int(most * margin + 0.999))
    return sizes


def default_layout(docs: list[Document], fmt: str, rel_info: dict[str, str] | None = None,
                   arity: int | None = None) -> IdLayout:
    """The layout a format's documents are linearised with (typed blocks sized from `docs`);
    `arity` 2 for SciREX: the binary layout (the 4-ary relations' type pairs)."""
    labels = {r.label for d in docs for r in d.relations}
    types = {e.type for d in docs for e in d.entities}
    if "CID" in labels or "Chemical" in types:
        s = block_sizes_from(docs, ["Chemical", "Disease"])
        return cdr_layout(s["Chemical"], s["Disease"])
    if "GDA" in labels or "Gene" in types:
        s = block_sizes_from(docs, ["Gene", "Disease"])
        return gda_layout(s["Gene"], s["Disease"])
    if fmt == "scirex" or "relevant" in labels:
        return scirex_layout(arity or 4, block_sizes_from(docs, SCIREX_TYPES))
    if rel_info is None:
        rel_info = {lab: lab for lab in sorted(labels)}
    return docred_layout(rel_info, n_slots=max(100, max((len(d.entities) for d in docs), default=0)))
