"""CDR (PubTator, EoG) and GDA (RENET raw, EoG) readers on the real files, plus hand-made fixtures.

GDA is AGPL: no GDA text appears here; the GDA fixtures below are invented.
"""

from pathlib import Path

import pytest

from dore.data.bio import read_eog, read_pubtator, read_renet, split_sentences, tokenize
from dore.data.model import DataError, Document

SPLITS = ("train", "dev", "test")
PUBTATOR = {"train": "CDR_TrainingSet", "dev": "CDR_DevelopmentSet", "test": "CDR_TestSet"}


@pytest.fixture(scope="module")
def pubtator(shared_data):
    return {s: read_pubtator(shared_data / "cdr" / "raw" / f"{PUBTATOR[s]}.PubTator.txt") for s in SPLITS}


@pytest.fixture(scope="module")
def eog(shared_data):
    cdr = {s: read_eog(shared_data / "cdr" / "processed" / f"{s}_filter.data", "cdr") for s in SPLITS}
    return {**cdr, "gda": read_eog(shared_data / "gda" / "processed" / "test.data", "gda")}


@pytest.fixture(scope="module")
def renet(shared_data):
    return read_renet(shared_data / "gda" / "raw" / "testing_data")


def _id_pairs(doc: Document, pairs) -> set[tuple[str, ...]]:
    return {tuple(doc.entities[a].id for a in pair) for pair in pairs}


def _words_match(doc: Document) -> bool:
    """Every mention covers exactly its own characters' words (no word straddles a mention boundary)."""
    return all("".join(doc.tokens[m.start:m.end]) == "".join(doc.text[m.char_start:m.char_end].split())
               for m in [*(m for e in doc.entities for m in e.mentions), *doc.extra_mentions])


# --- CDR PubTator -------------------------------------------------------------------------------------

@pytest.mark.parametrize("split, chemical, disease, cid, unnormalised", [
    ("train", 5203, 4182, 1038, 76), ("dev", 5347, 4244, 1012, 59), ("test", 5385, 4424, 1066, 91)])
def test_pubtator_counts(pubtator, split, chemical, disease, cid, unnormalised):
    docs, report = pubtator[split]
    assert report.documents == len(docs) == 500
    # The README counts mention LINES; a composite line joins several entities and a -1 line none.
    assert report.counts["mention_lines:Chemical"] == chemical
    assert report.counts["mention_lines:Disease"] == disease
    assert report.relations == report.counts["relation:CID"] == cid
    assert sum(len(d.extra_mentions) for d in docs) == unnormalised
    assert report.quirks["unnormalised mention (id -1): in extra_mentions, no entity"] == unnormalised
    assert not any("dropped" in q or "differs" in q or q.startswith("duplicate") for q in report.quirks)
    assert all(d.meta == {"pmid": d.doc_id} and d.title and d.text.startswith(d.title + " ") for d in docs)


@pytest.mark.parametrize("split", SPLITS)
def test_pubtator_mentions_words_and_sentences(pubtator, split):
    docs, _ = pubtator[split]
    for doc in docs:
        assert _words_match(doc)
        assert " ".join(doc.tokens[slice(*doc.sentences[0])]).replace(" ", "") == doc.title.replace(" ", "")
        for entity in doc.entities:
            assert {m.type for m in entity.mentions} == {entity.type}
            for m in entity.mentions:
                assert doc.text[m.char_start:m.char_end] == m.text
                first, last = doc.sentences[m.sent_id]
                assert first <= m.start < m.end <= last
        chemicals = sum(e.type == "Chemical" for e in doc.entities)
        assert len(doc.candidates) == chemicals * (len(doc.entities) - chemicals)
        assert all(doc.entities[h].type == "Chemical" and doc.entities[t].type == "Disease" for h, t in doc.candidates)
        assert set(r.args for r in doc.relations) <= set(doc.candidates)


def test_pubtator_composite_mention_joins_both_concepts(pubtator):
    docs, report = pubtator["train"]
    doc = next(d for d in docs if d.doc_id == "2234245")
    holders = [e.id for e in doc.entities for m in e.mentions if (m.char_start, m.char_end) == (0, 28)]
    assert holders == ["D014786", "D006311"]
    assert report.quirks["composite mention: joins each of its concepts"] == 98


@pytest.mark.parametrize("split", SPLITS)
def test_pubtator_and_eog_agree_on_pairs(pubtator, eog, split):
    """The two CDR formats list the same scored pairs: PubTator's chemical x disease = EoG's listed pairs
    (candidates plus not_include), with the same CID relations."""
    for doc, other in zip(pubtator[split][0], eog[split][0], strict=True):
        assert doc.doc_id == other.doc_id
        assert _id_pairs(doc, doc.candidates) == _id_pairs(other, other.candidates) | _id_pairs(other, other.excluded)
        assert _id_pairs(doc, [r.args for r in doc.relations]) == _id_pairs(other, [r.args for r in other.relations])


def _write_fixture(tmp_path: Path) -> Path:
    title = "Naloxone-induced hypotension."
    abstract = ("Rats got 5-HT6 antagonists, e.g. SB-271046. Hypotension and renal and hepatic failure followed? "
                "Yes. Vit. C helped.")
    text = f"{title} {abstract}"

    def line(surface, kind, ids, *extra, after=0):
        start = text.index(surface, after)
        return "\t".join(["100", str(start), str(start + len(surface)), surface, kind, ids, *extra])

    lines = [f"100|t|{title}", f"100|a|{abstract}",
             line("Naloxone", "Chemical", "D009270"), line("hypotension", "Disease", "D007022"),
             line("5-HT", "Chemical", "-1"), line("SB-271046", "Chemical", "C000001"),
             line("Hypotension", "Disease", "D007022").replace("\tHypotension\t", "\thypotension\t"),
             line("renal and hepatic failure", "Disease", "D051437|D017093", "renal failure|hepatic failure"),
             line("Vit. C", "Chemical", "D014815"),
             "100\tCID\tD009270\tD007022", "100\tCID\tC000001\tD051437", "100\tCID\tD999999\tD007022",
             "", "200|t|Second.", "200|a|", ""]
    path = tmp_path / "fixture.PubTator.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_pubtator_policies_on_a_fixture(tmp_path):
    (doc, second), report = read_pubtator(_write_fixture(tmp_path))
    assert [e.id for e in doc.entities] == ["D009270", "D007022", "C000001", "D051437", "D017093", "D014815"]
    assert doc.tokens[7:11] == ["5", "-", "HT", "6"]  # "5-HT6" is cut at the mention's end
    (ht,) = doc.extra_mentions
    assert (ht.text, doc.tokens[ht.start:ht.end], ht.sent_id) == ("5-HT", ["5", "-", "HT"], 1)
    # Title, then cuts after ". ", "? ": "e.g. " cuts (documented), "Vit. C" (a mention) does not.
    assert [" ".join(doc.tokens[s:e]) for s, e in doc.sentences] == [
        "Naloxone - induced hypotension .", "Rats got 5 - HT 6 antagonists , e . g .", "SB - 271046 .",
        "Hypotension and renal and hepatic failure followed ?", "Yes .", "Vit . C helped ."]
    composite = doc.entities[3].mentions[0]
    assert doc.entities[4].mentions == [composite] and composite.sent_id == 3
    assert doc.entities[1].mentions[1].text == "hypotension"  # annotated text kept, offsets kept
    assert [(r.args, r.label) for r in doc.relations] == [((0, 1), "CID"), ((2, 3), "CID")]
    assert len(doc.candidates) == 3 * 3 and (5, 4) in doc.candidates
    assert report.quirks == {
        "unnormalised mention (id -1): in extra_mentions, no entity": 1,
        "mention text differs from the text at its offsets (offsets and text kept)": 1,
        "composite mention: joins each of its concepts": 1,
        "composite mention's part-text columns (not kept)": 1,
        "CID relation on a concept with no mention (dropped)": 1}
    assert (second.title, second.tokens, second.sentences) == ("Second.", ["Second", "."], [(0, 2)])
    assert second.entities == [] and second.candidates == []
    assert report.mentions == 7 and report.counts["mention_lines:Chemical"] == 4


def test_tokenize_cuts_words_at_mention_boundaries():
    words, mapped = tokenize("IL-6R and TNFalpha", [(0, 4), (10, 13)])
    assert words == [(0, 2), (2, 3), (3, 4), (4, 5), (6, 9), (10, 13), (13, 18)]
    assert mapped == [(0, 3), (5, 6)]
    assert tokenize("a  b", [(1, 3)])[1] == [(1, 1)]  # whitespace only: no word
    assert split_sentences("T. A. B", [(0, 1), (1, 2), (3, 4), (4, 5), (6, 7)], 2) == [(0, 2), (2, 4), (4, 5)]


def _corrupt(src: Path, dst: Path, lineno: int, edit) -> Path:
    lines = src.read_text(encoding="utf-8").split("\n")
    lines[lineno - 1] = edit(lines[lineno - 1])
    dst.write_text("\n".join(lines), encoding="utf-8")
    return dst


@pytest.mark.parametrize("edit, field", [
    (lambda l: "\t".join(l.split("\t")[:1] + ["x"] + l.split("\t")[2:]), "start"),
    (lambda l: "\t".join(l.split("\t")[:5]), "columns"),
    (lambda l: "\t".join(l.split("\t")[:2] + ["99999"] + l.split("\t")[3:]), "start/end"),
    (lambda l: "999" + l, "PMID")])
def test_bad_pubtator_mention_line(shared_data, tmp_path, edit, field):
    src = shared_data / "cdr" / "raw" / "CDR_TrainingSet.PubTator.txt"
    lines = src.read_text(encoding="utf-8").split("\n")
    lineno = next(i for i, l in enumerate(lines, 1) if l.startswith("354896\t0\t"))  # 2nd document's 1st mention
    path = _corrupt(src, tmp_path / "bad.PubTator.txt", lineno, edit)
    with pytest.raises(DataError) as info:
        read_pubtator(path)
    err = info.value
    assert (err.file, err.line, err.field) == (str(path), lineno, field)
    assert err.doc == ("999354896" if field == "PMID" else "354896")
    assert f"file {path} line {lineno}" in str(err) and f"field {field!r}" in str(err)


def test_pubtator_structure_errors(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("1|t|A\n1|t|B\n")
    with pytest.raises(DataError, match="blank line missing"):
        read_pubtator(path)
    path.write_text("1|t|A\n\n")
    with pytest.raises(DataError, match="no abstract") as info:
        read_pubtator(path)
    assert (info.value.doc, info.value.field) == ("1", "abstract")


# --- EoG .data --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, positive, negative, excluded, r2l", [
    ("train", 1038, 4202, 192, 2309), ("dev", 1012, 4075, 174, 2253), ("test", 1066, 4138, 201, 2093),
    ("gda", 1502, 3720, 0, 5163)])
def test_eog_counts(eog, name, positive, negative, excluded, r2l):
    docs, report = eog[name]
    label = "GDA" if name == "gda" else "CID"
    assert report.documents == len(docs) == (1000 if name == "gda" else 500)
    assert report.counts[f"pairs:1:{label}:2"] == report.relations == positive
    assert report.counts["pairs:1:NR:2"] == negative and report.counts["pairs:not_include"] == excluded
    assert report.counts["direction:R2L"] == r2l
    assert sum(len(d.candidates) for d in docs) == positive + negative
    assert sum(len(d.excluded) for d in docs) == excluded
    assert all(r.label == label and r.args in d.candidates for d in docs for r in d.relations)
    head = "Gene" if name == "gda" else "Chemical"
    for doc in docs:
        assert len({e.id for e in doc.entities}) == len(doc.entities)
        assert all(doc.entities[h].type == head and doc.entities[t].type == "Disease"
                   for h, t in doc.candidates + doc.excluded)
        for entity in doc.entities:
            spans = [(m.start, m.end) for m in entity.mentions]
            assert len(set(spans)) == len(spans)
            assert all(doc.sentences[m.sent_id][0] <= m.start < m.end <= doc.sentences[m.sent_id][1]
                       for m in entity.mentions)


def test_eog_mention_text_is_the_names_entry(eog):
    """Names that cover only part of a token ('5 - HT' in '5 - HT6') are kept and counted."""
    counted = {name: eog[name][1].quirks["mention name differs from its tokens (part of a token; name kept)"]
               for name in eog}
    assert counted == {"train": 0, "dev": 10, "test": 5, "gda": 39}
    assert eog["train"][1].quirks["repeated mention within a pair block (de-duplicated)"] == 2
    assert eog["gda"][1].mentions == 17_928


def _first(values: str, new: str) -> str:
    """Replace the first of ':'-separated values, keeping their number."""
    return ":".join([new, *values.split(":")[1:]])


def _eog_line(shared_data, lineno=3):
    lines = (shared_data / "cdr" / "processed" / "dev_filter.data").read_text(encoding="utf-8").split("\n")
    return lines, lines[lineno - 1].split("\t")


@pytest.mark.parametrize("edit, field", [
    (lambda cols: cols[:4] + cols[5:], "pair blocks"),                                  # a 16-field pair block
    (lambda cols: cols[:2] + ["1:GDA:2"] + cols[3:], "pairs[0].label"),
    (lambda cols: cols[:10] + ["1:x"] + cols[11:], "pairs[0].starts1"),
    (lambda cols: cols[:16] + [_first(cols[16], "100000")] + cols[17:], "pairs[0].starts2"),
    (lambda cols: cols[:18] + [_first(cols[18], "999")] + cols[19:], "pairs[0].sentids2"),
    (lambda cols: cols[:3] + ["up"] + cols[4:], "pairs[0].direction")])
def test_bad_eog_line(shared_data, tmp_path, edit, field):
    lines, cols = _eog_line(shared_data)
    lines[2] = "\t".join(edit(cols))
    path = tmp_path / "dev_filter.data"
    path.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_eog(path, "cdr")
    err = info.value
    assert (err.file, err.line, err.doc, err.field) == (str(path), 3, cols[0], field)
    assert f"file {path} line 3" in str(err) and repr(cols[0]) in str(err) and repr(field) in str(err)


def test_eog_rejects_unknown_dataset(shared_data):
    with pytest.raises(ValueError, match="dataset"):
        read_eog(shared_data / "gda" / "processed" / "test.data", "docred")


# --- GDA raw (RENET) ---------------------------------------------------------------------------------

def test_renet_counts_and_offset_quirk(renet):
    docs, report = renet
    assert report.documents == len(docs) == 1000
    assert report.mentions == 17_928  # no composite or -1 ids in GDA: one mention per line
    assert (report.counts["mention_lines:Gene"], report.counts["mention_lines:Disease"]) == (8404, 9524)
    assert report.counts["label_rows:1"] == report.relations == 1502
    key = "mention text differs from the text at its offsets (offsets and text kept)"
    assert dict(report.quirks) == {key: 4}
    assert report.examples[key] == ["11935341", "12928685", "16014697", "19648156"]
    mismatched = [(doc.text[m.char_start:m.char_end], m.text) for doc in docs for e in doc.entities
                  for m in e.mentions if doc.text[m.char_start:m.char_end] != m.text]
    assert len(mismatched) == 4 and all(found.lower() == given.lower() for found, given in mismatched)
    assert all(_words_match(doc) for doc in docs)


def test_renet_and_eog_agree_on_pairs(renet, eog):
    for doc, other in zip(renet[0], eog["gda"][0], strict=True):
        assert doc.doc_id == other.doc_id
        assert _id_pairs(doc, doc.candidates) == _id_pairs(other, other.candidates)
        assert _id_pairs(doc, [r.args for r in doc.relations]) == _id_pairs(other, [r.args for r in other.relations])


def _renet_fixture(tmp_path: Path, labels: str = "pmid,geneId,diseaseId,label\n1,7157,D009369,1\n2,1,D1,0\n") -> Path:
    folder = tmp_path / "renet"
    folder.mkdir()
    (folder / "abstracts.txt").write_text("1\nTP53 in cancer.\nTP53 again.\n\n2\nNo abstract here.\n\n\n")
    (folder / "anns.txt").write_text("1\t0\t4\tTP53\tGene\t7157\n1\t8\t14\tcancer\tDisease\tD009369\n"
                                     "1\t16\t20\tTP53\tGene\t7157\n\n")
    (folder / "labels.csv").write_text(labels)
    return folder


def test_renet_fixture(tmp_path):
    (first, second), report = read_renet(_renet_fixture(tmp_path))
    assert first.text == "TP53 in cancer. TP53 again." and first.sentences == [(0, 4), (4, 7)]
    assert [(e.id, e.type, [(m.start, m.end) for m in e.mentions]) for e in first.entities] == [
        ("7157", "Gene", [(0, 1), (4, 5)]), ("D009369", "Disease", [(2, 3)])]
    assert [(r.args, r.label) for r in first.relations] == [((0, 1), "GDA")] and first.candidates == [(0, 1)]
    assert second.text == "No abstract here. " and second.entities == [] and second.candidates == []
    assert report.counts["label_rows:0"] == 1 and report.relations == 1


@pytest.mark.parametrize("labels, field", [("pmid,geneId,diseaseId,label\n1,7157,D009369,yes\n", "label"),
                                           ("pmid,geneId,diseaseId,label\n9,7157,D009369,1\n", "pmid"),
                                           ("pmid,gene,disease,label\n", "header")])
def test_renet_label_errors(tmp_path, labels, field):
    with pytest.raises(DataError) as info:
        read_renet(_renet_fixture(tmp_path, labels))
    assert info.value.field == field and info.value.file.endswith("labels.csv")


# --- every document of every file round-trips, byte-stable ------------------------------------------------

def test_round_trip_and_byte_stable(shared_data, pubtator, eog, renet):
    rereads = {**{s: read_pubtator(shared_data / "cdr" / "raw" / f"{PUBTATOR[s]}.PubTator.txt") for s in SPLITS},
               **{f"eog_{s}": read_eog(shared_data / "cdr" / "processed" / f"{s}_filter.data", "cdr") for s in SPLITS},
               "eog_gda": read_eog(shared_data / "gda" / "processed" / "test.data", "gda"),
               "renet": read_renet(shared_data / "gda" / "raw" / "testing_data")}
    first = {**pubtator, **{f"eog_{k}": v for k, v in eog.items()}, "renet": renet}
    for name, (docs, _) in first.items():
        for doc, again in zip(docs, rereads[name][0], strict=True):
            line = doc.to_json()
            assert Document.from_json(line) == doc, (name, doc.doc_id)
            assert again.to_json() == line, (name, doc.doc_id)
