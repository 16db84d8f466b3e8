"""`dore` commands on data files and documents: convert, score, prepare, validate, `data import`,
predict and extract (a corpus)."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from tqdm import tqdm

from dore import stages
from dore.batch import predict_lines, read_inputs
from dore.cli.base import DatasetOpt, LimitOpt, NewRunOpt, app, console, rows_table, run_params
from dore.config import artifacts_dir
from dore.data.datasets import data_root
from dore.data.docred import load_rel_info, read_docred_result, write_docred_result
from dore.data.formats import detect_format, read_any
from dore.data.importing import DEFAULT_DEST, DEFAULT_SOURCE, MirrorMissingError, import_data
from dore.data.model import DataError, atomic_write_text
from dore.extract import Extractor
from dore.methods.classifier import CONFIG_FILE as CLASSIFIER_CONFIG, RelationClassifier
from dore.scoring.score import (docred_records_from_documents, headline, is_prediction_lines, predictions_from_documents,
                                read_prediction_lines)
from dore.scoring.score import score as score_predictions
from dore.symbolic.layout import default_layout
from dore.symbolic.linearize import build_targets, convert_file
from dore.symbolic.sampling import SamplingConfig


@app.command()
def convert(
    inputs: Annotated[list[Path], typer.Argument(help="dataset files (DocRED json, PubTator, EoG .data, RENET folder, SciREX jsonl)")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="folder for <name>.jsonl, .targets.jsonl, .layout.json")] = Path("artifacts/converted"),
    fmt: Annotated[Optional[str], typer.Option("--format", help="override format detection")] = None,
    rel_info: Annotated[Optional[Path], typer.Option(help="DocRED rel_info.json (relation order and names)")] = None,
    preview_sampling: Annotated[Optional[str], typer.Option(help="print sampled targets with this strategy, e.g. dynamic, diagonal:1")] = None,
    preview_docs: Annotated[int, typer.Option(help="documents to preview")] = 2,
    seed: int = 0,
    epoch: int = 0,
):
    """Dataset files -> canonical JSONL documents with their positive symbolic targets."""


    rel = load_rel_info(rel_info) if rel_info else _default_rel_info()
    summary = Table(title="dore convert")
    for col in ("file", "format", "docs", "entities", "mentions", "relations", "unique", "positives",
                "mean len", "max len", "seconds"):
        summary.add_column(col, justify="right" if col not in ("file", "format") else "left")
    for path in inputs:
        stem = path.name.split(".")[0] if path.is_file() else path.name
        started = time.perf_counter()
        s = convert_file(path, out_dir / f"{stem}.jsonl", fmt=fmt, rel_info=rel,
                         progress=lambda docs: tqdm(docs, desc=f"linearize {path.name}", leave=False))
        seconds = time.perf_counter() - started
        summary.add_row(str(path), s["format"], str(s["documents"]), str(s["entities"]), str(s["mentions"]),
                        str(s["relations"]), str(s["unique_relations"]), str(s["positive_tuples"]),
                        str(s["mean_target_length"]), str(s["max_target_length"]), f"{seconds:.2f}")
        if s["quirks"] or s["lost_positives"]:
            console.print(f"[yellow]{path}[/]: quirks {s['quirks']} lost positives {s['lost_positives']}")
        if preview_sampling:
            docs, _, f = read_any(path, fmt)
            layout = default_layout(docs, f, rel)
            cfg = SamplingConfig.parse(preview_sampling)
            for doc in docs[:preview_docs]:
                t = build_targets(doc, layout, cfg, seed=seed, epoch=epoch)
                console.print(f"[bold]{doc.doc_id}[/] ({t.strategy}): {t.render(t.sequence())}")
    console.print(summary)


def _default_rel_info() -> dict[str, str] | None:

    path = data_root() / "docred" / "rel_info.json"
    return load_rel_info(path) if path.exists() else None


@app.command()
def score(
    predictions: Annotated[Path, typer.Argument(help="result.json (CodaLab; .json.gz too), a dataset file, dore "
                                                     "JSONL documents, or `dore predict`'s JSON lines (.jsonl.gz too)")],
    gold: Annotated[Path, typer.Argument(help="gold dataset file")],
    train: Annotated[Optional[list[Path]], typer.Option(help="DocRED: files trained on (Ign F1 fact set)")] = None,
    out: Annotated[Optional[Path], typer.Option(help="write the metrics JSON here")] = None,
):
    """Predictions + gold -> the dataset's official metrics table (percent)."""

    gold_docs, _, _ = read_any(gold)
    records = None
    if predictions.name.endswith((".json", ".json.gz")) and _is_result_json(predictions):
        records = [p.model_dump(exclude_none=True) for p in read_docred_result(predictions)]
        preds = {}
    elif predictions.name.endswith((".jsonl", ".jsonl.gz")) and is_prediction_lines(predictions):
        preds = read_prediction_lines(predictions)  # `dore predict`'s own output, any dataset
    else:
        pred_docs, _, pred_fmt = read_any(predictions)
        preds = predictions_from_documents(pred_docs)
        if pred_fmt == "docred":  # keep the evidence: the official scorer scores it
            records = docred_records_from_documents(pred_docs)
    train_docs = [d for p in train for d in read_any(p)[0]] if train else None
    metrics = score_predictions(preds, gold_docs, train_docs=train_docs, docred_results=records)
    _print_metrics(metrics, f"{predictions.name} vs {gold.name}")
    if out:
        atomic_write_text(out, json.dumps(metrics, indent=1, default=str))


def _is_result_json(path: Path) -> bool:
    with (gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")) as fh:
        head = fh.read(4096).lstrip()
    return head.startswith("[") and '"h_idx"' in head


def _print_metrics(metrics: dict, title: str) -> None:

    console.print(rows_table(f"{title} [{metrics['scorer']}]", headline(metrics)))
    if "breakdown" in metrics:
        b = metrics["breakdown"]
        rows = {f"{k}_{m}": v for k, sub in b.items() if isinstance(sub, dict) for m, v in sub.items()
                if isinstance(v, (int, float))}
        console.print(rows_table("Re-DocRED breakdown (no Ign)", rows))
    for name in ("binary", "4ary"):
        if metrics.get(name):
            console.print(rows_table(f"SciREX {name} [{metrics[name].get('scorer')}]", headline(metrics[name])))
    for w in metrics.get("official", {}).get("warnings", []):
        console.print(f"[yellow]warning:[/] {w}")


@app.command()
def prepare(dataset: DatasetOpt = "docred", artifacts: NewRunOpt = None,
            limit_train: LimitOpt = None, limit_dev: LimitOpt = None, limit_test: LimitOpt = None):
    """Stage convert for a benchmark setting: splits -> <artifacts>/<dataset>/docs/*.jsonl + layout."""

    params = run_params(dataset, artifacts, limit_train, limit_dev, limit_test)
    counts = stages.convert(params)
    console.print(rows_table(f"{dataset} splits -> {artifacts_dir(params) / 'docs'}",
                             {k: f"{v['documents']} docs, {v['relations']} relations" for k, v in counts.items()}))


@app.command()
def validate(
    files: Annotated[Optional[list[Path]], typer.Argument(
        help="dataset files to check, in any format dore reads; unset: every split of --dataset")] = None,
    dataset: DatasetOpt = "docred",
    artifacts: NewRunOpt = None,
    fmt: Annotated[Optional[str], typer.Option("--format", help="FILE...: override format detection")] = None,
    report_dir: Annotated[Optional[Path], typer.Option(help="FILE...: write <file>.html reports here")] = None,
):
    """Stage validate: the readers' structural checks and the great-expectations suites, on every
    split of --dataset, or on FILE... (reporting every document a reader refuses, not only the first)."""
    if files:
        _validate_files(files, fmt, report_dir)
        return
    params = run_params(dataset, artifacts)
    summary = stages.validate(params)
    console.print(rows_table(f"{dataset} validation -> {artifacts_dir(params) / 'validation'}",
                             {k: f"{v['documents']} docs, ok={v['success']}" for k, v in summary.items()}))


def _validate_files(files: list[Path], fmt: str | None, report_dir: Path | None) -> None:
    """Each file's summary (failures first); status 1 when any file fails."""
    from dore.validate import validate_file  # great-expectations: the `ops` extra, slow to import

    rel_info, failed = _default_rel_info(), []
    for path in files:
        result = validate_file(path, fmt, report_dir=report_dir, rel_info=rel_info, reader_errors="report")
        console.print(result.summary(), markup=False, highlight=False, soft_wrap=True)  # one line per finding
        if not result.success:
            failed.append(str(path))
    if failed:
        console.print(f"{len(failed)} of {len(files)} files failed validation: {', '.join(failed)}")
        raise typer.Exit(1)


data_app = typer.Typer(no_args_is_help=True, help="The benchmark data under data/, versioned by DVC.",
                       rich_markup_mode=None)
app.add_typer(data_app, name="data")


@data_app.command("import")
def data_import(
    source: Annotated[Path, typer.Option(help="local mirror of the benchmark files")] = DEFAULT_SOURCE,
    dest: Annotated[Path, typer.Option(help="destination folder (tracked by DVC)")] = DEFAULT_DEST,
    track: Annotated[bool, typer.Option("--dvc/--no-dvc", help="record the folder with `dvc add`")] = True,
):
    """Copy the raw files the benchmark settings need (and coref/) from a mirror into data/, then `dvc add data`."""

    try:
        result = import_data(source, dest, track=track)
    except MirrorMissingError as err:
        console.print(f"[red]{err}[/]")
        raise typer.Exit(1) from None
    console.print(f"{result.files} files ({result.bytes / 1e6:.1f} MB, {result.verified} checksums verified) "
                  f"-> {dest}" + (f"; tracked by {result.dvc_file}" if result.dvc_file else ""))


@app.command()
def predict(
    model_dir: Annotated[Path, typer.Argument(help="a saved DORE model directory")],
    inputs: Annotated[Path, typer.Argument(help="documents: any format dore reads, plain text, or JSON lines of "
                                                "{\"id\", \"text\"} (told apart by content)")],
    out: Annotated[str, typer.Option("--out", "-o", help="result.json (DocRED given with entities: the official "
                                                         "CodaLab format), .jsonl, or - for standard output")] = "result.json",
    fmt: Annotated[Optional[str], typer.Option("--format", help="docred|pubtator|eog|renet|scirex|dore|text")] = None,
    num_beams: int = 1,
    entities: Annotated[Optional[Path], typer.Option(help="entity recognizer folder (default: the model's own, or "
                                                          "its run's <dataset>/entities)")] = None,
    quantize: Annotated[Optional[str], typer.Option(help="int8 dynamic quantization of the linear layers: all | "
                                                          "decoder (CPU; the service's default is all)")] = None,
    relation_logits: Annotated[str, typer.Option(help="a pair_logits model's relation scores: both | pair (the "
                                                      "pair term alone) | decoder (without it); ablations")] = "both",
):
    """Extract relations. Documents given with entities keep them (DocRED input gives the official
    result.json, h_idx/t_idx indexing the vertexSet); documents without (plain text, {"id", "text"}
    lines, DocRED without vertexSet) get entities from the model's recognizer: one JSON line each with
    the entities (mentions with sentence, word and character spans) and the relations between them.
    A saved classifier baseline (`dore train --method classifier`) answers documents with entities in
    the official format (a .json path) or as these JSON lines (.jsonl), so its claims re-score the same way."""
    if (model_dir / CLASSIFIER_CONFIG).exists():
        _predict_with_classifier(model_dir, inputs, out, fmt)
        return
    extractor = Extractor.from_pretrained(model_dir, entities=entities, quantize=quantize,
                                          relation_logits=relation_logits)
    docs = read_inputs(inputs, fmt)
    decoding = extractor.decoding.model_copy(update={"num_beams": num_beams})
    if all(d.entities for d in docs) and (out.endswith(".json") or detect_format(inputs) == "docred" and out != "-"):
        results = extractor.extract(docs, decoding)
        write_docred_result(out, [{"title": d.doc_id, "h_idx": r.args[0], "t_idx": r.args[1], "r": r.label}
                                  for d, rels in zip(docs, results) for r in rels])
        console.print(f"{sum(map(len, results))} relations from {len(docs)} documents -> {out}")
        return
    lines = predict_lines(extractor, docs, decoding)
    if out == "-":
        typer.echo(lines, nl=False)
        return
    atomic_write_text(out, lines)
    relations = sum(len(json.loads(line)["relations"]) for line in lines.splitlines())
    console.print(f"{relations} relations from {len(docs)} documents -> {out}")


def _predict_with_classifier(model_dir: Path, inputs: Path, out: str, fmt: str | None) -> None:
    docs = read_inputs(inputs, fmt)
    without = [d.doc_id for d in docs if not d.entities]
    if without:
        raise DataError(f"the classifier reads documents with their entities; {len(without)} have none",
                        file=inputs, doc=without[0], field="vertexSet")
    if not out.endswith((".json", ".jsonl")):
        raise typer.BadParameter(f"{out}: a classifier writes DocRED's official result.json (a .json path) or "
                                 "dore's JSON lines (.jsonl)", param_hint="--out")
    predictions = RelationClassifier.from_pretrained(model_dir).predict(docs)
    if out.endswith(".jsonl"):  # `dore predict`'s JSON lines, which `dore score` reads for every dataset
        atomic_write_text(out, "".join(json.dumps({"doc_id": d.doc_id, "relations": [
            {"args": [h, t], "label": label} for (h, t), label in predictions[d.doc_id]]}) + "\n" for d in docs))
    else:
        write_docred_result(out, [{"title": d.doc_id, "h_idx": h, "t_idx": t, "r": label}
                                  for d in docs for (h, t), label in predictions[d.doc_id]])
    console.print(f"{sum(map(len, predictions.values()))} relations from {len(docs)} documents -> {out}")


@app.command("extract")
def extract_corpus(
    model_dir: Annotated[Path, typer.Argument(help="a saved DORE model directory")],
    inputs: Annotated[list[Path], typer.Argument(help="the corpus: DocRED files or dore JSON lines")],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for shards/, results/ and relations.jsonl")],
    shard_docs: Annotated[int, typer.Option(help="documents per shard")] = 50,
    workers: Annotated[int, typer.Option(help="local Dask workers (ignored when $DORE_DASK_ADDRESS names a "
                                               "scheduler)")] = 2,
):
    """Relations for a corpus, shard by shard on Dask: the Prefect flow `extract-dore` (flows/extract.py).
    Past one machine, point $DORE_DASK_ADDRESS at a Dask scheduler; the command stays the same."""
    os.environ["DORE_DASK_WORKERS"] = str(workers)  # read when the flow module builds its task runner
    flow_file = Path(stages.__file__).resolve().parents[1] / "flows" / "extract.py"
    if not flow_file.exists():
        raise FileNotFoundError(flow_file)  # the flows live in the checkout, beside the package
    spec = importlib.util.spec_from_file_location("dore_extract_flow", flow_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.extract_dore(str(model_dir), [str(p) for p in inputs], str(out), shard_docs)
    console.print(f"{result['documents']} documents in {result['shards']} shards ({result['skipped']} already done) "
                  f"-> {result['output']}")
