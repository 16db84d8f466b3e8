"""The repair rules of the parser (docs/evaluation.md §6 case 17): each counted, none shifts later tuples."""

from collections import Counter

from dore.symbolic.layout import docred_layout
from dore.symbolic.parse import parse_codes, parse_rows

LAY = docred_layout({"P1": "a", "P2": "b"}, n_slots=10)  # relations 10, 11; NA 12; EOS 13
R1, R2, NA, EOS = 10, 11, 12, 13
SLOTS = range(4)


def parse(codes, head=None):
    counts = Counter()
    return parse_codes(codes, LAY, SLOTS, head=head, counts=counts), counts


def test_clean_sequence():
    assert parse([0, 1, R1, 2, 3, R2, EOS]) == ([(0, 1, R1), (2, 3, R2)], Counter())


def test_truncated_last_tuple_and_eos_mid_tuple():
    out, c = parse([0, 1, R1, 2, 3])
    assert out == [(0, 1, R1)] and c["truncated"] == 1
    out, c = parse([0, 1, R1, 2, EOS, 3, R2])
    assert out == [(0, 1, R1)] and c == Counter(truncated=1, after_eos=2)


def test_malformed_tuple_does_not_shift_later_tuples():
    out, c = parse([0, R1, 1, 2, 3, R2, 2, 3, R1, EOS])
    assert out == [(2, 3, R1)] and c["malformed"] == 2


def test_na_removed_unknown_ids_self_pairs_duplicates_counted():
    out, c = parse([0, 1, NA, 0, 7, R1, 2, 2, R1, 1, 2, R2, 1, 2, R2, EOS])
    assert out == [(1, 2, R2)]
    assert c == Counter(na=1, unknown_entity=1, repeated_entity=1, duplicate=1)


def test_rows_concatenated_with_heads_as_prefix():
    counts = Counter()
    out = parse_rows({2: [0, R1, 3, NA, EOS], 0: [1, R2, 1, R2, 0, R1, EOS], 3: [EOS]}, LAY, SLOTS, counts)
    assert out == [(0, 1, R2), (2, 0, R1)]
    assert counts == Counter(na=1, duplicate=1, repeated_entity=1)
