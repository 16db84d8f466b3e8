"""Plain text -> sentences and words with their character spans (dore/data/text.py)."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dore.data.model import DataError
from dore.data.text import TOKEN_OFFSETS, document_from_text, is_text_file, read_texts


def test_words_are_the_texts_own_substrings_in_sentences():
    text = "Barack Obama was born in Honolulu, Hawaii. He didn't go to the U.S. in 2009.\n\nA new paragraph."
    doc = document_from_text(text, "d")
    assert doc.tokens[:8] == ["Barack", "Obama", "was", "born", "in", "Honolulu", ",", "Hawaii"]
    assert "n't" in doc.tokens and "U.S." in doc.tokens  # the surface, not syntok's "not"; DocRED's initialism
    assert [doc.tokens[s:e][-1] for s, e in doc.sentences] == [".", ".", "."]
    assert doc.sentences[0] == (0, 9) and doc.sentences[-1][1] == len(doc.tokens)
    for token, (start, end) in zip(doc.tokens, doc.meta[TOKEN_OFFSETS]):
        assert text[start:end] == token
    assert doc.entities == [] and doc.text == text


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=200))
def test_any_text_gives_ordered_words_that_are_substrings(text):
    if not text.strip():
        with pytest.raises(DataError, match="empty text"):
            document_from_text(text)
        return
    try:
        doc = document_from_text(text)
    except DataError as exc:  # only whitespace-like characters syntok drops
        assert "no words" in str(exc)
        return
    offsets = doc.meta[TOKEN_OFFSETS]
    assert all(text[s:e] == t and e > s for t, (s, e) in zip(doc.tokens, offsets))
    assert all(a[1] <= b[0] for a, b in zip(offsets, offsets[1:]))  # in order, not overlapping
    assert doc.sentences[0][0] == 0 and doc.sentences[-1][1] == len(doc.tokens)


def test_files_are_told_apart_by_content_not_extension(tmp_path):
    jsonl = tmp_path / "texts.txt"
    jsonl.write_text(json.dumps({"id": "a", "text": "Paris is in France."}) + "\n"
                     + json.dumps({"id": "b", "text": "Berlin."}) + "\n")
    plain = tmp_path / "story.jsonl"
    plain.write_text("Marie Curie was born in Warsaw.\nShe moved to Paris.\n")
    docred = tmp_path / "docs.json"
    docred.write_text("[]")
    tokens = tmp_path / "dore.jsonl"
    tokens.write_text(json.dumps({"doc_id": "x", "tokens": ["a"], "sentences": [[0, 1]], "entities": []}) + "\n")
    assert is_text_file(jsonl) and is_text_file(plain)
    assert not is_text_file(docred) and not is_text_file(tokens)
    assert [d.doc_id for d in read_texts(jsonl)] == ["a", "b"]
    (story,) = read_texts(plain)
    assert story.doc_id == "story" and len(story.sentences) == 2


def test_bad_text_files_name_file_line_and_field(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "a", "text": "Fine."}) + "\n" + json.dumps({"id": "b", "text": "  "}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl line 2; document 'b'; field 'text': empty text"):
        read_texts(bad)
    dup = tmp_path / "dup.jsonl"
    dup.write_text(json.dumps({"id": "a", "text": "One."}) + "\n" + json.dumps({"id": "a", "text": "Two."}) + "\n")
    with pytest.raises(DataError, match="line 2; document 'a'; field 'id': duplicate id"):
        read_texts(dup)
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"caf\xe9 au lait")
    with pytest.raises(DataError, match="bin.txt: not UTF-8"):
        read_texts(binary)
