"""Prefect flow `train-dore`: validate -> convert -> train -> evaluate -> package as tasks.

Each task calls the stage's one function (`dore.stages`, the same the DVC stages run); results
are small JSON documents (JSON serializer, never pickles) and files under
`<artifacts>/<dataset>/`, a new run directory `runs/<time>/` unless `artifacts` names one: a flow
run never writes into the DVC-tracked `artifacts/` by default, and its packaged model becomes
`dore-<dataset>:latest` (the one `bentoml serve` loads) only with `move_latest`. The test metrics
are published as a table artifact `dore-<dataset>-metrics`. A failed run logs its reason and ends
in a Failed state whose message is that reason, one line (what `--watch` shows).

    python flows/train.py --dataset docred                  # one local run (ephemeral API)
    prefect deployment run train-dore/docred --watch        # through a worker (prefect.yaml)

SciREX with `chain` (the `scirex` deployment): after the gold-input model, the chain of issue #15
runs on the test file (dore.chain, the functions behind `dore salience`, `dore entities train
--preset scirex` and `dore scirex-chain`): the salience classifier, the mention recognizer, then
one chain per setting (gold_mentions_pred_clusters, gold_salient_oracle, end_to_end), each
published as a table artifact `dore-scirex-chain-<setting>-metrics` (gold_input: the evaluate
artifact). `chain_overrides` merge into the recognizer's `EntityParams` (entity preset `scirex`);
`chain_limit` keeps the first test documents (unset: all 66), `salience_train_limit` the first
training documents of the salience classifier (unset: all; tests use a few).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import yaml

from dore.env import set_offline_defaults

set_offline_defaults()  # before Prefect reads its settings

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_table_artifact  # noqa: E402
from prefect.states import Failed, State  # noqa: E402

from dore import chain as scirex_chain  # noqa: E402
from dore import stages  # noqa: E402
from dore.config import PipelineParams, artifacts_dir  # noqa: E402
from dore.data.model import atomic_write_text  # noqa: E402
from dore.errors import USER_ERRORS, describe_error  # noqa: E402
from dore.joint import evaluate_joint  # noqa: E402
from dore.presets import entity_params, resolve, section_values  # noqa: E402


def is_io_error(task, task_run, state) -> bool:
    """Retry I/O failures only: bad data (DataError, ValidationFailed) fails the same way again."""
    try:
        state.result()
    except OSError:
        return True
    except Exception:
        return False
    return False


JSON_RESULTS: dict[str, Any] = {"persist_result": True, "result_serializer": "json"}
IO_RETRIES: dict[str, Any] = {"retries": 2, "retry_delay_seconds": 5, "retry_condition_fn": is_io_error}


@task(name="validate", **IO_RETRIES, **JSON_RESULTS)
def validate(params: PipelineParams) -> dict:
    """Read every split (structural errors raise) and run the content expectations."""
    return stages.validate(params)


@task(name="convert", **IO_RETRIES, **JSON_RESULTS)
def convert(params: PipelineParams) -> dict:
    """Splits -> canonical documents and the layout."""
    return stages.convert(params)


@task(name="train", **JSON_RESULTS)
def train(params: PipelineParams, processes: int = 1) -> dict:
    """Fine-tune, select on dev; the selected model goes to `model/`. With `processes` > 1 the
    task starts them with torchrun (CPUs over gloo, GPUs over NCCL), each running the same stage
    function with these parameters (written beside the run as a params file section)."""
    if processes == 1:
        return stages.train_stage(params)
    out = artifacts_dir(params)
    params_file = atomic_write_text(out / "train_params.yaml",
                                    yaml.safe_dump({params.dataset: section_values(params)}, sort_keys=False))
    with socket.socket() as s:  # a free rendezvous port on this machine
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", str(processes),
               "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "dore.cli", "stage", "train",
               "--params", str(params_file), "--section", params.dataset, "--artifacts", params.artifacts]
    get_run_logger().info("training with %d processes: %s", processes, " ".join(command))
    done = subprocess.run(command)
    if done.returncode != 0:
        raise RuntimeError(f"training with {processes} processes failed (exit {done.returncode}); its output "
                           "is in this flow run's log")
    return json.loads((out / "train" / "summary.json").read_text())


@task(name="evaluate", **JSON_RESULTS)
def evaluate(params: PipelineParams) -> dict:
    """Score the selected model on test with the dataset's official scorer."""
    return stages.evaluate(params)


@task(name="evaluate-joint", **JSON_RESULTS)
def evaluate_joint_task(params: PipelineParams) -> dict:
    """Text in, relations out (models with a recognizer): the test split read from its sentences alone."""
    return evaluate_joint(params)


def joint_rows(record: dict) -> list[dict]:
    mentions, coref = record["entities"]["mentions"], record["entities"]["coref"]
    rows = [{"metric": f"mention F1 ({k})", "value": round(mentions[k]["f1"], 2)} for k in ("span", "span_type")]
    rows += [{"metric": f"coref {k} F1", "value": round(coref[k]["f1"], 2)} for k in ("muc", "b3", "ceafe")]
    rows += [{"metric": f"relations {mode} F1", "value": round(m["f1"], 2)} for mode, m in record["relations"].items()]
    return rows + [{"metric": "gold entities F1", "value": round(record["gold_entities"]["f1"], 2)}]


@task(name="package", **IO_RETRIES, **JSON_RESULTS)
def package(params: PipelineParams, move_latest: bool) -> dict:
    """Put the selected model into the BentoML model store (as `latest` only with `move_latest`)."""
    return stages.package(params, move_latest=move_latest)


@task(name="coref", **IO_RETRIES, **JSON_RESULTS)
def coref(params: PipelineParams, backend: str) -> dict:
    """SciREX: cluster the test split's mentions with a coreference backend (dore.coref)."""
    return stages.coref(params, backend)


@task(name="evaluate-coref", **JSON_RESULTS)
def evaluate_coref(params: PipelineParams, backend: str) -> dict:
    """SciREX: the model over the backend's clusters, official scores labelled by setting."""
    return stages.evaluate_with_coref(params, backend)


@task(name="salience", **JSON_RESULTS)
def salience(params: PipelineParams, train_limit: int | None) -> dict:
    """SciREX: the salience classifier, trained on train and selected on its held-out documents."""
    return scirex_chain.salience_stage(params, train_limit=train_limit)


@task(name="train-recognizer", **JSON_RESULTS)
def train_recognizer(params: PipelineParams, overrides: dict | None) -> dict:
    """SciREX: the mention recognizer (four types, learned coreference) -> <artifacts>/scirex/entities/model."""
    return stages.train_entities(entity_params("scirex", overrides, artifacts=params.artifacts))


@task(name="scirex-chain", **JSON_RESULTS)
def chain_run(params: PipelineParams, mentions_from: str, salience_from: str, limit: int | None) -> dict:
    """SciREX: one setting of the chain on the test file, every stage scored."""
    return scirex_chain.chain_stage(params, salience_from, limit=limit, mentions_from=mentions_from)


#: (mentions, salience) of each chain setting the flow publishes
CHAIN_SETTINGS = (("gold", "model"), ("gold", "oracle"), ("predicted", "model"))


def chain_rows(record: dict) -> list[dict]:
    """One row per stage metric and relation score of a chain record."""
    rows = [{"stage": "mentions", "metric": f"{k}", "value": round(v, 2)}
            for k, v in (("p", record["mentions"]["p"]), ("r", record["mentions"]["r"]),
                         ("f1", record["mentions"]["f1"]), ("span_f1", record["mentions"]["span"]["f1"]))]
    rows += [{"stage": "coref", "metric": k, "value": round(v, 2)} for k, v in record["coref_quality"].items()]
    rows += [{"stage": "salient_clusters", "metric": k, "value": round(record["salient_clusters"][k], 2)}
             for k in ("p", "r", "f1")]
    for scorer in ("scirex_official", "dore_micro"):
        rows += [{"stage": "relations", "metric": f"{scorer} {arity} {k}", "value": round(v[k], 2)}
                 for arity, v in record.get("relations", {}).get(scorer, {}).items() for k in ("p", "r", "f1")]
    return rows


def metric_rows(record: dict) -> list[dict]:
    """The headline numbers of an evaluation record, one table row each."""
    return [{"metric": k, "value": round(v, 4) if isinstance(v, float) else v}
            for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]


def failure_reason(exc: Exception) -> str:
    """An exception in one line: an error the user can act on as the CLI says it, else its type and first line."""
    if isinstance(exc, USER_ERRORS):
        return describe_error(exc)
    return f"{type(exc).__name__}: {next(iter(str(exc).strip().splitlines()), '')}"


@flow(name="train-dore", **JSON_RESULTS)
def train_dore(dataset: str = "docred", preset: Literal["embedded", "paper"] = "embedded",
               overrides: dict[str, Any] | None = None, artifacts: str | None = None,
               package_model: bool = True, move_latest: bool = False,
               coref_backends: list[str] | None = None, train_processes: int = 1, chain: bool = False,
               chain_overrides: dict[str, Any] | None = None, chain_limit: int | None = None,
               salience_train_limit: int | None = None) -> dict | State:
    """The whole lifecycle for one dataset. `preset`: `embedded` (MiniLM, small real subset,
    CPU) or `paper` (Table 7); `overrides` merge into it, e.g.
    `{"limit_train": 4, "train": {"backbone": "tiny-bart", "max_steps": 2}}`. `artifacts`: the
    output root (unset: a new `runs/<time>`). `move_latest`: the packaged model becomes
    `dore-<dataset>:latest`, the one `bentoml serve` loads. SciREX only: `coref_backends` (e.g.
    `["gold", "string-match"]`) also evaluates the trained gold-input model over each backend's
    clusters (settings gold_input / gold_mentions_pred_clusters / gold_salient_oracle / end_to_end). `train_processes`:
    train with that many processes (torchrun) instead of one."""
    logger = get_run_logger()
    try:
        # parameters, backbone and data are checked before the first task: a typo fails in a second
        params = stages.start_run(resolve(preset, dataset, overrides), artifacts)
        if chain and dataset != "scirex":
            raise ValueError(f"chain runs on SciREX only, not {dataset!r}")
        result = lifecycle(params, preset, package_model, move_latest, coref_backends or [], train_processes)
        if chain:
            result["chain"] = chain_lifecycle(params, chain_overrides, chain_limit, salience_train_limit)
        return result
    except Exception as exc:  # every failure ends the run with its reason as the state message
        reason = failure_reason(exc)
        if isinstance(exc, USER_ERRORS):
            logger.error("%s", reason)
        else:
            logger.exception("%s", reason)
        return Failed(message=reason)


def lifecycle(params: PipelineParams, preset: str, package_model: bool, move_latest: bool,
              coref_backends: list[str], train_processes: int = 1) -> dict:
    """The tasks of `train_dore`, in order, on checked parameters."""
    logger, dataset = get_run_logger(), params.dataset
    logger.info("parameters: %s", params.model_dump_json())
    validate(params)
    convert(params)
    summary = train(params, train_processes)
    logger.info("trained %s steps in %s s; selected on dev: %s", summary["steps"], summary["seconds"],
                summary["best_dev"])
    record = evaluate(params)
    if params.entities is not None:  # the model reads plain text: score that too
        joint = evaluate_joint_task(params)
        create_table_artifact(key=f"dore-{dataset}-joint-metrics", table=joint_rows(joint),
                              description=f"dore {dataset} ({preset}): {joint['setting']} [{joint['scorer']}]")
    packaged = package(params, move_latest) if package_model else None
    rows = metric_rows(record)
    create_table_artifact(
        key=f"dore-{dataset}-metrics", table=rows,
        description=f"dore {dataset} ({preset}) on {record['split']} [{record['scorer']}]: {record['setting']}. "
                    f"Model: {packaged['tag'] if packaged else artifacts_dir(params) / 'model'}")
    with_coref = {}
    for backend in coref_backends:
        coref(params, backend)
        scored = evaluate_coref(params, backend)
        with_coref[backend] = scored
        create_table_artifact(
            key=f"dore-{dataset}-{backend}-metrics".replace("_", "-"),
            table=[{"scorer": scorer, "arity": arity, **{k: round(v[k], 2) for k in ("p", "r", "f1")}}
                   for scorer in ("scirex_official", "dore_micro") for arity, v in scored[scorer].items()],
            description=f"{dataset} test, setting {scored['setting']} (coreference: {backend}, "
                        f"avg F1 {scored['coref_quality']['avg_f1']:.1f}); {scored['split_note']}")
    return {"dataset": dataset, "preset": preset, "metrics": {r["metric"]: r["value"] for r in rows},
            "coref": {b: {"setting": r["setting"], "scirex_official": r["scirex_official"]} for b, r in with_coref.items()},
            "model_dir": str((artifacts_dir(params) / "model").resolve()),
            "bento_tag": packaged["tag"] if packaged else None}


def chain_lifecycle(params: PipelineParams, overrides: dict | None, limit: int | None,
                    salience_train_limit: int | None = None) -> dict:
    """Salience, recognizer, then each chain setting, published one artifact each."""
    salience(params, salience_train_limit)
    recognizer = train_recognizer(params, overrides)
    out = {}
    for mentions_from, salience_from in CHAIN_SETTINGS:
        record = chain_run(params, mentions_from, salience_from, limit)
        out[record["setting"]] = {k: record[k] for k in ("mentions", "coref_quality", "salient_clusters")} | {
            "relations": {s: record["relations"][s] for s in ("scirex_official", "dore_micro")}}
        create_table_artifact(
            key=f"dore-scirex-chain-{record['setting']}-metrics".replace("_", "-"), table=chain_rows(record),
            description=f"scirex test ({record['documents']} docs), setting {record['setting']}: mentions "
                        f"{mentions_from}, clusters {record['clusters_from']}, salience {salience_from}; "
                        f"recognizer default coref {recognizer.get('default_coref')}; {record['split_note']}")
    return out


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=train_dore.description)
    parser.add_argument("--dataset", default="docred")
    parser.add_argument("--preset", choices=["embedded", "paper"], default="embedded")
    parser.add_argument("--overrides", type=json.loads, default=None, help="JSON object merged into the preset")
    parser.add_argument("--artifacts", default=None, help="output root (default: a new runs/<time>)")
    parser.add_argument("--latest", action="store_true", help="make the packaged model dore-<dataset>:latest")
    args = parser.parse_args()
    state = train_dore(args.dataset, args.preset, args.overrides, args.artifacts, move_latest=args.latest,
                       return_state=True)
    if not state.is_completed():
        raise SystemExit(f"error: {state.message}")
    print(json.dumps(state.result(), indent=1))
