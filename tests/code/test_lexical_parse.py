"""Lexical baseline: target text and the parser that maps generated strings back to entities."""

from collections import Counter

import pytest

from dore.data.model import DataError, Document, Entity, Mention, Relation
from dore.methods.lexical import REL, TAIL, TRIPLET, lexical_target, lexical_triplets, normalize, parse_lexical

NAMES = {"P17": "country", "P19": "place of birth", "P463": "member of", "P551": "residence",
         "P740": "location of formation"}
WORDS = ("The Beatles formed in Liverpool , England . John Lennon and Paul McCartney founded the band . "
         "He was born in Liverpool , near Liverpool F.C. 's ground . He lived in Mediaș .").split()


def span(*words: str, start: int = 0) -> Mention:
    """The mention of `words` at their first occurrence from `start`."""
    n = len(words)
    for i in range(start, len(WORDS) - n + 1):
        if tuple(WORDS[i: i + n]) == words:
            return Mention(start=i, end=i + n, text=" ".join(words))
    raise ValueError(words)


ENTITIES = [
    [span("The", "Beatles"), span("the", "band")],  # 0
    [span("Liverpool"), span("Liverpool", start=20)],  # 1
    [span("England")],  # 2
    [span("John", "Lennon"), span("He")],  # 3: "He" is also Paul's
    [span("Paul", "McCartney"), span("He", start=27)],  # 4
    [span("Liverpool", "F.C."), span("Liverpool", start=22)],  # 5: "Liverpool" nested in its name
    [span("Mediaș")],  # 6
]
RELATIONS = [(3, 1, "P551"), (0, 1, "P740"), (3, 0, "P463"), (1, 2, "P17"), (3, 1, "P19"), (0, 1, "P740")]


def doc() -> Document:
    return Document(doc_id="beatles", tokens=list(WORDS), sentences=[(0, len(WORDS))],
                    entities=[Entity(mentions=m) for m in ENTITIES],
                    relations=[Relation(args=(h, t), label=r) for h, t, r in RELATIONS])


def triplet(head: str, relation: str, tail: str) -> str:
    return f"{TRIPLET} {head} {REL} {relation} {TAIL} {tail}"


def parse(*parts: str):
    return parse_lexical(" ".join(parts), doc(), NAMES)


def test_target_is_row_column_ordered_deduplicated_with_canonical_names():
    assert lexical_target(doc(), NAMES) == " ".join([
        triplet("The Beatles", "location of formation", "Liverpool"),
        triplet("Liverpool", "country", "England"),
        triplet("John Lennon", "member of", "The Beatles"),
        triplet("John Lennon", "place of birth", "Liverpool"),  # one pair: relations in NAMES order
        triplet("John Lennon", "residence", "Liverpool")])
    assert [r[2] for r in lexical_triplets(doc(), NAMES, "annotation")] == ["P551", "P740", "P463", "P17", "P19"]


def test_target_refuses_unnamed_relations_and_unknown_orders():
    with pytest.raises(DataError, match="'P17' has no name"):
        lexical_target(doc(), {k: v for k, v in NAMES.items() if k != "P17"})
    with pytest.raises(ValueError, match="order"):
        lexical_target(doc(), NAMES, order="random")


def test_exact_round_trip_of_the_target():
    gold = {((h, t), r) for h, t, r in RELATIONS}
    out, counts = parse_lexical(lexical_target(doc(), NAMES), doc(), NAMES)
    assert set(out) == gold and len(out) == len(gold)
    assert counts == Counter(ambiguous_strings=4)  # each "Liverpool": also a mention of Liverpool F.C.


def test_any_mention_string_matches_exactly():
    out, counts = parse(triplet("the band", "location of formation", "Liverpool F.C."))
    assert out == [((0, 5), "P740")] and counts == Counter()


def test_normalized_match_case_punctuation_accents_articles():
    out, counts = parse(triplet("beatles", "Location  of formation", "LIVERPOOL F. C."),
                        triplet("paul mccartney", "residence", "medias"))
    assert out == [((0, 5), "P740"), ((4, 6), "P551")]
    assert counts == Counter(normalized_matches=4)
    assert normalize("The U.S.") == normalize("u. s.") == "us"
    assert normalize("A.B.") == "ab"  # punctuation goes before articles: initials survive


def test_ambiguous_strings_are_resolved_deterministically_and_counted():
    # "Liverpool": canonical name of entity 1, second mention of entity 5 -> the canonical one.
    # "He": a mention of John (3) and of Paul (4), canonical for neither -> the first to appear.
    out, counts = parse(triplet("He", "place of birth", "Liverpool"))
    assert out == [((3, 1), "P19")] and counts == Counter(ambiguous_strings=2)


def test_unmatched_strings_and_unknown_relations_drop_the_triplet_and_are_counted():
    out, counts = parse(triplet("Ringo Starr", "member of", "The Beatles"),
                        triplet("John Lennon", "plays for", "Liverpool F.C."),
                        triplet("John Lennon", "member of", "The Beatles"))
    assert out == [((3, 0), "P463")]
    assert counts == Counter(unmatched_strings=1, unknown_relations=1)


@pytest.mark.parametrize("bad", [
    f"{TRIPLET} John Lennon {REL} member of",  # truncated: no tail
    f"{TRIPLET} John Lennon {TAIL} The Beatles {REL} member of",  # separators swapped
    f"{TRIPLET} John Lennon {REL} member of {REL} x {TAIL} The Beatles",  # repeated separator
    f"{TRIPLET} {REL} member of {TAIL} The Beatles",  # empty head
    f"{TRIPLET} John Lennon {REL} member of {TAIL} The Beatles {TAIL} England",  # extra field
])
def test_malformed_triplet_is_dropped_without_shifting_the_others(bad):
    out, counts = parse(triplet("John Lennon", "residence", "England"), bad,
                        triplet("Paul McCartney", "residence", "England"))
    assert out == [((3, 2), "P551"), ((4, 2), "P551")]
    assert counts == Counter(malformed=1)


def test_text_before_the_first_triplet_is_malformed_empty_text_is_nothing():
    out, counts = parse("John Lennon", triplet("John Lennon", "residence", "England"))
    assert out == [((3, 2), "P551")] and counts == Counter(malformed=1)
    assert parse_lexical("", doc(), NAMES) == ([], Counter())


def test_self_pairs_and_duplicates_are_dropped_and_counted():
    out, counts = parse(triplet("John Lennon", "member of", "The Beatles"),
                        triplet("John Lennon", "member of", "the band"),
                        triplet("Liverpool", "country", "Liverpool"))
    assert out == [((3, 0), "P463")]
    assert counts == Counter(duplicate=1, repeated_entity=1, ambiguous_strings=2)
