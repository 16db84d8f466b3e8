"""`dore` commands that run the lifecycle stages on a run directory: train, tune, evaluate,
evaluate-joint, experiments, attention, package, stage and pipeline."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from dore import stages
from dore.analysis import main as attention_main
from dore.cli.base import (ArtifactsOpt, Dataset, DatasetOpt, LatestOpt, LimitOpt, NewRunOpt, RunOpt, app, console,
                           rows_table, run_params, with_train_options)
from dore.config import PipelineParams, artifacts_dir
from dore.experiments import main as experiments_main
from dore.joint import evaluate_joint
from dore.model.backbone import check_backbone
from dore.presets import RECIPES, load_section, merge, preset_values
from dore.training.loop import processes


@app.command()
@with_train_options
def train(
    dataset: DatasetOpt = "docred",
    artifacts: NewRunOpt = None,
    limit_train: LimitOpt = None, limit_dev: LimitOpt = None, limit_test: LimitOpt = None,
    method: Annotated[str, typer.Option(help="dore | lexical | classifier (the baselines)")] = "dore",
    resume: Annotated[bool, typer.Option(help="continue from the newest checkpoint")] = True,
    recipe: Annotated[str, typer.Option(help="best: DORE starts from the dataset's best measured switches "
                                             "(dore.presets.RECIPES), which options override | plain: "
                                             "TrainConfig's defaults, the paper's dynamic negatives")] = "best",
    **train_options,
):
    """Stage train: fine-tune on the setting's train split, select on dev (never test)."""
    if recipe not in ("best", "plain"):
        raise typer.BadParameter(f"{recipe!r}; choose best or plain", param_hint="--recipe")
    if recipe == "best" and method == "dore":
        train_options = {**RECIPES[dataset], **{k: v for k, v in train_options.items() if v is not None}}
    params = run_params(dataset, artifacts, limit_train, limit_dev, limit_test, **train_options)
    summary = stages.train(params, method=method, resume=resume)  # converts the splits first if needed
    if not processes().is_main_process:  # torchrun / accelerate launch: the main process reports
        return
    _print_training(dataset, summary)
    console.print(f"model: {artifacts_dir(params) / 'model'} (`dore evaluate|tune|package` read the latest run)")


def _print_training(dataset: str, summary: dict) -> None:
    """The end-of-training tables: steps and time with the decoding biases tuned on dev, then the dev selection."""
    rows = {k: v for k, v in summary.items() if not isinstance(v, dict)}
    rows |= {f"tuned on dev: {k}": v for k, v in summary.get("decoding_tuned_on_dev", {}).items()}
    console.print(rows_table(f"{dataset} training", rows))
    if summary.get("best_dev"):
        console.print(rows_table("selected on dev", summary["best_dev"]))


@app.command()
def tune(dataset: DatasetOpt = "docred", artifacts: RunOpt = None,
         na_biases: Annotated[str, typer.Option(help="comma-separated NA logit biases to try; > 0 answers NA more "
                                                     "often (precision), < 0 less often (recall)")] = "0,-1,-2,-3",
         eos_biases: Annotated[str, typer.Option(help="comma-separated EOS logit biases to try")] = "0",
         num_beams: Annotated[int, typer.Option(help="beams of the final evaluation; > 1 also tunes the length "
                                                     "penalty with them")] = 1,
         length_penalties: Annotated[str, typer.Option(help="comma-separated length penalties to try with "
                                                            "--num-beams > 1")] = "1"):
    """Choose the decoding of the trained model on dev (never test): the NA/EOS logit biases, then
    with beams the length penalty; stored in its model card."""

    def floats(text: str) -> tuple[float, ...]:
        try:
            return tuple(float(v) for v in text.split(","))
        except ValueError:
            raise typer.BadParameter(f"not a comma-separated list of numbers: {text!r}") from None

    params = run_params(dataset, artifacts, run="latest").model_copy(update={"num_beams": num_beams})
    tuned = stages.tune_decoding(params, na_biases=floats(na_biases), eos_biases=floats(eos_biases),
                                 length_penalties=floats(length_penalties))
    columns = ("na_bias", "eos_bias", "num_beams", "length_penalty", "f1", "ign_f1", "p", "r")
    table = Table(*columns, title=f"{dataset} dev F1 by decoding (chosen: {tuned['chosen']})")
    for row in tuned["sweep"]:
        table.add_row(*(f"{row.get(c, 1.0):.2f}" for c in columns))
    console.print(table)


@app.command()
def evaluate(dataset: DatasetOpt = "docred", artifacts: RunOpt = None,
             split: Annotated[str, typer.Option(help="dev | test")] = "test",
             num_beams: int = 1):
    """Stage evaluate: the selected model on a split, with the dataset's official scorer."""

    params = run_params(dataset, artifacts, run="latest").model_copy(update={"num_beams": num_beams})
    record = stages.evaluate(params, split)
    console.print(rows_table(f"{dataset} {split} [{record['scorer']}] ({record['setting']})",
                             {k: v for k, v in record.items() if isinstance(v, (int, float))}))


@app.command("evaluate-joint")
def evaluate_joint_command(dataset: DatasetOpt = "docred", artifacts: RunOpt = None,
                           split: Annotated[str, typer.Option(help="dev | test")] = "test",
                           out: Annotated[Optional[Path], typer.Option(help="folder for metrics.json and "
                                                                           "predictions.jsonl.gz")] = None):
    """Text in, relations out, measured: each document's own sentences, no entity information ->
    recognizer -> DORE; mentions, coreference and joint relations (strict, strict_typed, relaxed),
    beside the same model on the gold entities."""
    record = evaluate_joint(run_params(dataset, artifacts, run="latest"), split, out)
    mentions, coref = record["entities"]["mentions"], record["entities"]["coref"]
    rows = {"mention F1 (span)": mentions["span"]["f1"], "mention F1 (span + type)": mentions["span_type"]["f1"],
            **{f"coref {k} F1": coref[k]["f1"] for k in ("muc", "b3", "ceafe")}, "coref mean F1": coref["avg_f1"],
            **{f"relations {mode} F1": m["f1"] for mode, m in record["relations"].items()},
            f"gold entities F1 ({record['gold_entities']['scorer']})": record["gold_entities"]["f1"],
            "entities dropped (slots)": record["entities_dropped"],
            **{f"docs/s ({k})": v for k, v in record["speed_docs_per_s"].items()}}
    console.print(rows_table(f"{record['setting']} [{record['scorer']}]", rows))


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
    console.print(rows_table("tuple attention over the documents", result["statistics"]))


@app.command("package")
def package_command(dataset: DatasetOpt = "docred", artifacts: RunOpt = None, latest: LatestOpt = False):
    """Stage package: the selected model (<artifacts>/<dataset>/model) into the BentoML model store."""

    record = stages.package(run_params(dataset, artifacts, run="latest"), move_latest=latest)
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
            console.print(rows_table(f"{dataset}: {name}", {k: v for k, v in result.items() if not isinstance(v, (dict, list))}))
    console.print(f"model: {(artifacts_dir(params) / 'model').resolve()}  wall time {time.perf_counter() - started:.0f} s")
