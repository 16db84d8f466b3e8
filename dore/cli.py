"""The `dore` command line: one sub-command per lifecycle stage (each calls the stage's function)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from dore.data_import import DEFAULT_DEST, DEFAULT_SOURCE
from dore.env import set_offline_defaults

set_offline_defaults()
app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(width=None if Console().is_terminal else 160)


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
    from tqdm import tqdm

    from dore.convert import convert as convert_file, default_layout, read_any
    from dore.data.docred import load_rel_info
    from dore.linearize import build_targets
    from dore.sampling import SamplingConfig

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
    from dore.data.docred import load_rel_info
    from dore.datasets import data_root

    path = data_root() / "docred" / "rel_info.json"
    return load_rel_info(path) if path.exists() else None


@app.command()
def score(
    predictions: Annotated[Path, typer.Argument(help="result.json (CodaLab), a dataset file, or dore JSONL documents")],
    gold: Annotated[Path, typer.Argument(help="gold dataset file")],
    train: Annotated[Optional[list[Path]], typer.Option(help="DocRED: files trained on (Ign F1 fact set)")] = None,
    out: Annotated[Optional[Path], typer.Option(help="write the metrics JSON here")] = None,
):
    """Predictions + gold -> the dataset's official metrics table (percent)."""
    from dore.convert import read_any
    from dore.evaluate import predictions_from_documents, score as score_fn

    gold_docs, _, _ = read_any(gold)
    records = None
    if predictions.suffix == ".json" and _is_result_json(predictions):
        from dore.data.docred import read_docred_result
        records = [p.model_dump(exclude_none=True) for p in read_docred_result(predictions)]
        preds = {}
    else:
        pred_docs, _, pred_fmt = read_any(predictions)
        preds = predictions_from_documents(pred_docs)
        if pred_fmt == "docred":  # keep the evidence: the official scorer scores it
            from dore.evaluate import docred_records_from_documents
            records = docred_records_from_documents(pred_docs)
    train_docs = [d for p in train for d in read_any(p)[0]] if train else None
    metrics = score_fn(preds, gold_docs, train_docs=train_docs, docred_results=records)
    _print_metrics(metrics, f"{predictions.name} vs {gold.name}")
    if out:
        from dore.data.model import atomic_write_text
        atomic_write_text(out, json.dumps(metrics, indent=1, default=str))


def _is_result_json(path: Path) -> bool:
    with open(path, encoding="utf-8") as fh:
        head = fh.read(4096).lstrip()
    return head.startswith("[") and '"h_idx"' in head


def _print_metrics(metrics: dict, title: str) -> None:
    from dore.evaluate import headline

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


def _params(dataset: str, artifacts: Path, limit_train, limit_dev, limit_test, **train_overrides):
    from dore.pipeline import PipelineParams
    from dore.train import TrainConfig

    overrides = {k: v for k, v in train_overrides.items() if v is not None}
    return PipelineParams(dataset=dataset, artifacts=str(artifacts), limit_train=limit_train or None,
                          limit_dev=limit_dev or None, limit_test=limit_test or None,
                          train=TrainConfig(**overrides))


DatasetOpt = Annotated[str, typer.Option(help="docred | cdr | gda | scirex")]
ArtifactsOpt = Annotated[Path, typer.Option(help="artifacts root")]
LimitOpt = Annotated[Optional[int], typer.Option(help="first N documents of the split (0 or unset: all)")]


@app.command()
def prepare(dataset: DatasetOpt = "docred", artifacts: ArtifactsOpt = Path("artifacts"),
            limit_train: LimitOpt = None, limit_dev: LimitOpt = None, limit_test: LimitOpt = None):
    """Stage convert for a benchmark setting: splits -> artifacts/<dataset>/docs/*.jsonl + layout."""
    from dore import pipeline

    counts = pipeline.convert(_params(dataset, artifacts, limit_train, limit_dev, limit_test))
    console.print(_table(f"{dataset} splits", {k: f"{v['documents']} docs, {v['relations']} relations" for k, v in counts.items()}))


@app.command()
def validate(dataset: DatasetOpt = "docred", artifacts: ArtifactsOpt = Path("artifacts")):
    """Stage validate: structural checks (readers) and great-expectations suites on every split."""
    from dore import pipeline

    summary = pipeline.validate(_params(dataset, artifacts, None, None, None))
    console.print(_table(f"{dataset} validation", {k: f"{v['documents']} docs, ok={v['success']}" for k, v in summary.items()}))


@app.command()
def train(
    dataset: DatasetOpt = "docred",
    artifacts: ArtifactsOpt = Path("artifacts"),
    backbone: Annotated[Optional[str], typer.Option(help="minilm (embedded default), tiny-t5|tiny-bart|tiny-led, a hub name or a local dir")] = None,
    mode: Annotated[Optional[str], typer.Option(help="rows (parallel row generation) | sequence")] = None,
    sampling: Annotated[Optional[str], typer.Option(help="none | random:0.1 | diagonal:1 | asymmetric:2,1 | asymmetric_flipped | dynamic | all")] = None,
    epochs: Optional[int] = None, max_steps: Optional[int] = None, max_minutes: Optional[float] = None,
    lr: Optional[float] = None, lr_new: Optional[float] = None, batch_docs: Optional[int] = None,
    grad_accum: Optional[int] = None, warmup_ratio: Optional[float] = None, label_smoothing: Optional[float] = None,
    max_source_length: Optional[int] = None, seed: Optional[int] = None,
    chunk_length: Annotated[Optional[int], typer.Option(help="encode long documents in windows of this many tokens (FiD)")] = None,
    order: Annotated[Optional[str], typer.Option(help="row-column | annotation | random (target order)")] = None,
    init: Annotated[Optional[str], typer.Option(help="number | random entity-id embedding init")] = None,
    init_from: Annotated[Optional[str], typer.Option(help="a trained DORE model dir to fine-tune (after distant pre-training)")] = None,
    entity_embeddings: Annotated[Optional[bool], typer.Option(
        "--entity-embeddings/--no-entity-embeddings",
        help="document-aware entity symbols: projected encoder states at each entity's markers")] = None,
    limit_train: LimitOpt = None, limit_dev: LimitOpt = None, limit_test: LimitOpt = None,
    resume: Annotated[bool, typer.Option(help="continue from the newest checkpoint")] = True,
):
    """Stage train: fine-tune on the setting's train split, select on dev (never test)."""
    from dore import pipeline

    params = _params(dataset, artifacts, limit_train, limit_dev, limit_test, backbone=backbone, mode=mode,
                     sampling=sampling, epochs=epochs, max_steps=max_steps, max_minutes=max_minutes, lr=lr,
                     lr_new=lr_new, batch_docs=batch_docs, grad_accum=grad_accum, warmup_ratio=warmup_ratio,
                     label_smoothing=label_smoothing, max_source_length=max_source_length, seed=seed,
                     chunk_length=chunk_length, order=order,
                     init=init, init_from=init_from, entity_embeddings=entity_embeddings)
    if not (pipeline.artifacts_dir(params) / "docs" / "train.jsonl").exists():
        pipeline.convert(params)
    summary = pipeline.train(params, resume=resume)
    console.print(_table(f"{dataset} training", {k: v for k, v in summary.items() if not isinstance(v, dict)}))
    if summary["best_dev"]:
        console.print(_table("selected on dev", {k: v for k, v in summary["best_dev"].items()}))


@app.command()
def tune(dataset: DatasetOpt = "docred", artifacts: ArtifactsOpt = Path("artifacts"),
         na_biases: Annotated[str, typer.Option(help="comma-separated NA logit biases to try; > 0 answers NA more "
                                                     "often (precision), < 0 less often (recall)")] = "0,-1,-2,-3",
         eos_biases: Annotated[str, typer.Option(help="comma-separated EOS logit biases to try")] = "0"):
    """Choose the NA/EOS logit biases of the trained model on dev (never test); stored in its model card."""
    from dore import pipeline

    def floats(text: str) -> tuple[float, ...]:
        try:
            return tuple(float(v) for v in text.split(","))
        except ValueError:
            raise typer.BadParameter(f"not a comma-separated list of numbers: {text!r}") from None

    tuned = pipeline.tune_decoding(_params(dataset, artifacts, None, None, None), na_biases=floats(na_biases),
                                   eos_biases=floats(eos_biases))
    columns = ("na_bias", "eos_bias", "f1", "ign_f1", "p", "r")
    table = Table(*columns, title=f"{dataset} dev F1 by NA / EOS logit bias (chosen: {tuned['chosen']})")
    for row in tuned["sweep"]:
        table.add_row(*(f"{row[c]:.2f}" for c in columns))
    console.print(table)


@app.command()
def evaluate(dataset: DatasetOpt = "docred", artifacts: ArtifactsOpt = Path("artifacts"),
             split: Annotated[str, typer.Option(help="dev | test")] = "test",
             num_beams: int = 1):
    """Stage evaluate: the selected model on a split, with the dataset's official scorer."""
    from dore import pipeline

    params = _params(dataset, artifacts, None, None, None)
    params = params.model_copy(update={"num_beams": num_beams})
    record = pipeline.evaluate(params, split)
    console.print(_table(f"{dataset} {split} [{record['scorer']}] ({record['setting']})",
                         {k: v for k, v in record.items() if isinstance(v, (int, float))}))


@app.command()
def coref(
    backend: Annotated[str, typer.Option(help="gold | string-match | fast-coref-log | fastcoref")] = "string-match",
    dataset: DatasetOpt = "scirex",
    artifacts: ArtifactsOpt = Path("artifacts"),
    import_path: Annotated[Optional[Path], typer.Option(help="the fast-coref / fastcoref output to import")] = None,
):
    """Stage coref (SciREX): cluster the test split's mentions into artifacts/<dataset>/coref/<backend>.jsonl."""
    from dore import pipeline

    summary = pipeline.coref(_params(dataset, artifacts, None, None, None), backend,
                             import_path=str(import_path) if import_path else None)
    console.print(_table(f"coreference {backend} [{summary['setting']}] on {summary['docs']} documents",
                         {**{k: summary[k] for k in ("clusters", "mentions", "singletons")}, **summary["quality"]}))


@app.command("evaluate-coref")
def evaluate_coref(
    backend: Annotated[str, typer.Option(help="the coreference result to relate (see `dore coref`)")] = "string-match",
    dataset: DatasetOpt = "scirex",
    artifacts: ArtifactsOpt = Path("artifacts"),
):
    """SciREX with a coreference component: clusters -> DORE -> official SciREX scores, labelled by setting."""
    from dore import pipeline

    record = pipeline.evaluate_with_coref(_params(dataset, artifacts, None, None, None), backend)
    for scorer in ("scirex_official", "dore_micro"):
        for arity, m in record[scorer].items():
            console.print(_table(f"{dataset} test [{scorer} {arity}] setting={record['setting']} ({record['split_note']})",
                                 {k: v for k, v in m.items() if isinstance(v, (int, float))}))
    console.print(_table(f"coreference quality of {backend} (F1 vs gold salient clusters)", record["coref_quality"]))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def experiments(ctx: typer.Context):
    """The paper's comparisons, one factor at a time (experiments/comparisons.yaml): trains, selects on dev,
    scores on test and appends to experiments/results.{md,json}; skips finished runs, resumes unfinished.
    Arguments as `python -m dore.experiments --help` (e.g. `--only base`, `--smoke`, `--list`)."""
    from dore.experiments import main

    main(list(ctx.args))


@app.command()
def attention(
    model_dir: Annotated[Path, typer.Argument(help="a saved DORE model (single-sequence decoding is used)")],
    inputs: Annotated[Path, typer.Argument(help="documents (any format dore reads)")],
    doc: Annotated[int, typer.Option("--doc", help="the document to show")] = 0,
    stats_docs: Annotated[int, typer.Option(help="documents for the shares (the paper's Figure 3 statistics)")] = 20,
):
    """Which earlier tuple the decoder attended to most when it predicted each relation (paper Fig. 3)."""
    from dore.analysis import main

    result = main(model_dir, inputs, doc, stats_docs)
    console.print(result["text"])
    console.print(_table("tuple attention over the documents", result["statistics"]))


@app.command("package")
def package_command(dataset: DatasetOpt = "docred", artifacts: ArtifactsOpt = Path("artifacts")):
    """Stage package: the selected model (artifacts/<dataset>/model) into the BentoML model store."""
    from dore import stages

    record = stages.package(_params(dataset, artifacts, None, None, None))
    console.print(f"packaged model: {record['tag']} at {record['bento_path']} (from {record['model_dir']})")


StageName = Annotated[str, typer.Argument(help="validate | convert | train | evaluate | package")]


@app.command()
def stage(
    name: StageName,
    section: Annotated[str, typer.Option(help="the params file's section: docred | cdr | gda | scirex")] = "docred",
    params_file: Annotated[Path, typer.Option("--params", help="one section per dataset")] = Path("params.yaml"),
    artifacts: ArtifactsOpt = Path("artifacts"),
):
    """One stage with a params.yaml section's parameters (what the DVC stages run)."""
    from dore import stages
    from dore.presets import load_section

    if name not in stages.STAGES:
        raise typer.BadParameter(f"{name!r}; choose one of {', '.join(stages.STAGES)}", param_hint="NAME")
    result = stages.STAGES[name](load_section(params_file, section, artifacts=str(artifacts)))
    console.print_json(json.dumps(result, default=str))


data_app = typer.Typer(no_args_is_help=True, help="The benchmark data under data/, versioned by DVC.")
app.add_typer(data_app, name="data")


@data_app.command("import")
def data_import(
    source: Annotated[Path, typer.Option(help="local mirror of the benchmark files")] = DEFAULT_SOURCE,
    dest: Annotated[Path, typer.Option(help="destination folder (tracked by DVC)")] = DEFAULT_DEST,
    track: Annotated[bool, typer.Option("--dvc/--no-dvc", help="record the folder with `dvc add`")] = True,
):
    """Copy the raw files the benchmark settings need (and coref/) from a mirror into data/, then `dvc add data`."""
    from dore.data_import import MirrorMissingError, import_data

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
    inputs: Annotated[Path, typer.Argument(help="documents (any format dore reads)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="result.json (DocRED: official CodaLab format) or .jsonl")] = Path("result.json"),
    fmt: Annotated[Optional[str], typer.Option("--format")] = None,
    num_beams: int = 1,
):
    """Extract relations; DocRED input gives the official result.json (h_idx/t_idx index the vertexSet)."""
    from tqdm import tqdm

    from dore.convert import read_any
    from dore.data.model import atomic_write_text
    from dore.predict import Extractor

    extractor = Extractor.from_pretrained(model_dir)
    docs, _, fmt = read_any(inputs, fmt)
    decoding = extractor.decoding.model_copy(update={"num_beams": num_beams})
    results = []
    step = decoding.batch_docs
    for i in tqdm(range(0, len(docs), step), desc="extract", unit="batch"):
        results.extend(extractor.extract(docs[i: i + step], decoding))
    if fmt == "docred" or out.suffix == ".json":
        from dore.data.docred import write_docred_result
        write_docred_result(out, [{"title": d.doc_id, "h_idx": r.args[0], "t_idx": r.args[1], "r": r.label}
                                  for d, rels in zip(docs, results) for r in rels])
    else:
        atomic_write_text(out, "".join(json.dumps({"doc_id": d.doc_id, "relations": [r.model_dump() for r in rels]}) + "\n"
                                       for d, rels in zip(docs, results)))
    console.print(f"{sum(map(len, results))} relations from {len(docs)} documents -> {out}")


@app.command("pipeline")
def run_pipeline(
    dataset: DatasetOpt = "docred",
    artifacts: ArtifactsOpt = Path("artifacts"),
    backbone: str = "minilm",
    epochs: int = 4,
    max_minutes: Annotated[Optional[float], typer.Option(help="training budget")] = 8.0,
    limit_train: LimitOpt = 50, limit_dev: LimitOpt = 20, limit_test: LimitOpt = 50,
    lr: float = 1e-4,
    package_model: Annotated[bool, typer.Option("--package/--no-package", help="put the model into the BentoML store")] = True,
):
    """The whole pipeline (validate -> convert -> train -> evaluate -> package); defaults: the embedded
    default, a small real Re-DocRED subset with the MiniLM backbone on CPU."""
    from dore import pipeline

    started = time.perf_counter()
    params = _params(dataset, artifacts, limit_train, limit_dev, limit_test, backbone=backbone, epochs=epochs,
                     max_minutes=max_minutes, lr=lr)
    for split, v in pipeline.validate(params).items():
        console.print(f"validate {split}: {v['documents']} documents ok (report {v['report']})")
    pipeline.convert(params)
    summary = pipeline.train(params, resume=False)
    console.print(f"trained {summary['steps']} steps in {summary['seconds']} s; selected on dev: "
                  f"{ {k: v for k, v in (summary['best_dev'] or {}).items() if k in ('f1', 'ign_f1', 'epoch')} }")
    record = pipeline.evaluate(params, "test")
    console.print(_table(f"{dataset} test [{record['scorer']}] ({record['setting']})",
                         {k: v for k, v in record.items() if isinstance(v, (int, float))}))
    model_dir = pipeline.artifacts_dir(params) / "model"
    if package_model:
        from dore.package import package
        console.print(f"packaged model: {package(model_dir, f'dore-{dataset}')} (from {model_dir.resolve()})")
    console.print(f"model: {model_dir.resolve()}  wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    app()
