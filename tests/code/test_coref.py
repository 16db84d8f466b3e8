"""dore.coref on hand-made SciREX documents: string-match rules, typing, importers, I/O, composition, script."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dore.coref import (
    CorefDoc,
    CorefResult,
    FastcorefJsonl,
    FastCorefLog,
    StringMatch,
    StringMatchConfig,
    char_spans_to_words,
    clusters_to_documents,
    coref_quality,
    make_backend,
    read_result,
    resolve,
    score_relations,
    word_char_offsets,
    write_result,
)
from dore.coref.io import dumps_result
from dore.coref.result import typed_doc
from dore.coref.string_match import initials, normalize
from dore.data.model import DataError, Document
from dore.data.scirex import read_scirex

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "run_fastcoref.py"

TEXT = ("We train a convolutional neural network ( CNN ) on the CNN / Daily Mail corpus . "
        "The CNN beats recurrent graph convolution ( RGCNN ) and RGCNN on machine translation ; translation matters . "
        "lane detection , lane detection and object detection differ from detection .")
WORDS = TEXT.split()


def span(phrase: str, occurrence: int = 0, words: list[str] = WORDS) -> tuple[int, int]:
    """Word span [start, end) of the n-th occurrence of `phrase` in `words`."""
    target = phrase.split()
    hits = [i for i in range(len(words)) if words[i:i + len(target)] == target]
    return hits[occurrence], hits[occurrence] + len(target)


NER = [  # (phrase, occurrence, type)
    ("convolutional neural network", 0, "Method"), ("CNN", 0, "Method"), ("CNN / Daily Mail", 0, "Material"),
    ("CNN", 2, "Method"), ("recurrent graph convolution", 0, "Method"), ("RGCNN", 1, "Method"),
    ("machine translation", 0, "Task"), ("translation", 1, "Task"),
    ("lane detection", 0, "Task"), ("lane detection", 1, "Task"), ("object detection", 0, "Task"),
    ("detection", 3, "Task"),
]


def scirex_doc(tmp_path: Path, *, doc_id: str = "d1", ner=NER, coref: dict | None = None,
               relations: list | None = None, words=WORDS) -> Document:
    """A SciREX line written to disk and read back, so the document is what `read_scirex` makes of it."""
    raw = {"doc_id": doc_id, "words": words, "sentences": [[0, len(words)]],
           "ner": [[*span(p, k, words), t] for p, k, t in ner], "coref": coref or {},
           "n_ary_relations": relations or [], "method_subrelations": {}}
    path = tmp_path / f"{doc_id}.jsonl"
    path.write_text(json.dumps(raw) + "\n")
    return read_scirex(path)[0][0]


def cluster_of(cdoc: CorefDoc, s: tuple[int, int]) -> list[tuple[int, int]]:
    return next(c for c in cdoc.clusters if s in c)


@pytest.fixture
def doc(tmp_path) -> Document:
    return scirex_doc(tmp_path)


# --- string-match ------------------------------------------------------------------------


def test_normalisation_folds_case_hyphens_plurals_and_determiners():
    assert normalize("The CNNs".split()) == ("cnn",)
    assert "".join(normalize("Bi - LSTM".split())) == "".join(normalize(["BiLSTM"])) == "bilstm"
    assert normalize(["entries"]) == ("entry",) and normalize(["networks"]) == ("network",)
    assert normalize(["analysis"]) == ("analysis",)  # not a plural
    assert initials("long short - term memory".split()) >= {"lstm"}
    assert "ttur" in initials("two time - scale update rule".split())  # a compound as one initial
    assert "qakb" in initials("question answering over knowledge bases".split())


def test_acronym_joins_its_long_form(doc):
    (cdoc,) = StringMatch().resolve([doc])
    cnn = cluster_of(cdoc, span("convolutional neural network"))
    assert span("CNN", 0) in cnn and span("CNN", 2) in cnn
    off = StringMatch(StringMatchConfig(acronyms=False, definitions=False)).resolve([doc])[0]
    assert span("CNN", 2) not in cluster_of(off, span("convolutional neural network"))


def test_parenthesised_definition_links_an_irregular_acronym(doc):
    (cdoc,) = StringMatch().resolve([doc])
    assert span("RGCNN", 1) in cluster_of(cdoc, span("recurrent graph convolution"))  # initials would be "rgc"
    (off,) = StringMatch(StringMatchConfig(definitions=False)).resolve([doc])
    assert span("RGCNN", 1) not in cluster_of(off, span("recurrent graph convolution"))


def test_only_mentions_of_one_type_are_merged(tmp_path, doc):
    ner = [("CNN", 0, "Method"), ("CNN", 1, "Material"), ("CNN", 2, "Method")]  # the news corpus is a Material
    (cdoc,) = StringMatch().resolve([scirex_doc(tmp_path, doc_id="types", ner=ner)])
    assert cdoc.clusters == [[span("CNN", 0), span("CNN", 2)], [span("CNN", 1)]]
    assert cdoc.types == ["Method", "Material"]
    (cdoc,) = StringMatch().resolve([doc])
    for cluster, ctype in zip(cdoc.clusters, cdoc.types):
        assert {_ner_type(doc, s) for s in cluster} == {ctype}


def _ner_type(doc: Document, s: tuple[int, int]) -> str:
    return next(m.type for m in doc.extra_mentions if (m.start, m.end) == s)


def test_head_match_links_a_head_to_its_most_frequent_extension(doc):
    (cdoc,) = StringMatch().resolve([doc])
    assert span("translation", 1) in cluster_of(cdoc, span("machine translation"))
    # "detection" ends "lane detection" (2 mentions) and "object detection" (1): the frequent one wins.
    lane = cluster_of(cdoc, span("lane detection"))
    assert span("detection", 3) in lane and span("object detection") not in lane


def test_head_match_ties_link_nothing(tmp_path):
    ner = [("lane detection", 0, "Task"), ("object detection", 0, "Task"), ("detection", 3, "Task")]
    (cdoc,) = StringMatch().resolve([scirex_doc(tmp_path, ner=ner)])
    assert [span("detection", 3)] in cdoc.clusters


def test_string_match_is_deterministic_and_order_free(doc):
    shuffled = doc.model_copy(update={"extra_mentions": doc.extra_mentions[::-1]})
    first = StringMatch().resolve([doc])[0]
    assert StringMatch().resolve([shuffled])[0] == first
    assert first.clusters == sorted(first.clusters, key=lambda c: (c[0], c))  # canonical order


def test_string_match_output_is_byte_identical_across_hash_seeds(tmp_path, doc):
    code = ("import sys; from dore.data.scirex import read_scirex; from dore.coref import StringMatch, resolve;"
            "from dore.coref.io import dumps_result; docs = read_scirex(sys.argv[1])[0];"
            "sys.stdout.write(dumps_result(resolve(StringMatch(), docs)))")
    outputs = {subprocess.run([sys.executable, "-c", code, str(tmp_path / "d1.jsonl")], check=True, text=True,
                              capture_output=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
               for seed in ("1", "2")}
    assert len(outputs) == 1 and "string-match" in outputs.pop()


# --- typing ------------------------------------------------------------------------------


def test_majority_vote_typing_breaks_ties_in_scirex_order(tmp_path):
    words = "a b c d e f g h".split()
    ner = [("a", 0, "Method"), ("b", 0, "Task"), ("c", 0, "Material"), ("d", 0, "Metric"), ("e", 0, "Metric"),
           ("f", 0, "Material"), ("g", 0, "Method")]
    d = scirex_doc(tmp_path, ner=ner, words=words)
    clusters = [[(0, 1), (1, 2)],  # Method vs Task: tie -> Task (SCIREX_TYPES order)
                [(2, 3), (3, 4), (4, 5)],  # Material 1, Metric 2 -> Metric
                [(5, 6), (6, 7)],  # Material vs Method: tie -> Method
                [(7, 8)]]  # no NER type -> None
    cdoc = typed_doc(d, clusters, with_mentions=True)
    assert cdoc.types == ["Task", "Metric", "Method", None]
    assert cdoc.mentions[-1] == (7, 8, None)


def test_typing_takes_the_type_of_an_overlapping_ner_span(doc):
    s, e = span("convolutional neural network")
    cdoc = typed_doc(doc, [[(s, e - 1)]], with_mentions=True)  # IoU 2/3 with the NER span
    assert cdoc.types == ["Method"]


def test_a_span_in_two_predicted_clusters_is_an_error(doc):
    with pytest.raises(DataError, match="in two clusters"):
        typed_doc(doc, [[(0, 1)], [(0, 1), (2, 3)]], with_mentions=False)


# --- importers ---------------------------------------------------------------------------


def write_lines(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def subtoken_log_line(doc: Document, **extra) -> dict:
    """A fast-coref log line: each word split in two subtokens, so word w = subtokens 2w, 2w+1."""
    subtoken_map = [w for w in range(len(doc.tokens)) for _ in (0, 1)]
    cnn, long = span("CNN", 2), span("convolutional neural network")
    predicted = [[[2 * long[0], 2 * long[1] - 1], [2 * cnn[0] + 1, 2 * cnn[1] - 1]],  # inclusive subtoken spans
                 [[2 * cnn[0], 2 * cnn[1] - 1], [0, 1]]]  # maps onto the CNN words again: dropped, counted
    return {"doc_key": f"{doc.doc_id}_0", "sentences": [["x"] * len(subtoken_map)], "subtoken_map": subtoken_map,
            "clusters": [[[0, 1], [2, 3]]], "predicted_clusters": predicted, **extra}


def test_fast_coref_log_maps_inclusive_subtoken_spans_to_words(tmp_path, doc):
    log = write_lines(tmp_path / "test.log.jsonl", [subtoken_log_line(doc)])
    importer = FastCorefLog(log)
    result = resolve(importer, [doc])
    (cdoc,) = result.docs
    assert result.setting == "end_to_end"
    assert cdoc.clusters == [[(0, 1)], [span("convolutional neural network"), span("CNN", 2)]]
    assert cdoc.types == [None, "Method"]  # "We" has no NER type
    assert (*span("CNN", 2), "Method") in cdoc.mentions
    assert result.provenance["report"] == {"duplicate_spans_dropped": 1}
    assert result.provenance["parameters"]["import_sha256"]


def test_fast_coref_log_prefers_orig_subtoken_map(tmp_path, doc):
    line = subtoken_log_line(doc, subtoken_map=[0] * 2 * len(doc.tokens))  # wrong map: must not be read
    line["orig_subtoken_map"] = [w for w in range(len(doc.tokens)) for _ in (0, 1)]
    (cdoc,) = resolve(FastCorefLog(write_lines(tmp_path / "a.jsonl", [line])), [doc]).docs
    assert [span("convolutional neural network"), span("CNN", 2)] in cdoc.clusters


@pytest.mark.parametrize("change, match", [
    (lambda line: line.update(doc_key="other_0"), "names no input document"),
    (lambda line: line.pop("predicted_clusters"), "gold clusters"),
    (lambda line: line.update(subtoken_map=line["subtoken_map"][:-2]), "the document has"),
    (lambda line: line.update(predicted_clusters=[[[0, 10_000]]]), "outside"),
    (lambda line: line.update(predicted_clusters=[[[0]]]), r"expected \[start, end\]"),
])
def test_fast_coref_log_rejects_bad_lines(tmp_path, doc, change, match):
    line = subtoken_log_line(doc)
    change(line)
    with pytest.raises(DataError, match=match) as err:
        resolve(FastCorefLog(write_lines(tmp_path / "bad.jsonl", [line])), [doc])
    assert "bad.jsonl line 1" in str(err.value)


def test_importers_join_by_doc_id_and_refuse_missing_or_repeated_documents(tmp_path, doc):
    other = scirex_doc(tmp_path, doc_id="d2")
    lines = [subtoken_log_line(other), subtoken_log_line(doc)]  # file order differs from input order
    result = resolve(FastCorefLog(write_lines(tmp_path / "two.jsonl", lines)), [doc, other])
    assert [d.doc_id for d in result.docs] == ["d1", "d2"]
    with pytest.raises(DataError, match="missing from the file"):
        resolve(FastCorefLog(write_lines(tmp_path / "one.jsonl", lines[:1])), [doc, other])
    with pytest.raises(DataError, match="second line"):
        resolve(FastCorefLog(write_lines(tmp_path / "rep.jsonl", [lines[1], lines[1]])), [doc])


def test_fastcoref_tokens_file_round_trips(tmp_path, doc):
    clusters = [[list(span("convolutional neural network")), list(span("CNN", 0))], [list(span("RGCNN", 1))]]
    path = write_lines(tmp_path / "fc.jsonl", [{"doc_key": doc.doc_id, "tokens": doc.tokens, "clusters": clusters}])
    (path.parent / "fc.jsonl.meta.json").write_text(json.dumps({"weights_sha256": "abc"}))
    result = resolve(FastcorefJsonl(path), [doc])
    assert result.docs[0].clusters == [[tuple(s) for s in clusters[0]], [tuple(clusters[1][0])]]
    assert result.docs[0].types == ["Method", "Method"]
    assert result.provenance["parameters"]["model"] == {"weights_sha256": "abc"}
    bad = write_lines(tmp_path / "bad.jsonl", [{"doc_key": doc.doc_id, "tokens": doc.tokens[1:], "clusters": []}])
    with pytest.raises(DataError, match="SciREX words"):
        resolve(FastcorefJsonl(bad), [doc])


def test_fastcoref_text_file_maps_character_spans_to_words(tmp_path, doc):
    text = "  ".join(doc.tokens)  # any whitespace between the words
    offsets = word_char_offsets(text, doc.tokens)
    (s, e), (cs, ce) = span("recurrent graph convolution"), span("CNN", 2)
    long_chars = [offsets[s][0] + 3, offsets[e - 1][1] - 1]  # cuts its first and last word
    cnn_chars = [offsets[cs][0], offsets[ce - 1][1]]
    path = write_lines(tmp_path / "fc.jsonl", [{"doc_key": doc.doc_id, "text": text,
                                                "clusters": [[long_chars, cnn_chars]]}])
    (cdoc,) = resolve(FastcorefJsonl(path), [doc]).docs
    assert cdoc.clusters == [[span("CNN", 2), span("recurrent graph convolution")]]
    own_output = write_lines(tmp_path / "own.jsonl", [{"text": text, "clusters": [], "clusters_strings": []}])
    with pytest.raises(DataError, match="doc_key"):
        resolve(FastcorefJsonl(own_output), [doc])


def test_char_to_word_mapping():
    words = ["Deep", "nets", "(", "DNNs", ")", "."]
    text = " Deep  nets ( DNNs ) . "
    offsets = word_char_offsets(text, words)
    assert [text[s:e] for s, e in offsets] == words
    assert char_spans_to_words([(1, 11), (14, 18), (3, 8), (8, 9)], offsets) == [(0, 2), (3, 4), (0, 2), (1, 2)]
    with pytest.raises(ValueError, match="covers no word"):
        char_spans_to_words([(5, 7)], offsets)  # the blanks between "Deep" and "nets"
    with pytest.raises(ValueError, match="word 1"):
        word_char_offsets("Deep nest ( DNNs ) .", words)


# --- result files ------------------------------------------------------------------------


def test_result_file_round_trips_byte_identically(tmp_path, doc):
    result = resolve(make_backend("string-match"), [doc], provenance={"input_sha256": "x"})
    first = write_result(tmp_path / "r.jsonl", result).read_bytes()
    again = read_result(tmp_path / "r.jsonl")
    assert again == result
    assert write_result(tmp_path / "r2.jsonl", again).read_bytes() == first
    header = json.loads(first.splitlines()[0])
    assert header["format"] == "dore-coref/1" and header["setting"] == "gold_mentions_pred_clusters"


def test_result_file_errors_name_the_line(tmp_path, doc):
    lines = dumps_result(resolve(make_backend("string-match"), [doc])).splitlines()
    (tmp_path / "r.jsonl").write_text(lines[0] + "\n" + lines[1].replace('"clusters"', '"klusters"') + "\n")
    with pytest.raises(DataError, match="line 2"):
        read_result(tmp_path / "r.jsonl")
    (tmp_path / "h.jsonl").write_text('{"format": "other"}\n')
    with pytest.raises(DataError, match="not a dore-coref/1"):
        read_result(tmp_path / "h.jsonl")


def test_registry_refuses_unknown_backends_and_misplaced_files(tmp_path):
    with pytest.raises(ValueError, match="unknown coreference backend"):
        make_backend("neural")
    with pytest.raises(ValueError, match="import_path"):
        make_backend("fastcoref")
    with pytest.raises(ValueError, match="reads no file"):
        make_backend("gold", tmp_path / "x.jsonl")
    with pytest.raises(FileNotFoundError, match="no file to import"):
        make_backend("fast-coref-log", tmp_path / "absent.jsonl")


# --- gold, composition, scoring, quality ---------------------------------------------------


@pytest.fixture
def gold_doc(tmp_path) -> Document:
    """CNN (Method), machine translation (Task), CNN / Daily Mail (Material), and a Metric without mention."""
    coref = {"CNN": [list(span("convolutional neural network")), list(span("CNN", 0)), list(span("CNN", 2))],
             "MT": [list(span("machine translation")), list(span("translation", 1))],
             "CNN_DM": [list(span("CNN / Daily Mail"))], "Acc": []}
    relation = {"Task": "MT", "Method": "CNN", "Material": "CNN_DM", "Metric": "Acc", "score": "1"}
    return scirex_doc(tmp_path, coref=coref, relations=[relation])


def test_gold_backend_reproduces_gold_clusters_with_names(gold_doc):
    (cdoc,) = make_backend("gold").resolve([gold_doc])
    assert cdoc.names == ["CNN", "CNN_DM", "MT"]  # by first mention; "Acc" has no mention
    assert cdoc.types == ["Method", "Material", "Task"]
    assert coref_quality([gold_doc], resolve(make_backend("gold"), [gold_doc]))["avg_f1"] == 100.0


def test_clusters_become_documents_ordered_by_first_mention(gold_doc):
    result = resolve(make_backend("string-match"), [gold_doc])
    (pdoc,) = clusters_to_documents([gold_doc], result)
    assert [e.id for e in pdoc.entities] == [f"cluster:{i}" for i in range(len(pdoc.entities))]
    firsts = [e.mentions[0].start for e in pdoc.entities]
    assert firsts == sorted(firsts) and pdoc.relations == []
    first = span("convolutional neural network")
    cnn = next(e for e in pdoc.entities if (e.mentions[0].start, e.mentions[0].end) == first)
    assert cnn.type == "Method" and [m.text for m in cnn.mentions] == ["convolutional neural network", "CNN", "CNN"]
    assert pdoc.meta["coref"] == {"backend": "string-match", "setting": "gold_mentions_pred_clusters",
                                  "dropped_clusters": 0}
    assert pdoc.tokens == gold_doc.tokens and pdoc.extra_mentions == gold_doc.extra_mentions
    with pytest.raises(DataError, match="missing from"):
        clusters_to_documents([gold_doc], result.model_copy(update={"docs": []}))


def test_a_cap_per_type_keeps_the_most_mentioned_clusters_in_first_mention_order(doc):
    result = resolve(make_backend("string-match"), [doc])
    (pdoc,) = clusters_to_documents([doc], result, max_per_type={"Task": 1, "Method": 1})
    assert [(e.type, [m.text for m in e.mentions]) for e in pdoc.entities] == [
        ("Method", ["convolutional neural network", "CNN", "CNN"]),
        ("Task", ["lane detection", "lane detection", "detection"])]
    ranks = {tuple(c[0]): i for i, c in enumerate(result.docs[0].clusters)}
    assert [e.id for e in pdoc.entities] == [f"cluster:{ranks[(e.mentions[0].start, e.mentions[0].end)]}"
                                             for e in pdoc.entities]  # ids stay the clusters' ranks
    assert pdoc.meta["coref"]["dropped_clusters"] == len(result.docs[0].clusters) - 2


def test_relations_over_predicted_clusters_score_through_the_official_mapping(gold_doc):
    (pdoc,) = clusters_to_documents([gold_doc], resolve(make_backend("string-match"), [gold_doc]))
    index = {(e.mentions[0].start, e.mentions[0].end): i for i, e in enumerate(pdoc.entities)}
    cnn, mt = index[span("convolutional neural network")], index[span("machine translation")]
    dm, rgcnn = index[span("CNN / Daily Mail")], index[span("recurrent graph convolution")]
    right = [((mt, cnn), "relevant"), ((mt, dm), "relevant"), ((cnn, dm), "relevant")]
    scores = score_relations([gold_doc], [pdoc], {gold_doc.doc_id: right})
    assert scores["setting"] == "gold_mentions_pred_clusters"
    assert scores["scirex_official"]["2ary"]["f1"] == pytest.approx(100, abs=1e-3)
    assert scores["dore_micro"]["2ary"]["f1"] == 100
    wrong = score_relations([gold_doc], [pdoc], {gold_doc.doc_id: [((mt, rgcnn), "relevant")]})
    assert wrong["scirex_official"]["2ary"]["f1"] < 1
    same_type = score_relations([gold_doc], [pdoc], {gold_doc.doc_id: [((cnn, rgcnn), "relevant")]})
    assert same_type["dropped_pairs"] == 1
    assert set(scores["dore_micro"]) == set(scores["scirex_official"]) == {"2ary", "4ary"}


def test_a_4ary_relation_scores_its_pairs_in_the_binary_micro_score(tmp_path):
    """n = 2 of a 4-ary model is its projection: the six pairs of each tuple, each pair once."""
    ner = [("lane detection", 0, "Metric") if (p, k) == ("lane detection", 0) else (p, k, t) for p, k, t in NER]
    coref = {"CNN": [list(span("convolutional neural network"))], "MT": [list(span("machine translation"))],
             "CNN_DM": [list(span("CNN / Daily Mail"))], "Acc": [list(span("lane detection"))]}
    relation = {"Task": "MT", "Method": "CNN", "Material": "CNN_DM", "Metric": "Acc", "score": "1"}
    doc = scirex_doc(tmp_path, ner=ner, coref=coref, relations=[relation])
    (pdoc,) = clusters_to_documents([doc], resolve(make_backend("gold"), [doc]))
    at = {e.id: i for i, e in enumerate(pdoc.entities)}
    four = (at["MT"], at["CNN"], at["CNN_DM"], at["Acc"])
    micro = score_relations([doc], [pdoc], {doc.doc_id: [(four, "relevant"), (four, "relevant")]})["dore_micro"]
    assert (micro["4ary"]["tp"], micro["4ary"]["fp"]) == (1, 1)  # a repeated tuple is a false positive
    assert (micro["2ary"]["tp"], micro["2ary"]["fp"], micro["2ary"]["fn"]) == (6, 0, 0)


def test_a_binary_models_relations_are_scored_binary_only(gold_doc):
    """A binary model writes no 4-ary relation: its report has no 4-ary entry (a 0 there says nothing)."""
    (pdoc,) = clusters_to_documents([gold_doc], resolve(make_backend("gold"), [gold_doc]))
    scores = score_relations([gold_doc], [pdoc], {gold_doc.doc_id: [((2, 0), "relevant")]}, arity=2)
    assert set(scores["dore_micro"]) == set(scores["scirex_official"]) == {"2ary"}
    assert scores["dore_micro"]["2ary"]["p"] == 100
    with pytest.raises(ValueError, match="3-ary"):
        score_relations([gold_doc], [pdoc], {}, arity=3)


def test_gold_clusters_score_in_the_gold_input_setting(gold_doc):
    (pdoc,) = clusters_to_documents([gold_doc], resolve(make_backend("gold"), [gold_doc]))
    assert [e.id for e in pdoc.entities] == ["CNN", "CNN_DM", "MT"]
    pairs = [((2, 0), "relevant"), ((2, 1), "relevant"), ((0, 1), "relevant")]
    scores = score_relations([gold_doc], [pdoc], {gold_doc.doc_id: pairs})
    assert scores["setting"] == "gold_input"
    assert scores["scirex_official"]["2ary"]["f1"] == pytest.approx(100, abs=1e-3)
    assert scores["dore_micro"]["2ary"]["f1"] == 100


def test_quality_uses_salient_mentions_only_and_maps_overlapping_spans(gold_doc):
    s, e = span("convolutional neural network")
    predicted = CorefResult(backend="t", setting="end_to_end", docs=[CorefDoc(
        doc_id=gold_doc.doc_id, types=[None, None, None],
        clusters=[[(0, 1)],  # "We": not salient, left out
                  [(s, e - 1), span("CNN", 0), span("CNN", 2)],  # the first span overlaps the gold one
                  [span("machine translation"), span("translation", 1), span("CNN / Daily Mail")]])])
    quality = coref_quality([gold_doc], predicted)
    assert quality["predicted_mentions_left_out"] == 1 and quality["predicted_mentions_kept"] == 6
    assert quality["muc"]["r"] == 100 and quality["muc"]["p"] == pytest.approx(100 * 3 / 4)
    assert quality["b3"]["r"] == 100 and quality["b3"]["p"] < 100


def test_resolve_refuses_a_backend_that_loses_documents(doc):
    class Lossy(StringMatch):
        def resolve(self, docs):
            return super().resolve(docs)[1:]

    with pytest.raises(DataError, match="1 missing"):
        resolve(Lossy(), [doc])


# --- scripts/run_fastcoref.py ----------------------------------------------------------------


def load_script():
    spec = importlib.util.spec_from_file_location("run_fastcoref", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_fastcoref_without_package_or_weights_exits_with_what_is_missing(tmp_path):
    assert importlib.util.find_spec("fastcoref") is None  # the project environment never has it
    proc = subprocess.run([sys.executable, str(SCRIPT), "--model-dir", str(tmp_path / "f-coref"), "--input",
                           str(tmp_path / "dev.jsonl"), "--output", str(tmp_path / "out.jsonl")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "package `fastcoref` is not installed" in proc.stderr and "pip install" in proc.stderr
    assert f"model directory {tmp_path / 'f-coref'} does not exist" in proc.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_run_fastcoref_names_the_missing_model_files(tmp_path, monkeypatch, capsys):
    (tmp_path / "pkgs" / "fastcoref").mkdir(parents=True)
    (tmp_path / "pkgs" / "fastcoref" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))  # a package is "installed"; the weights are not
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps({"coref_head": {"max_segment_len": 512}}))
    script = load_script()
    assert script.main(["--model-dir", str(tmp_path / "model"), "--input", str(tmp_path / "in.jsonl"),
                        "--output", str(tmp_path / "out.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "not installed" not in err
    assert "holds no weights (model.safetensors or pytorch_model.bin)" in err and "holds no tokenizer" in err
    assert "input file" in err


FAKE_FASTCOREF = '''
class _Result:
    def __init__(self, text_idx, clusters):
        self.text_idx, self._clusters = text_idx, clusters

    def get_clusters(self, as_strings=True):
        assert not as_strings
        return self._clusters


class FCoref:
    def __init__(self, model_name_or_path, device=None, nlp="en_core_web_sm", enable_progress_bar=True):
        assert nlp is None  # no spaCy pipeline: nothing to download

    def predict(self, texts, is_split_into_words=False, max_tokens_in_batch=10000):
        assert is_split_into_words
        # Word spans (i, i+1) as the package gives them for pre-tokenised input; None = an unaligned
        # mention. Texts over 100 words are skipped, as LingMess skips long documents; order reversed.
        return [_Result(i, [[(3, 6), (7, 8), None]]) for i, words in enumerate(texts) if len(words) <= 100][::-1]
'''


@pytest.fixture
def fake_fastcoref(tmp_path, monkeypatch):
    """A stand-in `fastcoref` package and a model directory with every file the script checks."""
    pkgs = tmp_path / "pkgs"
    (pkgs / "fastcoref").mkdir(parents=True)
    (pkgs / "fastcoref" / "__init__.py").write_text(FAKE_FASTCOREF)
    (pkgs / "fastcoref-2.1.6.dist-info").mkdir()
    metadata = "Metadata-Version: 2.1\nName: fastcoref\nVersion: 2.1.6\n"
    (pkgs / "fastcoref-2.1.6.dist-info" / "METADATA").write_text(metadata)
    monkeypatch.syspath_prepend(str(pkgs))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"coref_head": {"max_segment_len": 512}}))
    (model / "model.safetensors").write_bytes(b"weights")
    (model / "tokenizer.json").write_text("{}")
    yield model
    sys.modules.pop("fastcoref", None)  # the stand-in must not outlive the test


def test_run_fastcoref_output_imports_onto_the_scirex_words(tmp_path, fake_fastcoref, doc):
    out = tmp_path / "fc" / "dev.raw.jsonl"
    script = load_script()
    assert script.main(["--model-dir", str(fake_fastcoref), "--input", str(tmp_path / "d1.jsonl"),
                        "--output", str(out)]) == 0
    meta = json.loads((out.parent / "dev.raw.jsonl.meta.json").read_text())
    assert meta["unaligned_mentions_dropped"] == 1 and meta["versions"]["fastcoref"] == "2.1.6"
    assert meta["weights_sha256"] == script.sha256(fake_fastcoref / "model.safetensors")
    result = resolve(make_backend("fastcoref", out), [doc])
    assert result.docs[0].clusters == [[span("convolutional neural network"), span("CNN", 0)]]
    assert result.docs[0].types == ["Method"] and result.provenance["parameters"]["model"] == meta


def test_run_fastcoref_refuses_skipped_documents(tmp_path, fake_fastcoref):
    long_doc = {"doc_id": "long", "words": ["w"] * 101}
    (tmp_path / "long.jsonl").write_text(json.dumps(long_doc) + "\n")
    with pytest.raises(SystemExit, match="skipped 1 document"):
        load_script().main(["--model-dir", str(fake_fastcoref), "--input", str(tmp_path / "long.jsonl"),
                            "--output", str(tmp_path / "out.jsonl")])
    assert not (tmp_path / "out.jsonl").exists()


def test_eager_attention_is_asked_for_and_undone(monkeypatch):
    import transformers

    calls = []
    monkeypatch.setattr(transformers.AutoModel, "from_config", lambda config, **kwargs: calls.append(kwargs))
    original = transformers.AutoModel.from_config
    with load_script().eager_attention():
        transformers.AutoModel.from_config("config")
        transformers.AutoModel.from_config("config", attn_implementation="sdpa")  # an explicit choice stays
    assert calls == [{"attn_implementation": "eager"}, {"attn_implementation": "sdpa"}]
    assert transformers.AutoModel.from_config is original
