"""Stage `validate`: great-expectations suites that judge the content of parsed documents.

Readers reject what cannot be parsed (DataError naming file, document and field: broken JSON,
missing fields, offsets outside the text). This stage judges documents that parse but would
train or score wrongly: a relation from an entity to itself, a label or entity type the layout
has no symbol for, more entities than slots, a mention whose text is not the text at its
offsets, an empty document, a repeated doc_id.

The documents are flattened into three tables (`documents`, `mentions`, `relations`), each
judged by one suite in an ephemeral GX context (no files, no network). The outcome is a
`ValidationResult` with every expectation, pass or fail, and a few offending rows of each;
`report_dir/<name>.html` shows the same as a self-contained page.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.core import ExpectationValidationResult
from great_expectations.data_context.types.base import ProgressBarsConfig
from pydantic import BaseModel, computed_field

from dore.data.formats import read_any
from dore.data.model import DataError, Document, Mention, atomic_write_text
from dore.data.salvage import read_salvaging
from dore.symbolic.layout import IdLayout, default_layout

N_EXAMPLES = 5
COLUMNS = {"documents": ("doc_index", "doc_id", "n_tokens", "n_entities", "n_relations", "title"),
           "mentions": ("doc_index", "doc_id", "entity", "start", "end", "text", "text_at_offsets", "type",
                        "entity_type"),
           "relations": ("doc_index", "doc_id", "head", "tail", "label", "n_args")}


# --- documents -> flat tables -----------------------------------------------------------------

def flatten(docs: Sequence[Document]) -> dict[str, pd.DataFrame]:
    """Three flat tables of `docs`; every row carries `doc_index` (position in `docs`) and `doc_id`.

    - `documents`: doc_id, n_tokens, n_entities, n_relations, title
    - `mentions` (the entities' mentions, not `extra_mentions`): doc_id, entity (index), start, end,
      text (as annotated), text_at_offsets (the document text at the mention's character offsets
      when it has both, else its tokens joined by spaces), type (the mention's), entity_type
    - `relations`: doc_id, head, tail, label, n_args
    """
    doc_rows, mention_rows, relation_rows = [], [], []
    for i, doc in enumerate(docs):
        doc_rows.append((i, doc.doc_id, len(doc.tokens), len(doc.entities), len(doc.relations), doc.title))
        mention_rows += [(i, doc.doc_id, e, m.start, m.end, m.text, _text_at_offsets(doc, m), m.type, entity.type)
                         for e, entity in enumerate(doc.entities) for m in entity.mentions]
        relation_rows += [(i, doc.doc_id, rel.head, rel.tail, rel.label, len(rel.args)) for rel in doc.relations]
    return {"documents": pd.DataFrame(doc_rows, columns=list(COLUMNS["documents"])),
            "mentions": pd.DataFrame(mention_rows, columns=list(COLUMNS["mentions"])),
            "relations": pd.DataFrame(relation_rows, columns=list(COLUMNS["relations"]))}


def _text_at_offsets(doc: Document, m: Mention) -> str:
    if doc.text is not None and m.char_start is not None and m.char_end is not None:
        return doc.text[m.char_start:m.char_end]
    return " ".join(doc.tokens[m.start:m.end])


# --- the tolerance policy for mention text --------------------------------------------------

@dataclass(frozen=True)
class TextTolerance:
    """Share of mentions whose text must equal the text at their offsets (whitespace removed), and why."""

    mostly: float
    why: str


STRICT_TEXT = TextTolerance(1.0, "mention text is the text at its offsets")

#: Keyed by the dataset part of the layout name (`scirex-4ary` -> `scirex`). Whitespace is removed
#: before comparing everywhere, so DocRED's ~300 names per split that differ from their tokens only
#: in spacing ("U.S ." vs "U.S.") never count. What is left, measured on the local files:
TEXT_TOLERANCE: dict[str, TextTolerance] = {
    "docred": TextTolerance(0.999, "DocRED/Re-DocRED names that are not their tokens: a list number glued to the "
                                   "name ('0.\\nLive in New York') or another span's name; 3 of 13,018 mentions in "
                                   "Re-DocRED test, 3 of 13,189 in dev, 6 of 26,704 in DocRED test"),
    "cdr": TextTolerance(0.995, "EoG names may be part of a token ('Ca' at token 'Ca2'); 5 of 9,800 mentions in "
                                "test, 10 of 9,635 in dev, 0 in train; PubTator text matches its offsets"),
    "gda": TextTolerance(0.99, "EoG names may be part of a token ('MLC1' at token 'MLC1gene'): 39 of 17,928 "
                               "mentions, up to 0.63% in the 100-document dev carve; RENET: 4 differ in case"),
}


def text_tolerance(layout: IdLayout) -> TextTolerance:
    return TEXT_TOLERANCE.get(layout.name.split("-")[0], STRICT_TEXT)


# --- result ----------------------------------------------------------------------------------

class Check(BaseModel):
    """One expectation's outcome; `examples` are offending rows (checked and identifying columns)."""

    table: str
    expectation: str  # the GX expectation type, e.g. expect_column_values_to_be_in_set
    column: str  # the column judged ("A, B" for a pair of columns)
    description: str
    success: bool
    element_count: int = 0
    unexpected_count: int = 0
    mostly: float = 1.0  # share of rows that must pass
    examples: list[dict[str, Any]] = []

    def line(self) -> str:
        status = "PASS" if self.success else "FAIL"
        text = f"{status} {self.table}.{self.column}: {self.expectation} ({self.description})"
        if self.unexpected_count:
            tolerated = f", tolerated with mostly={self.mostly}" if self.success else ""
            text += f": {self.unexpected_count} of {self.element_count} rows{tolerated}"
        return text


class ValidationResult(BaseModel):
    name: str
    layout: str
    rows: dict[str, int]  # table -> number of rows judged
    checks: list[Check]
    seconds: float
    html_path: Path | None = None
    reader_errors: list[str] = []  # documents the reader refused, each naming file, line, document and field

    @computed_field
    @property
    def success(self) -> bool:
        return not self.reader_errors and all(c.success for c in self.checks)

    @computed_field
    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.success]

    def summary(self) -> str:
        """A readable multi-line account: verdict, then the failures (documents the reader refused,
        failed expectations), then the tolerated quirks, with examples."""
        tables = ", ".join(f"{n} {t}" for t, n in self.rows.items())
        refused = f"{len(self.reader_errors)} documents the reader refused, " if self.reader_errors else ""
        verdict = (f"passed all {len(self.checks)} expectations" if self.success
                   else f"FAILED: {refused}{len(self.failures)} of {len(self.checks)} expectations")
        lines = [f"validation {self.name!r} (layout {self.layout!r}; {tables}): {verdict}"]
        lines.extend(f"  FAIL reader: {error}" for error in self.reader_errors)
        for check in sorted(self.checks, key=lambda c: c.success):  # failures first, then tolerated quirks
            if check.success and not check.unexpected_count:
                continue
            lines.append("  " + check.line())
            lines.extend(f"      e.g. {_format_row(row)}" for row in check.examples)
        if self.html_path:
            lines.append(f"  report: {self.html_path}")
        return "\n".join(lines)


class ValidationFailed(DataError):
    """Documents failed validation (bad data, like a reader's DataError); `result` holds every
    outcome, the message is its summary."""

    def __init__(self, result: ValidationResult):
        self.result = result
        super().__init__(result.summary())


# --- the suites ---------------------------------------------------------------------------------

def _slot_column(type_: str | None) -> str:
    return "n_mentioned_entities" if type_ is None else f"n_entities_of_type[{type_}]"


def _expectations(layout: IdLayout, tolerance: TextTolerance) -> dict[str, list[gxe.Expectation]]:
    documents = [
        gxe.ExpectColumnValuesToBeUnique(column="doc_id", description="doc_ids are unique (DocRED: no repeated title)"),
        gxe.ExpectColumnValuesToBeBetween(column="n_tokens", min_value=1, description="no document without tokens"),
        gxe.ExpectColumnValuesToBeBetween(column="n_entities", min_value=1, description="no document without entities"),
    ]
    if layout.overflow == "error":  # with "drop", extra entities are dropped and counted by `assign`
        documents += [gxe.ExpectColumnValuesToBeBetween(
            column=_slot_column(block.type if layout.typed else None), min_value=0, max_value=block.size,
            description=f"mentioned entities fit the {block.size} slots of "
                        + (f"the {block.type} block" if layout.typed else "the entity block"))
            for block in layout.blocks]
    mentions = [
        gxe.ExpectColumnValuesToBeBetween(column="start", min_value=0,
                                          description="mention starts inside the document"),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="end", column_B="start",
                                                   description="mention ends after it starts"),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="n_tokens", column_B="end", or_equal=True,
                                                   description="mention ends inside the document"),
        gxe.ExpectColumnPairValuesToBeEqual(column_A="text_key", column_B="text_at_offsets_key",
                                           mostly=tolerance.mostly,
                                           description="mention text equals the text at its offsets, whitespace "
                                                       f"removed; {tolerance.why}"),
    ]
    if layout.typed:
        types = [b.type for b in layout.blocks]
        mentions += [
            gxe.ExpectColumnValuesToNotBeNull(column="entity_type", description="mentioned entities have a type"),
            gxe.ExpectColumnValuesToBeInSet(column="entity_type", value_set=types,
                                            description=f"entity types have a block in layout {layout.name!r}"),
        ]
    relations = [
        gxe.ExpectColumnValuesToBeInSet(column="head_is_tail", value_set=[False], description="head != tail"),
        gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(layout.relations),
                                        description=f"relation labels are in layout {layout.name!r}"),
    ]
    return {"documents": documents, "mentions": mentions, "relations": relations}


#: Columns shown with every offending row, so an example says where it is.
_ROW_IDS = {"documents": ["doc_index", "doc_id"],
            "mentions": ["doc_index", "doc_id", "entity", "start", "end", "text", "text_at_offsets"],
            "relations": ["doc_index", "doc_id", "head", "tail", "label"]}


def _judged_tables(tables: dict[str, pd.DataFrame], layout: IdLayout) -> dict[str, pd.DataFrame]:
    """The flat tables plus the computed columns the expectations read."""
    documents, mentions, relations = (tables[t].copy() for t in ("documents", "mentions", "relations"))
    mentions["n_tokens"] = documents["n_tokens"].to_numpy()[mentions["doc_index"].to_numpy(dtype=int)]
    for column in ("text", "text_at_offsets"):
        mentions[f"{column}_key"] = mentions[column].astype(str).str.replace(r"\s+", "", regex=True)
    relations["head_is_tail"] = relations["head"] == relations["tail"]
    # Slots go to mentioned entities only (`IdLayout.assign`), one per entity, within its type's block.
    mentioned = mentions.drop_duplicates(["doc_index", "entity"])
    for block in layout.blocks:
        of_block = mentioned[mentioned["entity_type"] == block.type] if layout.typed else mentioned
        counts = of_block.groupby("doc_index").size()
        documents[_slot_column(block.type if layout.typed else None)] = (
            counts.reindex(documents["doc_index"], fill_value=0).to_numpy())
    return {"documents": documents, "mentions": mentions, "relations": relations}


def validate_documents(docs: Sequence[Document], layout: IdLayout, *, name: str,
                       report_dir: str | Path | None = None, text: TextTolerance | None = None,
                       reader_errors: Sequence[DataError] = ()) -> ValidationResult:
    """Run the three suites on `docs` for `layout`; write `report_dir/<name>.html` when given.

    `text` overrides the dataset's mention-text tolerance (`TEXT_TOLERANCE`, strict elsewhere);
    `reader_errors` (documents the reader refused) join the result as failures.
    """
    started = time.perf_counter()
    tables = _judged_tables(flatten(docs), layout)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("documents")
    checks = []
    for table, expectations in _expectations(layout, text or text_tolerance(layout)).items():
        suite = context.suites.add(gx.ExpectationSuite(name=f"{name}.{table}", expectations=expectations))
        batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe("all").get_batch(
            batch_parameters={"dataframe": tables[table]})
        outcome = batch.validate(suite, result_format={
            "result_format": "SUMMARY", "partial_unexpected_count": N_EXAMPLES,
            "unexpected_index_column_names": _ROW_IDS[table]})
        order = {e.id: i for i, e in enumerate(suite.expectations)}
        for r in sorted(outcome.results, key=lambda r: order[r.expectation_config.id]):
            checks.append(_check(table, r))
    result = ValidationResult(name=name, layout=layout.name, rows={t: len(df) for t, df in tables.items()},
                              checks=checks, seconds=round(time.perf_counter() - started, 3),
                              reader_errors=[str(e) for e in reader_errors])
    if report_dir is not None:
        result.html_path = atomic_write_text(Path(report_dir) / f"{name}.html", render_html(result))
    return result


def _check(table: str, r: ExpectationValidationResult) -> Check:
    config, result = r.expectation_config, r.result
    kwargs = config.kwargs
    column = kwargs.get("column") or f"{kwargs['column_A']}, {kwargs['column_B']}"
    errors = _errors(r.exception_info)
    if errors:  # the expectation could not run (e.g. a missing column): a failure showing why
        return Check(table=table, expectation=config.type, column=column, description=config.description or "",
                     success=False, examples=[{"error": message} for message in errors])
    return Check(table=table, expectation=config.type, column=column, description=config.description or "",
                 success=r.success, element_count=result.get("element_count", 0),
                 unexpected_count=result.get("unexpected_count", 0), mostly=kwargs.get("mostly", 1.0),
                 examples=[_example(row, _ROW_IDS[table])
                           for row in result.get("partial_unexpected_index_list", [])[:N_EXAMPLES]])


def _errors(info: dict) -> list[str]:
    """Exception messages; GX reports them at the top level or keyed by the metric that raised."""
    reports = [info, *(v for v in info.values() if isinstance(v, dict))]
    return sorted({rep["exception_message"] for rep in reports if rep.get("raised_exception")})


def _example(row: dict[str, Any], ids: list[str]) -> dict[str, Any]:
    """An offending row, identifying columns first, as JSON-able Python values."""
    ordered = [*ids, *(k for k in row if k not in ids)]
    return {k: _plain(row[k]) for k in ordered if k in row}


def _plain(value: Any) -> Any:
    """numpy scalars -> Python, NaN -> None (JSON-able examples)."""
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and math.isnan(value) else value


def _format_row(row: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in row.items())


def validate_or_raise(docs: Sequence[Document], layout: IdLayout, *, name: str,
                      report_dir: str | Path | None = None, text: TextTolerance | None = None) -> ValidationResult:
    """`validate_documents`, raising `ValidationFailed` (message: the summary) unless every expectation passes."""
    result = validate_documents(docs, layout, name=name, report_dir=report_dir, text=text)
    if not result.success:
        raise ValidationFailed(result)
    return result


def validate_file(path: str | Path, fmt: str | None = None, layout: IdLayout | None = None,
                  report_dir: str | Path | None = None, rel_info: dict[str, str] | None = None, *,
                  reader_errors: Literal["raise", "report"] = "raise") -> ValidationResult:
    """Read `path` with `read_any` and validate its content. A structural error raises DataError,
    or with `reader_errors="report"` (`dore validate FILE`), every document the reader refuses (up
    to `MAX_ERRORS`) joins the result as a failure and the others are validated.

    Without `layout`, the format's default layout is built from the documents themselves; give
    DocRED files their `rel_info` then, or every label read counts as known.
    """
    if reader_errors == "report":
        docs, errors, fmt = read_salvaging(path, fmt)
    else:
        (docs, _, fmt), errors = read_any(path, fmt), []
    layout = layout or default_layout(docs, fmt, rel_info)
    return validate_documents(docs, layout, name=Path(path).name, report_dir=report_dir, reader_errors=errors)


# --- HTML report ------------------------------------------------------------------------------

_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;width:100%}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}.pass{color:#17702a;font-weight:bold}.fail{color:#b00020;font-weight:bold}
.tolerated{color:#8a6d00;font-weight:bold}code{font-size:90%}ul{margin:0;padding-left:1.2em}"""


def render_html(result: ValidationResult) -> str:
    """A self-contained page: the verdict, one row per document the reader refused, then one per
    expectation (failures first) with its offending examples."""
    e = html.escape
    rows = [f"<tr><td class='fail'>FAIL</td><td>reader</td><td colspan='6'><code>{e(error)}</code></td></tr>"
            for error in result.reader_errors]
    for c in sorted(result.checks, key=lambda c: c.success):
        status, css = ("PASS", "pass") if c.success else ("FAIL", "fail")
        if c.success and c.unexpected_count:
            status, css = "PASS (tolerated)", "tolerated"
        examples = "".join(f"<li><code>{e(_format_row(row))}</code></li>" for row in c.examples)
        rows.append(f"<tr><td class='{css}'>{status}</td><td>{e(c.table)}</td><td><code>{e(c.expectation)}</code></td>"
                    f"<td><code>{e(c.column)}</code></td><td>{e(c.description)}</td>"
                    f"<td>{c.unexpected_count} / {c.element_count}</td><td>{c.mostly if c.mostly < 1 else ''}</td>"
                    f"<td><ul>{examples}</ul></td></tr>")
    refused = f"{len(result.reader_errors)} documents the reader refused, " if result.reader_errors else ""
    verdict = ("<span class='pass'>PASSED</span>" if result.success else
               f"<span class='fail'>FAILED</span> ({refused}{len(result.failures)} of {len(result.checks)} expectations)")
    tables = ", ".join(f"{n} {e(t)}" for t, n in result.rows.items())
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>validation {e(result.name)}</title>"
            f"<style>{_STYLE}</style></head><body>\n<h1>Validation of {e(result.name)}</h1>\n"
            f"<p>{verdict}. Layout <code>{e(result.layout)}</code>; {tables}; {result.seconds:.2f} s.</p>\n"
            "<table><tr><th>result</th><th>table</th><th>expectation</th><th>column</th><th>what</th>"
            "<th>unexpected / rows</th><th>mostly</th><th>examples</th></tr>\n"
            + "\n".join(rows) + "\n</table></body></html>\n")
