"""Importers for neural coreference outputs produced elsewhere (setting `end_to_end`).

Neither model runs in this environment (no weights offline; `fastcoref` does not install beside
transformers 5), so their outputs are made where they can run and imported here, joined to the
SciREX documents by doc_id (never by position): a document missing from the file, a line for an
unknown document or two lines for one document raise `DataError`.

**`fast-coref-log`**: the evaluation log of shtoshni/fast-coref (`full_coref_evaluation` writes
`<model_dir>/<dataset>/<split>.log.jsonl`). Per line: `doc_key` (the SciREX doc_id, optionally
with a `_<part>` suffix such as `_0`), `predicted_clusters` (inclusive subtoken spans `[s, e]`)
and `orig_subtoken_map` or `subtoken_map` (subtoken -> word; the first is preferred, as fast-coref's
own scorer does). A span becomes the words `[map[s], map[e] + 1)`. The log's `clusters` are the
*gold* clusters of its input, so they are never read. The map must cover exactly the document's
words.

**`fastcoref`**: the JSONL that `scripts/run_fastcoref.py` writes from the `fastcoref` package
(F-coref / LingMess), one line per document:

    {"doc_key": doc_id, "tokens": [...words...], "clusters": [[[s, e], ...], ...]}
    {"doc_key": doc_id, "text": "...",           "clusters": [[[s, e], ...], ...]}

`clusters` is `CorefResult.get_clusters(as_strings=False)`: end-exclusive offsets into `tokens`
(pre-tokenised input, where the package gives word i the offsets (i, i+1), so spans are already
word spans; `tokens` must equal the SciREX words) or character offsets into `text` (raw text, whose
words must be the SciREX words separated by whitespace, e.g. `" ".join(words)`). A character span
becomes the words it overlaps, so a span that cuts a word takes the whole word. The package's own
`output_file` has no doc_key and cannot be joined: it is refused. The model the script recorded
(`<file>.meta.json`: weights sha256, package versions) goes into the provenance.

Both: after mapping, a span already in an earlier cluster (two subtoken or character spans that
cover the same words) is dropped from the later one, and counted. Mentions are the clusters'
spans; each gets the type of the document's NER span it matches (exactly, else the first with
IoU > 0.5), and clusters are typed by majority vote (`dore.coref.result.typed_doc`). On the
SciREX files that NER is gold: the provenance says so.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from dore.coref.result import CorefDoc, Setting, Span, typed_doc
from dore.data.model import DataError, Document, iter_json_objects

TYPE_SOURCE = "document NER (Document.extra_mentions; gold in the SciREX files)"
_PART_SUFFIX = re.compile(r"_\d+$")
Fail = Callable[[str, str], DataError]  # (message, field) -> the error naming file, line and document


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class _Importer(ABC):
    name: str
    setting: Setting = "end_to_end"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.name}: no file to import at {self.path}")
        self.counts: Counter = Counter()

    def parameters(self) -> dict:
        return {"import_file": self.path.name, "import_sha256": file_sha256(self.path), "type_source": TYPE_SOURCE}

    def report(self) -> dict:
        return dict(sorted(self.counts.items()))

    def resolve(self, docs: Sequence[Document]) -> list[CorefDoc]:
        self.counts = Counter(duplicate_spans_dropped=0)
        by_id = {d.doc_id: d for d in docs}
        seen: set[str] = set()
        out = []
        for lineno, raw in _lines(self.path):
            doc_id = self._doc_id(raw, by_id, lineno)
            if doc_id in seen:
                raise DataError("a second line for this document", file=self.path, line=lineno, doc=doc_id,
                                field="doc_key")
            seen.add(doc_id)
            doc = by_id[doc_id]
            clusters = self._word_clusters(raw, doc, lambda msg, field: DataError(
                msg, file=self.path, line=lineno, doc=doc_id, field=field))
            out.append(typed_doc(doc, self._first_occurrence(clusters), with_mentions=True))
        missing = sorted(set(by_id) - seen)
        if missing:
            raise DataError(f"{len(missing)} document(s) missing from the file", file=self.path, doc=missing[0])
        return out

    def _doc_id(self, raw: dict, by_id: dict[str, Document], lineno: int) -> str:
        key = raw.get("doc_key")
        if not isinstance(key, str):
            raise DataError("missing or not a string (the document's SciREX doc_id)", file=self.path, line=lineno,
                            field="doc_key")
        for doc_id in (key, _PART_SUFFIX.sub("", key)):
            if doc_id in by_id:
                return doc_id
        raise DataError("names no input document", file=self.path, line=lineno, doc=key, field="doc_key")

    @abstractmethod
    def _word_clusters(self, raw: dict, doc: Document, fail: Fail) -> list[list[Span]]:
        """One line's clusters as word spans of `doc`, in the file's order."""

    def _first_occurrence(self, clusters: list[list[Span]]) -> list[list[Span]]:
        """Each span only in the first cluster (file order) that has it; the rest counted."""
        seen: set[Span] = set()
        out = []
        for cluster in clusters:
            distinct = list(dict.fromkeys(cluster))
            kept = [span for span in distinct if span not in seen]
            self.counts["duplicate_spans_dropped"] += len(distinct) - len(kept)
            seen.update(kept)
            out.append(kept)
        return out


class FastCorefLog(_Importer):
    """shtoshni/fast-coref `<split>.log.jsonl` -> SciREX word clusters."""

    name = "fast-coref-log"

    def _word_clusters(self, raw: dict, doc: Document, fail: Fail) -> list[list[Span]]:
        field = "orig_subtoken_map" if "orig_subtoken_map" in raw else "subtoken_map"
        subtoken_map = raw.get(field)
        if not isinstance(subtoken_map, list) or not subtoken_map or not all(type(i) is int for i in subtoken_map):
            raise fail("expected a non-empty list of word indices (orig_subtoken_map or subtoken_map)", field)
        if max(subtoken_map) + 1 != len(doc.tokens) or min(subtoken_map) < 0:
            raise fail(f"maps onto words {min(subtoken_map)}..{max(subtoken_map)}, the document has "
                       f"{len(doc.tokens)} words", field)
        if "predicted_clusters" not in raw:
            raise fail("missing (the log's `clusters` are the gold clusters and are never imported)",
                       "predicted_clusters")
        clusters = []
        for i, cluster in enumerate(_clusters(raw["predicted_clusters"], fail, "predicted_clusters")):
            words = []
            for j, (s, e) in enumerate(cluster):
                if not 0 <= s <= e < len(subtoken_map):
                    raise fail(f"inclusive subtoken span [{s}, {e}] outside the {len(subtoken_map)} subtokens",
                               f"predicted_clusters[{i}][{j}]")
                words.append((subtoken_map[s], subtoken_map[e] + 1))
            clusters.append(words)
        return clusters


class FastcorefJsonl(_Importer):
    """The JSONL of `scripts/run_fastcoref.py` (package `fastcoref`) -> SciREX word clusters."""

    name = "fastcoref"

    def parameters(self) -> dict:
        """Also the model the script recorded beside its output (`<file>.meta.json`), when there."""
        sidecar = self.path.with_name(self.path.name + ".meta.json")
        model = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.is_file() else None
        return {**super().parameters(), "model": model}

    def _word_clusters(self, raw: dict, doc: Document, fail: Fail) -> list[list[Span]]:
        clusters = _clusters(raw.get("clusters"), fail, "clusters")
        if "tokens" in raw:
            if raw["tokens"] != doc.tokens:
                raise fail(f"differs from the document's {len(doc.tokens)} SciREX words", "tokens")
            for i, cluster in enumerate(clusters):
                for j, (s, e) in enumerate(cluster):
                    if not 0 <= s < e <= len(doc.tokens):
                        raise fail(f"token span [{s}, {e}) outside the {len(doc.tokens)} tokens",
                                   f"clusters[{i}][{j}]")
            return clusters
        if not isinstance(raw.get("text"), str):
            raise fail("a line needs `tokens` (the SciREX words) or `text`", "text")
        try:
            offsets = word_char_offsets(raw["text"], doc.tokens)
        except ValueError as exc:
            raise fail(str(exc), "text") from None
        out = []
        for i, cluster in enumerate(clusters):
            try:
                out.append(char_spans_to_words(cluster, offsets))
            except ValueError as exc:
                raise fail(str(exc), f"clusters[{i}]") from None
        return out


def word_char_offsets(text: str, words: Sequence[str]) -> list[Span]:
    """Character `[start, end)` of each word in `text`, which must be the words in order with only
    whitespace around them (e.g. `" ".join(words)`); ValueError otherwise."""
    offsets, pos = [], 0
    for i, word in enumerate(words):
        start = pos
        while start < len(text) and text[start].isspace():
            start += 1
        if text[start:start + len(word)] != word:
            raise ValueError(f"word {i} {word!r} is not at character {start} "
                             "(the text must be the words joined by whitespace)")
        offsets.append((start, start + len(word)))
        pos = start + len(word)
    if text[pos:].strip():
        raise ValueError(f"the text goes on after the last word, at character {pos}")
    return offsets


def char_spans_to_words(spans: Sequence[Span], offsets: Sequence[Span]) -> list[Span]:
    """Each character span `[s, e)` as the word span `[start, end)` of the words it overlaps (a cut
    word is taken whole); ValueError for a span that covers no word."""
    ends = [end for _, end in offsets]
    starts = [start for start, _ in offsets]
    out = []
    for s, e in spans:
        first = bisect.bisect_right(ends, s)  # the first word that ends after s
        last = bisect.bisect_left(starts, e)  # one past the last word that starts before e
        if not s < e or first >= last:
            raise ValueError(f"character span [{s}, {e}) covers no word")
        out.append((first, last))
    return out


_lines = iter_json_objects  # (line number, object) per line; DataError names the line


def _clusters(value: object, fail: Fail, field: str) -> list[list[Span]]:
    """A list of clusters, each a list of `[start, end]` integer pairs."""
    if not isinstance(value, list):
        raise fail("expected a list of clusters of [start, end] spans", field)
    out = []
    for i, cluster in enumerate(value):
        if not isinstance(cluster, list):
            raise fail(f"expected a list of [start, end] spans, got {cluster!r}", f"{field}[{i}]")
        spans = []
        for j, span in enumerate(cluster):
            if not (isinstance(span, list) and len(span) == 2 and all(type(x) is int for x in span)):
                raise fail(f"expected [start, end], got {span!r}", f"{field}[{i}][{j}]")
            spans.append((span[0], span[1]))
        out.append(spans)
    return out
