"""SciREX scorers on hand-made documents: docs/evaluation.md §6 cases 10-15, numbers computed by hand."""

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dore.data.model import DataError, Document
from dore.data.scirex import read_scirex
from dore.scoring.scirex import (
    PAIR_LABELS,
    clustering_quality,
    dore_micro,
    map_gold_to_clusters,
    map_span_to_gold,
    match_clusters,
    scirex_official,
    span_iou,
)

PERFECT = 100 * (1 / (1 + 1e-7))  # an exact cell still pays the official 1e-7 smoothing
# One span per slot; every test document uses these unless it says otherwise.
SPANS = {"T": [[0, 2]], "M": [[4, 6]], "D": [[8, 10]], "E": [[12, 14]]}
REL = {"Task": "T", "Method": "M", "Material": "D", "Metric": "E", "score": "1.0"}
FULL = {"Task": "T", "Method": "M", "Material": "D", "Metric": "E"}


def make_doc(tmp_path: Path, doc_id: str = "d1", *, coref: dict | None = None, relations: list | None = None,
             ner: list | None = None, subrelations: dict | None = None, n_words: int = 40) -> Document:
    """A SciREX line written to disk and read back, so the gold is what `read_scirex` makes of it."""
    coref = SPANS if coref is None else coref
    types = {"T": "Task", "M": "Method", "D": "Material", "E": "Metric"}
    if ner is None:
        ner = [[s, e, types.get(name[0], "Method")] for name, spans in coref.items() for s, e in spans]
    raw = {"doc_id": doc_id, "words": [f"w{i}" for i in range(n_words)], "sentences": [[0, n_words]], "ner": ner,
           "coref": coref, "n_ary_relations": [REL] if relations is None else relations,
           "method_subrelations": subrelations or {}}
    path = tmp_path / f"{doc_id}.jsonl"
    path.write_text(json.dumps(raw) + "\n")
    return read_scirex(path)[0][0]


# --- case 10: span mapping ---------------------------------------------------------------


def test_span_iou_exactly_half_is_rejected_and_above_accepted():
    assert span_iou((0, 2), (0, 4)) == 0.5
    assert map_span_to_gold((0, 2), [(0, 4)]) == (0, 2)
    assert map_span_to_gold((0, 2), [(0, 3)]) == (0, 3)  # IoU 2/3
    assert span_iou((0, 2), (5, 7)) < 0  # disjoint spans never qualify


def test_first_qualifying_gold_span_wins_even_over_an_exact_match():
    assert map_span_to_gold((0, 2), [(10, 12), (0, 3), (0, 2)]) == (0, 3)


def test_span_mapping_inside_the_official_scorer(tmp_path):
    doc = make_doc(tmp_path)
    pred = {"d1": [{"Task": "t", "Method": "M", "Material": "D", "Metric": "E"}]}
    near = scirex_official([doc], pred, 4, pred_clusters={"d1": {"t": [(0, 3)]}})  # IoU 2/3 -> T
    assert near["f1"] == pytest.approx(PERFECT)
    half = scirex_official([doc], pred, 4, pred_clusters={"d1": {"t": [(0, 4)]}})  # IoU 0.5 -> unmapped
    assert (half["matched"], half["f1"]) == (0, 0.0)
    # A non-salient NER span listed before T's exact span captures the prediction: T is missed.
    shadowed = make_doc(tmp_path, ner=[[0, 3, "Task"], [0, 2, "Task"], [4, 6, "Method"], [8, 10, "Material"],
                                       [12, 14, "Metric"]])
    res = scirex_official([shadowed], pred, 4, pred_clusters={"d1": {"t": [(0, 2)]}})
    assert res["matched"] == 0


# --- case 11: cluster mapping ------------------------------------------------------------


def test_cluster_overlap_half_rejected_051_accepted_normalised_by_predicted_size():
    gold = {"G": {(i, i + 1) for i in range(51)}}
    assert match_clusters({"p": [(0, 1), (100, 101)]}, gold, []) == {}  # 1/2
    others = [(i, i + 1) for i in range(100, 149)]
    assert match_clusters({"p": [*sorted(gold["G"]), *others]}, gold, []) == {"p": "G"}  # 51/100
    assert match_clusters({"p": [(0, 1)]}, gold, []) == {"p": "G"}  # 1/1, although it covers 1/51 of G


def test_cluster_ties_go_to_the_best_covered_gold_then_the_first():
    gold = {"parent": {(0, 1), (2, 3), (4, 5)}, "sub": {(0, 1), (2, 3)}, "twin": {(0, 1), (2, 3)}}
    assert match_clusters({"p": [(0, 1), (2, 3)]}, gold, []) == {"p": "sub"}
    assert match_clusters({"p": [(0, 1), (2, 3), (4, 5)]}, gold, []) == {"p": "parent"}


# --- case 12: sub-method merge -----------------------------------------------------------


def test_sub_method_mentions_merge_into_the_parent(tmp_path):
    coref = {**SPANS, "M": [], "Msub": [[4, 6]]}
    doc = make_doc(tmp_path, coref=coref, subrelations={"M": [[[0, 3], "Msub"]]})
    oracle = {"d1": [FULL]}
    # Without the merge M would have no mention and the document no 4-ary cell.
    res = scirex_official([doc], oracle, 4)
    assert (res["cells"], res["gold"], res["f1"]) == (1, 1, pytest.approx(PERFECT))
    # Msub is in no relation, so a predicted cluster on its span maps to the parent.
    pred = {"d1": [{**FULL, "Method": "x"}]}
    assert scirex_official([doc], pred, 4, pred_clusters={"d1": {"x": [(4, 6)]}})["matched"] == 1


# --- case 13: unmentioned entities ---------------------------------------------------------


def test_unmentioned_entity_leaves_gold_only_for_projections_containing_it(tmp_path):
    doc = make_doc(tmp_path, coref={**SPANS, "E": []})
    oracle = {"d1": [FULL]}
    binary = scirex_official([doc], oracle, 2)
    assert binary["cells"] == 3  # Material-Task, Material-Method, Task-Method
    assert {k for k, v in binary["by_types"].items() if v["cells"]} == {"Material-Task", "Material-Method",
                                                                         "Task-Method"}
    assert binary["f1"] == pytest.approx(PERFECT)
    assert binary["predicted_in_dropped_cells"] == 3  # the three Metric pairs cost nothing
    four = scirex_official([doc], oracle, 4)
    assert (four["cells"], four["f1"]) == (0, 0.0)
    micro = dore_micro([doc], {"d1": [(0, 1, "task and method")]}, 2)
    assert (micro["tp"], micro["fp"], micro["fn"]) == (1, 0, 2)


# --- case 14: cells, macro versus micro, pass-through ------------------------------------------


def two_documents(tmp_path):
    """Doc a: 1 gold 4-tuple, predicted right. Doc b: 3 gold 4-tuples, 1 predicted right."""
    a = make_doc(tmp_path, "a")
    coref_b = {**SPANS, "E2": [[16, 18]], "E3": [[20, 22]]}
    b = make_doc(tmp_path, "b", coref=coref_b, relations=[REL, {**REL, "Metric": "E2"}, {**REL, "Metric": "E3"}])
    return [a, b]


def test_macro_differs_from_micro_on_two_documents(tmp_path):
    docs = two_documents(tmp_path)
    macro = scirex_official(docs, {"a": [FULL], "b": [FULL]}, 4)
    # Cells: a (p 1, r 1, f1 1), b (p 1, r 1/3, f1 1/2) -> means P 1, R 2/3, F1 3/4.
    assert macro["p"] == pytest.approx(100, abs=1e-4)
    assert macro["r"] == pytest.approx(200 / 3, abs=1e-4)
    assert macro["f1"] == pytest.approx(75, abs=1e-4)
    assert (macro["cells"], macro["gold"], macro["predicted"], macro["matched"]) == (2, 4, 2, 2)
    # Entities are numbered in coref order T, M, D, E(, E2, E3): the sorted 4-set of FULL is (0, 1, 2, 3).
    micro = dore_micro(docs, {"a": [(0, 1, 2, 3)], "b": [(0, 1, 2, 3)]}, 4)
    assert (micro["tp"], micro["fp"], micro["fn"]) == (2, 0, 2)
    assert (micro["p"], micro["r"]) == (100, 50)
    assert micro["f1"] == pytest.approx(200 / 3)


def test_cell_with_predictions_but_no_gold_is_ignored(tmp_path):
    docs = two_documents(tmp_path)
    empty = make_doc(tmp_path, "c", relations=[])
    base = scirex_official(docs, {"a": [FULL], "b": [FULL]}, 4)
    noisy = scirex_official([*docs, empty], {"a": [FULL], "b": [FULL], "c": [FULL, {**FULL, "Task": "x"}]}, 4)
    assert {k: noisy[k] for k in ("p", "r", "f1", "cells")} == {k: base[k] for k in ("p", "r", "f1", "cells")}
    assert noisy["predicted_in_dropped_cells"] == 2


def test_unmapped_names_pass_through(tmp_path):
    doc = make_doc(tmp_path)
    # "zz" matches no gold cluster; the prediction's gold names need no cluster entry.
    res = scirex_official([doc], {"d1": [FULL]}, 4, pred_clusters={"d1": {"zz": [(30, 31)]}})
    assert res["matched"] == 1
    assert res["clustering"] == {"docs": 1, "p": 0.0, "r": 0.0, "f1": 0.0}


def test_predicted_duplicates_count_once_and_two_slot_predictions_feed_only_their_pair(tmp_path):
    doc = make_doc(tmp_path)
    res = scirex_official([doc], {"d1": [FULL, dict(FULL), {"Task": "T", "Method": "M"}]}, 2)
    assert (res["cells"], res["predicted"], res["matched"]) == (6, 6, 6)
    four = scirex_official([doc], {"d1": [{"Task": "T", "Method": "M"}]}, 4)
    assert (four["predicted"], four["f1"]) == (0, 0.0)


def test_predicted_cluster_spans_must_be_in_the_predicted_ner(tmp_path):
    doc = make_doc(tmp_path)
    with pytest.raises(DataError, match="pred_clusters.t"):
        scirex_official([doc], {}, 4, pred_clusters={"d1": {"t": [(0, 2)]}}, pred_ner={"d1": [(4, 6, "Method")]})


def test_unknown_doc_ids_and_bad_slots_raise(tmp_path):
    doc = make_doc(tmp_path)
    with pytest.raises(DataError, match="nope"):
        scirex_official([doc], {"nope": [FULL]}, 4)
    with pytest.raises(DataError, match="predictions"):
        scirex_official([doc], {"d1": [{"Dataset": "D"}]}, 4)
    with pytest.raises(DataError, match="predictions"):
        dore_micro([doc], {"d1": [(0, 1, "relevant")]}, 2)


# --- case 15: DORE's micro variant -------------------------------------------------------------


def test_four_ary_collapse_is_a_false_negative(tmp_path):
    doc = make_doc(tmp_path)
    clusters = {"d1": [[(0, 2), (4, 6)], [(8, 10)], [(12, 14)]]}  # T and M on one cluster
    res = dore_micro([doc], {"d1": [(0, 1, 2, 3)]}, 4, pred_clusters=clusters)  # id 3 does not exist
    assert {k: res[k] for k in ("tp", "fp", "fn", "collapsed", "skipped", "f1")} == \
        {"tp": 0, "fp": 0, "fn": 1, "collapsed": 1, "skipped": 1, "f1": 0.0}


def test_binary_diagonal_is_dropped_only_with_dore_compat(tmp_path):
    doc = make_doc(tmp_path)
    clusters = {"d1": [[(0, 2), (4, 6)], [(8, 10)], [(12, 14)]]}  # T, M -> 0; D -> 1; E -> 2
    preds = {"d1": [(1, 2, "material and metric"), (0, 1, "material and task"), (0, 1, "material and method"),
                    (0, 2, "metric and task"), (0, 2, "metric and method")]}
    default = dore_micro([doc], preds, 2, pred_clusters=clusters)
    assert (default["tp"], default["fn"], default["collapsed"], default["dropped"]) == (5, 1, 1, 0)
    assert default["f1"] == pytest.approx(100 * 10 / 11)  # P 1, R 5/6
    compat = dore_micro([doc], preds, 2, pred_clusters=clusters, dore_compat=True)
    assert (compat["tp"], compat["fn"], compat["dropped"], compat["f1"]) == (5, 0, 1, 100)


def test_micro_counts_duplicates_order_and_out_of_range(tmp_path):
    doc = make_doc(tmp_path)  # gold input: ids are entity indices T 0, M 1, D 2, E 3
    preds = {"d1": [(2, 3, "material and metric"), (2, 3, "material and metric"),  # repeat: FP
                    (3, 2, "material and metric"),  # the reference writes h < t: FP
                    (0, 1, "material and metric"),  # right pair, wrong label: FP
                    (0, 9, "task and method")]}  # out of range: skipped
    res = dore_micro([doc], preds, 2)
    assert {k: res[k] for k in ("tp", "fp", "fn", "skipped")} == {"tp": 1, "fp": 3, "fn": 5, "skipped": 1}
    assert (res["p"], res["r"]) == (25, pytest.approx(100 / 6))


def test_unmappable_gold_entity_makes_its_relations_false_negatives(tmp_path):
    doc = make_doc(tmp_path)
    clusters = {"d1": [[(0, 2)], [(4, 6)], [(8, 10)]]}  # nothing shares a span with E
    res = dore_micro([doc], {"d1": [(0, 1, "task and method")]}, 2, pred_clusters=clusters)
    assert (res["tp"], res["fn"], res["unmapped"]) == (1, 5, 3)


def test_gold_entity_maps_to_the_cluster_sharing_most_spans_lowest_id_on_ties(tmp_path):
    doc = make_doc(tmp_path, coref={**SPANS, "T": [[0, 2], [20, 22], [24, 26]]})
    assert map_gold_to_clusters(doc, [{(0, 2)}, {(20, 22), (24, 26)}, {(4, 6)}, set()])[:3] == [1, 2, None]
    assert map_gold_to_clusters(doc, [{(30, 31)}, {(0, 2)}, {(20, 22)}])[0] == 1


def test_dore_compat_keeps_binary_gold_pairs_that_coincide_in_cluster_space(tmp_path):
    coref = {**SPANS, "M2": [[16, 18]]}
    doc = make_doc(tmp_path, coref=coref, relations=[REL, {**REL, "Method": "M2"}])
    clusters = {"d1": [[(0, 2)], [(4, 6), (16, 18)], [(8, 10)], [(12, 14)]]}  # M and M2 share cluster 1
    preds = {"d1": [(2, 3, "material and metric"), (0, 2, "material and task"), (0, 3, "metric and task"),
                    (1, 2, "material and method"), (1, 3, "metric and method"), (0, 1, "task and method")]}
    assert dore_micro([doc], preds, 2, pred_clusters=clusters)["f1"] == 100
    compat = dore_micro([doc], preds, 2, pred_clusters=clusters, dore_compat=True)
    assert (compat["tp"], compat["fn"]) == (6, 3)


def test_pair_labels_follow_the_official_slot_order():
    assert list(PAIR_LABELS.values()) == ["material and metric", "material and task", "material and method",
                                          "metric and task", "metric and method", "task and method"]


# --- coreference metrics ------------------------------------------------------------------


def test_clustering_quality_on_the_pradhan_2014_example():
    # Pradhan et al. (2014), Figure 1: key {a b c} {d e f g}; response {a b} {c d} {f g h i}.
    res = clustering_quality([list("abc"), list("defg")], [list("ab"), list("cd"), list("fghi")])
    assert res["muc"]["r"] == pytest.approx(40) and res["muc"]["p"] == pytest.approx(40)
    assert res["b3"]["r"] == pytest.approx(100 * 35 / 84) and res["b3"]["p"] == pytest.approx(50)
    assert res["b3"]["f1"] == pytest.approx(100 * 2 * (35 / 84) * 0.5 / (35 / 84 + 0.5))
    assert res["ceafe"]["r"] == pytest.approx(65) and res["ceafe"]["p"] == pytest.approx(100 * 1.3 / 3)
    assert res["avg_f1"] == pytest.approx((res["muc"]["f1"] + res["b3"]["f1"] + res["ceafe"]["f1"]) / 3)


def test_clustering_quality_perfect_and_disjoint():
    clusters = [[(0, 1), (5, 6)], [(2, 3)], []]
    perfect = clustering_quality(clusters, list(reversed(clusters)))
    assert all(perfect[m][k] == pytest.approx(100) for m in ("b3", "ceafe") for k in ("p", "r", "f1"))
    assert perfect["muc"]["f1"] == pytest.approx(100)
    nothing = clustering_quality(clusters, [[(9, 10)]])
    assert nothing["avg_f1"] == 0.0


@given(st.lists(st.lists(st.integers(0, 14), max_size=5), max_size=6),
       st.lists(st.lists(st.integers(0, 14), max_size=5), max_size=6))
@settings(max_examples=200, deadline=None)
def test_b_cubed_and_ceafe_equal_their_dense_definitions(key, response):
    """B³ and CEAF-e read only the cluster pairs that share a mention (and align per connected
    component); the values are those of the definitions over every pair, overlapping clusters
    included (SciREX's salient clusters overlap)."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    res = clustering_quality(key, response)
    k = [frozenset(c) for c in key if c]
    r = [frozenset(c) for c in response if c]

    def b3_recall(a, b):
        total = sum(len(x) for x in a)
        return sum(len(x & y) ** 2 / len(x) for x in a for y in b) / total if total else 0.0

    assert res["b3"]["r"] == pytest.approx(100 * b3_recall(k, r))
    assert res["b3"]["p"] == pytest.approx(100 * b3_recall(r, k))
    phi = 0.0
    if k and r:
        dense = np.array([[2 * len(x & y) / (len(x) + len(y)) for y in r] for x in k])
        rows, cols = linear_sum_assignment(dense, maximize=True)
        phi = dense[rows, cols].sum()
    assert res["ceafe"]["r"] == pytest.approx(100 * phi / len(k) if k else 0.0)
    assert res["ceafe"]["p"] == pytest.approx(100 * phi / len(r) if r else 0.0)


@given(st.lists(st.tuples(st.integers(0, 30), st.integers(1, 6)), max_size=12),
       st.lists(st.tuples(st.integers(0, 30), st.integers(1, 6)), max_size=12))
@settings(max_examples=200, deadline=None)
def test_the_indexed_span_mapping_is_map_span_to_gold(gold, predicted):
    from dore.scoring.scirex import span_mapper

    gold_spans = [(s, s + n) for s, n in gold]
    to_gold = span_mapper(gold_spans)
    for s, n in predicted:
        assert to_gold((s, s + n)) == map_span_to_gold((s, s + n), gold_spans)
