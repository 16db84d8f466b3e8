"""Parity tests for the DocRED / Re-DocRED scorers (docs/evaluation.md §1, §2, §6 cases 1-7).

Each expected number is worked out by hand, in the comment above its assertion, from the rules of
the official scripts.
"""

import json
import logging
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dore.data.model import DataError, Document, Entity, Mention, Relation
from dore.scoring.bio import candidate_f1, dore_variant_f1
from dore.scoring.docred import (
    FREQUENT_RELATIONS,
    docred_score,
    per_relation_f1,
    redocred_breakdown,
    train_facts,
)


def approx(expected):
    return pytest.approx(expected, rel=1e-12, abs=1e-12)


def make_doc(title, entities, labels=()):
    """entities[i] = entity i's mentions as (name, sent_id); labels = (h, t, r, evidence).

    Every mention is one token; sentence s holds its mentions in entity order, then a full stop.
    """
    n_sents = 1 + max(s for ent in entities for _, s in ent)
    tokens, sentences, mentions = [], [], {}
    for s in range(n_sents):
        start = len(tokens)
        for e, ent in enumerate(entities):
            for j, (name, sent) in enumerate(ent):
                if sent == s:
                    mentions[e, j] = Mention(start=len(tokens), end=len(tokens) + 1, text=name, sent_id=s)
                    tokens.append(name)
        tokens.append(".")
        sentences.append((start, len(tokens)))
    return Document(
        doc_id=title, title=title, tokens=tokens, sentences=sentences,
        entities=[Entity(mentions=[mentions[e, j] for j in range(len(ent))]) for e, ent in enumerate(entities)],
        relations=[Relation(args=(h, t), label=r, evidence=list(evi)) for h, t, r, evi in labels],
    ).check()


def pred(h, t, r, evidence=None, title="D"):
    out = {"title": title, "h_idx": h, "t_idx": t, "r": r}
    return out if evidence is None else out | {"evidence": list(evidence)}


def score(predictions, gold, annotated=frozenset(), distant=None):
    return docred_score(predictions, gold, train_facts_annotated=annotated, train_facts_distant=distant)


ABC = [[("A", 0)], [("B", 1)], [("C", 2)]]


# --- case 1: duplicates ------------------------------------------------------------------------

def test_duplicate_predictions_keep_first_and_duplicate_gold_keeps_last_evidence():
    # Gold: (0,1,P17) twice, evidence [0] then [0,1]: one key, evidence {0,1} (the last copy wins),
    # and tot_evidences = 1 + 2 (both copies) + 1 for (1,2,P131) = 4. tot_relations = 2.
    gold = [make_doc("D", ABC, [(0, 1, "P17", [0]), (0, 1, "P17", [0, 1]), (1, 2, "P131", [2])])]
    first, second = pred(0, 1, "P17", [1]), pred(0, 1, "P17", [0, 1])
    # Submission order (first, second, P131): the first survives. kept = 2, correct = 2.
    # pred_evi = |{1}| + |{}| = 1; correct_evidence = |{0,1} & {1}| = 1.
    # RE: P = 2/2, R = 2/2. Evidence: P = 1/1, R = 1/4, F1 = 2 * 1 * 0.25 / 1.25 = 0.4.
    out = score([first, second, pred(1, 2, "P131")], gold)
    assert (out["n_submitted"], out["n_kept"], out["correct"], out["tot_relations"]) == (3, 2, 2, 2)
    assert (out["pred_evi"], out["correct_evidence"], out["tot_evidences"]) == (1, 1, 4)
    assert out["re_f1"] == approx(100.0)
    assert (out["evi_p"], out["evi_r"], out["evi_f1"]) == (approx(100.0), approx(25.0), approx(40.0))
    # Submission order (second, first, P131): now [0,1] survives. pred_evi = 2, correct_evidence = 2,
    # evidence P = 2/2, R = 2/4, F1 = 2 * 1 * 0.5 / 1.5 = 2/3.
    out = score([second, first, pred(1, 2, "P131")], gold)
    assert (out["pred_evi"], out["correct_evidence"]) == (2, 2)
    assert out["evi_f1"] == approx(200 / 3)


# --- case 2: unknown title ---------------------------------------------------------------------

def test_unknown_title_lowers_precision_and_adds_no_evidence():
    gold = [make_doc("D", ABC, [(0, 1, "P17", [0])])]
    # kept = 2 (the unknown title stays in the denominator), correct = 1: P = 1/2, R = 1/1,
    # F1 = 2 * 0.5 * 1 / 1.5 = 2/3. Evidence: the unknown title's 3 sentences are not counted, so
    # pred_evi = 1, correct_evidence = 1, tot = 1: evidence F1 = 1.
    out = score([pred(0, 1, "P17", [0]), pred(0, 1, "P17", [0, 1, 2], title="Elsewhere")], gold)
    assert (out["n_kept"], out["n_unknown_title"], out["correct"], out["pred_evi"]) == (2, 1, 1, 1)
    assert (out["re_p"], out["re_r"], out["re_f1"]) == (approx(50.0), approx(100.0), approx(200 / 3))
    assert out["evi_f1"] == approx(100.0)


# --- case 3: Ign F1 ----------------------------------------------------------------------------

def test_train_facts_cover_every_mention_pair():
    train = make_doc("T", [[("Alpha", 0), ("Al.", 1)], [("Beta", 0)]], [(0, 1, "P17", [0])])
    assert train_facts([train]) == {("Alpha", "Beta", "P17"), ("Al.", "Beta", "P17")}


def test_in_train_is_by_mention_names_relation_and_direction_for_correct_predictions_only():
    annotated = train_facts([make_doc("T", [[("Alpha", 0), ("Al.", 1)], [("Beta", 0)]], [(0, 1, "P17", [0])])])
    # Entity 0 shares the mention name "Al." with the training head; entity 3 is another "Beta".
    test = make_doc("D", [[("Al.", 0), ("Alpha Corp", 1)], [("Beta", 0)], [("Gamma", 1)], [("Beta", 2)]],
                    [(0, 1, "P17", [0]), (0, 1, "P131", [0]), (1, 0, "P17", [0]), (2, 1, "P27", [1])])
    predictions = [
        pred(0, 1, "P17"),   # correct; ("Al.", "Beta", P17) is a training fact: in train
        pred(0, 1, "P131"),  # correct; same names, other relation: not in train
        pred(1, 0, "P17"),   # correct; reversed direction ("Beta", "Al.", P17): not in train
        pred(0, 3, "P17"),   # wrong, although ("Al.", "Beta", P17) is a training fact: never flagged
    ]
    # kept = 4, correct = 3, tot_relations = 4, in train = 1.
    # P = R = 3/4, F1 = 0.75. Ign P = (3 - 1) / (4 - 1) = 2/3 and R stays 3/4:
    # Ign F1 = 2 * (2/3) * (3/4) / (2/3 + 3/4) = 1 / (17/12) = 12/17.
    # Distant set flags (1,0,P17) by ("Beta","Al.") and (0,1,P131) by ("Alpha Corp","Beta"): 2 in train,
    # Ign P = (3 - 2) / (4 - 2) = 1/2, Ign F1 = 2 * 0.5 * 0.75 / 1.25 = 0.6.
    distant = {("Beta", "Al.", "P17"), ("Alpha Corp", "Beta", "P131")}
    out = score(predictions, [test], annotated, distant)
    assert (out["correct"], out["correct_in_train_annotated"], out["correct_in_train_distant"]) == (3, 1, 2)
    assert (out["re_p"], out["re_r"], out["re_f1"]) == (approx(75.0), approx(75.0), approx(75.0))
    assert (out["ign_p"], out["ign_f1"]) == (approx(200 / 3), approx(1200 / 17))
    assert (out["ign_p_distant"], out["ign_f1_distant"]) == (approx(50.0), approx(60.0))
    # No evidence predicted: evidence P = 0 (official: 0 when pred_evi = 0), R = 0/4, F1 = 0.
    assert (out["evi_p"], out["evi_r"], out["evi_f1"]) == (0.0, 0.0, 0.0)
    assert out["warnings"] == []
    # Without a distant set the distant Ign scores are n/a; without any set, both are.
    assert score(predictions, [test], annotated)["ign_f1_distant"] is None
    no_sets = docred_score(predictions, [test], train_facts_annotated=None)
    assert (no_sets["ign_f1"], no_sets["correct_in_train_annotated"], no_sets["re_f1"]) == (None, None, approx(75.0))


# --- case 4: the official crashes, guarded ---------------------------------------------------------

def test_empty_submission_scores_zero_with_a_warning(caplog):
    gold = [make_doc("D", ABC, [(0, 1, "P17", [0])])]
    with caplog.at_level(logging.WARNING, logger="dore.scoring.docred"):
        out = score([], gold)
    assert all(out[k] == 0 for k in ("re_p", "re_r", "re_f1", "evi_f1", "ign_p", "ign_f1"))
    assert any("IndexError" in w for w in out["warnings"])
    assert "empty submission" in caplog.text


def test_all_correct_in_train_gives_ign_precision_zero_with_a_warning():
    gold = [make_doc("D", ABC, [(0, 1, "P17", [0])])]
    # kept = correct = in train = 1: the official Ign P is (1 - 1) / (1 - 1), a ZeroDivisionError.
    # Guarded: Ign P = 0, and Ign F1 = 2 * 0 * 1 / (0 + 1) = 0, while RE F1 = 1.
    out = score([pred(0, 1, "P17", [0])], gold, annotated={("A", "B", "P17")})
    assert (out["re_f1"], out["ign_p"], out["ign_f1"]) == (approx(100.0), 0.0, 0.0)
    assert len(out["warnings"]) == 1 and "annotated" in out["warnings"][0]


def test_gold_without_evidence_gives_evidence_recall_zero_with_a_warning():
    gold = [make_doc("D", ABC, [(0, 1, "P17", [])])]
    # tot_evidences = 0: the official evidence R divides by zero. pred_evi = 1, correct_evidence = 0,
    # so evidence P = 0 and, guarded, R = 0 and F1 = 0; RE F1 = 1.
    out = score([pred(0, 1, "P17", [0])], gold)
    assert (out["re_f1"], out["evi_p"], out["evi_r"], out["evi_f1"]) == (approx(100.0), 0.0, 0.0, 0.0)
    assert len(out["warnings"]) == 1 and "evidence" in out["warnings"][0]


# --- case 5: malformed predictions are wrong, never a crash ---------------------------------------

BAD_INDEX_PREDICTIONS = [pred(0, 0, "P17"), pred(0, 5, "P17"), pred(-1, 1, "P17"), pred(0, 1, "P99999"),
                         pred(0, 1, "P17")]


def test_self_pair_out_of_range_and_unknown_relation_are_wrong():
    gold = [make_doc("D", ABC, [(0, 1, "P17", [0])])]
    # kept = 5, correct = 1 (the last): P = 1/5, R = 1, F1 = 2 * 0.2 / 1.2 = 1/3.
    out = score(BAD_INDEX_PREDICTIONS, gold, annotated={("B", "B", "P17"), ("A", "C", "P17")})
    assert (out["n_kept"], out["correct"], out["correct_in_train_annotated"]) == (5, 1, 0)
    assert out["re_f1"] == approx(100 / 3)
    breakdown = redocred_breakdown(BAD_INDEX_PREDICTIONS, gold)
    # The self-pair (0,0) has d = 0 (intra); the two (0,1) facts have d = |0 - 1| = 1 (inter);
    # the two out-of-range pairs have no distance.
    assert (breakdown["intra"]["n_pred"], breakdown["inter"]["n_pred"], breakdown["n_unplaced"]) == (1, 2, 2)
    assert per_relation_f1(BAD_INDEX_PREDICTIONS, gold)["P99999"]["n_pred"] == 1


@pytest.mark.parametrize("bad, field", [
    ({"title": "D", "t_idx": 1, "r": "P17"}, "predictions[1].h_idx"),
    ({"title": "D", "h_idx": "0", "t_idx": 1, "r": "P17"}, "predictions[1].h_idx"),
    ({"title": "D", "h_idx": 0, "t_idx": 1, "r": "P17", "evidence": ["0"]}, "predictions[1].evidence.0"),
])
def test_ill_typed_prediction_raises_data_error_naming_document_and_field(bad, field):
    gold = [make_doc("D", ABC, [(0, 1, "P17", [0])])]
    with pytest.raises(DataError) as err:
        score([pred(0, 1, "P17"), bad], gold)
    assert (err.value.doc, err.value.field) == ("D", field)


def test_pydantic_predictions_are_read_by_field():
    from dore.data.docred import DocredPrediction

    gold = [make_doc("D", ABC, [(0, 1, "P17", [0])])]
    as_dicts = [pred(0, 1, "P17", [0]), pred(1, 2, "P17")]
    as_models = [DocredPrediction.model_validate(p) for p in as_dicts]  # evidence None on the second
    assert score(as_models, gold) == score(as_dicts, gold)


def test_duplicate_gold_title_raises_data_error():
    with pytest.raises(DataError, match="twice"):
        score([], [make_doc("D", ABC), make_doc("D", ABC)])


# --- case 6: entity re-sorting -------------------------------------------------------------------

def test_predictions_index_the_vertex_set_not_the_generation_order():
    # vertexSet order: 0 = Zed (sentence 2), 1 = Ann, 2 = Bob (sentence 0): first appearance is 1, 2, 0.
    doc = make_doc("D", [[("Zed", 2)], [("Ann", 0)], [("Bob", 0)]], [(0, 1, "P17", [2])])
    order = doc.entity_order()
    assert order == [1, 2, 0]
    # The generator names the fact in first-appearance numbering: head 2 (Zed), tail 0 (Ann).
    generated_h, generated_t = 2, 0
    mapped = pred(order[generated_h], order[generated_t], "P17")
    assert (mapped["h_idx"], mapped["t_idx"]) == (0, 1)
    assert score([mapped], [doc])["re_f1"] == approx(100.0)
    assert score([pred(generated_h, generated_t, "P17")], [doc])["re_f1"] == 0.0


# --- case 7: Re-DocRED subsets -----------------------------------------------------------------

# Entity 5 has mentions in sentences 6 and 1, so its distance to entity 0 (sentence 0) is min(6, 1) = 1.
SUBSET_ENTITIES = [[("E0", 0)], [("E1", 0)], [("E2", 1)], [("E3", 5)], [("E4", 6)], [("E5", 6), ("E5b", 1)]]
SUBSET_LABELS = [
    (0, 1, "P17", [0]),    # G1: d = 0 intra, frequent
    (0, 2, "P131", [0]),   # G2: d = 1 inter, frequent
    (0, 3, "P1001", [0]),  # G3: d = 5 inter (not long), long-tail
    (0, 4, "P361", [0]),   # G4: d = 6 inter and long, frequent
    (0, 5, "P1001", [0]),  # G5: d = 1 inter (min over mention pairs), long-tail
    (4, 0, "P26", [0]),    # G6: d = 6 inter and long, long-tail
]
SUBSET_PREDICTIONS = [
    pred(0, 1, "P17"),                  # Q1 correct: frequent, intra
    pred(0, 2, "P131"),                 # Q2 correct: frequent, inter
    pred(0, 3, "P17"),                  # Q3 wrong: frequent, inter (d = 5)
    pred(0, 4, "P361"),                 # Q4 correct: frequent, inter, long
    pred(0, 5, "P1001"),                # Q5 correct: long-tail, inter
    pred(1, 0, "P1001"),                # Q6 wrong: long-tail, intra
    pred(0, 1, "P26", title="Nowhere"),  # Q7 wrong: long-tail, no distance
]


def test_redocred_subsets_by_relation_and_sentence_distance():
    gold = [make_doc("D", SUBSET_ENTITIES, SUBSET_LABELS)]
    out = redocred_breakdown(SUBSET_PREDICTIONS, gold)
    assert {"P17", "P131", "P361"} <= FREQUENT_RELATIONS and "P1001" not in FREQUENT_RELATIONS
    # frequent: predictions Q1-Q4 = 4, correct Q1 Q2 Q4 = 3, gold G1 G2 G4 = 3:
    # P = 3/4, R = 1, F1 = 1.5 / 1.75 = 6/7.
    assert out["frequent"] == {"p": approx(75.0), "r": approx(100.0), "f1": approx(600 / 7),
                               "n_pred": 4, "n_gold": 3, "correct": 3}
    # long-tail: Q5 Q6 Q7 = 3, correct Q5 = 1, gold G3 G5 G6 = 3: P = R = F1 = 1/3.
    assert out["long_tail"] == {"p": approx(100 / 3), "r": approx(100 / 3), "f1": approx(100 / 3),
                                "n_pred": 3, "n_gold": 3, "correct": 1}
    # intra: Q1 Q6 = 2, correct Q1 = 1, gold G1 = 1: P = 1/2, R = 1, F1 = 1 / 1.5 = 2/3.
    assert out["intra"] == {"p": approx(50.0), "r": approx(100.0), "f1": approx(200 / 3),
                            "n_pred": 2, "n_gold": 1, "correct": 1}
    # inter: Q2 Q3 Q4 Q5 = 4, correct Q2 Q4 Q5 = 3, gold G2-G6 = 5:
    # P = 3/4, R = 3/5, F1 = 0.9 / 1.35 = 2/3.
    assert out["inter"] == {"p": approx(75.0), "r": approx(60.0), "f1": approx(200 / 3),
                            "n_pred": 4, "n_gold": 5, "correct": 3}
    # long-distance (d > 5): predictions Q4 = 1 (correct), gold G4 G6 = 2. Q7 has no distance.
    assert out["long_distance"] == {"n_pred": 1, "n_gold": 2, "correct": 1}
    assert (out["n_unplaced"], out["warnings"]) == (1, [])
    # The overall score on the same data: kept 7, correct 4, gold 6:
    # P = 4/7, R = 4/6, F1 = (16/21) / (26/21) = 8/13.
    assert score(SUBSET_PREDICTIONS, gold)["re_f1"] == approx(800 / 13)


def test_long_tail_is_limited_to_the_given_relation_inventory():
    gold = [make_doc("D", SUBSET_ENTITIES, SUBSET_LABELS)]
    # Without P26 in the inventory, G6 and Q7 leave the long-tail subset:
    # predictions Q5 Q6 = 2, correct 1, gold G3 G5 = 2: P = R = F1 = 1/2.
    out = redocred_breakdown(SUBSET_PREDICTIONS, gold, relations={"P17", "P131", "P361", "P1001"})
    assert out["long_tail"] == {"p": approx(50.0), "r": approx(50.0), "f1": approx(50.0),
                                "n_pred": 2, "n_gold": 2, "correct": 1}


def test_breakdown_scores_a_single_prediction_and_guards_an_empty_gold_subset():
    # The official `len > 1` test would empty a one-prediction submission; here Q1 is scored:
    # frequent P = 1/1, R = 1/3.
    gold = [make_doc("D", SUBSET_ENTITIES, SUBSET_LABELS)]
    out = redocred_breakdown([pred(0, 1, "P17")], gold)
    assert (out["frequent"]["p"], out["frequent"]["r"]) == (approx(100.0), approx(100 / 3))
    # Only frequent gold: the official long-tail recall divides by zero. Guarded: 0, with a warning.
    only_frequent = [make_doc("D", SUBSET_ENTITIES, SUBSET_LABELS[:2])]
    out = redocred_breakdown([pred(0, 1, "P17"), pred(0, 5, "P1001")], only_frequent)
    assert (out["long_tail"]["p"], out["long_tail"]["r"], out["long_tail"]["f1"]) == (0.0, 0.0, 0.0)
    assert len(out["warnings"]) == 1 and "long_tail" in out["warnings"][0]


def test_per_relation_scores():
    gold = [make_doc("D", SUBSET_ENTITIES, SUBSET_LABELS)]
    out = per_relation_f1(SUBSET_PREDICTIONS, gold)
    # P17: predictions Q1 Q3, correct Q1, support 1: P = 1/2, R = 1, F1 = 2/3.
    assert out["P17"] == {"p": approx(50.0), "r": approx(100.0), "f1": approx(200 / 3),
                          "support": 1, "n_pred": 2, "correct": 1}
    # P1001: predictions Q5 Q6, correct Q5, support 2: P = R = F1 = 1/2.
    assert (out["P1001"]["f1"], out["P1001"]["support"]) == (approx(50.0), 2)
    # P26: only the unknown-title Q7: P = R = F1 = 0.
    assert (out["P26"]["f1"], out["P26"]["n_pred"]) == (0.0, 1)
    assert list(out)[0] == "P1001"  # the largest support comes first


# --- property: prediction order ------------------------------------------------------------------

PROPERTY_GOLD = [make_doc("D", [[("A", 0)], [("B", 1)], [("C", 1)]],
                          [(0, 1, "P17", [0, 1]), (1, 2, "P131", [1]), (2, 0, "P17", [])])]
RE_KEYS = ("re_p", "re_r", "re_f1", "ign_p", "ign_f1", "n_kept", "correct", "correct_in_train_annotated")
EVI_KEYS = ("evi_p", "evi_r", "evi_f1", "pred_evi", "correct_evidence")

predictions_strategy = st.lists(
    st.builds(pred, st.integers(0, 2), st.integers(0, 2), st.sampled_from(["P17", "P131"]),
              st.lists(st.integers(0, 1), max_size=2)),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(predictions=predictions_strategy, data=st.data())
def test_scores_do_not_depend_on_prediction_order_except_surviving_evidence(predictions, data):
    shuffled = data.draw(st.permutations(predictions))
    annotated = {("A", "B", "P17")}
    before, after = score(predictions, PROPERTY_GOLD, annotated), score(shuffled, PROPERTY_GOLD, annotated)
    assert [before[k] for k in RE_KEYS] == [after[k] for k in RE_KEYS]
    # Once every copy of a fact carries the first copy's evidence, evidence scores are invariant too.
    first_evidence = {}
    for p in predictions:
        first_evidence.setdefault((p["h_idx"], p["t_idx"], p["r"]), p.get("evidence"))
    aligned = [p | {"evidence": first_evidence[p["h_idx"], p["t_idx"], p["r"]]} for p in shuffled]
    assert [before[k] for k in EVI_KEYS] == [score(aligned, PROPERTY_GOLD, annotated)[k] for k in EVI_KEYS]


# --- real data: Re-DocRED test as its own prediction -----------------------------------------------

def test_redocred_test_gold_as_predictions_scores_100(shared_data):
    from dore.data.docred import read_docred

    gold, _ = read_docred(shared_data / "redocred" / "test_revised.json")
    train, _ = read_docred(shared_data / "redocred" / "dev_revised.json")
    predictions = [pred(rel.head, rel.tail, rel.label, rel.evidence or [], title=doc.doc_id)
                   for doc in gold for rel in doc.unique_relations()]
    out = docred_score(predictions, gold, train_facts_annotated=train_facts(train))
    assert (out["n_kept"], out["tot_relations"], out["tot_evidences"]) == (17448, 17448, 12693)
    assert (out["re_f1"], out["evi_f1"]) == (approx(100.0), approx(100.0))
    # Some test facts were seen in training (Re-DocRED dev); they leave both sides of Ign P = 1.
    assert 0 < out["correct_in_train_annotated"] < 17448
    assert (out["ign_p"], out["ign_f1"]) == (approx(100.0), approx(100.0))
    breakdown = redocred_breakdown(predictions, gold)
    for name in ("frequent", "long_tail", "intra", "inter"):
        assert breakdown[name]["f1"] == approx(100.0)
    assert breakdown["frequent"]["n_gold"] + breakdown["long_tail"]["n_gold"] == 17448
    assert breakdown["intra"]["n_gold"] + breakdown["inter"]["n_gold"] == 17448


# --- the evaluate wrapper ------------------------------------------------------------------------

def test_evaluate_metric_gives_the_plain_functions_numbers(tmp_path, monkeypatch):
    # evaluate copies the module script under $HF_HOME/modules; keep that inside tmp_path.
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import evaluate

    monkeypatch.setattr(evaluate.config, "HF_MODULES_CACHE", tmp_path / "hf" / "modules")  # if imported earlier
    metric = evaluate.load(str(Path(__file__).resolve().parents[2] / "metrics" / "relation_f1"),
                           cache_dir=str(tmp_path / "cache"), keep_in_memory=True)
    gold = [make_doc("D", SUBSET_ENTITIES, SUBSET_LABELS)]
    docred_inputs = {"predictions": [json.dumps(SUBSET_PREDICTIONS)], "references": [gold[0].to_json()]}
    annotated = {("E0", "E1", "P17")}
    assert metric.compute(**docred_inputs, train_facts_annotated=[list(f) for f in annotated]) == docred_score(
        SUBSET_PREDICTIONS, gold, train_facts_annotated=annotated)
    assert metric.compute(**docred_inputs, scorer="redocred_benchmark") == redocred_breakdown(SUBSET_PREDICTIONS, gold)

    bio = Document(doc_id="p1", tokens=["C", "D", "E"], sentences=[(0, 3)],
                   entities=[Entity(mentions=[Mention(start=i, end=i + 1, text=w)]) for i, w in enumerate("CDE")],
                   relations=[Relation(args=(0, 1), label="CID")], candidates=[(0, 1), (0, 2)])
    pairs = [(0, 1), (0, 2), (0, 2)]
    bio_inputs = {"predictions": [json.dumps(pairs)], "references": [bio.to_json()]}
    for scorer, function in (("atlop_candidate_f1", candidate_f1), ("dore_micro", dore_variant_f1)):
        out = metric.compute(**bio_inputs, scorer=scorer, label="CID")
        assert out == function({"p1": pairs}, [bio], "CID") and out["scorer"] == scorer
