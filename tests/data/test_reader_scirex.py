"""SciREX reader on the real dev/train files and on hand-made lines; both scorers on the real dev split."""

import gzip
import json
from collections import Counter
from itertools import combinations

import pytest

from dore.data.model import DataError, Document
from dore.data.scirex import SCIREX_TYPES, read_scirex
from dore.scoring.scirex import OFFICIAL_SLOT_ORDER, PAIR_LABELS, dore_micro, scirex_official

# Counts from docs/scirex_coref.md §1. "In source" = before the sub-method merge.
EXPECTED = {
    "dev.jsonl": dict(documents=66, relations=251, entities=500, ner_spans=23_365, empty_clusters_in_source=129,
                      relations_all_mentioned_in_source=63, empty_clusters=119, relations_all_mentioned=72),
    "train.jsonl.gz": dict(documents=306, relations=1627, entities=2424, ner_spans=107_997,
                           empty_clusters_in_source=691, relations_all_mentioned_in_source=517, empty_clusters=608,
                           relations_all_mentioned=647),
}


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def split(request, shared_data):
    docs, report = read_scirex(shared_data / "scirex" / request.param)
    return request.param, docs, report


@pytest.fixture(scope="module")
def dev(shared_data):
    return read_scirex(shared_data / "scirex" / "dev.jsonl")[0]


def test_counts_match_the_notes(split):
    name, docs, report = split
    expected = EXPECTED[name]
    assert (report.documents, report.relations, report.entities) == \
        (expected["documents"], expected["relations"], expected["entities"])
    for key in ("ner_spans", "empty_clusters_in_source", "relations_all_mentioned_in_source", "empty_clusters",
                "relations_all_mentioned"):
        assert report.counts[key] == expected[key], key
    # The report's counts agree with the documents themselves.
    assert sum(len(d.extra_mentions) for d in docs) == expected["ner_spans"]
    assert sum(not e.mentions for d in docs for e in d.entities) == expected["empty_clusters"]
    assert sum(not r.meta["unmentioned"] for d in docs for r in d.relations) == expected["relations_all_mentioned"]


def test_documents_are_consistent(split):
    name, docs, report = split
    mistyped = 0  # train: one relation names "Query_Wellformedness" as both Task and Material
    for doc in docs:
        for rel in doc.relations:
            assert rel.label == "relevant" and isinstance(rel.meta["score"], str)
            unmentioned = [slot for slot, a in zip(SCIREX_TYPES, rel.args) if not doc.entities[a].mentions]
            assert rel.meta["unmentioned"] == unmentioned
            mistyped += [doc.entities[a].type for a in rel.args] != list(SCIREX_TYPES)
        for ent in doc.entities:
            assert len({(m.start, m.end) for m in ent.mentions}) == len(ent.mentions)  # de-duplicated
            for m in ent.mentions:
                assert m.text == " ".join(doc.tokens[m.start:m.end]) and m.sent_id == doc.sentence_of(m.start)
    assert mistyped == report.quirks["entity_in_two_slots"] == (1 if name.startswith("train") else 0)
    assert all(m.type in SCIREX_TYPES for d in docs for m in d.extra_mentions)
    assert report.quirks["coref_non_salient_ignored"] == (306 if name.startswith("train") else 0)


def test_train_quirks(split):
    name, _, report = split
    if name.startswith("train"):
        assert (report.quirks["entity_in_two_slots"], report.quirks["duplicate_relation"]) == (1, 1)
    assert report.quirks["ner_span_crosses_sentence"] == (19 if name.startswith("train") else 11)
    assert report.quirks["score_not_a_string"] == (557 if name.startswith("train") else 10)


def test_dev_ner_types(dev):
    assert Counter(m.type for d in dev for m in d.extra_mentions) == \
        {"Method": 14_717, "Task": 4_835, "Metric": 2_294, "Material": 1_519}


def test_round_trip(split):
    _, docs, _ = split
    assert all(Document.from_json(doc.to_json()) == doc for doc in docs)


# --- hand-made lines -------------------------------------------------------------------------


def raw_doc(**changes) -> dict:
    raw = {"doc_id": "d1", "words": [f"w{i}" for i in range(12)], "sentences": [[0, 6], [6, 12]],
           "ner": [[0, 2, "Task"], [3, 4, "Method"], [6, 8, "Method"], [8, 9, "Method"], [9, 10, "Material"],
                   [10, 12, "Metric"], [1, 3, "Task"]],
           "coref": {"T": [[0, 2]], "HQI_ResNet": [], "HQI": [[6, 8], [3, 4]], "ResNet": [[8, 9], [3, 4]],
                     "D": [[9, 10]], "E": [], "Other": [[1, 3]]},
           "n_ary_relations": [{"Task": "T", "Method": "HQI_ResNet", "Material": "D", "Metric": "E", "score": "71.8%"}],
           "method_subrelations": {"HQI_ResNet": [[[0, 3], "HQI"], [[4, 10], "ResNet"]], "HQI": [[[0, 3], "HQI"]]}}
    return {**raw, **changes}


def write(tmp_path, *lines, name="x.jsonl"):
    path = tmp_path / name
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def test_sub_method_mentions_appear_under_the_parent(tmp_path):
    (doc,), report = read_scirex(write(tmp_path, raw_doc(), name="x.jsonl.gz"))
    by_id = {e.id: e for e in doc.entities}
    assert list(by_id) == ["T", "HQI_ResNet", "HQI", "ResNet", "D", "E", "Other"]  # file order
    # HQI's spans, then ResNet's, with the shared [3, 4) once.
    assert [(m.start, m.end) for m in by_id["HQI_ResNet"].mentions] == [(6, 8), (3, 4), (8, 9)]
    assert [(m.start, m.end) for m in by_id["HQI"].mentions] == [(6, 8), (3, 4)]  # the sub-method keeps its own
    assert [m.sent_id for m in by_id["HQI_ResNet"].mentions] == [1, 0, 1]
    assert by_id["HQI_ResNet"].mentions[0].text == "w6 w7" and by_id["HQI_ResNet"].mentions[0].type == "Method"
    (rel,) = doc.relations
    assert rel.args == (0, 1, 4, 5)  # Task, Method, Material, Metric
    assert rel.meta == {"score": "71.8%", "unmentioned": ["Metric"]}  # the merge gave the Method mentions
    assert by_id["E"].type == "Metric" and by_id["Other"].type == "Task" and by_id["HQI"].type == "Method"
    assert len(doc.extra_mentions) == 7 and doc.extra_mentions[-1].type == "Task"
    assert report.counts["subrelations_merged"] == 2 and report.counts["relations_all_mentioned_in_source"] == 0


def test_majority_type_and_tie_break(tmp_path):
    ner = [[0, 1, "Metric"], [1, 2, "Material"], [2, 3, "Material"], [3, 4, "Method"], [4, 5, "Task"],
           [5, 6, "Method"], [6, 7, "Material"], [7, 8, "Metric"]]
    coref = {"A": [[0, 1], [1, 2], [2, 3]], "B": [[3, 4], [4, 5]], "C": [[6, 7], [7, 8]], "X": [], "T": [[5, 6]],
             "M": [[5, 6]], "D": [[6, 7]], "E": [[7, 8]]}
    rel = {"Task": "T", "Method": "M", "Material": "D", "Metric": "E", "score": ""}
    (doc,), _ = read_scirex(write(tmp_path, raw_doc(ner=ner, coref=coref, n_ary_relations=[rel],
                                                    method_subrelations={})))
    types = {e.id: e.type for e in doc.entities}
    assert (types["A"], types["B"], types["C"], types["X"]) == ("Material", "Task", "Material", None)


@pytest.mark.parametrize("line, field", [
    ("{not json", None),
    (raw_doc(n_ary_relations=[{"Task": "T", "Method": "Nope", "Material": "D", "Metric": "E", "score": ""}]),
     "n_ary_relations[0].Method"),
    ({k: v for k, v in raw_doc().items() if k != "ner"}, "ner"),
    (raw_doc(coref={**raw_doc()["coref"], "D": [[9, 13]]}), "coref.D[0]"),
    (raw_doc(ner=[[5, 5, "Task"]]), "ner[0]"),
    (raw_doc(ner=[[0, 2, "Dataset"]]), "ner[0]"),
    (raw_doc(sentences=[[0, 6], [7, 12]]), "sentences[1]"),
    (raw_doc(method_subrelations={"HQI_ResNet": [[[0, 3], "Nope"]]}), "method_subrelations.HQI_ResNet[0]"),
    (raw_doc(n_ary_relations=[{"Task": "T", "Method": "HQI", "Material": "D", "Metric": "E"}]),
     "n_ary_relations[0].score"),
])
def test_structural_errors_name_file_line_document_and_field(tmp_path, line, field):
    path = write(tmp_path, raw_doc(doc_id="ok"), line)
    with pytest.raises(DataError) as info:
        read_scirex(path)
    err = info.value
    assert (err.file, err.line, err.field) == (str(path), 2, field)
    assert err.doc == (None if field is None else "d1")


def test_repeated_doc_id_raises(tmp_path):
    with pytest.raises(DataError, match="doc_id"):
        read_scirex(write(tmp_path, raw_doc(), raw_doc()))


# --- both scorers on the real dev split (gold used as prediction) -----------------------------


def oracle(doc: Document, n: int) -> tuple[list[dict], list[tuple]]:
    """Every gold projection whose entities have mentions, once: as slot -> name dicts and as DORE ids."""
    named, ids = {}, {}
    for types in combinations(OFFICIAL_SLOT_ORDER, n):
        for rel in doc.relations:
            slots = dict(zip(SCIREX_TYPES, rel.args))
            entities = [slots[t] for t in types]
            if all(doc.entities[e].mentions for e in entities):
                named[tuple((t, doc.entities[slots[t]].id) for t in types)] = None
                key = (min(entities), max(entities), PAIR_LABELS[types]) if n == 2 else tuple(sorted(entities))
                ids[key] = None
    return [dict(k) for k in named], list(ids)


@pytest.mark.parametrize("n, cells, gold", [(2, 305, 580), (4, 41, 72)])
def test_gold_as_prediction_scores_100_on_dev(dev, n, cells, gold):
    official = scirex_official(dev, {d.doc_id: oracle(d, n)[0] for d in dev}, n)
    assert (official["scorer"], official["n"]) == ("scirex_official", n)
    assert (official["cells"], official["gold"]) == (cells, gold)
    assert official["matched"] == official["predicted"] == gold
    assert official["f1"] == pytest.approx(100, abs=1e-4)  # exactly 100 but for the 1e-7 smoothing
    micro = dore_micro(dev, {d.doc_id: oracle(d, n)[1] for d in dev}, n)
    assert (micro["scorer"], micro["p"], micro["r"], micro["f1"]) == ("dore_micro", 100, 100, 100)
    assert micro["tp"] == gold  # one cell per (document, type pair) here: the micro gold equals the cell gold
