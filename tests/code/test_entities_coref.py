"""The entity recognizer's pieces that need no trained network: windows over long documents,
constrained BIO decoding, both coreference backends' clustering and the entity assembly."""

import pytest
import torch

from dore.data.model import Document
from dore.entities.coref import (PredictedMention, assemble, learned_clusters, pair_features,
                                 string_match_clusters)
from dore.entities.encoder import N_SHAPES, make_windows, word_shape
from dore.entities.model import allowed_transitions, antecedent_loss, viterbi
from dore.model.inputs import special_frame, word_pieces
from dore.model.tiny import tiny_tokenizer


def document(text: str, sentences=None) -> Document:
    tokens = text.split()
    return Document(doc_id="d", tokens=tokens, sentences=sentences or [(0, len(tokens))], entities=[])


def mentions_of(doc: Document, spans) -> list[PredictedMention]:
    return [PredictedMention(s, e, t, 0.9, doc.sentence_of(s)) for s, e, t in spans]


def test_string_match_merges_names_acronyms_and_only_same_types():
    doc = document("Barack Obama met the United Nations . Obama thanked the UN . Obama Inc. sued .")
    spans = [(0, 2, "PER"), (4, 6, "ORG"), (7, 8, "PER"), (10, 11, "ORG"), (12, 13, "ORG")]
    clusters = {tuple(sorted(c)) for c in string_match_clusters(doc, mentions_of(doc, spans))}
    assert clusters == {(0, 2), (1, 3), (4,)}  # the ORG "Obama" stays apart from the person


def test_learned_clusters_follow_the_best_antecedent_above_the_dummy():
    inf = float("-inf")
    scores = torch.tensor([[inf, inf, inf, inf],
                           [-1.0, inf, inf, inf],   # below the dummy: a new entity
                           [3.0, 0.5, inf, inf],    # best antecedent 0
                           [0.2, 2.0, 1.0, inf]])   # best antecedent 1
    assert learned_clusters(scores) == [[0, 2], [1, 3]]


def test_antecedent_loss_is_low_when_gold_antecedents_win():
    cluster = torch.tensor([0, 1, 0])
    inf = float("-inf")
    good = torch.tensor([[inf, inf, inf], [-9.0, inf, inf], [9.0, -9.0, inf]])
    bad = torch.tensor([[inf, inf, inf], [9.0, inf, inf], [-9.0, 9.0, inf]])
    assert antecedent_loss(good, cluster) < 0.01 < 5 < antecedent_loss(bad, cluster)


def test_assemble_orders_by_first_mention_and_types_by_majority():
    doc = document("a b c d e f g h", sentences=[(0, 4), (4, 8)])
    doc = doc.model_copy(update={"meta": {"token_offsets": [[2 * i, 2 * i + 1] for i in range(8)]},
                                 "text": "a b c d e f g h"})
    ms = [PredictedMention(5, 6, "ORG", 0.5, 1), PredictedMention(0, 1, "PER", 0.5, 0),
          PredictedMention(2, 3, "ORG", 0.2, 0), PredictedMention(6, 8, "LOC", 0.9, 1)]
    entities, scores = assemble(doc, ms, [[3], [0, 1, 2]])
    assert [[(m.start, m.end) for m in e.mentions] for e in entities] == [[(0, 1), (2, 3), (5, 6)], [(6, 8)]]
    assert [e.type for e in entities] == ["ORG", "LOC"]  # ORG twice, PER once
    assert scores == [pytest.approx(1 - 0.5 * 0.5 * 0.8), pytest.approx(0.9)]
    last = entities[1].mentions[0]
    assert (last.char_start, last.char_end, last.text, last.sent_id) == (12, 15, "g h", 1)
    tie, _ = assemble(doc, ms[:2], [[0, 1]])
    assert tie[0].type == "PER"  # a tie goes to the first mention's type


def test_viterbi_never_opens_with_inside_or_switches_type():
    allowed = allowed_transitions(2)  # O, B-0, I-0, B-1, I-1
    torch.manual_seed(0)
    for _ in range(50):
        path = viterbi(torch.randn(12, 5).log_softmax(-1), allowed)
        assert path[0] not in (2, 4)
        for prev, tag in zip(path, path[1:]):
            assert bool(allowed[prev, tag])


def test_pair_features_see_string_matches_and_distance():
    doc = document("Barack Obama . x . Obama . United Nations . UN", sentences=[(0, 3), (3, 5), (5, 7), (7, 10),
                                                                               (10, 11)])
    f = pair_features(doc.tokens, [(0, 2), (5, 6), (7, 9), (10, 11)], ["PER", "PER", "ORG", "ORG"], [0, 2, 3, 4])
    assert f[1, 0, 1] == 1 and f[1, 0, 2] == 1 and f[1, 0, 4] == 1  # same last word, contained, same type
    assert f[1, 0, 7] == 1  # two sentences apart
    assert f[3, 2, 3] == 1 and f[3, 2, 0] == 0  # UN spells United Nations
    assert f[0].sum() == 0  # nothing before the first mention


def pair_features_by_pair(words, spans, types, sent_ids):
    """The features written out pair by pair (the definition `pair_features` computes as matrices)."""
    from dore.coref.string_match import initials, is_short_form, normalize
    from dore.entities.coref import DISTANCE_BUCKETS

    tokens = [normalize(words[s:e]) for s, e in spans]
    keys = ["".join(t) for t in tokens]
    out = torch.zeros(len(spans), len(spans), 10)
    for i in range(len(spans)):
        for j in range(i):
            ti, tj = tokens[i], tokens[j]
            short_i, short_j = is_short_form(words[slice(*spans[i])]), is_short_form(words[slice(*spans[j])])
            out[i, j, 0] = float(bool(keys[i]) and keys[i] == keys[j])
            out[i, j, 1] = float(bool(ti) and bool(tj) and ti[-1] == tj[-1])
            out[i, j, 2] = float(bool(ti) and bool(tj) and (set(ti) <= set(tj) or set(tj) <= set(ti)))
            out[i, j, 3] = float((short_i and keys[i] in initials(words[slice(*spans[j])]))
                                 or (short_j and keys[j] in initials(words[slice(*spans[i])])))
            out[i, j, 4] = float(types[i] == types[j])
            out[i, j, 5 + sum(abs(sent_ids[i] - sent_ids[j]) >= b for b in DISTANCE_BUCKETS[1:])] = 1.0
    return out


def test_pair_features_equal_their_pairwise_definition():
    import random

    rng = random.Random(0)
    vocabulary = ["the", "United", "Nations", "UN", "Obama", "Barack", "-", "Bi", "LSTM", "BiLSTM", "networks",
                  "network", "CNN", "Convolutional", "Neural", "Network", "of", "a", "."]
    for _ in range(20):
        words = [rng.choice(vocabulary) for _ in range(60)]
        spans = sorted({(s, s + rng.randint(1, 4)) for s in (rng.randrange(56) for _ in range(rng.randint(0, 25)))})
        types = [rng.choice("AB") for _ in spans]
        sent_ids = [s // 6 for s, _ in spans]
        assert torch.equal(pair_features(words, spans, types, sent_ids),
                           pair_features_by_pair(words, spans, types, sent_ids))


@pytest.mark.parametrize("family", ["tiny-bart", "tiny-t5"])
def test_windows_cover_every_word_of_a_long_document(family):
    tokenizer = tiny_tokenizer(family.removeprefix("tiny-"))
    words = ("The quick brown fox jumps over the lazy dog near Paris in 1999 . " * 12).split()
    windows = make_windows(tokenizer, words, window=24, stride=10)
    prefix, suffix = special_frame(tokenizer)
    pieces = word_pieces(tokenizer, words)
    assert len(windows.ids) > 5 and all(len(w) <= 24 for w in windows.ids)
    for i, word in enumerate(pieces):
        ids = windows.ids[windows.window_of[i]]
        position = windows.positions[i]
        assert len(prefix) <= position < len(ids) - len(suffix)
        assert ids[position] == word[0]


@pytest.mark.parametrize("word, shape", [("paris", "lower"), ("Paris", "title"), ("A", "title"), ("UN", "upper"),
                                         ("iPhone", "mixed"), ("McDonald's", "mixed"), ("1999", "digits"),
                                         ("3.5", "digits"), ("F-16", "alnum"), (",", "other"), ("Éire", "title")])
def test_word_shapes_see_what_an_uncased_tokenizer_hides(word, shape):
    from dore.entities.encoder import SHAPES
    assert word_shape(word) == 1 + SHAPES.index(shape)
    assert word_shape(word, sentence_initial=True) == 1 + SHAPES.index(shape) + len(SHAPES)
    assert 0 < word_shape(word, True) < N_SHAPES


def test_every_piece_carries_its_words_shape_and_special_tokens_none():
    tokenizer = tiny_tokenizer("bart")
    words = ("The Quick brown FOX near Paris in 1999 . " * 6).split()
    shapes = [word_shape(w, i == 0) for i, w in enumerate(words)]
    windows = make_windows(tokenizer, words, window=20, stride=8, shapes=shapes)
    prefix, suffix = special_frame(tokenizer)
    pieces = word_pieces(tokenizer, words)
    assert [len(s) for s in windows.shapes] == [len(w) for w in windows.ids]
    for i, word in enumerate(pieces):
        w, p = windows.window_of[i], windows.positions[i]
        assert windows.shapes[w][p: p + len(word)][:1] == [shapes[i]]
    for s in windows.shapes:
        assert s[:len(prefix)] == [0] * len(prefix) and s[len(s) - len(suffix):] == [0] * len(suffix)
    flat = [x for s in windows.shapes for x in s[len(prefix): len(s) - len(suffix)]]
    assert 0 not in flat  # every body piece belongs to a word
    assert make_windows(tokenizer, words, window=20, stride=8).shapes[0][len(prefix):-len(suffix) or None] == \
        [0] * (len(windows.ids[0]) - len(prefix) - len(suffix))  # no shapes given: none
