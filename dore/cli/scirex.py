"""`dore` commands of the SciREX setting: coreference, its evaluation, the all-candidates baseline,
salience and the chain."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Annotated, Optional

import typer

from dore import chain, stages
from dore.cli.base import ArtifactsOpt, DatasetOpt, LimitOpt, RunOpt, app, console, rows_table, run_params
from dore.config import PipelineParams


@app.command()
def coref(
    backend: Annotated[str, typer.Option(help="gold | string-match | fast-coref-log | fastcoref")] = "string-match",
    dataset: DatasetOpt = "scirex",
    artifacts: RunOpt = None,
    import_path: Annotated[Optional[Path], typer.Option(help="the fast-coref / fastcoref output to import")] = None,
):
    """Stage coref (SciREX): cluster the test split's mentions into <artifacts>/<dataset>/coref/<backend>.jsonl."""

    summary = stages.coref(run_params(dataset, artifacts, run="latest"), backend,
                           import_path=str(import_path) if import_path else None)
    console.print(rows_table(f"coreference {backend} [{summary['setting']}] on {summary['docs']} documents",
                             {**{k: summary[k] for k in ("clusters", "mentions", "singletons")}, **summary["quality"]}))


@app.command("evaluate-coref")
def evaluate_coref(
    backend: Annotated[str, typer.Option(help="the coreference result to relate (see `dore coref`)")] = "string-match",
    dataset: DatasetOpt = "scirex",
    artifacts: RunOpt = None,
):
    """SciREX with a coreference component: clusters -> DORE -> official SciREX scores, labelled by setting."""

    record = stages.evaluate_with_coref(run_params(dataset, artifacts, run="latest"), backend)
    for scorer in ("scirex_official", "dore_micro"):
        for arity, m in record[scorer].items():
            console.print(rows_table(f"{dataset} test [{scorer} {arity}] setting={record['setting']} ({record['split_note']})",
                                     {k: v for k, v in m.items() if isinstance(v, (int, float))}))
    console.print(rows_table(f"coreference quality of {backend} (F1 vs gold salient clusters)",
                             record["coref_quality"]))


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
        console.print(rows_table(f"salient clusters, {name} (official mapping)",
                                 {k: scores["salient"][k] for k in ("p", "r", "f1", "predicted", "gold")}))


@app.command("scirex-chain")
def scirex_chain(
    salience_from: Annotated[str, typer.Option("--salience", help="model | oracle | none")] = "model",
    dataset: Annotated[str, typer.Option(help="scirex (4-ary model) | scirex-binary (binary model)")] = "scirex",
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

    if dataset not in ("scirex", "scirex-binary"):
        raise typer.BadParameter(f"--dataset {dataset!r}: choose scirex or scirex-binary")
    params = (run_params(dataset, artifacts, run="latest") if relate
              else PipelineParams(dataset=dataset, artifacts=str(artifacts or "artifacts")))
    if mentions not in ("gold", "predicted"):
        raise typer.BadParameter(f"--mentions {mentions!r}: choose gold or predicted")
    record = chain.chain_stage(params, typing.cast(chain.Salience, salience_from), relate=relate, limit=limit,
                               mentions_from=typing.cast(chain.MentionSource, mentions), coref=coref)
    console.print(rows_table(f"chain [{record['setting']}] stages", {
        "mention f1": record["mentions"]["f1"], "coref avg f1": record["coref_quality"]["avg_f1"],
        "salient clusters f1": record["salient_clusters"]["f1"]}))
    if "relations" in record:
        _print_scirex(f"chain [{record['setting']}]", record["relations"])


def _print_scirex(title: str, record: dict) -> None:
    for scorer in ("scirex_official", "dore_micro"):
        console.print(rows_table(f"{title} [{scorer}]", {f"{arity} {k}": m[k] for arity, m in record[scorer].items()
                                                          for k in ("p", "r", "f1")}))
