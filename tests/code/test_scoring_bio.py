"""Parity tests for the CDR/GDA scorers (docs/evaluation.md §3, §6 cases 8-9).

Each expected number is worked out by hand, in the comment above its assertion. ATLOP's smoothing
is P = TP/(TP+FP+1e-5), R = TP/(TP+FN+1e-5), F1 = 2PR/(P+R+1e-5).
"""

import logging

import pytest

from dore.data.model import DataError, Document, Entity, Mention, Relation
from dore.scoring.bio import candidate_f1, dore_variant_f1


def approx(expected):
    return pytest.approx(expected, rel=1e-12, abs=1e-12)


def make_doc(doc_id, names, candidates, positives, excluded=()):
    """One token per entity; `positives` are the CID pairs among `candidates`."""
    return Document(
        doc_id=doc_id, tokens=list(names), sentences=[(0, len(names))],
        entities=[Entity(mentions=[Mention(start=i, end=i + 1, text=name, sent_id=0)]) for i, name in enumerate(names)],
        relations=[Relation(args=pair, label="CID") for pair in positives],
        candidates=list(candidates), excluded=list(excluded),
    ).check()


# Entities 0, 1 are chemicals, 2, 3 diseases. Candidates (0,2) CID, (0,3) NR, (1,2) CID; (1,3) is not_include.
DOC = make_doc("p1", ["C1", "C2", "D1", "D2"], [(0, 2), (0, 3), (1, 2)], [(0, 2), (1, 2)], excluded=[(1, 3)])
HALF = 1 / 2.00001  # TP = FP = 1 or TP = FN = 1: 1 / (1 + 1 + 1e-5)


# --- case 8: not_include and non-candidate pairs ----------------------------------------------------

def test_excluded_and_non_candidate_predictions_are_ignored():
    predicted = {"p1": [(0, 2), (1, 3), (2, 0), (0, 1), (0, 3), (0, 9)]}
    # (0,2) TP; (0,3) FP; (1,2) unpredicted: FN. Ignored: (1,3) excluded; (2,0) reversed, (0,1) and
    # (0,9) are not candidates. P = R = 1/2.00001, F1 = 2 P^2 / (2P + 1e-5) = 0.4999925000625.
    out = candidate_f1(predicted, [DOC], "CID")
    assert (out["tp"], out["fp"], out["fn"], out["n_candidates"]) == (1, 1, 1, 3)
    assert (out["ignored_excluded"], out["ignored_non_candidate"]) == (1, 3)
    assert (out["p"], out["r"]) == (approx(100 * HALF), approx(100 * HALF))
    assert out["f1"] == approx(100 * 2 * HALF * HALF / (2 * HALF + 1e-5))
    assert out["f1"] == pytest.approx(49.999250006249973, abs=1e-9)
    assert (out["scorer"], out["warnings"]) == ("atlop_candidate_f1", [])
    # DORE's variant on the same pairs: (0,2) TP; (1,3) excused; (2,0), (0,1), (0,3) FP;
    # (0,9) out of range, skipped; FN (1,2). P = 1/4, R = 1/2, F1 = 2 * (1/8) / (3/4) = 1/3.
    dore = dore_variant_f1(predicted, [DOC], "CID")
    assert (dore["tp"], dore["fp"], dore["fn"], dore["excused"], dore["skipped_out_of_range"]) == (1, 3, 1, 1, 1)
    assert (dore["p"], dore["r"], dore["f1"]) == (approx(25.0), approx(50.0), approx(100 / 3))
    assert dore["scorer"] == "dore_micro"


# --- case 9: duplicates and zero TP -------------------------------------------------------------------

def test_duplicates_count_once_for_atlop_and_as_false_positives_for_dore():
    predicted = {"p1": [(0, 2), (0, 2), (0, 3), (0, 3), (1, 3), (1, 3)]}
    # Candidates predicted positive: (0,2) TP, (0,3) FP; FN (1,2): as in case 8.
    out = candidate_f1(predicted, [DOC], "CID")
    assert (out["tp"], out["fp"], out["fn"]) == (1, 1, 1)
    assert out["f1"] == approx(100 * 2 * HALF * HALF / (2 * HALF + 1e-5))
    # DORE: the second (0,2) finds no unmatched gold: FP; both (0,3) FP; both (1,3) excused.
    # TP 1, FP 3, FN 1: P = 1/4, R = 1/2, F1 = 1/3.
    dore = dore_variant_f1(predicted, [DOC], "CID")
    assert (dore["tp"], dore["fp"], dore["fn"], dore["excused"]) == (1, 3, 1, 2)
    assert dore["f1"] == approx(100 / 3)


@pytest.mark.parametrize("pairs", [[(0, 3)], []])
def test_zero_true_positives_give_zero_without_dividing_by_zero(pairs):
    # TP = 0: P = 0 / (FP + 1e-5) = 0, R = 0 / (2 + 1e-5) = 0, F1 = 0 / (0 + 0 + 1e-5) = 0.
    out = candidate_f1({"p1": pairs}, [DOC], "CID")
    assert (out["tp"], out["fn"], out["p"], out["r"], out["f1"]) == (0, 2, 0.0, 0.0, 0.0)
    dore = dore_variant_f1({"p1": pairs}, [DOC], "CID")
    assert (dore["p"], dore["r"], dore["f1"]) == (0.0, 0.0, 0.0)


def test_counts_are_pooled_over_documents_and_unknown_documents_warn(caplog):
    other = make_doc("p2", ["C", "D"], [(0, 1)], [(0, 1)])
    # p1: TP (0,2), FN (1,2); p2: no prediction, FN (0,1). TP 1, FP 0, FN 2:
    # P = 1 / 1.00001, R = 1 / 3.00001, F1 = 2PR / (P + R + 1e-5).
    with caplog.at_level(logging.WARNING, logger="dore.scoring.bio"):
        out = candidate_f1({"p1": [(0, 2)], "p9": [(0, 1)]}, [DOC, other], "CID")
    p, r = 1 / 1.00001, 1 / 3.00001
    assert (out["tp"], out["fp"], out["fn"]) == (1, 0, 2)
    assert (out["p"], out["r"], out["f1"]) == (approx(100 * p), approx(100 * r), approx(100 * 2 * p * r / (p + r + 1e-5)))
    assert len(out["warnings"]) == 1 and "p9" in out["warnings"][0] and "p9" in caplog.text


def test_gold_outside_the_candidates_is_not_scored_but_reported():
    doc = make_doc("p1", ["C", "D", "E"], [(0, 1)], [(0, 1)]).model_copy(
        update={"relations": [Relation(args=(0, 1), label="CID"), Relation(args=(0, 2), label="CID")]})
    # Only (0,1) is scored: TP 1, FN 0 (the (0,2) relation is reported, not counted).
    out = candidate_f1({"p1": [(0, 1)]}, [doc], "CID")
    assert (out["tp"], out["fn"], out["gold_outside_candidates"], len(out["warnings"])) == (1, 0, 1, 1)
    # DORE's variant knows no candidates: (0,2) is an FN there.
    assert dore_variant_f1({"p1": [(0, 1)]}, [doc], "CID")["fn"] == 1


def test_bad_input_raises_data_error_naming_document_and_field():
    with pytest.raises(DataError) as err:
        candidate_f1({"p1": [(0, 2), ("0", 3)]}, [DOC], "CID")
    assert (err.value.doc, err.value.field) == ("p1", "predictions[1]")
    with pytest.raises(DataError) as err:
        candidate_f1({}, [DOC.model_copy(update={"candidates": None})], "CID")
    assert (err.value.doc, err.value.field) == ("p1", "candidates")


# --- real data: gold as predictions ---------------------------------------------------------------

@pytest.mark.parametrize("path, dataset, label, n_pos, n_candidates, n_excluded", [
    ("cdr/processed/test_filter.data", "cdr", "CID", 1066, 1066 + 4138, 201),
    ("gda/processed/test.data", "gda", "GDA", 1502, 1502 + 3720, 0),
])
def test_gold_as_predictions(shared_data, path, dataset, label, n_pos, n_candidates, n_excluded):
    from dore.data.bio import read_eog

    gold, _ = read_eog(shared_data / path, dataset)
    assert sum(len(doc.excluded) for doc in gold) == n_excluded
    predicted = {doc.doc_id: [rel.args for rel in doc.relations] for doc in gold}
    out = candidate_f1(predicted, gold, label)
    assert (out["tp"], out["fp"], out["fn"], out["n_candidates"]) == (n_pos, 0, 0, n_candidates)
    # P = R = n/(n + 1e-5) and F1 = 2P^2/(2P + 1e-5): just under 100 (CDR 99.99949906, GDA 99.99949934).
    p = n_pos / (n_pos + 1e-5)
    assert out["f1"] == approx(100 * 2 * p * p / (2 * p + 1e-5))
    assert 99.9994 < out["f1"] < 99.9996
    assert dore_variant_f1(predicted, gold, label)["f1"] == 100.0
    # Every candidate predicted positive: P = n/(candidates + 1e-5), R = n/(n + 1e-5).
    everything = {doc.doc_id: doc.candidates for doc in gold}
    out = candidate_f1(everything, gold, label)
    p, r = n_pos / (n_candidates + 1e-5), n_pos / (n_pos + 1e-5)
    assert (out["tp"], out["fp"]) == (n_pos, n_candidates - n_pos)
    assert out["f1"] == approx(100 * 2 * p * r / (p + r + 1e-5))
