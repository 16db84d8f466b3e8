import pytest

from dore.symbolic.layout import EntityBlock, IdLayout, LayoutError, cdr_layout, docred_layout, scirex_layout
from dore.symbolic.linearize import build_targets
from dore.symbolic.parse import parse_codes, parse_rows, tuples_to_relations
from dore.symbolic.sampling import SamplingConfig
from tests.code.docs import make_doc

REL = {"P1": "one", "P2": "two", "P3": "three"}


def test_codes_are_contiguous_and_named():
    lay = docred_layout(REL, n_slots=5)
    assert (lay.n_slots, lay.relation_code("P2"), lay.na_code, lay.eos_code) == (5, 6, 8, 9)
    assert lay.token_names() == ["<e_1>", "<e_2>", "<e_3>", "<e_4>", "<e_5>", "<r_1>", "<r_2>", "<r_3>", "<r_na>"]
    assert lay.symbol_names()["<r_na>"] == "irrelevant"
    assert IdLayout.from_dict(lay.to_dict()) == lay


def test_entities_numbered_by_first_appearance():
    # entity 0 first appears at 9, entity 1 at 0, entity 2 at 4
    doc = make_doc([[(9, 10)], [(5, 6), (0, 1)], [(4, 5)]], [(0, 1, "P1")])
    a = docred_layout(REL).assign(doc)
    assert a.slot_of == {1: 0, 2: 1, 0: 2}
    t = build_targets(doc, docred_layout(REL))
    assert t.tuples == [(2, 0, 100)]


def test_row_column_order_and_relations_sorted_within_a_pair():
    lay = docred_layout(REL, n_slots=10)
    doc = make_doc([[(0, 1)], [(1, 2)], [(2, 3)]],
                   [(2, 0, "P1"), (0, 2, "P3"), (0, 2, "P1"), (1, 0, "P2"), (0, 2, "P3")])
    t = build_targets(doc, lay)
    assert t.tuples == [(0, 2, 10), (0, 2, 12), (1, 0, 11), (2, 0, 10)]  # sorted, duplicate gone
    assert t.sequence() == [0, 2, 10, 0, 2, 12, 1, 0, 11, 2, 0, 10, 14]
    assert t.rows() == {0: [2, 10, 2, 12, 14], 1: [0, 11, 14], 2: [0, 10, 14]}
    assert t.render(t.rows()[1]) == "<e_1> <r_2> </eos>"


def test_targets_are_byte_identical_across_calls():
    doc = make_doc([[(i, i + 1)] for i in range(8)], [(0, 3, "P1"), (5, 2, "P2")])
    cfg = SamplingConfig(strategy="dynamic")
    a = [build_targets(doc, docred_layout(REL), cfg, seed=3, epoch=e).sequence() for e in range(5)]
    b = [build_targets(doc, docred_layout(REL), cfg, seed=3, epoch=e).sequence() for e in range(5)]
    assert a == b


def test_too_many_entities_is_an_error_or_counted_drop():
    doc = make_doc([[(i, i + 1)] for i in range(4)], [(0, 3, "P1")])
    with pytest.raises(LayoutError, match="more entities"):
        docred_layout(REL, n_slots=3).assign(doc)
    lay = IdLayout("x", (EntityBlock(None, 3),), ("P1",), ("one",), overflow="drop")
    t = build_targets(doc, lay)
    assert t.assignment.dropped == (3,) and t.lost["entity_without_slot"] == 1 and t.tuples == []


def test_typed_blocks_and_excluded_pairs():
    lay = cdr_layout(n_chemical=3, n_disease=3)
    doc = make_doc([[(5, 6)], [(0, 1)], [(2, 3)], [(7, 8)]], [(0, 1, "CID")],
                   types=["Chemical", "Disease", "Chemical", "Disease"], excluded=[(2, 3)])
    t = build_targets(doc, lay, SamplingConfig(strategy="all"))
    # chemicals: entity 2 (pos 2) -> slot 0, entity 0 (pos 5) -> slot 1; diseases 1 -> 3, 3 -> 4
    assert t.assignment.slot_of == {2: 0, 0: 1, 1: 3, 3: 4}
    assert t.tuples == [(0, 3, 7), (1, 3, 6), (1, 4, 7)]  # (0, 4) is excluded: never a negative
    assert t.row_heads == [0, 1]


def test_scirex_binary_projects_4ary_relations_in_block_order():
    lay = scirex_layout(2, {"Task": 2, "Method": 2, "Material": 2, "Metric": 2})
    doc = make_doc([[(0, 1)], [(1, 2)], [(2, 3)], [(3, 4)]], [(0, 1, 2, 3, "relevant")],
                   types=["Task", "Method", "Material", "Metric"])
    t = build_targets(doc, lay)
    assert t.tuples == [(0, 2, 8), (0, 4, 8), (0, 6, 8), (2, 4, 8), (2, 6, 8), (4, 6, 8)]
    four = build_targets(doc, scirex_layout(4, {"Task": 2, "Method": 2, "Material": 2, "Metric": 2}))
    assert four.sequence() == [0, 2, 4, 6, 8, 10]


def test_parse_inverts_linearize_for_sequence_and_rows():
    lay = docred_layout(REL, n_slots=10)
    doc = make_doc([[(i, i + 1)] for i in range(5)], [(0, 4, "P2"), (3, 1, "P1"), (0, 4, "P1"), (2, 0, "P3")])
    t = build_targets(doc, lay, SamplingConfig(strategy="diagonal"))
    slots = t.assignment.slots
    assert parse_codes(t.sequence(), lay, slots) == t.positives
    assert parse_rows(t.rows(), lay, slots) == t.positives
    rels = tuples_to_relations(t.positives, lay, t.assignment.entity_of)
    assert sorted(rels) == sorted({(r.args, r.label) for r in doc.relations})



def test_target_orders_hold_the_same_tuples():
    """Row-column sorts; annotation keeps the file's order of positives (negatives after, sorted);
    random reshuffles every epoch. All three hold the same tuples."""
    lay = docred_layout(REL, n_slots=10)
    doc = make_doc([[(0, 1)], [(1, 2)], [(2, 3)]], [(2, 0, "P1"), (0, 2, "P3"), (1, 0, "P2"), (0, 2, "P1")])
    sampling = SamplingConfig.parse("all")
    row_column = build_targets(doc, lay, sampling).tuples
    annotation = build_targets(doc, lay, sampling, order="annotation").tuples
    assert annotation[:4] == [(2, 0, 10), (0, 2, 12), (1, 0, 11), (0, 2, 10)]
    assert annotation[4:] == sorted(annotation[4:]) and all(t[-1] == lay.na_code for t in annotation[4:])
    shuffled = [build_targets(doc, lay, sampling, order="random", epoch=e).tuples for e in range(3)]
    assert all(sorted(t) == row_column for t in [annotation, *shuffled])
    assert len({tuple(t) for t in shuffled}) > 1 and row_column not in shuffled
    with pytest.raises(ValueError, match="order"):
        build_targets(doc, lay, order="alphabetical")
