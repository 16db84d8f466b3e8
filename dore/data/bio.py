"""CDR and GDA readers: BioCreative PubTator (CDR), RENET raw (GDA) and the ATLOP/EoG `.data` format (both).

The two character-offset formats (PubTator, RENET) share one path from text to words:
`text = title + " " + abstract`; words are the matches of `\\w+|[^\\w\\s]`, split again at every
mention boundary so each mention covers whole words; sentences are the title, then the abstract
cut after a word `.`, `?` or `!` followed by whitespace (a deliberately simple rule: "e.g. x" also
cuts), never inside a mention. Concepts (MeSH / NCBI Gene ids) are the entities, in order of first
mention line; `candidates` are every (chemical|gene, disease) pair.

The EoG format is already tokenised and lists the scored pairs itself (see `read_eog`).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import accumulate, pairwise
from pathlib import Path
from typing import Literal

from dore.data.model import DataError, Document, Entity, Mention, Relation
from dore.data.report import ReaderReport

PathLike = str | os.PathLike
Span = tuple[int, int]

WORD = re.compile(r"\w+|[^\w\s]")
SENTENCE_END = frozenset(".?!")
UNNORMALISED = "-1"


# --- characters -> words (PubTator and RENET) ------------------------------------------------

def tokenize(text: str, char_spans: Sequence[Span] = ()) -> tuple[list[Span], list[Span]]:
    """Words of `text` as character spans [start, end), cut again at every boundary of `char_spans`,
    and each char span as the word span [first, last) of the words it overlaps (empty if none)."""
    cuts = sorted({b for span in char_spans for b in span})
    words = []
    for match in WORD.finditer(text):
        start, end = match.span()
        for cut in cuts[bisect_right(cuts, start):bisect_left(cuts, end)]:
            words.append((start, cut))
            start = cut
        words.append((start, end))
    starts, ends = [s for s, _ in words], [e for _, e in words]
    mapped = []
    for char_start, char_end in char_spans:
        first = bisect_right(ends, char_start)  # first word ending after char_start
        mapped.append((first, max(first, bisect_left(starts, char_end))))
    return words, mapped


def split_sentences(text: str, spans: list[Span], title_end: int,
                    mentions: Iterable[Span] = ()) -> list[Span]:
    """Word spans of the sentences: the words before `title_end` (the title), then the abstract cut
    after a `.`, `?` or `!` word followed by whitespace, except where the cut would split a mention."""
    n = len(spans)
    in_title = bisect_left([start for start, _ in spans], title_end)
    inside_mention = {w for first, last in mentions for w in range(first, last - 1)}
    cuts = {in_title} | {
        i + 1 for i in range(in_title, n - 1)
        if text[spans[i][0]:spans[i][1]] in SENTENCE_END and text[spans[i][1]:spans[i][1] + 1].isspace()
        and i not in inside_mention}
    return list(pairwise([0, *sorted(c for c in cuts if 0 < c < n), n]))


@dataclass(frozen=True)
class _Annotation:
    """One mention line of PubTator / RENET: character offsets into title + " " + abstract."""

    char_start: int
    char_end: int
    text: str
    type: str
    ids: tuple[str, ...]
    line: int


def _char_document(pmid: str, title: str, abstract: str, annotations: list[_Annotation],
                   pairs: list[tuple[str, str]], *, label: str, head_type: str, tail_type: str,
                   file: PathLike, report: ReaderReport) -> Document:
    """Build one PubTator/RENET document. `pairs` are the positive (head id, tail id) concept pairs."""
    text = f"{title} {abstract}"
    for ann in annotations:
        if not 0 <= ann.char_start < ann.char_end <= len(text):
            raise DataError(f"character span [{ann.char_start}, {ann.char_end}) outside the {len(text)}-character text",
                            file=file, line=ann.line, doc=pmid, field="start/end")
        if text[ann.char_start:ann.char_end] != ann.text:
            report.quirk("mention text differs from the text at its offsets (offsets and text kept)", pmid)
    spans, word_of = tokenize(text, [(ann.char_start, ann.char_end) for ann in annotations])
    for ann, (first, last) in zip(annotations, word_of):
        if first == last:
            raise DataError(f"mention {ann.text!r} covers no word", file=file, line=ann.line, doc=pmid,
                            field="start/end")
    sentences = split_sentences(text, spans, len(title), word_of)
    sentence_starts = [start for start, _ in sentences]

    entities: list[Entity] = []
    index: dict[str, int] = {}
    unnormalised: list[Mention] = []
    for ann, (first, last) in zip(annotations, word_of):
        mention = Mention(start=first, end=last, text=ann.text, sent_id=bisect_right(sentence_starts, first) - 1,
                          type=ann.type, char_start=ann.char_start, char_end=ann.char_end)
        concepts = [c for c in ann.ids if c != UNNORMALISED]
        if not concepts:
            report.quirk("unnormalised mention (id -1): in extra_mentions, no entity", pmid)
            unnormalised.append(mention)
            continue
        if len(ann.ids) > 1:
            report.quirk("composite mention: joins each of its concepts", pmid)
        if len(concepts) < len(ann.ids):
            report.quirk("composite mention with an unnormalised part (-1 part joins no entity)", pmid)
        for concept in concepts:
            if concept not in index:
                index[concept] = len(entities)
                entities.append(Entity(mentions=[], type=ann.type, id=concept))
            entity = entities[index[concept]]
            if entity.type != ann.type:
                report.quirk("concept mentioned with two types (first type kept)", pmid)
            entity.mentions.append(mention)

    candidates = [(h, t) for h, head in enumerate(entities) if head.type == head_type
                  for t, tail in enumerate(entities) if tail.type == tail_type]
    relations = []
    for head_id, tail_id in pairs:
        if head_id not in index or tail_id not in index:
            report.quirk(f"{label} relation on a concept with no mention (dropped)", pmid)
            continue
        args = (index[head_id], index[tail_id])
        if args not in candidates:
            report.quirk(f"{label} relation outside the {head_type}-{tail_type} candidates (kept)", pmid)
        relations.append(Relation(args=args, label=label))

    doc = Document(doc_id=pmid, title=title, text=text, tokens=[text[s:e] for s, e in spans], sentences=sentences,
                   entities=entities, relations=relations, candidates=candidates, extra_mentions=unnormalised,
                   meta={"pmid": pmid})
    duplicates = len(doc.relations) - len(doc.unique_relations())
    if duplicates:
        report.quirk(f"duplicate {label} relation (kept)", pmid, duplicates)
    return doc


def _int(value: str, *, file: PathLike, line: int, doc: str, field: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DataError(f"not an integer: {value!r}", file=file, line=line, doc=doc, field=field) from None


def _annotation(cols: list[str], *, file: PathLike, line: int, report: ReaderReport) -> _Annotation:
    """PMID, start, end, text, type, ids ('|'-joined) [, extra columns] -> _Annotation."""
    pmid, start, end, text, type_, ids = cols[:6]
    if not ids or "" in ids.split("|"):
        raise DataError(f"empty concept id in {ids!r}", file=file, line=line, doc=pmid, field="id")
    report.counts[f"mention_lines:{type_}"] += 1
    return _Annotation(char_start=_int(start, file=file, line=line, doc=pmid, field="start"),
                       char_end=_int(end, file=file, line=line, doc=pmid, field="end"),
                       text=text, type=type_, ids=tuple(ids.split("|")), line=line)


def _append_document(docs: list[Document], doc: Document, report: ReaderReport, file: PathLike,
                     seen: set[str]) -> None:
    """Check `doc`, count it, and count a PMID seen before as a quirk (both copies are kept)."""
    if doc.doc_id in seen:
        report.quirk("duplicate PMID (both documents kept)", doc.doc_id)
    seen.add(doc.doc_id)
    report.add_document(doc.check(file=str(file)))
    docs.append(doc)


# --- CDR PubTator ---------------------------------------------------------------------------------

_TITLE_OR_ABSTRACT = re.compile(r"(\d+)\|([ta])\|(.*)")


@dataclass
class _PubtatorBlock:
    pmid: str
    title: str
    line: int
    abstract: str | None = None
    annotations: list[_Annotation] = dataclasses.field(default_factory=list)
    pairs: list[tuple[str, str]] = dataclasses.field(default_factory=list)


def read_pubtator(path: PathLike) -> tuple[list[Document], ReaderReport]:
    """Read a CDR PubTator file: `PMID|t|title`, `PMID|a|abstract`, mention and `CID` lines, a blank line after each.

    Entities are MeSH concepts (Entity.id); mentions keep their character offsets and text.
    Policies, each counted in the report: a composite mention (`|`-joined ids) belongs to each of its
    concepts; a mention with id `-1` joins no entity and is kept in `Document.extra_mentions`; the extra
    columns of composite mentions (the parts' surface texts) are not kept; a mention whose text differs
    from the text at its offsets keeps both; a CID relation naming a concept with no mention is dropped
    (no entity to point to); duplicate relations are kept. `report.counts["mention_lines:<type>"]`
    counts mention lines as the corpus README does.
    Relations are `CID` (chemical, disease); candidates are every (Chemical, Disease) pair.
    Structural errors (bad columns, non-integer offsets, offsets outside the text, lines out of place)
    raise DataError naming file, line, PMID and field.
    """
    report = ReaderReport(file=str(path))
    docs: list[Document] = []
    seen: set[str] = set()
    block: _PubtatorBlock | None = None

    def finish() -> None:
        if block.abstract is None:
            raise DataError("document has a title line but no abstract line", file=path, line=block.line,
                            doc=block.pmid, field="abstract")
        doc = _char_document(block.pmid, block.title, block.abstract, block.annotations, block.pairs, label="CID",
                             head_type="Chemical", tail_type="Disease", file=path, report=report)
        _append_document(docs, doc, report, path, seen)

    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                if block is not None:
                    finish()
                block = None
                continue
            header = _TITLE_OR_ABSTRACT.fullmatch(line)
            if header and header[2] == "t":
                if block is not None:
                    raise DataError("title line inside a document (blank line missing?)", file=path, line=lineno,
                                    doc=block.pmid, field="title")
                block = _PubtatorBlock(pmid=header[1], title=header[3], line=lineno)
                continue
            pmid = header[1] if header else line.split("\t", 1)[0]
            if block is None or pmid != block.pmid:
                raise DataError("line does not belong to the document it follows", file=path, line=lineno,
                                doc=pmid, field="PMID")
            if header:
                if block.abstract is not None:
                    raise DataError("second abstract line", file=path, line=lineno, doc=pmid, field="abstract")
                block.abstract = header[3]
                continue
            cols = line.split("\t")
            if len(cols) == 4 and cols[1] == "CID":
                block.pairs.append((cols[2], cols[3]))
            elif len(cols) >= 6:
                if any(cols[6:]):
                    report.quirk("composite mention's part-text columns (not kept)", pmid)
                elif len(cols) > 6:
                    report.quirk("empty trailing column (ignored)", pmid)
                block.annotations.append(_annotation(cols, file=path, line=lineno, report=report))
            else:
                raise DataError(f"expected a mention line (6+ tab-separated columns) or a CID line (4), "
                                f"got {len(cols)}", file=path, line=lineno, doc=pmid, field="columns")
    if block is not None:
        finish()
    return docs, report


# --- GDA raw (RENET) ------------------------------------------------------------------------------

def _renet_abstracts(path: Path) -> Iterator[tuple[int, str, str, str]]:
    """(line, PMID, title, abstract) from blocks of 4 lines: PMID, title, abstract (may be empty), blank."""
    lines = path.read_text(encoding="utf-8").split("\n")
    for k in range(0, len(lines), 4):
        group = lines[k:k + 4]
        if not any(group):
            continue
        if len(group) < 3 or (len(group) == 4 and group[3]):
            raise DataError("expected PMID, title, abstract and a blank line", file=path, line=k + 1,
                            doc=group[0], field="block")
        if not group[0].isdigit():
            raise DataError(f"not a PMID: {group[0][:40]!r}", file=path, line=k + 1, doc=group[0], field="PMID")
        yield k + 1, group[0], group[1], group[2]


def read_renet(folder: PathLike) -> tuple[list[Document], ReaderReport]:
    """Read GDA in the RENET release layout: `abstracts.txt`, `anns.txt` and `labels.csv` in `folder`.

    Entities are NCBI Gene / MeSH concepts (Entity.id), relations `GDA` (gene, disease) for the label-1
    rows of labels.csv (other rows are the implicit negatives; label-0 rows are counted, not kept),
    candidates every (Gene, Disease) pair. Known quirk: 4 of the 17,928 test mentions' text differs
    (in case only) from the text at their offsets: the offsets and the annotated text are both kept
    and the mismatch counted. Same tokenisation, sentences and policies as `read_pubtator`.
    """
    folder = Path(folder)
    report = ReaderReport(file=str(folder))
    texts: dict[str, tuple[str, str]] = {}
    for lineno, pmid, title, abstract in _renet_abstracts(folder / "abstracts.txt"):
        if pmid in texts:
            raise DataError("PMID appears twice", file=folder / "abstracts.txt", line=lineno, doc=pmid, field="PMID")
        texts[pmid] = (title, abstract)

    annotations: dict[str, list[_Annotation]] = defaultdict(list)
    anns_path = folder / "anns.txt"
    with open(anns_path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            cols = line.rstrip("\r\n").split("\t")
            if len(cols) != 6:
                raise DataError(f"expected 6 tab-separated columns, got {len(cols)}", file=anns_path, line=lineno,
                                doc=cols[0], field="columns")
            if cols[0] not in texts:
                raise DataError("PMID not in abstracts.txt", file=anns_path, line=lineno, doc=cols[0], field="PMID")
            annotations[cols[0]].append(_annotation(cols, file=anns_path, line=lineno, report=report))

    pairs: dict[str, list[tuple[str, str]]] = defaultdict(list)
    labels_path = folder / "labels.csv"
    with open(labels_path, encoding="utf-8", newline="") as fh:
        rows = csv.DictReader(fh)
        missing = {"pmid", "geneId", "diseaseId", "label"} - set(rows.fieldnames or ())
        if missing:
            raise DataError(f"missing columns {sorted(missing)}", file=labels_path, line=1, field="header")
        for row in rows:
            pmid = row["pmid"]
            if pmid not in texts:
                raise DataError("PMID not in abstracts.txt", file=labels_path, line=rows.line_num, doc=pmid,
                                field="pmid")
            if row["label"] not in ("0", "1"):
                raise DataError(f"label must be 0 or 1, got {row['label']!r}", file=labels_path, line=rows.line_num,
                                doc=pmid, field="label")
            report.counts[f"label_rows:{row['label']}"] += 1
            if row["label"] == "1":
                pairs[pmid].append((row["geneId"], row["diseaseId"]))

    docs: list[Document] = []
    seen: set[str] = set()
    for pmid, (title, abstract) in texts.items():
        doc = _char_document(pmid, title, abstract, annotations[pmid], pairs[pmid], label="GDA", head_type="Gene",
                             tail_type="Disease", file=anns_path, report=report)
        _append_document(docs, doc, report, folder, seen)
    return docs, report


# --- ATLOP / EoG .data ----------------------------------------------------------------------------

_PAIR_FIELDS = ("label", "direction", "cross", "span1", "span2",
                "id1", "names1", "type1", "starts1", "ends1", "sentids1",
                "id2", "names2", "type2", "starts2", "ends2", "sentids2")
_EOG_LABELS = {"cdr": "CID", "gda": "GDA"}
NEGATIVE, FILTERED = "1:NR:2", "not_include"


def read_eog(path: PathLike, dataset: Literal["cdr", "gda"]) -> tuple[list[Document], ReaderReport]:
    """Read an ATLOP/EoG `.data` file: `PMID \\t |-separated tokenised sentences \\t 17-field pair blocks...`.

    Entities are built from the pair blocks' id / names / type / starts / ends / sentids (one entity per
    id, in order of first appearance, mentions de-duplicated on their span; a mention's text is its names
    entry). Every listed pair is a candidate `(arg1, arg2)` as stored (chemical/gene first) except
    `not_include` pairs, which go to `excluded`; `1:CID:2` / `1:GDA:2` pairs are relations labelled
    CID / GDA. `report.counts` holds `pairs:<label>` and `direction:<L2R|R2L>` (R2L only changes
    ATLOP's head/tail, not this metric). A wrong field count, bad integers or offsets outside the
    tokens or their sentence raise DataError naming file, line, PMID and field.
    """
    if dataset not in _EOG_LABELS:
        raise ValueError(f"dataset must be one of {sorted(_EOG_LABELS)}, got {dataset!r}")
    label, positive = _EOG_LABELS[dataset], f"1:{_EOG_LABELS[dataset]}:2"
    report = ReaderReport(file=str(path))
    docs: list[Document] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if line.strip():
                _append_document(docs, _eog_document(line, lineno, path, label, positive, report), report, path, seen)
    return docs, report


def _eog_document(line: str, lineno: int, file: PathLike, label: str, positive: str,
                  report: ReaderReport) -> Document:
    cols = line.split("\t")
    pmid = cols[0]
    if len(cols) < 2 or (len(cols) - 2) % len(_PAIR_FIELDS):
        raise DataError(f"expected PMID, sentences and {len(_PAIR_FIELDS)}-field pair blocks, got {len(cols)} fields",
                        file=file, line=lineno, doc=pmid, field="pair blocks")
    sents = [sent.split(" ") for sent in cols[1].split("|")]
    if any("" in sent for sent in sents):
        raise DataError("empty token (double space or empty sentence)", file=file, line=lineno, doc=pmid,
                        field="sentences")
    sentences = list(pairwise(accumulate((len(s) for s in sents), initial=0)))
    tokens = [tok for sent in sents for tok in sent]

    entities: list[Entity] = []
    index: dict[str, int] = {}
    spans_of: dict[str, set[Span]] = {}
    candidates, excluded, relations = [], [], []
    for k, start in enumerate(range(2, len(cols), len(_PAIR_FIELDS))):
        block = dict(zip(_PAIR_FIELDS, cols[start:start + len(_PAIR_FIELDS)]))
        fail = partial(_pair_error, file=file, line=lineno, doc=pmid, pair=k)
        if block["direction"] not in ("L2R", "R2L"):
            raise fail(f"direction must be L2R or R2L, got {block['direction']!r}", "direction")
        args = []
        for arg in ("1", "2"):
            eid, etype = block["id" + arg], block["type" + arg]
            if eid not in index:
                index[eid], spans_of[eid] = len(entities), set()
                entities.append(Entity(mentions=[], type=etype, id=eid))
            entity = entities[index[eid]]
            if entity.type != etype:
                raise fail(f"entity {eid} has type {entity.type!r} in an earlier pair", "type" + arg)
            mentions = _eog_mentions(block, arg, tokens, sentences, fail)
            repeats = len(mentions) - len({(m.start, m.end) for m in mentions})
            if repeats:
                report.quirk("repeated mention within a pair block (de-duplicated)", pmid, repeats)
            for mention in mentions:
                if (mention.start, mention.end) not in spans_of[eid]:
                    spans_of[eid].add((mention.start, mention.end))
                    if mention.text != " ".join(tokens[mention.start:mention.end]):
                        report.quirk("mention name differs from its tokens (part of a token; name kept)", pmid)
                    entity.mentions.append(mention)
            args.append(index[eid])

        pair = tuple(args)
        report.counts[f"pairs:{block['label']}"] += 1
        report.counts[f"direction:{block['direction']}"] += 1
        if block["label"] == FILTERED:
            excluded.append(pair)
        elif block["label"] in (positive, NEGATIVE):
            candidates.append(pair)
            if block["label"] == positive:
                relations.append(Relation(args=pair, label=label))
        else:
            raise fail(f"label must be {positive}, {NEGATIVE} or {FILTERED}, got {block['label']!r}", "label")

    return Document(doc_id=pmid, tokens=tokens, sentences=sentences, entities=entities, relations=relations,
                    candidates=candidates, excluded=excluded, meta={"pmid": pmid})


def _pair_error(message: str, name: str, *, file: PathLike, line: int, doc: str, pair: int) -> DataError:
    return DataError(message, file=file, line=line, doc=doc, field=f"pairs[{pair}].{name}")


def _eog_mentions(block: dict[str, str], arg: str, tokens: list[str], sentences: list[Span],
                  fail: Callable[[str, str], DataError]) -> list[Mention]:
    """The mentions of argument `arg` ("1" or "2") of one pair block, validated against the tokens."""
    names = block["names" + arg].split("|")
    columns = {}
    for name in ("starts", "ends", "sentids"):
        try:
            columns[name] = [int(v) for v in block[name + arg].split(":")]
        except ValueError:
            raise fail(f"not ':'-separated integers: {block[name + arg]!r}", name + arg) from None
    if not len(names) == len(columns["starts"]) == len(columns["ends"]) == len(columns["sentids"]):
        raise fail(f"names, starts, ends and sentids differ in length ({len(names)}, {len(columns['starts'])}, "
                   f"{len(columns['ends'])}, {len(columns['sentids'])})", "names" + arg)
    mentions = []
    for text, first, last, sent_id in zip(names, columns["starts"], columns["ends"], columns["sentids"]):
        if not 0 <= first < last <= len(tokens):
            raise fail(f"mention [{first}, {last}) outside the {len(tokens)} tokens", "starts" + arg)
        if not (0 <= sent_id < len(sentences) and sentences[sent_id][0] <= first and last <= sentences[sent_id][1]):
            raise fail(f"mention [{first}, {last}) is not inside sentence {sent_id}", "sentids" + arg)
        mentions.append(Mention(start=first, end=last, text=text, sent_id=sent_id, type=block["type" + arg]))
    return mentions
