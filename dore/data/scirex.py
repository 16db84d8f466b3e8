"""SciREX reader: one `Document` per line of the official `{train,dev,test}.jsonl` (or `.jsonl.gz`).

Source format (docs/scirex_coref.md §1): `words` is the whole document; every span is a
word-level `[start, end)` into it. What a `Document` holds:

- **entities**: the salient clusters (`coref`), in the file's key order; `Entity.id` is the
  cluster name. Method sub-relations are merged into their parent exactly as the official
  scorer's `merge_method_subrelations` does: for each method m (file order) and each
  sub-method s != m, the mentions of s are appended to m; spans are then de-duplicated (first
  occurrence kept). Clusters without mentions (table-only entities) stay as entities with no
  mentions. `Entity.type` is the relation slot the name fills; a name in no relation takes the
  majority type of its mentions.
- **relations**: one per `n_ary_relations` entry, `args` in `SCIREX_TYPES` order, label
  `"relevant"`, `meta = {"score": <string>, "unmentioned": [slots whose entity has no mention]}`.
  No scorer reads the score; a numeric one (a third of train) is kept in its JSON spelling.
  Duplicates are kept (the scorers de-duplicate).
- **extra_mentions**: every `ner` span, typed, in file order: the gold NER the official span
  mapping walks, and the candidates for string-match coreference.
- `meta`: `sections` and the raw `method_subrelations`, so nothing of the source is lost.

Ignored on purpose: `coref_non_salient` (only in the train browser copy; no scorer reads it).
`read_non_salient_clusters` reads it on its own, for training the salience classifier
(`dore.coref.salience`); nothing at test time may read it.

`read_scirex_mentions`: the same documents as training data for the mention tagger and the
learned coreference of `dore.entities` (entity setting `scirex`): every NER span is a mention
with its NER type; the entities are the salient clusters, then the non-salient ones (where the
file has them: train only), then every NER span in no cluster as a singleton. Relations dropped.
"""

from __future__ import annotations

import bisect
import json
import os
from collections import Counter
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

from dore.data.model import DataError, Document, Entity, Mention, Relation, iter_json_objects
from dore.data.report import ReaderReport

#: Relation argument order, and the tie-break order of the majority type vote.
SCIREX_TYPES = ("Task", "Method", "Material", "Metric")
RELEVANT = "relevant"
REQUIRED_FIELDS = ("doc_id", "words", "sentences", "ner", "coref", "n_ary_relations", "method_subrelations")

Span = tuple[int, int]
_Fail = Callable[[str, str], DataError]


def read_scirex(path: str | os.PathLike) -> tuple[list[Document], ReaderReport]:
    """Read a SciREX jsonl file (gzip when the name ends in `.gz`).

    Returns the documents in file order and a report of counts and quirks. Structural errors
    (bad JSON, a missing field, a span out of range, a relation or sub-relation naming an
    unknown cluster, a repeated doc_id) raise `DataError` naming file, line, document and field.
    """
    path = Path(path)
    report = ReaderReport(file=str(path))
    docs: list[Document] = []
    seen: set[str] = set()
    for lineno, raw in iter_json_objects(path):
        doc = _document(raw, report, lambda msg, field, doc=None, lineno=lineno: DataError(
            msg, file=path, line=lineno, doc=doc, field=field))
        if doc.doc_id in seen:
            raise DataError("doc_id repeats an earlier line", file=path, line=lineno, doc=doc.doc_id, field="doc_id")
        seen.add(doc.doc_id)
        docs.append(doc.check(file=str(path)))
        report.add_document(doc)
    return docs, report


def read_non_salient_clusters(path: str | os.PathLike) -> dict[str, list[list[Span]]]:
    """doc_id -> the `coref_non_salient` clusters (spans in file order, empty clusters dropped).

    Only the train copy holds the field; a document without it raises, so a file without
    non-salient clusters (dev, test) can never pass for one whose non-salient clusters are known.
    """
    path = Path(path)
    out: dict[str, list[list[Span]]] = {}
    for lineno, raw in iter_json_objects(path):
        doc_id = raw.get("doc_id")
        clusters = raw.get("coref_non_salient")
        if not isinstance(clusters, dict):
            raise DataError("missing or not an object name -> spans (only SciREX train has it)", file=path,
                            line=lineno, doc=doc_id, field="coref_non_salient")
        n_words = len(raw.get("words") or ())
        err = partial(DataError, file=path, line=lineno, doc=doc_id)
        spans = [[_span(x, n_words, lambda msg, field: err(msg, field=field), f"coref_non_salient.{name}[{j}]")
                  for j, x in enumerate(cluster)] for name, cluster in clusters.items()]
        out[doc_id] = [c for c in spans if c]
    return out


def read_scirex_mentions(path: str | os.PathLike) -> tuple[list[Document], ReaderReport]:
    """SciREX documents as mention + coreference training data (see the module docstring).

    A cluster span without an NER type is left out (counted: `cluster_spans_not_in_ner_dropped`);
    a span already in an earlier cluster stays with the first (`cluster_spans_in_two_clusters`).
    """
    docs, report = read_scirex(path)
    non_salient = {raw.get("doc_id"): raw.get("coref_non_salient") or {} for _, raw in iter_json_objects(Path(path))}
    out = []
    for doc in docs:
        types: dict[Span, str] = {}
        for m in doc.extra_mentions:
            types.setdefault((m.start, m.end), m.type)
        by_span = {(m.start, m.end): m for m in doc.extra_mentions}
        clusters = [[(m.start, m.end) for m in e.mentions] for e in doc.entities]
        clusters += [[tuple(x) for x in c] for c in non_salient.get(doc.doc_id, {}).values()]
        taken: set[Span] = set()
        entities = []
        for cluster in clusters:
            kept = []
            for span in dict.fromkeys(cluster):
                if span not in types:
                    report.counts["cluster_spans_not_in_ner_dropped"] += 1
                elif span in taken:
                    report.counts["cluster_spans_in_two_clusters"] += 1
                else:
                    kept.append(span)
                    taken.add(span)
            if kept:
                entities.append(kept)
        entities += [[span] for span in types if span not in taken]
        report.counts["mention_entities"] += len(entities)
        out.append(doc.model_copy(update={"relations": [], "entities": [
            Entity(mentions=[by_span[s].model_copy(update={"type": types[s]}) for s in spans],
                   type=majority_type([types[s] for s in spans])) for spans in entities]}).check(file=str(path)))
    return out, report


def merge_method_subrelations(coref: dict[str, list[Span]], subrelations: Mapping[str, list]) -> list[tuple[str, str]]:
    """Append each sub-method's spans to its parent, in place, in file order (official semantics).

    Like the official code, a parent that is itself a sub-method of a later parent passes on
    what it has gathered so far. Returns the (parent, sub-method) pairs merged.
    """
    merged = []
    for parent, subs in subrelations.items():
        for _, sub in subs:
            if sub != parent:
                coref[parent] += coref[sub]
                merged.append((parent, sub))
    return merged


def majority_type(types: list[str | None]) -> str | None:
    """Most frequent type, ties broken by `SCIREX_TYPES` order; None when nothing is typed."""
    votes = Counter(t for t in types if t is not None)
    if not votes:
        return None
    return max(votes, key=lambda t: (votes[t], -SCIREX_TYPES.index(t)))


def _document(raw: object, report: ReaderReport, fail: Callable[..., DataError]) -> Document:
    if not isinstance(raw, dict):
        raise fail(f"expected a JSON object, got {type(raw).__name__}", None)
    doc_id = raw.get("doc_id")
    if not isinstance(doc_id, str) or not doc_id:
        raise fail("missing or not a string", "doc_id")
    err: _Fail = partial(fail, doc=doc_id)
    for name in REQUIRED_FIELDS:
        if name not in raw:
            raise err("missing field", name)

    words = raw["words"]
    if not isinstance(words, list) or not words or not all(isinstance(w, str) for w in words):
        raise err("expected a non-empty list of strings", "words")
    n_words = len(words)
    sentences = _sentences(raw["sentences"], n_words, err)
    starts = [s for s, _ in sentences]

    def mention(span: Span, mtype: str | None) -> Mention:
        s, e = span
        return Mention(start=s, end=e, text=" ".join(words[s:e]), type=mtype,
                       sent_id=bisect.bisect_right(starts, s) - 1)

    # NER: every typed span, in file order; the first type wins for a repeated span.
    if not isinstance(raw["ner"], list):
        raise err("expected a list of [start, end, type]", "ner")
    ner: list[tuple[Span, str]] = []
    ner_type: dict[Span, str] = {}
    for i, item in enumerate(raw["ner"]):
        span = _span(item, n_words, err, f"ner[{i}]")
        if len(item) != 3 or item[2] not in SCIREX_TYPES:
            raise err(f"expected [start, end, one of {SCIREX_TYPES}], got {item!r}", f"ner[{i}]")
        ner.append((span, item[2]))
        if ner_type.setdefault(span, item[2]) != item[2]:
            report.quirk("ner_span_with_two_types", doc_id)
        if span[1] > sentences[bisect.bisect_right(starts, span[0]) - 1][1]:
            report.quirk("ner_span_crosses_sentence", doc_id)

    coref_raw = raw["coref"]
    if not isinstance(coref_raw, dict):
        raise err("expected an object name -> spans", "coref")
    coref: dict[str, list[Span]] = {}
    for name, spans in coref_raw.items():
        if not isinstance(spans, list):
            raise err("expected a list of spans", f"coref.{name}")
        coref[name] = [_span(x, n_words, err, f"coref.{name}[{j}]") for j, x in enumerate(spans)]
    report.counts["empty_clusters_in_source"] += sum(1 for spans in coref.values() if not spans)

    subrelations = raw["method_subrelations"]
    _check_subrelations(subrelations, coref, err)
    merged = merge_method_subrelations(coref, subrelations)
    report.counts["subrelations_merged"] += len(merged)

    relations_raw = raw["n_ary_relations"]
    if not isinstance(relations_raw, list):
        raise err("expected a list of relations", "n_ary_relations")
    slot_of: dict[str, str] = {}
    for i, rel in enumerate(relations_raw):
        if not isinstance(rel, dict):
            raise err("expected an object", f"n_ary_relations[{i}]")
        for slot in (*SCIREX_TYPES, "score"):
            if slot not in rel:
                raise err("missing field", f"n_ary_relations[{i}].{slot}")
        for slot in SCIREX_TYPES:
            name = rel[slot]
            if not isinstance(name, str) or name not in coref:
                raise err(f"names {name!r}, which is not a coref key", f"n_ary_relations[{i}].{slot}")
            if slot_of.setdefault(name, slot) != slot:
                report.quirk("entity_in_two_slots", doc_id)  # the first slot (relation order) wins

    index = {name: i for i, name in enumerate(coref)}
    entities = []
    for name, spans in coref.items():
        mentions = [mention(span, ner_type.get(span)) for span in dict.fromkeys(spans)]
        if any(m.type is None for m in mentions):
            report.quirk("cluster_span_not_in_ner", doc_id)
        if not mentions:
            report.counts["empty_clusters"] += 1
        if name not in slot_of:
            report.counts["clusters_outside_relations"] += 1
        entity_type = slot_of.get(name) or majority_type([m.type for m in mentions])
        report.counts["untyped_clusters"] += entity_type is None
        entities.append(Entity(id=name, mentions=mentions, type=entity_type))

    relations = []
    seen_args: set[tuple[int, ...]] = set()
    for rel in relations_raw:
        args = tuple(index[rel[slot]] for slot in SCIREX_TYPES)
        if args in seen_args:
            report.quirk("duplicate_relation", doc_id)
        seen_args.add(args)
        unmentioned = [slot for slot, a in zip(SCIREX_TYPES, args) if not entities[a].mentions]
        source_unmentioned = any(not coref_raw[rel[slot]] for slot in SCIREX_TYPES)
        report.counts["relations_all_mentioned"] += not unmentioned
        report.counts["relations_all_mentioned_in_source"] += not source_unmentioned
        score = rel["score"]
        if not isinstance(score, str):
            report.quirk("score_not_a_string", doc_id)  # e.g. 66.1; kept in its JSON spelling
            score = json.dumps(score)
        relations.append(Relation(args=args, label=RELEVANT, meta={"score": score, "unmentioned": unmentioned}))

    report.counts["ner_spans"] += len(ner)
    if "coref_non_salient" in raw:
        report.quirk("coref_non_salient_ignored", doc_id)
    meta = {"method_subrelations": subrelations}
    if "sections" in raw:
        meta["sections"] = raw["sections"]
    return Document(doc_id=doc_id, tokens=words, sentences=sentences, entities=entities, relations=relations,
                    extra_mentions=[mention(span, t) for span, t in ner], meta=meta)


def _span(value: object, n_words: int, err: _Fail, field: str) -> Span:
    if not (isinstance(value, list) and len(value) >= 2 and type(value[0]) is int and type(value[1]) is int):
        raise err(f"expected [start, end, ...], got {value!r}", field)  # `type() is int` also rejects bools
    s, e = value[0], value[1]
    if not 0 <= s < e <= n_words:
        raise err(f"span [{s}, {e}) outside the {n_words} words", field)
    return s, e


def _sentences(value: object, n_words: int, err: _Fail) -> list[Span]:
    """Sentences must tile the words (contiguous from 0 to the end), so every span has a sentence."""
    if not isinstance(value, list) or not value:
        raise err("expected a non-empty list of spans", "sentences")
    sentences = [_span(x, n_words, err, f"sentences[{i}]") for i, x in enumerate(value)]
    expected = 0
    for i, (s, e) in enumerate(sentences):
        if s != expected:
            raise err(f"sentence starts at {s}, expected {expected} (sentences must tile the words)", f"sentences[{i}]")
        expected = e
    if expected != n_words:
        raise err(f"sentences end at {expected}, the document has {n_words} words", "sentences")
    return sentences


def _check_subrelations(value: object, coref: Mapping[str, list], err: _Fail) -> None:
    if not isinstance(value, dict):
        raise err("expected an object method -> [[char span], sub-method]", "method_subrelations")
    for parent, subs in value.items():
        field = f"method_subrelations.{parent}"
        if parent not in coref:
            raise err(f"parent {parent!r} is not a coref key", field)
        if not isinstance(subs, list):
            raise err("expected a list of [[char span], sub-method]", field)
        for j, entry in enumerate(subs):
            if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], str)):
                raise err(f"expected [[char span], sub-method], got {entry!r}", f"{field}[{j}]")
            if entry[1] not in coref:
                raise err(f"sub-method {entry[1]!r} is not a coref key", f"{field}[{j}]")
