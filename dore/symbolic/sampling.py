"""Negative sampling (paper §3.4, Fig. 2): which empty cells of the relation matrix become
`(h, t, NA)` targets.

Matrix coordinates are *ranks*: an entity's position among this document's slots on its
axis (its type block in typed layouts, all slots otherwise), so "diagonal" means what Fig. 2
draws for every dataset. Sampling is a pure function of (config, seed, epoch, document):
each epoch draws afresh and nothing is cached across epochs.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Strategy = Literal["none", "random", "diagonal", "asymmetric", "asymmetric_flipped", "dynamic", "all"]
DYNAMIC_CHOICES = ("none", "diagonal", "asymmetric", "asymmetric_flipped")


class SamplingConfig(BaseModel):
    """A negative-sampling strategy and its parameters (recorded with every model)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    strategy: Strategy = "dynamic"
    ratio: float = Field(0.1, ge=0.0, le=1.0, description="random: share of empty cells")
    window: int = Field(1, ge=1, description="diagonal: |i - j| <= window (n-ary: consecutive arguments)")
    left: int = Field(2, ge=0, description="asymmetric: cells left of the diagonal (j < i)")
    right: int = Field(1, ge=0, description="asymmetric: cells right of the diagonal (j > i)")

    @model_validator(mode="after")
    def _has_a_cell(self):
        if self.strategy.startswith("asymmetric") and self.left + self.right == 0:
            raise ValueError("asymmetric sampling needs left + right > 0")
        return self

    @classmethod
    def parse(cls, spec: str) -> "SamplingConfig":
        """`dynamic`, `random:0.1`, `diagonal:2`, `asymmetric:2,1` (left,right)."""
        name, _, arg = spec.partition(":")
        if not arg:
            return cls(strategy=name)
        if name == "random":
            return cls(strategy=name, ratio=float(arg))
        if name == "diagonal":
            return cls(strategy=name, window=int(arg))
        if name.startswith("asymmetric") or name == "dynamic":
            left, _, right = arg.partition(",")
            return cls(strategy=name, left=int(left), right=int(right or 1))
        raise ValueError(f"strategy {name!r} takes no argument (got {spec!r})")


def derived_seed(seed: int, epoch: int, doc_id: str) -> int:
    """A stable 64-bit seed for one (run seed, epoch, document): independent of PYTHONHASHSEED."""
    digest = hashlib.sha256(f"{seed}\x1f{epoch}\x1f{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def sample_negatives(
    empty_cells: Sequence[tuple[int, ...]],
    rank: dict[int, int],
    config: SamplingConfig,
    rng: random.Random,
    *,
    same_axis: bool,
) -> tuple[list[tuple[int, ...]], str]:
    """Choose negatives among `empty_cells` (cells holding no relation, in row-column order).

    `rank` maps a slot to its matrix coordinate; `same_axis` is True when rows and columns
    are the same entities (untyped binary), where the diagonal i = j is not a cell.
    Returns the chosen cells (in input order) and the strategy actually applied (dynamic
    resolves to one of its choices).
    """
    strategy = config.strategy
    if strategy == "dynamic":
        strategy = rng.choice(DYNAMIC_CHOICES)
    if strategy == "none" or not empty_cells:
        return [], strategy
    if strategy == "all":
        return list(empty_cells), strategy
    if strategy == "random":
        k = round(config.ratio * len(empty_cells))
        chosen = set(rng.sample(range(len(empty_cells)), k))
        return [c for i, c in enumerate(empty_cells) if i in chosen], strategy

    arity = len(empty_cells[0])
    if arity > 2 and config.strategy == "dynamic" and strategy.startswith("asymmetric"):
        strategy = "diagonal"  # n-ary cells have no left/right of a diagonal: the window is the pattern
    if arity > 2:
        if strategy != "diagonal":
            raise ValueError(f"{strategy!r} sampling is defined for binary relations only; use diagonal (window)")
        def keep(cell):  # the n-ary window: consecutive arguments at most `window` apart
            return all(abs(rank[a] - rank[b]) <= config.window for a, b in zip(cell, cell[1:]))
    else:
        lo, hi = {"diagonal": (config.window, config.window), "asymmetric": (config.left, config.right),
                  "asymmetric_flipped": (config.right, config.left)}[strategy]
        def keep(cell):  # offset d = j - i: left of the diagonal is d < 0
            d = rank[cell[1]] - rank[cell[0]]
            return -lo <= d <= hi and not (same_axis and d == 0)
    return [c for c in empty_cells if keep(c)], strategy
