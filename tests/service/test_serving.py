"""Requests -> Documents (dore/serving.py): the two document forms and every refusal, no model needed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from dore.serving import MAX_DOCUMENT_BYTES, DocumentIn, RequestError, find_name, refusal, to_document
from dore.symbolic.layout import cdr_layout, docred_layout

LAYOUT = docred_layout({"P17": "country", "P131": "located in"}, n_slots=3)
TEXT = "Barack Obama was born in Honolulu . Obama , not Obamacare , visited honolulu and Hawaii ."


def convert(doc: dict, layout=LAYOUT):
    return to_document(DocumentIn.model_validate(doc), 0, layout)


def spans(doc) -> list[list[tuple[int, int]]]:
    return [[(m.start, m.end) for m in ent.mentions] for ent in doc.entities]


def refused(doc: dict, layout=LAYOUT) -> RequestError:
    with pytest.raises(RequestError) as info:
        convert(doc, layout)
    return info.value


def test_names_find_every_whole_word_occurrence_case_sensitive_first():
    doc = convert({"text": TEXT, "entities": [{"names": ["Obama"]}, {"names": ["Honolulu"]}, {"names": ["hawaii"]}]})
    words = TEXT.split()
    assert doc.tokens == words  # the space-separated words, cut by dore.data.bio.tokenize
    # "Obama" twice, not inside "Obamacare"; "Honolulu" only where capitalised; "hawaii" falls back
    # to the case-insensitive match.
    assert spans(doc) == [[(1, 2), (7, 8)], [(5, 6)], [(15, 16)]]
    assert [m.text for m in doc.entities[2].mentions] == ["Hawaii"]
    assert doc.entities[0].mentions[1].sent_id == 1 and len(doc.sentences) == 2
    assert doc.text == TEXT and doc.entities[0].mentions[0].char_start == TEXT.index("Obama")


def test_names_with_punctuation_and_char_spans_inside_words():
    text = "The U.S. team met the NewYork club ."
    doc = convert({"text": text, "entities": [{"names": ["U.S."]}, {"spans": [{"start": 22, "end": 25}]}]})
    assert find_name(text, "U.S.") == [(4, 8)]
    assert [m.text for e in doc.entities for m in e.mentions] == ["U.S.", "New"]
    assert "New" in doc.tokens and "York" in doc.tokens  # the span cut the word at its boundary


def test_text_and_token_forms_give_the_same_document():
    words = TEXT.split()
    sents = [words[:7], words[7:]]
    by_text = convert({"text": TEXT, "entities": [{"names": ["Obama"], "type": "PER"}, {"names": ["Hawaii"]}]})
    by_tokens = convert({"tokens": sents, "entities": [
        {"type": "PER", "mentions": [{"sent": 0, "start": 1, "end": 2}, {"sent": 1, "start": 0, "end": 1}]},
        {"mentions": [{"sent": 1, "start": 8, "end": 9}]}]})
    assert by_tokens.tokens == by_text.tokens and by_tokens.sentences == by_text.sentences
    assert spans(by_tokens) == spans(by_text)
    assert [e.type for e in by_tokens.entities] == ["PER", None]


@pytest.mark.parametrize("doc, status, field, words", [
    ({"text": TEXT, "entities": [{"names": ["Obama"]}, {"names": ["Michelle"]}]}, 422, "entities[1].names[0]",
     ["'Michelle'", "not found"]),
    ({"text": "short", "entities": [{"spans": [{"start": 2, "end": 9}]}]}, 422, "entities[0].spans[0]",
     ["[2, 9)", "5-character"]),
    ({"text": "a   b", "entities": [{"spans": [{"start": 1, "end": 4}]}]}, 422, "entities[0].spans", ["covers no word"]),
    ({"text": "  \n ", "entities": [{"spans": [{"start": 0, "end": 1}]}]}, 422, "text", ["no words"]),
    ({"text": "x" * (MAX_DOCUMENT_BYTES + 1), "entities": [{"names": ["x"]}]}, 413, "text", ["1,000,000 bytes"]),
    ({"tokens": [["a", "b"]], "entities": [{"mentions": [{"sent": 1, "start": 0, "end": 1}]}]}, 422,
     "entities[0].mentions[0]", ["sentence 1 out of range"]),
    ({"tokens": [["a", "b"]], "entities": [{"mentions": [{"sent": 0, "start": 1, "end": 3}]}]}, 422,
     "entities[0].mentions[0]", ["outside sentence 0"]),
    ({"tokens": [[]], "entities": [{"mentions": [{"sent": 0, "start": 0, "end": 1}]}]}, 422, "tokens", ["no tokens"]),
    ({"tokens": [["a", "b", "c", "d"]], "entities": [{"mentions": [{"sent": 0, "start": i, "end": i + 1}]}
                                                    for i in range(4)]}, 422, "entities", ["4 entities", "3 slots"]),
])
def test_refusals_name_the_document_the_field_and_the_reason(doc, status, field, words):
    error = refused({"id": "d1", **doc})
    assert (error.status, error.doc, error.field) == (status, "d1", field)
    assert all(w in str(error) for w in words), str(error)
    assert refusal(error) == (status, {"error": str(error), "document": "d1", "field": field})


def test_typed_models_need_known_types_and_count_slots_per_type():
    cdr = cdr_layout(n_chemical=1, n_disease=2)
    chemical = {"type": "Chemical", "mentions": [{"sent": 0, "start": 0, "end": 1}]}
    disease = {"type": "Disease", "mentions": [{"sent": 0, "start": 1, "end": 2}]}
    ok = convert({"tokens": [["aspirin", "headache"]], "entities": [chemical, disease]}, cdr)
    assert [e.type for e in ok.entities] == ["Chemical", "Disease"]
    unknown = refused({"tokens": [["aspirin", "BRCA1"]], "entities": [
        chemical, {"type": "Gene", "mentions": [{"sent": 0, "start": 1, "end": 2}]}]}, cdr)
    assert unknown.field == "entities[1].type" and "'Gene'" in str(unknown) and "['Chemical', 'Disease']" in str(unknown)
    untyped = refused({"tokens": [["aspirin"]], "entities": [{"mentions": [{"sent": 0, "start": 0, "end": 1}]}]}, cdr)
    assert "has no type" in str(untyped)
    two_chemicals = {"type": "Chemical", "mentions": [{"sent": 0, "start": 1, "end": 2}]}
    full = refused({"tokens": [["aspirin", "ibuprofen"]], "entities": [chemical, two_chemicals]}, cdr)
    assert "2 entities of type 'Chemical', more than the 1 slots" in str(full)


@pytest.mark.parametrize("doc, message", [
    ({"text": "a", "tokens": [["a"]], "entities": []}, "either text or tokens"),
    ({"entities": []}, "either text or tokens"),
    ({"text": "a b", "entities": [{"mentions": [{"sent": 0, "start": 0, "end": 1}]}]}, "token mentions need tokens"),
    ({"tokens": [["a"]], "entities": [{"names": ["a"]}]}, "spans and names need text"),
    ({"text": "a", "entities": [{"type": "PER"}]}, "at least one of spans, names or mentions"),
    ({"text": "a", "entities": [], "title": "x"}, "Extra inputs are not permitted"),
    ({"text": "a", "entities": None, "tokens": None, "id": 3}, "valid string"),
])
def test_schema_refuses_malformed_documents(doc, message):
    with pytest.raises(ValidationError, match=message):
        DocumentIn.model_validate(doc)


def test_a_document_without_entities_is_read_for_the_recognizer():
    text = to_document(DocumentIn(text="Obama was born in Honolulu, Hawaii."), 0, LAYOUT)
    assert text.entities == [] and text.meta["find_entities"] and text.tokens[:2] == ["Obama", "was"]
    assert text.meta["token_offsets"][5] == [26, 27]  # ","
    tokens = to_document(DocumentIn(tokens=[["Obama", "left"], ["He", "returned"]]), 1, LAYOUT)
    assert tokens.entities == [] and tokens.meta["find_entities"] and tokens.sentences == [(0, 2), (2, 4)]
