"""DocRED / Re-DocRED reader on the real files, plus hand-made fixtures for policies and errors."""

import json
from pathlib import Path

import pytest

from dore.data.docred import DocredPrediction, load_rel_info, read_docred, read_docred_result, write_docred_result
from dore.data.model import DataError, Document

FILES = {"redocred_dev": "redocred/dev_revised.json", "redocred_test": "redocred/test_revised.json",
         "docred_test": "docred/test.json"}


@pytest.fixture(scope="module")
def rel_info_path(shared_data) -> Path:
    return shared_data / "docred" / "rel_info.json"


@pytest.fixture(scope="module")
def loaded(shared_data, rel_info_path):
    return {name: read_docred(shared_data / rel, rel_info_path) for name, rel in FILES.items()}


def _doc(**overrides) -> dict:
    doc = {"title": "T", "sents": [["Alice", "met", "Bob", "."], ["Bob", "left", "Paris", "."]],
           "vertexSet": [[{"name": "Alice", "pos": [0, 1], "sent_id": 0, "type": "PER"}],
                         [{"name": "Bob", "pos": [2, 3], "sent_id": 0, "type": "PER"},
                          {"name": "Bob", "pos": [0, 1], "sent_id": 1, "type": "ORG"}],
                         [{"name": "Paris", "pos": [2, 3], "sent_id": 1, "type": "LOC"}]],
           "labels": [{"h": 1, "t": 2, "r": "P551", "evidence": [1]}]}
    doc.update(overrides)
    return doc


def _write(tmp_path: Path, docs, name="docs.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(docs), encoding="utf-8")
    return path


# --- real data --------------------------------------------------------------------------------

def test_rel_info_has_96_relations_in_file_order(rel_info_path):
    rel_info = load_rel_info(rel_info_path)
    assert len(rel_info) == 96
    assert list(rel_info) == list(json.loads(rel_info_path.read_text()))
    assert rel_info["P17"] == "country" and next(iter(rel_info)) == "P6"


@pytest.mark.parametrize("name, triples", [("redocred_dev", 17_284), ("redocred_test", 17_448)])
def test_redocred_counts(loaded, name, triples):
    docs, report = loaded[name]
    assert report.documents == len(docs) == 500
    # Re-DocRED has no duplicate labels: raw and de-duplicated (h, t, r) counts are both the README's number.
    assert sum(len(d.relations) for d in docs) == report.relations == triples
    assert sum(len(d.unique_relations()) for d in docs) == triples
    assert not any(q.startswith("duplicate") for q in report.quirks)
    assert all(d.meta == {"labelled": True} for d in docs)


def test_redocred_dev_measured_counts(loaded):
    docs, report = loaded["redocred_dev"]
    assert (report.entities, report.mentions) == (9_684, 13_189)
    assert len({r.label for d in docs for r in d.relations}) == 95
    assert report.quirks["entity with mixed mention types (most common kept)"] == 9


def test_docred_test_counts_and_no_labels(loaded):
    docs, report = loaded["docred_test"]
    assert (report.documents, report.entities, report.mentions, report.relations) == (1000, 19_539, 26_704, 0)
    assert all(d.relations == [] and d.meta == {"labelled": False} for d in docs)


def test_redocred_offsets_agree_with_global_pos(shared_data, loaded):
    """Re-DocRED's own global_pos[0] is the document-level start: an independent check of the offsets."""
    raw = json.loads((shared_data / FILES["redocred_test"]).read_text())
    docs, _ = loaded["redocred_test"]
    for raw_doc, doc in zip(raw, docs):
        assert doc.doc_id == doc.title == raw_doc["title"]
        assert len(doc.entities) == len(raw_doc["vertexSet"])
        for vertex, entity in zip(raw_doc["vertexSet"], doc.entities):
            assert [m.start for m in entity.mentions] == [m["global_pos"][0] for m in vertex]
            assert [m.end - m.start for m in entity.mentions] == [m["pos"][1] - m["pos"][0] for m in vertex]
        assert [(r.head, r.tail, r.label, r.evidence) for r in doc.relations] == \
            [(lab["h"], lab["t"], lab["r"], lab["evidence"]) for lab in raw_doc["labels"]]


@pytest.mark.parametrize("name", FILES)
def test_mentions_sit_in_their_sentence_and_name_mismatches_are_counted(loaded, name):
    docs, report = loaded[name]
    mismatches = 0
    for doc in docs:
        assert doc.sentences[0][0] == 0 and doc.sentences[-1][1] == len(doc.tokens)
        for entity in doc.entities:
            for m in entity.mentions:
                first, last = doc.sentences[m.sent_id]
                assert first <= m.start < m.end <= last
                mismatches += m.text != " ".join(doc.tokens[m.start:m.end])
    counted = sum(n for q, n in report.quirks.items() if q.startswith("mention name differs"))
    assert mismatches == counted > 0


@pytest.mark.parametrize("name", FILES)
def test_round_trip_and_byte_stable(shared_data, rel_info_path, loaded, name):
    docs, _ = loaded[name]
    again, _ = read_docred(shared_data / FILES[name], rel_info_path)
    for doc, second in zip(docs, again, strict=True):
        line = doc.to_json()
        assert Document.from_json(line) == doc
        assert second.to_json() == line


# --- policies on hand-made fixtures ----------------------------------------------------------------

def test_document_level_offsets_types_and_relations(tmp_path):
    (doc,), report = read_docred(_write(tmp_path, [_doc()]))
    assert doc.tokens == ["Alice", "met", "Bob", ".", "Bob", "left", "Paris", "."]
    assert doc.sentences == [(0, 4), (4, 8)]
    bob = doc.entities[1]
    assert [(m.start, m.end, m.sent_id) for m in bob.mentions] == [(2, 3, 0), (4, 5, 1)]
    assert bob.type == "PER"  # PER/ORG tie: the first mention's type
    assert report.quirks["entity with mixed mention types (most common kept)"] == 1
    assert [(r.args, r.label, r.evidence) for r in doc.relations] == [((1, 2), "P551", [1])]


def test_most_common_type_wins(tmp_path):
    vertex = [{"name": "X", "pos": [0, 1], "sent_id": s, "type": t} for s, t in ((0, "ORG"), (1, "LOC"), (1, "LOC"))]
    (doc,), _ = read_docred(_write(tmp_path, [_doc(vertexSet=[vertex], labels=[])]))
    assert doc.entities[0].type == "LOC"


def test_duplicates_are_kept_and_counted(tmp_path):
    label = {"h": 0, "t": 2, "r": "P17", "evidence": [0]}
    docs, report = read_docred(_write(tmp_path, [_doc(labels=[label, {**label, "evidence": [1]}]), _doc()]))
    assert len(docs[0].relations) == 2 and len(docs[0].unique_relations()) == 1
    assert report.quirks["duplicate (h, t, r) label (kept)"] == 1
    assert report.quirks["duplicate title"] == 1 and len(docs) == 2


def test_name_differences_and_unknown_keys_are_counted(tmp_path):
    doc = _doc()
    doc["vertexSet"][0][0].update(name="Alicia", global_pos=[0, 0], index="0_0", wikidata="Q1")
    doc["vertexSet"][2][0]["name"] = "Pa ris"
    (read,), report = read_docred(_write(tmp_path, [doc]))
    assert read.entities[0].mentions[0].text == "Alicia"
    assert report.quirks["mention name differs from its tokens (name kept)"] == 1
    assert report.quirks["mention name differs from its tokens only in spacing (name kept)"] == 1
    assert dict(report.quirks).get("unknown key 'wikidata' ignored") == 1
    assert not any("global_pos" in q or "'index'" in q for q in report.quirks)


def test_test_split_without_labels(tmp_path):
    doc = _doc()
    del doc["labels"]
    (read,), _ = read_docred(_write(tmp_path, [doc]))
    assert read.relations == [] and read.meta == {"labelled": False}
    assert json.loads(read.to_json())["meta"] == {"labelled": False}


def test_label_outside_rel_info_is_an_error(tmp_path, rel_info_path):
    path = _write(tmp_path, [_doc(labels=[{"h": 0, "t": 1, "r": "P9999", "evidence": []}])])
    with pytest.raises(DataError, match=r"document 'T'; field 'labels\[0\]\.r'"):
        read_docred(path, rel_info_path)


# --- structural errors name file, document and field --------------------------------------------------

def test_truncated_real_file(shared_data, tmp_path):
    text = (shared_data / FILES["redocred_dev"]).read_text(encoding="utf-8")
    last_title = json.loads(text)[-1]["title"]
    path = tmp_path / "truncated.json"
    path.write_text(text[:text.rindex('"sents"') + 200], encoding="utf-8")  # inside the last document's sents
    with pytest.raises(DataError) as info:
        read_docred(path)
    err = info.value
    assert err.file == str(path) and err.doc == last_title and err.field == "sents"
    assert str(path) in str(err) and repr(last_title) in str(err) and "truncated" in str(err)


def test_head_out_of_range_in_real_document(shared_data, tmp_path):
    doc = json.loads((shared_data / FILES["redocred_dev"]).read_text())[3]
    doc["labels"][5]["h"] = len(doc["vertexSet"])
    path = _write(tmp_path, [doc])
    with pytest.raises(DataError) as info:
        read_docred(path)
    assert (info.value.file, info.value.doc, info.value.field) == (str(path), doc["title"], "labels[5].h")
    assert str(path) in str(info.value) and doc["title"] in str(info.value)


@pytest.mark.parametrize("mutate, doc, field", [
    (lambda d: d["vertexSet"][1][1].update(pos=[3, 5]), "T", "vertexSet[1][1].pos"),
    (lambda d: d["vertexSet"][2][0].update(sent_id=2), "T", "vertexSet[2][0].sent_id"),
    (lambda d: d["vertexSet"][0][0].update(pos=[0, "1"]), "T", "vertexSet[0][0].pos[1]"),
    (lambda d: d.pop("sents"), "T", "sents"),
    (lambda d: d.pop("vertexSet"), "T", "labels[0].h"),  # no entities, so labels point nowhere
    (lambda d: d.pop("title"), 0, "title"),
    (lambda d: d["labels"][0].update(t=-1), "T", "labels[0].t"),
    (lambda d: d["labels"][0].update(evidence=[2]), "T", "labels[0].evidence"),
])
def test_structural_errors(tmp_path, mutate, doc, field):
    raw = _doc()
    mutate(raw)
    path = _write(tmp_path, [raw])
    with pytest.raises(DataError) as info:
        read_docred(path)
    assert (info.value.file, info.value.doc, info.value.field) == (str(path), doc, field)


def test_a_document_without_vertexset_is_read_without_entities_for_the_recognizer(tmp_path):
    raw = _doc()
    raw.pop("vertexSet")
    raw.pop("labels")
    (doc,), report = read_docred(_write(tmp_path, [raw]))
    assert doc.entities == [] and doc.tokens == [t for s in raw["sents"] for t in s]
    assert report.quirks["no vertexSet: the document is read without entities"] == 1


@pytest.mark.parametrize("text, message", [('{"title": "T"}', "JSON list"), ("[1, 2]", "dictionary"),
                                           ("[DOC] x", "',' or ']'"), ("", "JSON list")])
def test_not_a_list_of_documents(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text.replace("DOC", json.dumps(_doc())))
    with pytest.raises(DataError, match=message) as info:
        read_docred(path)
    assert info.value.file == str(path)


def test_empty_list_reads_as_no_documents(tmp_path):
    assert read_docred(_write(tmp_path, []))[0] == []


# --- result.json ------------------------------------------------------------------------------------

def test_result_json_round_trip(tmp_path):
    preds = [DocredPrediction(title="T", h_idx=1, t_idx=2, r="P17", evidence=[0, 1]),
             {"title": "U", "h_idx": 0, "t_idx": 3, "r": "P131"}]
    path = write_docred_result(tmp_path / "res" / "result.json", preds)
    assert json.loads(path.read_text()) == [{"title": "T", "h_idx": 1, "t_idx": 2, "r": "P17", "evidence": [0, 1]},
                                            {"title": "U", "h_idx": 0, "t_idx": 3, "r": "P131"}]
    assert read_docred_result(path) == [preds[0], DocredPrediction(**preds[1])]
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]  # no temporary file left behind


def test_write_result_rejects_a_bad_prediction_and_leaves_no_file(tmp_path):
    with pytest.raises(DataError, match=r"document 'T'; field '\[1\]\.h_idx'"):
        write_docred_result(tmp_path / "result.json", [{"title": "T", "h_idx": 0, "t_idx": 1, "r": "P17"},
                                                       {"title": "T", "h_idx": "0", "t_idx": 1, "r": "P17"}])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("item, field", [({"title": "T", "t_idx": 1, "r": "P17"}, "[0].h_idx"),
                                         ({"title": "T", "h_idx": 0, "t_idx": 1, "r": 17}, "[0].r"),
                                         ({"title": "T", "h_idx": 0, "t_idx": 1, "r": "P17", "evidence": ["a"]},
                                          "[0].evidence[0]"),
                                         ({"title": "T", "h_idx": 0, "t_idx": 1, "r": "P17", "score": 1}, "[0].score")])
def test_read_result_validates_fields(tmp_path, item, field):
    path = _write(tmp_path, [item], "result.json")
    with pytest.raises(DataError) as info:
        read_docred_result(path)
    assert (info.value.file, info.value.doc, info.value.field) == (str(path), "T", field)
