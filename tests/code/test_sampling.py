"""Property tests of negative sampling over random documents (hypothesis)."""

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dore.symbolic.layout import docred_layout
from dore.symbolic.linearize import build_targets
from dore.symbolic.sampling import SamplingConfig
from tests.code.docs import make_doc

LAY = docred_layout({"P1": "a", "P2": "b", "P3": "c"}, n_slots=30)
NA = LAY.na_code


@st.composite
def documents(draw):
    n = draw(st.integers(1, 12))
    pairs = [(h, t) for h in range(n) for t in range(n) if h != t]
    rels = draw(st.lists(st.tuples(st.sampled_from(pairs) if pairs else st.nothing(),
                                   st.sampled_from(["P1", "P2", "P3"])), max_size=15)) if pairs else []
    return make_doc([[(i, i + 1)] for i in range(n)], [(h, t, r) for (h, t), r in rels])


CONFIGS = [SamplingConfig(strategy=s) for s in ("none", "random", "diagonal", "asymmetric",
                                                 "asymmetric_flipped", "dynamic", "all")]
CONFIGS += [SamplingConfig(strategy="diagonal", window=3), SamplingConfig(strategy="asymmetric", left=3, right=2),
            SamplingConfig(strategy="random", ratio=0.5)]


@settings(max_examples=60, deadline=None)
@given(doc=documents(), cfg=st.sampled_from(CONFIGS), seed=st.integers(0, 9), epoch=st.integers(0, 5))
def test_sampling_invariants(doc, cfg, seed, epoch):
    t = build_targets(doc, LAY, cfg, seed=seed, epoch=epoch)
    positives = {(t.assignment.slot_of[r.args[0]], t.assignment.slot_of[r.args[1]], LAY.relation_code(r.label))
                 for r in doc.relations}
    n = len(doc.entities)
    assert set(t.positives) == positives  # positives always kept
    negs = [x for x in t.tuples if x[-1] == NA]
    assert not {x[:2] for x in negs} & {p[:2] for p in positives}  # NA never on a positive cell
    assert len(set(negs)) == len(negs) and all(h != tl for h, tl, _ in negs)
    assert t.tuples == sorted(t.tuples)  # row-column order
    empty = n * (n - 1) - len({p[:2] for p in positives})
    offsets = [tl - h for h, tl, _ in negs]  # slots are ranks in an untyped layout
    budget = {"none": 0, "all": empty, "random": round(cfg.ratio * empty)}
    if t.strategy in budget:
        assert len(negs) == budget[t.strategy]
    elif t.strategy == "diagonal":
        assert all(0 < abs(d) <= cfg.window for d in offsets) and len(negs) <= 2 * cfg.window * max(n - 1, 0)
    elif t.strategy == "asymmetric":
        assert all(-cfg.left <= d <= cfg.right for d in offsets)
    elif t.strategy == "asymmetric_flipped":
        assert all(-cfg.right <= d <= cfg.left for d in offsets)


def test_diagonal_takes_every_empty_cell_next_to_the_diagonal():
    doc = make_doc([[(i, i + 1)] for i in range(4)], [(0, 1, "P1")])
    t = build_targets(doc, LAY, SamplingConfig(strategy="diagonal"))
    assert [x[:2] for x in t.tuples if x[-1] == NA] == [(1, 0), (1, 2), (2, 1), (2, 3), (3, 2)]


def test_epochs_draw_new_negatives_and_dynamic_uses_every_choice():
    doc = make_doc([[(i, i + 1)] for i in range(10)], [(0, 1, "P1")])
    draws = [build_targets(doc, LAY, SamplingConfig(strategy="random", ratio=0.2), seed=1, epoch=e).tuples
             for e in range(6)]
    assert len({tuple(d) for d in draws}) > 1
    used = Counter(build_targets(doc, LAY, SamplingConfig(strategy="dynamic"), seed=0, epoch=e).strategy
                   for e in range(60))
    assert set(used) == {"none", "diagonal", "asymmetric", "asymmetric_flipped"}


@pytest.mark.parametrize("spec,expected", [("random:0.3", {"strategy": "random", "ratio": 0.3}),
                                           ("diagonal:2", {"strategy": "diagonal", "window": 2}),
                                           ("asymmetric:3,1", {"strategy": "asymmetric", "left": 3, "right": 1})])
def test_parse_spec(spec, expected):
    cfg = SamplingConfig.parse(spec)
    assert {k: getattr(cfg, k) for k in expected} == expected


def test_dynamic_sampling_on_nary_cells_uses_the_window():
    """Asymmetric patterns have no meaning for 4-ary cells: dynamic falls back to the diagonal window."""
    import random

    from dore.symbolic.sampling import SamplingConfig, sample_negatives

    cells = [(a, b, c, d) for a in range(2) for b in range(2, 4) for c in range(4, 6) for d in range(6, 8)]
    rank = {s: s % 2 for s in range(8)}
    applied = {sample_negatives(cells, rank, SamplingConfig.parse("dynamic"), random.Random(seed), same_axis=False)[1]
               for seed in range(40)}
    assert applied and not any(s.startswith("asymmetric") for s in applied)
