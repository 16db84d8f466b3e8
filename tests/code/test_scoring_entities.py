"""Entity metrics (dore.scoring.entities): perfect predictions score 100, small cases by hand, and
properties that hold for any prediction."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dore.data.model import Document, Entity, Mention
from dore.scoring.entities import coref_scores, entity_scores, mention_scores
from tests.conftest import fixture_docs


def doc(entities, doc_id="d", n_tokens=20) -> Document:
    """entities: [[(start, end, type), ...], ...]"""
    return Document(doc_id=doc_id, tokens=[f"w{i}" for i in range(n_tokens)], sentences=[(0, n_tokens)],
                    entities=[Entity(mentions=[Mention(start=s, end=e, text="x", type=t) for s, e, t in ms],
                                     type=ms[0][2]) for ms in entities])


def test_perfect_prediction_scores_100_on_real_documents():
    gold = fixture_docs("train", "dev", "test")
    scores = entity_scores(gold, gold)
    assert scores["mentions"]["span"]["f1"] == scores["mentions"]["span_type"]["f1"] == 100
    for name in ("muc", "b3", "ceafe"):
        assert scores["coref"][name]["f1"] == pytest.approx(100)
    assert scores["coref"]["avg_f1"] == pytest.approx(100)


def test_mentions_by_hand():
    gold = doc([[(0, 1, "PER"), (5, 6, "PER")], [(2, 4, "ORG")]])
    pred = doc([[(0, 1, "PER")], [(2, 4, "LOC")], [(7, 8, "NUM")]])
    m = mention_scores([gold], [pred])
    assert (m["span"]["correct"], m["span"]["predicted"], m["span"]["gold"]) == (2, 3, 3)
    assert m["span"]["f1"] == pytest.approx(200 / 3)
    assert (m["span_type"]["correct"], m["span_type"]["p"]) == (1, pytest.approx(100 / 3))


def test_coreference_by_hand():
    gold = doc([[(0, 1, "PER"), (5, 6, "PER")], [(2, 4, "ORG")]])
    split = doc([[(0, 1, "PER")], [(5, 6, "PER")], [(2, 4, "ORG")]])
    c = coref_scores([gold], [split])
    assert c["muc"]["r"] == 0 and c["muc"]["f1"] == 0  # the one gold link is missed
    assert c["b3"]["p"] == pytest.approx(100) and c["b3"]["r"] == pytest.approx(100 * (0.5 + 0.5 + 1) / 3)
    # CEAF-e: phi = 2*1/(2+1) for the split entity's best part + 1 for ORG; 2 gold, 3 predicted entities
    assert c["ceafe"]["r"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert c["ceafe"]["p"] == pytest.approx(100 * (2 / 3 + 1) / 3)
    merged = doc([[(0, 1, "PER"), (5, 6, "PER"), (2, 4, "ORG")]])
    assert coref_scores([gold], [merged])["muc"]["r"] == pytest.approx(100)


def test_a_missing_document_is_an_error():
    with pytest.raises(ValueError, match="no prediction"):
        mention_scores([doc([]), doc([], doc_id="e")], [doc([])])


spans = st.lists(st.tuples(st.integers(0, 18), st.integers(1, 3), st.sampled_from(["PER", "ORG"])),
                 min_size=1, max_size=8, unique_by=lambda t: t[0])


@st.composite
def documents(draw):
    mentions = [(s, min(s + n, 20), t) for s, n, t in draw(spans)]
    labels = draw(st.lists(st.integers(0, 3), min_size=len(mentions), max_size=len(mentions)))
    groups = {}
    for m, k in zip(mentions, labels):
        groups.setdefault(k, []).append(m)
    return doc(list(groups.values()))


@settings(max_examples=60, deadline=None)
@given(documents(), documents())
def test_scores_are_percentages_perfect_on_gold_and_ignore_entity_order(gold, pred):
    s = entity_scores([gold], [pred])
    for part in (s["mentions"]["span"], s["mentions"]["span_type"], s["coref"]["muc"], s["coref"]["b3"]):
        assert 0 <= part["f1"] <= 100 + 1e-9
    perfect = entity_scores([gold], [gold])["coref"]
    assert perfect["b3"]["f1"] == perfect["ceafe"]["f1"] == pytest.approx(100)
    # MUC counts links: with singletons only there is none to find (0/0 -> 0, as the reference scorer)
    assert perfect["muc"]["f1"] == pytest.approx(100 if any(len(e.mentions) > 1 for e in gold.entities) else 0)
    reversed_pred = pred.model_copy(update={"entities": pred.entities[::-1]})
    assert entity_scores([gold], [reversed_pred])["coref"]["avg_f1"] == pytest.approx(s["coref"]["avg_f1"])
    assert entity_scores([gold], [reversed_pred])["mentions"] == s["mentions"]
