"""Plain text -> a `Document` with sentences and words (syntok, offline, rule-based), keeping each
word's character span so predicted mentions can be given back as spans of the caller's text.

The words are the text's own substrings (`text[start:end]`), never syntok's normalised values
(it writes "not" for "n't"), so a mention's text is always what the user wrote. Input files for
`dore predict` and `dore extract` are told apart by their content: a JSON line holding `text`
(and no `tokens`) is a text document `{"id", "text"}`; a file that is not JSON lines is one text.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import syntok.segmenter

from dore.data.model import DataError, Document, iter_json_objects

TOKEN_OFFSETS = "token_offsets"  # Document.meta key: [[char_start, char_end], ...] per word
INITIALISM = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]")  # "U.S" before its "." (DocRED writes "U.S." as one word)


def document_from_text(text: str, doc_id: str = "text") -> Document:
    """Sentences and words of `text` with their character spans (`meta["token_offsets"]`); no entities."""
    if not isinstance(text, str) or not text.strip():
        raise DataError("empty text", doc=doc_id, field="text")
    tokens: list[str] = []
    offsets: list[list[int]] = []
    sentences: list[tuple[int, int]] = []
    for paragraph in syntok.segmenter.analyze(text):
        for sentence in paragraph:
            words = [w for w in sentence if w.value]  # syntok ends some texts with an empty token
            start = len(tokens)
            for i, word in enumerate(words):
                # a word ends where the next one's leading whitespace starts (its value may be normalised)
                end = (words[i + 1].offset - len(words[i + 1].spacing) if i + 1 < len(words)
                       else word.offset + len(word.value))
                end = max(end, word.offset + 1)
                surface = text[word.offset:end].rstrip() or text[word.offset:end]
                if (surface == "." and i + 1 < len(words) and len(tokens) > start and offsets[-1][1] == word.offset
                        and INITIALISM.fullmatch(tokens[-1])):
                    tokens[-1] += "."
                    offsets[-1][1] += 1
                    continue
                tokens.append(surface)
                offsets.append([word.offset, word.offset + len(surface)])
            if len(tokens) > start:
                sentences.append((start, len(tokens)))
    if not tokens:
        raise DataError("no words found in the text", doc=doc_id, field="text")
    return Document(doc_id=doc_id, tokens=tokens, sentences=sentences, entities=[], text=text,
                    meta={TOKEN_OFFSETS: offsets})


def is_text_file(path: Path) -> bool:
    """A file of text documents: JSON lines whose first object has `text` and no `tokens`, or a
    file whose first line is not a JSON object at all (plain text)."""
    if path.is_dir():
        return False
    first = read_first_line(path)
    try:
        obj = json.loads(first)
    except json.JSONDecodeError:
        return not first.lstrip().startswith(("[", "{"))  # a DocRED list or a broken JSON file is not text
    return isinstance(obj, dict) and "text" in obj and "tokens" not in obj and "vertexSet" not in obj


def read_first_line(path: Path) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    return line
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text: {exc.reason} at byte {exc.start}", file=path) from exc
    return ""


def read_texts(path: str | Path) -> list[Document]:
    """The text documents of `path`: JSON lines of `{"id", "text"}`, or one plain-text document
    whose id is the file name's stem."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text: {exc.reason} at byte {exc.start}", file=path) from exc
    if not is_json_lines(raw):
        return [with_place(path, None, lambda: document_from_text(raw, path.stem))]
    docs, seen = [], set()
    for lineno, obj in iter_json_objects(path):
        doc_id = str(obj.get("id", f"{path.stem}-{lineno}"))
        if doc_id in seen:
            raise DataError("duplicate id", file=path, line=lineno, doc=doc_id, field="id")
        seen.add(doc_id)
        if not isinstance(obj.get("text"), str):
            raise DataError("expected a string", file=path, line=lineno, doc=doc_id, field="text")
        docs.append(with_place(path, lineno, lambda: document_from_text(obj["text"], doc_id)))
    return docs


def is_json_lines(raw: str) -> bool:
    first = next((line for line in raw.splitlines() if line.strip()), "")
    try:
        return isinstance(json.loads(first), dict)
    except json.JSONDecodeError:
        return False


def with_place(path: Path, lineno: int | None, make):
    """`make()`, its DataError re-raised with the file and line."""
    try:
        return make()
    except DataError as exc:
        raise DataError(exc.message, file=path, line=lineno, doc=exc.doc, field=exc.field) from exc
