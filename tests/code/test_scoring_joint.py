"""Joint relation scores over predicted entities (dore/scoring/joint.py): strict, strict_typed, relaxed."""

from hypothesis import given
from hypothesis import strategies as st

from dore.data.model import Document, Entity, Mention, Relation
from dore.scoring.joint import joint_scores, relaxed_matching


def doc(entities, relations=(), doc_id="d"):
    ents = [Entity(type=t, mentions=[Mention(start=s, end=e, text="w") for s, e in spans]) for t, spans in entities]
    rels = [Relation(args=(h, t), label=r) for h, t, r in relations]
    return Document(doc_id=doc_id, tokens=["w"] * 50, sentences=[(0, 50)], entities=ents, relations=rels)


GOLD = doc([("PER", [(0, 2), (10, 11)]), ("LOC", [(5, 6)]), ("ORG", [(20, 22)])],
           [(0, 1, "P19"), (0, 2, "P108")])


def test_gold_entities_and_relations_score_100_every_way():
    scores = joint_scores([GOLD], [GOLD], [[(0, 1, "P19"), (0, 2, "P108")]])
    assert all(s["f1"] == 100.0 for s in scores.values())


def test_a_missing_mention_fails_strict_but_not_relaxed_and_a_wrong_type_fails_strict_typed():
    # entity 0 lost its second mention; entity 1 has the wrong type; order of entities shuffled
    pred = doc([("LOC", [(20, 22)]), ("PER", [(0, 2)]), ("PER", [(5, 6)])])
    rels = [(1, 2, "P19"), (1, 0, "P108"), (2, 0, "P17")]
    s = joint_scores([GOLD], [pred], [rels])
    assert s["strict"]["tp"] == 0  # entity 0's spans differ from every gold entity's
    assert s["relaxed"]["tp"] == 2 and s["relaxed"]["predicted"] == 3 and s["relaxed"]["gold"] == 2
    pred_exact = doc([("ORG", [(20, 22)]), ("PER", [(0, 2), (10, 11)]), ("PER", [(5, 6)])])
    s = joint_scores([GOLD], [pred_exact], [rels])
    assert s["strict"]["tp"] == 2 and s["strict_typed"]["tp"] == 1  # (1, 2) has a LOC as a PER


def test_relations_on_unmatched_entities_are_false_positives_and_duplicates_count_once():
    pred = doc([("PER", [(0, 2), (10, 11)]), ("MISC", [(40, 41)])])
    s = joint_scores([GOLD], [pred], [[(0, 1, "P19"), (0, 1, "P19")]])
    assert s["relaxed"] == {"p": 0.0, "r": 0.0, "f1": 0.0, "tp": 0, "predicted": 1, "gold": 2}


spans = st.frozensets(st.tuples(st.integers(0, 6), st.integers(7, 9)), min_size=1, max_size=3)


@given(st.lists(spans, max_size=5), st.lists(spans, max_size=5))
def test_relaxed_matching_is_one_to_one_and_only_pairs_sharing_a_span(gold, predicted):
    matched = relaxed_matching(gold, predicted)
    assert len(set(matched.values())) == len(matched)
    assert all(gold[g] & predicted[p] for p, g in matched.items())
    # maximal: no unmatched pair still shares a span
    free_gold = set(range(len(gold))) - set(matched.values())
    assert not any(gold[g] & predicted[p] for p in range(len(predicted)) if p not in matched for g in free_gold)
