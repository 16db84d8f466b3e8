"""The `dore` command line: one sub-command per lifecycle stage (each calls the stage's function)."""

from __future__ import annotations

from dore.env import set_offline_defaults

set_offline_defaults()  # offline hub switches and the BentoML store, before transformers and bentoml read them

import gzip
import importlib.util
import inspect
import json
import os
import time
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import click
import typer
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from dore import chain, stages
from dore.analysis import main as attention_main
from dore.batch import predict_lines, read_inputs
from dore.config import EntityParams, PipelineParams, TrainConfig, artifacts_dir
from dore.data.datasets import SETTINGS, data_root
from dore.data.docred import load_rel_info, read_docred_result, write_docred_result
from dore.data.formats import detect_format, read_any
from dore.data.importing import DEFAULT_DEST, DEFAULT_SOURCE, MirrorMissingError, import_data
from dore.data.model import atomic_write_text
from dore.errors import USER_ERRORS, describe_error
from dore.experiments import main as experiments_main
from dore.extract import Extractor
from dore.joint import evaluate_joint
from dore.model.backbone import check_backbone
from dore.presets import entity_params, load_section, merge, preset_values
from dore.scoring.score import docred_records_from_documents, headline, predictions_from_documents
from dore.scoring.score import score as score_predictions
from dore.symbolic.layout import default_layout
from dore.symbolic.linearize import build_targets, convert_file
from dore.symbolic.sampling import SamplingConfig
from dore.training.loop import processes


class DoreCommands(typer.core.TyperGroup):
    """`dore`'s commands, ended by an error the user can act on (`USER_ERRORS`) with its message
    (what, where, what to do) and status 1 instead of a traceback; `--debug` shows the traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except USER_ERRORS as exc:
            if ctx.params.get("debug"):
                raise
            # SystemExit with a message: Python prints it to stderr and exits 1, no traceback
            raise SystemExit(f"error: {describe_error(exc)}\n(dore --debug ... shows the traceback)") from None


# Plain (click) help and usage errors: they wrap to the terminal, where rich's tables cut option
# names and choice lists at 80 columns.
app = typer.Typer(cls=DoreCommands, add_completion=False, no_args_is_help=True, help=__doc__, rich_markup_mode=None)
console = Console(width=None if Console().is_terminal else 160)


@app.callback()
def options(debug: Annotated[bool, typer.Option("--debug", envvar="DORE_DEBUG",
                                                help="show the traceback of an expected error too")] = False):
    """Options of every command (read by `DoreCommands`)."""


def _table(title: str, rows: dict, *, key: str = "metric", value: str = "value") -> Table:
    table = Table(title=title)
    table.add_column(key)
    table.add_column(value, justify="right")
    for k, v in rows.items():
        table.add_row(str(k), f"{v:.2f}" if isinstance(v, float) else "n/a" if v is None else str(v))
    return table


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
    predictions: Annotated[Path, typer.Argument(help="result.json (CodaLab; .json.gz too), a dataset file, or dore "
                                                     "JSONL documents")],
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

    console.print(_table(f"{title} [{metrics['scorer']}]", headline(metrics)))
    if "breakdown" in metrics:
        b = metrics["breakdown"]
        rows = {f"{k}_{m}": v for k, sub in b.items() if isinstance(sub, dict) for m, v in sub.items()
                if isinstance(v, (int, float))}
        console.print(_table("Re-DocRED breakdown (no Ign)", rows))
    for name in ("binary", "4ary"):
        if name in metrics:
            console.print(_table(f"SciREX {name} [{metrics[name].get('scorer')}]", headline(metrics[name])))
    for w in metrics.get("official", {}).get("warnings", []):
        console.print(f"[yellow]warning:[/] {w}")


def _params(dataset: str, artifacts: Path | None, limit_train=None, limit_dev=None, limit_test=None, *,
            run: typing.Literal["new", "latest"] = "new", **train) -> PipelineParams:
    """Command-line values -> checked `PipelineParams`; unset options keep the config's defaults.
    Unset `artifacts`: a new run directory (`run="new"`, commands that write a run; claimed once the
    values and the backbone are checked) or the latest run with a trained model of the dataset
    (`"latest"`, commands that read one)."""
    limits = {"limit_train": limit_train or None, "limit_dev": limit_dev or None, "limit_test": limit_test or None}
    params = PipelineParams(dataset=dataset, **limits,
                            train=TrainConfig(**{k: v for k, v in train.items() if v is not None}))
    if run == "latest":
        return params.model_copy(update={"artifacts": str(artifacts or stages.latest_run(dataset))})
    if artifacts is None and processes().num_processes > 1:  # torchrun: each process would claim a run of its own
        raise typer.BadParameter("name the run when training with several processes", param_hint="--artifacts")
    return stages.start_run(params, artifacts)


def with_train_options(command: Callable) -> Callable:
    """Give `command` one option per `TrainConfig` field (`--lr`, `--entity-embeddings/--no-...`),
    derived from the config, so each parameter is declared once; unset options stay None."""
    signature = inspect.signature(command)
    hints = typing.get_type_hints(command, include_extras=True)  # this module's annotations are strings
    declared = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()
                if p.kind is not inspect.Parameter.VAR_KEYWORD]
    for name, field in TrainConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        kind, choices = _option_type(field.annotation)
        help_text = field.description or ""
        if choices:
            help_text = f"{' | '.join(choices)}" + (f"; {help_text}" if help_text else "")
        default = "null" if field.default is None else field.default
        option = typer.Option(f"{flag}/--no-{flag[2:]}" if kind is bool else flag,
                              help=f"{help_text} [config default: {default}]", show_default=False,
                              rich_help_panel="Training (dore.config.TrainConfig)")
        declared.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                          annotation=Annotated[Optional[kind], option]))
    command.__signature__ = signature.replace(parameters=declared)
    return command


def _option_type(annotation: Any) -> tuple[type, list[str]]:
    """The command-line type of a config field, and its choices when it is a Literal."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    if typing.get_origin(args[0]) is typing.Literal:
        return str, [str(c) for c in typing.get_args(args[0])]
    if typing.get_origin(annotation) is typing.Literal:
        return str, [str(c) for c in typing.get_args(annotation)]
    return args[0], []


Dataset = typing.Literal[tuple(SETTINGS)]  # a choice: an unknown name is a usage error before anything runs
DatasetOpt = Annotated[Dataset, typer.Option(help="the benchmark setting")]
NewRunOpt = Annotated[Optional[Path], typer.Option(
    "--artifacts", help="output root (writes <artifacts>/<dataset>/); unset: a new run directory runs/<time> "
                        "(`dvc repro` alone writes artifacts/)")]
RunOpt = Annotated[Optional[Path], typer.Option(
    "--artifacts", help="the run to read (<artifacts>/<dataset>/model); unset: the latest run under runs/ with one")]
ArtifactsOpt = Annotated[Path, typer.Option(help="artifacts root")]
LimitOpt = Annotated[Optional[int], typer.Option(help="first N documents of the split (0 or unset: all)")]


@app.command()
def prepare(dataset: DatasetOpt = "docred", artifacts: NewRunOpt = None,
            limit_train: LimitOpt = None, limit_dev: LimitOpt = None, limit_test: LimitOpt = None):
    """Stage convert for a benchmark setting: splits -> <artifacts>/<dataset>/docs/*.jsonl + layout."""

    params = _params(dataset, artifacts, limit_train, limit_dev, limit_test)
    counts = stages.convert(params)
    console.print(_table(f"{dataset} splits -> {artifacts_dir(params) / 'docs'}",
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
    params = _params(dataset, artifacts)
    summary = stages.validate(params)
    console.print(_table(f"{dataset} validation -> {artifacts_dir(params) / 'validation'}",
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


@app.command()
@with_train_options
def train(
    dataset: DatasetOpt = "docred",
    artifacts: NewRunOpt = None,
    limit_train: LimitOpt = None, limit_dev: LimitOpt = None, limit_test: LimitOpt = None,
    method: Annotated[str, typer.Option(help="dore | lexical | classifier (the baselines)")] = "dore",
    resume: Annotated[bool, typer.Option(help="continue from the newest checkpoint")] = True,
    **train_options,
):
    """Stage train: fine-tune on the setting's train split, select on dev (never test)."""
    params = _params(dataset, artifacts, limit_train, limit_dev, limit_test, **train_options)
    summary = stages.train(params, method=method, resume=resume)  # converts the splits first if needed
    if not processes().is_main_process:  # torchrun / accelerate launch: the main process reports
        return
    _print_training(dataset, summary)
    console.print(f"model: {artifacts_dir(params) / 'model'} (`dore evaluate|tune|package` read the latest run)")


def _print_training(dataset: str, summary: dict) -> None:
    """The end-of-training tables: steps and time with the decoding biases tuned on dev, then the dev selection."""
    rows = {k: v for k, v in summary.items() if not isinstance(v, dict)}
    rows |= {f"tuned on dev: {k}": v for k, v in summary.get("decoding_tuned_on_dev", {}).items()}
    console.print(_table(f"{dataset} training", rows))
    if summary.get("best_dev"):
        console.print(_table("selected on dev", summary["best_dev"]))


@app.command()
def tune(dataset: DatasetOpt = "docred", artifacts: RunOpt = None,
         na_biases: Annotated[str, typer.Option(help="comma-separated NA logit biases to try; > 0 answers NA more "
                                                     "often (precision), < 0 less often (recall)")] = "0,-1,-2,-3",
         eos_biases: Annotated[str, typer.Option(help="comma-separated EOS logit biases to try")] = "0"):
    """Choose the NA/EOS logit biases of the trained model on dev (never test); stored in its model card."""

    def floats(text: str) -> tuple[float, ...]:
        try:
            return tuple(float(v) for v in text.split(","))
        except ValueError:
            raise typer.BadParameter(f"not a comma-separated list of numbers: {text!r}") from None

    tuned = stages.tune_decoding(_params(dataset, artifacts, run="latest"), na_biases=floats(na_biases),
                                 eos_biases=floats(eos_biases))
    columns = ("na_bias", "eos_bias", "f1", "ign_f1", "p", "r")
    table = Table(*columns, title=f"{dataset} dev F1 by NA / EOS logit bias (chosen: {tuned['chosen']})")
    for row in tuned["sweep"]:
        table.add_row(*(f"{row[c]:.2f}" for c in columns))
    console.print(table)


@app.command()
def evaluate(dataset: DatasetOpt = "docred", artifacts: RunOpt = None,
             split: Annotated[str, typer.Option(help="dev | test")] = "test",
             num_beams: int = 1):
    """Stage evaluate: the selected model on a split, with the dataset's official scorer."""

    params = _params(dataset, artifacts, run="latest").model_copy(update={"num_beams": num_beams})
    record = stages.evaluate(params, split)
    console.print(_table(f"{dataset} {split} [{record['scorer']}] ({record['setting']})",
                         {k: v for k, v in record.items() if isinstance(v, (int, float))}))


@app.command("evaluate-joint")
def evaluate_joint_command(dataset: DatasetOpt = "docred", artifacts: RunOpt = None,
                           split: Annotated[str, typer.Option(help="dev | test")] = "test",
                           out: Annotated[Optional[Path], typer.Option(help="folder for metrics.json and "
                                                                           "predictions.jsonl.gz")] = None):
    """Text in, relations out, measured: each document's own sentences, no entity information ->
    recognizer -> DORE; mentions, coreference and joint relations (strict, strict_typed, relaxed),
    beside the same model on the gold entities."""
    record = evaluate_joint(_params(dataset, artifacts, run="latest"), split, out)
    mentions, coref = record["entities"]["mentions"], record["entities"]["coref"]
    rows = {"mention F1 (span)": mentions["span"]["f1"], "mention F1 (span + type)": mentions["span_type"]["f1"],
            **{f"coref {k} F1": coref[k]["f1"] for k in ("muc", "b3", "ceafe")}, "coref mean F1": coref["avg_f1"],
            **{f"relations {mode} F1": m["f1"] for mode, m in record["relations"].items()},
            f"gold entities F1 ({record['gold_entities']['scorer']})": record["gold_entities"]["f1"],
            "entities dropped (slots)": record["entities_dropped"],
            **{f"docs/s ({k})": v for k, v in record["speed_docs_per_s"].items()}}
    console.print(_table(f"{record['setting']} [{record['scorer']}]", rows))


@app.command()
def coref(
    backend: Annotated[str, typer.Option(help="gold | string-match | fast-coref-log | fastcoref")] = "string-match",
    dataset: DatasetOpt = "scirex",
    artifacts: RunOpt = None,
    import_path: Annotated[Optional[Path], typer.Option(help="the fast-coref / fastcoref output to import")] = None,
):
    """Stage coref (SciREX): cluster the test split's mentions into <artifacts>/<dataset>/coref/<backend>.jsonl."""

    summary = stages.coref(_params(dataset, artifacts, run="latest"), backend,
                           import_path=str(import_path) if import_path else None)
    console.print(_table(f"coreference {backend} [{summary['setting']}] on {summary['docs']} documents",
                         {**{k: summary[k] for k in ("clusters", "mentions", "singletons")}, **summary["quality"]}))


@app.command("evaluate-coref")
def evaluate_coref(
    backend: Annotated[str, typer.Option(help="the coreference result to relate (see `dore coref`)")] = "string-match",
    dataset: DatasetOpt = "scirex",
    artifacts: RunOpt = None,
):
    """SciREX with a coreference component: clusters -> DORE -> official SciREX scores, labelled by setting."""

    record = stages.evaluate_with_coref(_params(dataset, artifacts, run="latest"), backend)
    for scorer in ("scirex_official", "dore_micro"):
        for arity, m in record[scorer].items():
            console.print(_table(f"{dataset} test [{scorer} {arity}] setting={record['setting']} ({record['split_note']})",
                                 {k: v for k, v in m.items() if isinstance(v, (int, float))}))
    console.print(_table(f"coreference quality of {backend} (F1 vs gold salient clusters)", record["coref_quality"]))


@app.command("scirex-baseline")
def scirex_baseline(artifacts: ArtifactsOpt = Path("artifacts")):
    """SciREX all-candidates baseline: every Task × Method × Material × Metric over the gold salient
    clusters of all test documents -> <artifacts>/scirex/metrics_all_candidates.json."""

    record = chain.all_candidates_stage(PipelineParams(dataset="scirex", artifacts=str(artifacts)))
    _print_scirex(f"all candidates ({record['documents']} documents)", record)


@app.command()
def salience(artifacts: ArtifactsOpt = Path("artifacts")):
    """SciREX salience classifier: train on train, select on the held-out train documents ->
    <artifacts>/scirex/salience/model.json, scores in metrics_salience.json."""

    record = chain.salience_stage(PipelineParams(dataset="scirex", artifacts=str(artifacts)))
    for name, scores in record["scores"].items():
        console.print(_table(f"salient clusters, {name} (official mapping)",
                             {k: scores["salient"][k] for k in ("p", "r", "f1", "predicted", "gold")}))


@app.command("scirex-chain")
def scirex_chain(
    salience_from: Annotated[str, typer.Option("--salience", help="model | oracle | none")] = "model",
    relate: Annotated[bool, typer.Option(help="run DORE's relations with the run's model")] = True,
    limit: LimitOpt = None,
    artifacts: RunOpt = None,
    mentions: Annotated[str, typer.Option("--mentions", help="gold (the NER) | predicted (the trained recognizer, "
                                          "<artifacts>/scirex/entities/model: end_to_end)")] = "gold",
    coref: Annotated[Optional[str], typer.Option("--coref", help="with predicted mentions: string-match | learned "
                                                 "(default: the recognizer's choice on held-out train)")] = None,
):
    """SciREX chain on all test documents: mentions (gold NER or the recognizer's) -> clusters -> salience
    -> DORE; every stage scored -> <artifacts>/scirex/metrics_chain_[predicted_]<salience>.json."""

    params = (_params("scirex", artifacts, run="latest") if relate
              else PipelineParams(dataset="scirex", artifacts=str(artifacts or "artifacts")))
    if mentions not in ("gold", "predicted"):
        raise typer.BadParameter(f"--mentions {mentions!r}: choose gold or predicted")
    record = chain.chain_stage(params, typing.cast(chain.Salience, salience_from), relate=relate, limit=limit,
                               mentions_from=typing.cast(chain.MentionSource, mentions), coref=coref)
    console.print(_table(f"chain [{record['setting']}] stages", {
        "mention f1": record["mentions"]["f1"], "coref avg f1": record["coref_quality"]["avg_f1"],
        "salient clusters f1": record["salient_clusters"]["f1"]}))
    if "relations" in record:
        _print_scirex(f"chain [{record['setting']}]", record["relations"])


def _print_scirex(title: str, record: dict) -> None:
    for scorer in ("scirex_official", "dore_micro"):
        console.print(_table(f"{title} [{scorer}]", {f"{arity} {k}": m[k] for arity, m in record[scorer].items()
                                                      for k in ("p", "r", "f1")}))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def experiments(ctx: typer.Context):
    """The paper's comparisons, one factor at a time (experiments/comparisons.yaml): trains, selects on dev,
    scores on test and appends to experiments/results.{md,json}; skips finished runs, resumes unfinished.
    Arguments as `python -m dore.experiments --help` (e.g. `--only base`, `--smoke`, `--list`)."""

    experiments_main(list(ctx.args))


@app.command()
def attention(
    model_dir: Annotated[Path, typer.Argument(help="a saved DORE model (single-sequence decoding is used)")],
    inputs: Annotated[Path, typer.Argument(help="documents (any format dore reads)")],
    doc: Annotated[int, typer.Option("--doc", help="the document to show")] = 0,
    stats_docs: Annotated[int, typer.Option(help="documents for the shares (the paper's Figure 3 statistics)")] = 20,
):
    """Which earlier tuple the decoder attended to most when it predicted each relation (paper Fig. 3)."""

    result = attention_main(model_dir, inputs, doc, stats_docs)
    console.print(result["text"])
    console.print(_table("tuple attention over the documents", result["statistics"]))


LatestOpt = Annotated[bool, typer.Option("--latest/--no-latest", help="also make it dore-<dataset>:latest, the "
                                                                   "model `bentoml serve` loads by default")]


@app.command("package")
def package_command(dataset: DatasetOpt = "docred", artifacts: RunOpt = None, latest: LatestOpt = False):
    """Stage package: the selected model (<artifacts>/<dataset>/model) into the BentoML model store."""

    record = stages.package(_params(dataset, artifacts, run="latest"), move_latest=latest)
    console.print(_packaged(record))


def _packaged(record: dict) -> str:
    """Where a packaged model went, and how to serve it when it is not the served `latest`."""
    serve = ("" if record["latest"] == record["tag"] else
             f"; {record['tag'].split(':')[0]}:latest stays {record['latest']} (serve this one with "
             f"DORE_BENTO_MODEL={record['tag']}, or package with --latest)")
    return f"packaged model: {record['tag']} at {record['bento_path']} (from {record['model_dir']}){serve}"


StageName = Annotated[str, typer.Argument(help="validate | convert | train | evaluate | package")]


@app.command()
def stage(
    name: StageName,
    section: Annotated[Dataset, typer.Option(help="the params file's section")] = "docred",
    params_file: Annotated[Path, typer.Option("--params", help="one section per dataset")] = Path("params.yaml"),
    artifacts: ArtifactsOpt = Path("artifacts"),
):
    """One stage with a params.yaml section's parameters (what the DVC stages run)."""

    if name not in stages.STAGES:
        raise typer.BadParameter(f"{name!r}; choose one of {', '.join(stages.STAGES)}", param_hint="NAME")
    params = load_section(params_file, section, artifacts=str(artifacts))
    if name in ("validate", "convert", "train"):  # a chain's first stages: an unavailable backbone fails there
        check_backbone(params.train)
    result = stages.STAGES[name](params)
    console.print_json(json.dumps(result, default=str))


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
    the entities (mentions with sentence, word and character spans) and the relations between them."""
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


@app.command("pipeline")
@with_train_options
def run_pipeline(
    dataset: DatasetOpt = "docred",
    artifacts: NewRunOpt = None,
    params_file: Annotated[Path, typer.Option("--params", help="the section's defaults; the embedded preset "
                                                                "when the file is missing")] = Path("params.yaml"),
    limit_train: LimitOpt = None, limit_dev: LimitOpt = None, limit_test: LimitOpt = None,
    package_model: Annotated[bool, typer.Option("--package/--no-package", help="put the model into the BentoML store")] = True,
    latest: LatestOpt = False,
    **train_options,
):
    """The whole pipeline (validate -> convert -> train -> evaluate -> package): the stage functions
    `dvc repro` runs, with the dataset's section of params.yaml (options override it)."""
    started = time.perf_counter()
    limits = {k: v or None for k, v in {"limit_train": limit_train, "limit_dev": limit_dev,  # 0: all
                                        "limit_test": limit_test}.items() if v is not None}
    overrides = {**limits, "train": {k: v for k, v in train_options.items() if v is not None}}
    if params_file.exists():
        base = load_section(params_file, dataset).model_dump(exclude={"dataset", "artifacts"})
    else:
        base = preset_values("embedded", dataset)
    params = stages.start_run(PipelineParams.model_validate({"dataset": dataset, **merge(base, overrides)}), artifacts)
    run_stage = {**stages.STAGES, "package": lambda p: stages.package(p, move_latest=latest)}
    for name in stages.PIPELINE_ORDER:
        if name == "package" and not package_model:
            continue
        result = run_stage[name](params)
        if name == "train":
            _print_training(dataset, result)
        elif name == "package":
            console.print(_packaged(result))
        else:
            console.print(_table(f"{dataset}: {name}", {k: v for k, v in result.items() if not isinstance(v, (dict, list))}))
    console.print(f"model: {(artifacts_dir(params) / 'model').resolve()}  wall time {time.perf_counter() - started:.0f} s")


# --- entity recognition (issue #14) ---------------------------------------------------------------

entities_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                           help="Mention detection and coreference for plain text (dore.entities).")
app.add_typer(entities_app, name="entities")
ENTITY_FIELDS = [n for n in EntityParams.model_fields if n not in ("dataset", "train", "artifacts")]


def with_entity_options(command: Callable) -> Callable:
    """One option per `EntityParams` field besides dataset, train and artifacts (derived, as
    `with_train_options` derives the training ones); unset options stay None."""
    signature = inspect.signature(command)
    declared = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    for name in ENTITY_FIELDS:
        field = EntityParams.model_fields[name]
        kind, choices = _option_type(field.annotation)
        help_text = " | ".join(choices) + ("; " if choices else "") + (field.description or "")
        option = typer.Option("--" + name.replace("_", "-"), help=f"{help_text} [config default: {field.default}]",
                              show_default=False, rich_help_panel="Entities (dore.config.EntityParams)")
        declared.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                          annotation=Annotated[Optional[kind], option]))
    command.__signature__ = signature.replace(parameters=[*declared, *(
        p for p in signature.parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD)])
    return command


EntityPresetOpt = Annotated[str, typer.Option("--preset", help="full (every training document) | embedded "
                                                               "(the small model of the main job)")]


def _entity_params(preset: str, artifacts: Path | None, options: dict) -> EntityParams:
    """Command-line values over the preset's `EntityParams`; unset `artifacts`: a new run directory."""
    own = {k: v for k, v in options.items() if k in ENTITY_FIELDS and v is not None}
    train = {k: v for k, v in options.items() if k in TrainConfig.model_fields and v is not None}
    root = artifacts or stages.new_run()
    return entity_params(preset, {**own, "train": train}, artifacts=str(root))


@entities_app.command("train")
@with_train_options
@with_entity_options
def entities_train(preset: EntityPresetOpt = "full", artifacts: NewRunOpt = None,
                   resume: Annotated[bool, typer.Option(help="continue from the newest checkpoint")] = True,
                   **options):
    """Train mention detection and coreference (DocRED test.json + Re-DocRED dev_revised minus its last 50
    documents), select on those 50; the recognizer goes to <artifacts>/docred/entities/model."""
    params = _entity_params(preset, artifacts, options)
    summary = stages.train_entities(params, resume=resume)
    console.print(_table("entities: best on dev", {k: v for k, v in (summary["best_dev"] or {}).items()}))
    console.print(f"recognizer: {Path(params.artifacts) / params.dataset / 'entities' / 'model'} "
                  f"(default coreference: {summary.get('default_coref')})")


@entities_app.command("evaluate")
def entities_evaluate(artifacts: Annotated[Path, typer.Option("--artifacts", help="the run holding "
                                                                 "<artifacts>/docred/entities/model")],
                      split: Annotated[str, typer.Option(help="test | dev")] = "test",
                      limit: LimitOpt = None,
                      dataset: Annotated[str, typer.Option(help="entity setting: docred | scirex")] = "docred"):
    """Score the recognizer on a split read from its own sentences (no entity information): mention P/R/F1
    (span, span + type) and CoNLL coreference of both backends; writes entities/eval/metrics-<split>.json."""
    params = EntityParams(dataset=dataset, artifacts=str(artifacts), **{f"limit_{split}": limit or None})
    record = stages.evaluate_entities(params, split)
    rows = {f"mentions {k} {m}": v[m] for k, v in record["mentions"].items() for m in ("p", "r", "f1")}
    rows |= {f"coref {b} {k}": (v[k]["f1"] if isinstance(v[k], dict) else v[k])
             for b, v in record["coref"].items() for k in ("muc", "b3", "ceafe", "avg_f1")}
    console.print(_table(f"entities {split} [{record['scorer']}] ({record['setting']}; default coreference "
                         f"{record['default_coref']})", rows))


if __name__ == "__main__":
    app()
