"""The validate stage on real data: clean files pass; each planted corruption is caught, either by
the reader (DataError naming file, document and field) or by a GX expectation that shows the bad row."""

import json
import time
from pathlib import Path

import pytest

from dore.data.docred import load_rel_info
from dore.data.formats import read_any
from dore.data.model import DataError, Document, Entity, Mention
from dore.symbolic.layout import LayoutError, default_layout
from dore.validate import (
    STRICT_TEXT,
    Check,
    ValidationFailed,
    ValidationResult,
    flatten,
    validate_documents,
    validate_file,
    validate_or_raise,
)

FILES = {"redocred": "redocred/test_revised.json", "cdr": "cdr/processed/test_filter.data",
         "gda": "gda/processed/test.data", "scirex": "scirex/dev.jsonl"}


@pytest.fixture(scope="module")
def rel_info(shared_data) -> dict[str, str]:
    return load_rel_info(shared_data / "docred" / "rel_info.json")


@pytest.fixture(scope="module")
def real(shared_data, rel_info):
    """name -> (documents, default layout); tests corrupt copies, never these lists."""
    out = {}
    for name, rel in FILES.items():
        docs, _, fmt = read_any(shared_data / rel)
        out[name] = (docs, default_layout(docs, fmt, rel_info if fmt == "docred" else None))
    return out


def failed(result: ValidationResult, column: str) -> Check:
    """The failed check on `column`; the assertion message is the whole summary."""
    matches = [c for c in result.failures if c.column == column]
    assert matches, result.summary()
    return matches[0]


def with_doc(docs: list[Document], i: int, doc: Document) -> list[Document]:
    return [*docs[:i], doc, *docs[i + 1:]]


# --- flat tables --------------------------------------------------------------------------------

def test_flatten_redocred_test(real):
    docs, _ = real["redocred"]
    tables = flatten(docs)
    assert {t: len(df) for t, df in tables.items()} == {"documents": 500, "mentions": 13_018, "relations": 17_448}
    assert {"doc_id", "n_tokens", "n_entities", "n_relations", "title"} <= set(tables["documents"].columns)
    assert {"doc_id", "entity", "start", "end", "text", "text_at_offsets", "type", "entity_type"} <= set(
        tables["mentions"].columns)
    assert {"doc_id", "head", "tail", "label", "n_args"} <= set(tables["relations"].columns)
    first = tables["mentions"].iloc[0]
    m = docs[0].entities[0].mentions[0]
    assert (first.doc_id, first.entity, first.start, first.end) == (docs[0].doc_id, 0, m.start, m.end)
    assert first.text_at_offsets == " ".join(docs[0].tokens[m.start:m.end])
    assert tables["relations"]["n_args"].eq(2).all()
    assert tables["documents"]["n_relations"].sum() == 17_448


def test_flatten_uses_character_offsets_when_the_document_has_text():
    il6 = Mention(start=0, end=3, text="IL-6", char_start=0, char_end=4)
    doc = Document(doc_id="d", tokens=["IL", "-", "6", "rises"], sentences=[(0, 4)], text="IL-6 rises",
                   entities=[Entity(type="Gene", mentions=[il6]),
                             Entity(type="Gene", mentions=[Mention(start=3, end=4, text="rises")])])
    mentions = flatten([doc])["mentions"]
    assert list(mentions["text_at_offsets"]) == ["IL-6", "rises"]  # char slice, then joined tokens


# --- clean real data passes -----------------------------------------------------------------------

@pytest.mark.parametrize("name, tolerated", [("redocred", 3), ("cdr", 5), ("gda", 39), ("scirex", 0)])
def test_clean_real_data_passes(real, tmp_path, name, tolerated):
    docs, layout = real[name]
    result = validate_documents(docs, layout, name=name, report_dir=tmp_path)
    assert result.success, result.summary()
    assert result.failures == [] and result.rows["documents"] == len(docs)
    # The known mention-text quirks are tolerated, not invisible: counted and shown.
    text_check = next(c for c in result.checks if c.column == "text_key, text_at_offsets_key")
    assert text_check.unexpected_count == tolerated
    assert result.html_path == tmp_path / f"{name}.html"
    page = result.html_path.read_text(encoding="utf-8")
    assert "PASSED" in page and page.count("<tr>") == len(result.checks) + 1
    if tolerated:
        assert "tolerated" in page and "tolerated" in result.summary()


def test_redocred_validation_time(real, tmp_path):
    docs, layout = real["redocred"]
    started = time.perf_counter()
    result = validate_documents(docs, layout, name="redocred-test", report_dir=tmp_path)
    elapsed = time.perf_counter() - started
    print(f"\nRe-DocRED test_revised: {len(docs)} documents validated in {elapsed:.2f} s")
    assert result.success and elapsed < 5


def test_strict_text_policy_reports_the_known_docred_mismatches(real):
    docs, layout = real["redocred"]
    result = validate_documents(docs, layout, name="strict", text=STRICT_TEXT)
    check = failed(result, "text_key, text_at_offsets_key")
    assert check.unexpected_count == 3
    assert {"doc_id": "Live in New York (Laurie Anderson album)", "text": "0.\nLive in New York",
            "text_at_offsets": "Live in New York"}.items() <= check.examples[0].items()


# --- corruptions caught by GX ---------------------------------------------------------------------

def test_relation_from_an_entity_to_itself(real, tmp_path):
    docs, layout = real["redocred"]
    bad = docs[3].model_copy(deep=True)
    bad.relations[0].args = (bad.relations[0].head, bad.relations[0].head)
    result = validate_documents(with_doc(docs, 3, bad), layout, name="self-loop", report_dir=tmp_path)
    check = failed(result, "head_is_tail")
    assert check.expectation == "expect_column_values_to_be_in_set" and check.unexpected_count == 1
    assert check.examples[0]["doc_id"] == bad.doc_id and check.examples[0]["head"] == check.examples[0]["tail"]
    assert len(result.failures) == 1
    page = result.html_path.read_text(encoding="utf-8")
    assert "FAIL" in page and "head_is_tail" in page and "expect_column_values_to_be_in_set" in page


def test_unknown_label_in_a_corrupted_file(shared_data, rel_info, tmp_path):
    raw = json.loads((shared_data / FILES["redocred"]).read_text(encoding="utf-8"))
    raw[7]["labels"][2]["r"] = "<b>P9999</b>"
    path = tmp_path / "test_revised.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    result = validate_file(path, rel_info=rel_info, report_dir=tmp_path)
    check = failed(result, "label")
    assert check.unexpected_count == 1
    assert check.examples[0] == {"doc_index": 7, "doc_id": raw[7]["title"], "head": raw[7]["labels"][2]["h"],
                                 "tail": raw[7]["labels"][2]["t"], "label": "<b>P9999</b>"}
    assert [c.column for c in result.failures] == ["label"] and "<b>P9999</b>" in result.summary()
    page = (tmp_path / "test_revised.json.html").read_text(encoding="utf-8")
    assert "relation labels are in layout" in page
    assert "&lt;b&gt;P9999&lt;/b&gt;" in page and "<b>P9999" not in page  # examples are escaped


def test_mention_past_the_end(real):
    docs, layout = real["redocred"]
    bad = docs[0].model_copy(deep=True)
    n = len(bad.tokens)
    bad.entities[1].mentions[0] = bad.entities[1].mentions[0].model_copy(update={"start": n - 1, "end": n + 4})
    result = validate_documents(with_doc(docs, 0, bad), layout, name="past-end")
    check = failed(result, "n_tokens, end")
    assert check.examples[0]["doc_id"] == bad.doc_id
    assert (check.examples[0]["end"], check.examples[0]["n_tokens"]) == (n + 4, n)


def test_mention_text_differs_from_its_offsets(real):
    docs, layout = real["scirex"]  # strict: SciREX mention text is its words
    bad = docs[2].model_copy(deep=True)
    bad.entities[0].mentions[0].text = "not the words here"
    result = validate_documents(with_doc(docs, 2, bad), layout, name="text")
    check = failed(result, "text_key, text_at_offsets_key")
    assert check.unexpected_count == 1 and check.mostly == 1.0
    assert check.examples[0]["text"] == "not the words here" and check.examples[0]["doc_id"] == bad.doc_id


def test_docred_tolerance_ignores_spacing_but_not_wrong_text(real):
    docs, layout = real["redocred"]
    docs = docs[:20]  # ~500 mentions: one wrong name is 0.2%, above DocRED's 0.1% tolerance
    mention = docs[1].entities[0].mentions[0]
    spaced = docs[1].model_copy(deep=True)
    spaced.entities[0].mentions[0].text = " ".join(mention.text)  # a space between every character
    assert validate_documents(with_doc(docs, 1, spaced), layout, name="spacing").success
    wrong = docs[1].model_copy(deep=True)
    wrong.entities[0].mentions[0].text = "Somebody Else"
    check = failed(validate_documents(with_doc(docs, 1, wrong), layout, name="wrong"), "text_key, text_at_offsets_key")
    assert check.mostly == 0.999 and check.examples[0]["text"] == "Somebody Else"


def test_empty_document(real):
    docs, layout = real["cdr"]
    empty = docs[4].model_copy(update={"tokens": [], "sentences": [], "entities": [], "relations": [],
                                       "candidates": [], "excluded": []})
    result = validate_documents(with_doc(docs, 4, empty), layout, name="empty")
    for column in ("n_tokens", "n_entities"):
        assert failed(result, column).examples[0] == {"doc_index": 4, "doc_id": empty.doc_id, column: 0}


def test_entity_type_not_in_the_layout(real):
    docs, layout = real["cdr"]
    bad = docs[0].model_copy(deep=True)
    bad.entities[0].type = "Gene"
    with pytest.raises(LayoutError):
        layout.assign(bad)
    check = failed(validate_documents(with_doc(docs, 0, bad), layout, name="type"), "entity_type")
    assert check.expectation == "expect_column_values_to_be_in_set"
    assert {e["entity_type"] for e in check.examples} == {"Gene"} and check.examples[0]["doc_id"] == bad.doc_id


def test_untyped_entity_in_a_typed_layout(real):
    docs, layout = real["scirex"]
    bad = docs[0].model_copy(deep=True)
    bad.entities[0].type = None
    check = failed(validate_documents(with_doc(docs, 0, bad), layout, name="untyped"), "entity_type")
    assert check.expectation == "expect_column_values_to_not_be_null"


def test_more_entities_than_slots(real):
    docs, layout = real["cdr"]
    size = len(layout.block_range("Chemical"))
    bad = docs[0].model_copy(deep=True)
    chemical = next(e for e in bad.entities if e.type == "Chemical")
    present = sum(e.type == "Chemical" for e in bad.entities)
    bad.entities += [chemical.model_copy(update={"id": f"extra{k}"}) for k in range(size + 1 - present)]
    with pytest.raises(LayoutError):
        layout.assign(bad)
    check = failed(validate_documents(with_doc(docs, 0, bad), layout, name="slots"), "n_entities_of_type[Chemical]")
    assert check.examples == [{"doc_index": 0, "doc_id": bad.doc_id, "n_entities_of_type[Chemical]": size + 1}]


def test_more_entities_than_slots_untyped(real):
    docs, layout = real["redocred"]
    bad = docs[0].model_copy(deep=True)
    bad.entities += [bad.entities[0]] * (layout.n_slots + 1 - len(bad.entities))
    check = failed(validate_documents(with_doc(docs, 0, bad), layout, name="slots"), "n_mentioned_entities")
    assert check.examples[0]["n_mentioned_entities"] == layout.n_slots + 1


def test_duplicated_doc_id(real, tmp_path):
    docs, layout = real["redocred"]
    with pytest.raises(ValidationFailed) as caught:
        validate_or_raise([*docs, docs[10]], layout, name="dup", report_dir=tmp_path)
    result = caught.value.result
    check = failed(result, "doc_id")
    assert check.expectation == "expect_column_values_to_be_unique" and check.unexpected_count == 2
    assert [e["doc_index"] for e in check.examples] == [10, 500]
    assert docs[10].doc_id in str(caught.value) and "expect_column_values_to_be_unique" in str(caught.value)
    assert "expect_column_values_to_be_unique" in (tmp_path / "dup.html").read_text(encoding="utf-8")


# --- corruptions caught by the reader, before GX ---------------------------------------------------

def test_docred_offset_past_the_sentence_is_a_reader_error(shared_data, tmp_path):
    raw = json.loads((shared_data / FILES["redocred"]).read_text(encoding="utf-8"))
    mention = raw[5]["vertexSet"][2][0]
    mention["pos"] = [mention["pos"][0], len(raw[5]["sents"][mention["sent_id"]]) + 3]
    path = tmp_path / "test_revised.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(DataError) as caught:
        validate_file(path, report_dir=tmp_path)
    err = caught.value
    assert (err.file, err.doc, err.field) == (str(path), raw[5]["title"], "vertexSet[2][0].pos")
    assert not (tmp_path / "test_revised.json.html").exists()  # GX never ran


def test_scirex_span_past_the_end_is_a_reader_error(shared_data, tmp_path):
    lines = (shared_data / FILES["scirex"]).read_text(encoding="utf-8").splitlines()
    raw = json.loads(lines[1])
    raw["ner"][0][1] = len(raw["words"]) + 1
    path = tmp_path / "dev.jsonl"
    path.write_text("\n".join([lines[0], json.dumps(raw), *lines[2:]]) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as caught:
        validate_file(path)
    assert (caught.value.file, caught.value.line, caught.value.doc, caught.value.field) == (
        str(path), 2, raw["doc_id"], "ner[0]")


def test_docred_empty_document_is_a_reader_error(shared_data, tmp_path):
    path = tmp_path / "empty.json"
    path.write_text(json.dumps([{"title": "Nothing", "sents": [], "vertexSet": [], "labels": []}]), encoding="utf-8")
    with pytest.raises(DataError) as caught:
        validate_file(path)
    assert (caught.value.doc, caught.value.field) == ("Nothing", "tokens")
