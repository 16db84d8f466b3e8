"""The paper's comparisons, one factor at a time: `run_all(config)` trains and scores each configuration.

`experiments/comparisons.yaml` holds a base configuration and variants that each change exactly one
factor of it (sampling, order, mode, init, or the kind of model: DORE, lexical generation,
ATLOP-style classification); `plan` refuses a variant that changes anything else. Every configuration

- reads the same documents, converted once (`<out_dir>/_data/`) and linked into its artifacts,
- trains for the same number of optimizer steps (`train.max_steps`; `epochs` is set to the budget so
  that it never binds) and keeps the model with the best dev F1 (never test),
- decodes test with the same plain greedy search: no NA/EOS bias is tuned (`tune_na_biases` must be
  `[0.0]` and the saved model card is checked), so the factor stays the only difference,

then appends one row to `results.json` (rendered as `results.md`) and redraws the dev F1 curves:
`dev_curves.png`, and `dev_curves.csv` (config, step, dev_f1) for DVC with the template that
draws one line per run: `dvc plots show experiments/dev_curves.csv -x step -y dev_f1
-t experiments/dev_curves.vega.json`. A row is keyed by its run id and the hash of
its resolved parameters: a rerun skips finished runs and resumes an interrupted one from its
checkpoints. Every kind of model (a method of `dore.methods`) trains and scores through the same
stage functions, `dore.stages.train` / `dore.stages.evaluate`.

    python experiments/run.py experiments/comparisons.yaml                 # everything (hours)
    python experiments/run.py experiments/comparisons.yaml --only base     # the base, every seed
    python experiments/run.py experiments/comparisons.yaml --smoke         # tiny-bart, 3/2/2 documents
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import logging
import math
import os
import statistics
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from dore import stages
from dore.config import PipelineParams, artifacts_dir
from dore.data.model import atomic_write_text
from dore.env import set_offline_defaults
from dore.extract import MODEL_CARD
from dore.presets import merge

log = logging.getLogger(__name__)

Kind = Literal["dore", "lexical", "classifier"]
REPO = Path(__file__).resolve().parents[1]
RESULTS_JSON, RESULTS_MD, CURVES_CSV, CURVES_PNG = "results.json", "results.md", "dev_curves.csv", "dev_curves.png"
RUN_FILE, TRAIN_SUMMARY = "run.json", "train_summary.json"
PLAIN_DECODING = "greedy (1 beam), no NA/EOS bias tuning, the same for every configuration"
DECODING_NOTE: dict[str, str] = {"dore": PLAIN_DECODING, "lexical": "unconstrained greedy generation (1 beam)",
                                 "classifier": "adaptive threshold, at most 4 relations per pair (no decoder)"}


# --- the configuration file --------------------------------------------------------------------
class DataLimits(BaseModel):
    """The documents every configuration reads (first N of each split; None: the whole split)."""

    model_config = ConfigDict(extra="forbid")
    limit_train: int | None = None
    limit_dev: int | None = None
    limit_test: int | None = None


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    factor: str = Field(description="the one factor it changes: a TrainConfig or PipelineParams field, or `kind`")
    kind: Kind = "dore"
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig values that differ from the base")


class Comparisons(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: str = "docred"
    data: DataLimits = Field(default_factory=DataLimits)
    seeds: list[int] = Field(min_length=1, description="the base runs with each seed, a variant with the first")
    base: dict[str, Any] = Field(description="PipelineParams values without dataset, limits and artifacts")
    variants: list[Variant] = Field(default_factory=list)
    smoke: dict[str, Any] = Field(default_factory=dict, description="merged over the document by --smoke")


def load_config(path: str | Path, *, smoke: bool = False) -> Comparisons:
    """The comparisons file, with its `smoke` section merged over it when `smoke`."""
    document = yaml.safe_load(Path(path).read_text()) or {}
    if smoke:
        document = merge(document, document.get("smoke"))
    return Comparisons.model_validate(document)


# --- the plan ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    """One row of the comparison: a configuration with one seed."""

    id: str
    name: str
    factor: str
    value: str
    kind: Kind
    seed: int
    params: PipelineParams
    config_hash: str

    @property
    def directory(self) -> Path:
        return Path(self.params.artifacts)


def plan(config: Comparisons, out_dir: str | Path) -> list[Run]:
    """Every run of the comparison, the base seeds first; a variant must change exactly its factor."""
    out_dir = Path(out_dir)
    base_train = config.base.get("train", {})
    if base_train.get("max_steps") is None:
        raise ValueError("base.train.max_steps is required: every configuration trains for the same number of steps")
    for where, values in [("base", base_train)] + [(v.name, v.train) for v in config.variants]:
        if "epochs" in values or values.get("max_minutes") is not None:
            raise ValueError(f"{where}: the budget is base.train.max_steps alone (no epochs, no max_minutes)")
    names = [v.name for v in config.variants]
    if "base" in names or len(set(names)) != len(names):
        raise ValueError(f"variant names must be unique and not 'base': {names}")

    def make(name: str, factor: str, value: str, kind: Kind, seed: int, train: dict) -> Run:
        values = merge(config.base, {"train": {**train, "seed": seed, "epochs": base_train["max_steps"],
                                               "max_minutes": None}})
        params = PipelineParams.model_validate({"dataset": config.dataset, **config.data.model_dump(), **values,
                                                "artifacts": str(out_dir / f"{name}-seed{seed}")})
        if params.tune_na_biases != [0.0]:
            raise ValueError(f"{name}: tune_na_biases must be [0.0]; every configuration decodes the same plain way")
        return Run(f"{name}-seed{seed}", name, factor, value, kind, seed, params, config_hash(kind, params))

    runs = [make("base", "base", "", "dore", seed, {}) for seed in config.seeds]
    for v in config.variants:
        run = make(v.name, v.factor, v.kind if v.factor == "kind" else str(v.train.get(v.factor, "")), v.kind,
                   config.seeds[0], v.train)
        changed = _changed(runs[0], run)
        if changed != {v.factor}:
            raise ValueError(f"variant {v.name!r} declares factor {v.factor!r} but changes "
                             f"{sorted(changed) or 'nothing'} relative to the base")
        runs.append(run)
    return runs


def _flat(params: PipelineParams) -> dict[str, Any]:
    """Parameters as one flat mapping (TrainConfig fields by their own names), artifacts left out."""
    values = params.model_dump(mode="json", exclude={"artifacts"})
    return {**{k: v for k, v in values.items() if k != "train"}, **values["train"]}


def _changed(base: Run, run: Run) -> set[str]:
    a, b = _flat(base.params), _flat(run.params)
    return {k for k in a if a[k] != b[k]} | ({"kind"} if base.kind != run.kind else set())


# Switches added after rows were recorded, with their defaults: hashed only when set otherwise, so
# the finished rows keep their hashes (and are not rerun) when a new switch appears.
LATER_FIELDS: dict[str, Any] = {"entity_embeddings": False, "entities": None, "pair_logits": False,
                                "lr_schedule": "steps", "tune_length_penalties": [1.0], "pair_loss": 0.0,
                                "pair_scorer": "low-rank", "attention_dropout": None,
                                "init_encoder_from": None, "teacher_pair_head": False, "context_pooling": True,
                                "tail_logits": False, "freeze_encoder": False, "pair_lr": None}
# Fields removed after rows were recorded, with the value every row had: still hashed, so the rows
# keep their hashes (`target_format`: the lexical baseline is a method now, not a target format).
REMOVED_FIELDS: dict[str, Any] = {"target_format": "symbolic"}


def config_hash(kind: str, params: PipelineParams) -> str:
    values = {k: v for k, v in _flat(params).items() if k not in LATER_FIELDS or v != LATER_FIELDS[k]}
    values = {**REMOVED_FIELDS, **values}
    blob = json.dumps({"kind": kind, **values}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def select(runs: Sequence[Run], only: Iterable[str] | None) -> list[Run]:
    """The runs named by id (`base-seed43`) or by configuration name (`base`: every seed)."""
    if only is None:
        return list(runs)
    wanted = set(only)
    unknown = wanted - {r.id for r in runs} - {r.name for r in runs}
    if unknown:
        raise ValueError(f"unknown runs {sorted(unknown)}; choose from {[r.id for r in runs]}")
    return [r for r in runs if r.id in wanted or r.name in wanted]


# --- running -----------------------------------------------------------------------------------
def run_all(config_path: str | Path, out_dir: str | Path = "runs/comparisons", only: Iterable[str] | None = None,
            smoke: bool = False, results_dir: str | Path | None = None) -> list[dict]:
    """Run every selected configuration not yet finished; returns the selected runs' rows.

    `results_dir` (results.json/.md, dev_curves.csv/.png) defaults to the config file's folder,
    or to `out_dir` with `smoke`, so that smoke rows never land beside the real ones.
    """
    config_path, out_dir = Path(config_path), Path(out_dir)
    results_dir = Path(results_dir) if results_dir is not None else out_dir if smoke else config_path.parent
    config = load_config(config_path, smoke=smoke)
    runs = plan(config, out_dir)
    results = Results(results_dir)
    command = _command(config_path, out_dir, smoke, results_dir)
    docs_dir: Path | None = None
    for run in select(runs, only):
        if results.finished(run):
            log.info("%s: finished, skipped", run.id)
            continue
        claim(run)
        docs_dir = docs_dir or shared_docs(config, out_dir)
        results.put(_row(run, command, **execute(run, docs_dir)))
        results.render(runs)  # after every row: a long comparison shows its progress
    results.render(runs)
    return [row for run in select(runs, only) if (row := results.get(run)) is not None]


def shared_docs(config: Comparisons, out_dir: Path) -> Path:
    """The converted documents every run reads: converted once per dataset and limits."""
    limits = config.data.model_dump()
    key = "-".join([config.dataset] + [f"{k.removeprefix('limit_')}{'all' if v is None else v}"
                                       for k, v in limits.items()])
    params = PipelineParams(dataset=config.dataset, **limits, artifacts=str(out_dir / "_data" / key))
    docs = artifacts_dir(params) / "docs"
    if not (docs / "summary.json").exists():  # convert writes it last
        log.info("converting %s into %s", key, docs)
        stages.convert(params)
    return docs


def execute(run: Run, docs_dir: Path) -> dict:
    """Train (or resume, or reuse a finished training) and score test; the row's measured part.
    The run folder must be claimed first (`claim`)."""
    out = artifacts_dir(run.params)
    link = out / "docs"
    if not link.is_symlink():
        out.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(docs_dir.resolve(), out.resolve()), target_is_directory=True)
    summary_path = run.directory / TRAIN_SUMMARY
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
    else:
        resumed = (out / "train" / "checkpoints" / "latest").exists()
        log.info("%s: %s training (%d steps)", run.id, "resuming" if resumed else "starting",
                 run.params.train.max_steps)
        summary = {**stages.train(run.params, method=run.kind, resume=True), "resumed": resumed}
        atomic_write_text(summary_path, json.dumps(summary, indent=1, default=str))
    _check_plain_decoding(out / "model")
    record = stages.evaluate(run.params, "test", method=run.kind)
    counts = summary.get("counts") or {}
    best = summary.get("best_dev") or {}
    return {"status": "done", "f1": record["f1"], "ign_f1": record.get("ign_f1"), "p": record["p"], "r": record["r"],
            "decoder_steps_per_doc": record.get("decoder_steps_per_doc"),
            "docs_per_second": record.get("docs_per_second"),
            "train_seconds": summary.get("seconds"), "decode_seconds": record.get("decode_seconds"),
            "targets_over_decoder_length": counts.get("targets_over_decoder_length", 0),
            "parse_repairs": record.get("parse_repairs"),  # DORE's repairs; lexical: unmatched strings, ...
            "optimizer_steps": summary.get("steps"), "dev_f1": best.get("f1"), "dev_step": best.get("step"),
            "resumed": summary["resumed"], "train_log": str(out / "train" / "train_log.jsonl"),
            "dev_curve": _dev_curve(out / "train" / "train_log.jsonl"),
            "note": f"{record['scorer']} on {record['split']} ({record['documents']} docs); {record['setting']}; "
                    f"model selected on dev F1; {DECODING_NOTE[run.kind]}"
                    + ("; resumed: the training counts cover the last session only" if summary["resumed"] else "")}


def claim(run: Run) -> None:
    """Mark the run folder as this configuration's; a folder of another configuration is refused
    (resuming its checkpoints would mix two configurations)."""
    marker = run.directory / RUN_FILE
    if marker.exists():
        held = json.loads(marker.read_text())["config_hash"]
        if held != run.config_hash:
            raise RuntimeError(f"{run.directory} holds run {run.id} of another configuration ({held}, now "
                               f"{run.config_hash}); remove the folder or pass another out_dir")
        return
    atomic_write_text(marker, json.dumps({"id": run.id, "kind": run.kind, "config_hash": run.config_hash,
                                          "params": run.params.model_dump(mode="json")}, indent=1))


def _check_plain_decoding(model_dir: Path) -> None:
    """The selected model must decode with no tuned bias (a baseline saves no DORE model card)."""
    card_path = model_dir / MODEL_CARD
    if not card_path.exists():
        return
    decoding = json.loads(card_path.read_text()).get("decoding", {})
    if decoding.get("na_bias", 0.0) != 0.0 or decoding.get("eos_bias", 0.0) != 0.0:
        raise RuntimeError(f"{card_path}: decoding was tuned (na_bias {decoding.get('na_bias')}, eos_bias "
                           f"{decoding.get('eos_bias')}); the comparison decodes every configuration plainly")


def _row(run: Run, command: str, **measured) -> dict:
    return {"id": run.id, "name": run.name, "factor": run.factor, "value": run.value, "kind": run.kind,
            "seed": run.seed, "config_hash": run.config_hash, **measured,
            "command": f"{command} --only {run.id}", "git_revision": _git_revision(),
            "artifacts": str(run.directory), "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _command(config_path: Path, out_dir: Path, smoke: bool, results_dir: Path) -> str:
    parts = ["python experiments/run.py", str(config_path), "--out-dir", str(out_dir)]
    default_results = out_dir if smoke else config_path.parent
    return " ".join(parts + (["--smoke"] if smoke else []) +
                    (["--results-dir", str(results_dir)] if results_dir != default_results else []))


def _git_revision() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return done.stdout.strip()


# --- results -----------------------------------------------------------------------------------
class Results:
    """`results.json` (every row ever written, keyed by run id and config hash) and its renderings."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        path = self.folder / RESULTS_JSON
        self.rows: list[dict] = json.loads(path.read_text()) if path.exists() else []

    def get(self, run: Run) -> dict | None:
        return next((r for r in self.rows if r["id"] == run.id and r["config_hash"] == run.config_hash), None)

    def finished(self, run: Run) -> bool:
        row = self.get(run)
        return row is not None and row["status"] == "done"

    def put(self, row: dict) -> None:
        """Replace the row of the same run and configuration, else append."""
        self.rows = [r for r in self.rows if (r["id"], r["config_hash"]) != (row["id"], row["config_hash"])] + [row]
        atomic_write_text(self.folder / RESULTS_JSON, json.dumps(self.rows, indent=1))

    def render(self, runs: Sequence[Run]) -> None:
        """results.md and the dev curves, for the current plan's rows (older configurations stay in
        results.json only)."""
        rows = [row for run in runs if (row := self.get(run)) is not None]
        atomic_write_text(self.folder / RESULTS_MD, render_markdown(rows))
        curves = dev_curves(rows)
        atomic_write_text(self.folder / CURVES_CSV, _csv(curves, ["config", "step", "dev_f1"]))
        plot_dev_curves(curves, self.folder / CURVES_PNG)


COLUMNS: list[tuple[str, str]] = [  # (row key, header)
    ("id", "run"), ("factor", "factor"), ("value", "value"), ("seed", "seed"), ("status", "status"),
    ("f1", "F1"), ("ign_f1", "Ign F1"), ("p", "P"), ("r", "R"), ("dev_f1", "dev F1 (selected)"),
    ("decoder_steps_per_doc", "decoder steps/doc"), ("docs_per_second", "decode docs/s"),
    ("train_seconds", "train s"), ("decode_seconds", "decode s"),
    ("targets_over_decoder_length", "targets over decoder length (summed over epochs)"), ("optimizer_steps", "optimizer steps"),
    ("command", "command"), ("git_revision", "git revision"), ("note", "scorer, split, setting"),
]


def render_markdown(rows: Sequence[dict]) -> str:
    lines = ["# DORE comparisons: one factor at a time", "",
             "Each variant changes one factor of the base; all train for the same optimizer steps, select on dev F1, "
             f"and decode test {PLAIN_DECODING}. Scores in percent. Generated by `dore.experiments`; "
             "the full rows are in results.json.", "",
             f"Dev F1 by optimizer step: {CURVES_PNG} (data {CURVES_CSV}; in DVC: `dvc plots show {CURVES_CSV} "
             "-x step -y dev_f1 -t experiments/dev_curves.vega.json`, one line per run).", "",
             "| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(key, row) for key, _ in COLUMNS) + " |" for row in rows]
    by_name: dict[str, list[dict]] = {}
    for row in rows:
        if row["status"] == "done":
            by_name.setdefault(row["name"], []).append(row)
    seeded = {name: group for name, group in by_name.items() if len(group) > 1}
    if seeded:
        lines += ["", "| configuration | seeds | F1 | Ign F1 |", "|---|---|---|---|"]
        lines += [f"| {name} | {len(group)} | {_mean_sd([r['f1'] for r in group])} | "
                  f"{_mean_sd([r['ign_f1'] for r in group])} |" for name, group in seeded.items()]
    return "\n".join(lines) + "\n"


def _cell(key: str, row: dict) -> str:
    value = row.get(key)
    if value is None or value == "":
        return "–"
    if key in ("command", "git_revision"):
        return f"`{value if key == 'command' else value[:12]}`"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value).replace("|", "\\|")


def _mean_sd(values: Sequence[float | None]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def dev_curves(rows: Sequence[dict]) -> list[dict]:
    """Dev F1 by optimizer step of every finished run. The curve is kept in the row itself, so the
    table renders the same on a machine without the runs' folders."""
    return [{"config": row["id"], "step": step, "dev_f1": f1}
            for row in rows if row["status"] == "done" for step, f1 in row.get("dev_curve", [])]


def _dev_curve(log_path: Path) -> list[list[float]]:
    """[step, dev F1] pairs from a training log (empty when the log is gone)."""
    if not log_path.exists():
        return []
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    return [[record["step"], record["dev_f1"]] for record in records if "dev_f1" in record]


def plot_dev_curves(points: Sequence[dict], path: Path) -> None:
    """A PNG of the curves, one line per run (matplotlib's object API: no global pyplot state)."""
    from matplotlib import colormaps  # the `ops` extra; only the comparison's plot needs it
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 5), layout="constrained")
    axes = figure.subplots()
    palette = colormaps["tab20"]  # 20 distinct colours: the default cycle repeats after 10 runs
    for i, config in enumerate(dict.fromkeys(p["config"] for p in points)):
        mine = sorted((p["step"], p["dev_f1"]) for p in points if p["config"] == config)
        axes.plot(*zip(*mine), marker="o", markersize=3, label=config, color=palette(i % 20))
    axes.set(xlabel="optimizer step", ylabel="dev F1 (%)", title="dev F1 by training step")
    if points:
        axes.legend(fontsize="small", ncol=math.ceil(len({p["config"] for p in points}) / 12))
    tmp = path.with_name(f".{path.name}.tmp")
    figure.savefig(tmp, format="png", dpi=120)
    os.replace(tmp, path)


def _csv(rows: Sequence[dict], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


# --- command line ------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    set_offline_defaults()
    parser = argparse.ArgumentParser(description="Run the DORE comparisons (experiments/comparisons.yaml).")
    parser.add_argument("config", nargs="?", default="experiments/comparisons.yaml", type=Path)
    parser.add_argument("--out-dir", default=Path("runs/comparisons"), type=Path, help="artifacts of every run")
    parser.add_argument("--only", nargs="+", help="run ids (base-seed43) or configuration names (base)")
    parser.add_argument("--smoke", action="store_true", help="the file's smoke section: tiny model and data")
    parser.add_argument("--results-dir", type=Path, help="default: the config's folder (with --smoke: --out-dir)")
    parser.add_argument("--list", action="store_true", help="print the planned runs and their hashes, run nothing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.list:
        for run in select(plan(load_config(args.config, smoke=args.smoke), args.out_dir), args.only):
            print(f"{run.id:32} {run.kind:10} {run.factor:10} {run.value:12} {run.config_hash}")
        return
    rows = run_all(args.config, args.out_dir, args.only, args.smoke, args.results_dir)
    for row in rows:
        print(f"{row['id']:32} {row['status']:8} F1 {_cell('f1', row):>6}  Ign F1 {_cell('ign_f1', row):>6}")


if __name__ == "__main__":
    main()
