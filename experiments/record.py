"""Record a trained model's test claim under `experiments/<name>/`, re-scorable by anyone:

- `result.json.gz` (DocRED: the official CodaLab format) or `predictions.jsonl.gz` (CDR: `dore predict`'s
  JSON lines): `dore predict` on the test file;
- `metrics.json`: `dore score` of those predictions, with what the claim rests on: kind, dataset,
  split, setting, scorer, budget, optimizer steps and seconds per step (from the run's training
  log), the command that trained the model and the git revision;
- the run's training log, summary and decoding sweep, and the training log of the model it started
  from (a teacher), whose time is inside the budget. An ablation of the same model
  (`--relation-logits pair --ablation-of <name>`) points at its claim's copies.

    python experiments/record.py redocred-dore-90min --run runs/budget/dore/docred --budget-minutes 90 \\
        --command "dore train ..."
    python experiments/record.py redocred-dore-90min-pair-only --run runs/budget/dore/docred --budget-minutes 90 \\
        --command "dore train ..." --relation-logits pair --ablation-of redocred-dore-90min

Re-score: `dore score experiments/<name>/result.json.gz ../shared/data/redocred/test_revised.json
--train <the run's docs/train.jsonl>` (CDR: `dore score experiments/<name>/predictions.jsonl.gz
../shared/data/cdr/processed/test_filter.data`). Test is decoded once per claim; nothing here selects or tunes.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from dore.stages import read_card  # noqa: E402
DATA = REPO.parent / "shared" / "data"
TEST = {"docred": DATA / "redocred" / "test_revised.json", "cdr": DATA / "cdr" / "processed" / "test_filter.data"}
SETTING = {"docred": "train = Re-DocRED dev_revised minus its last 50 docs; dev = those 50; test = Re-DocRED "
                     "test_revised (all 500 documents)",
           "cdr": "CDR's official train / dev / test (500 documents each, EoG *_filter.data); test scored over "
                  "its candidate pairs"}
# DocRED: the official (CodaLab) result.json; the others: `dore predict`'s JSON lines
PREDICTIONS = {"docred": "result.json", "cdr": "predictions.jsonl"}
TRAINING_FILES = ("train_log.jsonl", "summary.json", "decoding_sweep.json")  # a run's train/ folder


def dore(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "dore.cli", *args], check=True)


def training_log(run: Path) -> tuple[int, float]:
    """Optimizer steps and training seconds of the run, every dev evaluation included (the run's
    summary; the log's last step record misses the evaluations after it)."""
    records = [json.loads(line) for line in (run / "train" / "train_log.jsonl").read_text().splitlines() if line]
    summary = run / "train" / "summary.json"
    if summary.exists():
        return max(r["step"] for r in records), json.loads(summary.read_text())["seconds"]
    timed = [r for r in records if "seconds" in r]
    return max(r["step"] for r in records), timed[-1]["seconds"] if timed else 0.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="experiments/<name>/")
    parser.add_argument("--run", type=Path, required=True, help="the run's dataset folder (<artifacts>/<dataset>)")
    parser.add_argument("--dataset", default="docred", choices=sorted(TEST))
    parser.add_argument("--kind", default="dore", choices=["dore", "classifier"])
    parser.add_argument("--budget-minutes", type=float, required=True)
    parser.add_argument("--command", required=True, help="the command that trained the model")
    parser.add_argument("--relation-logits", default="both", help="dore predict --relation-logits (ablations)")
    parser.add_argument("--ablation-of", metavar="NAME",
                        help="the claim in experiments/NAME/ of the same model: the training logs are read there")
    args = parser.parse_args(argv)

    out = REPO / "experiments" / args.name
    out.mkdir(parents=True, exist_ok=True)
    predictions = PREDICTIONS[args.dataset] + ".gz"
    with tempfile.TemporaryDirectory() as tmp:
        result, scored = Path(tmp) / PREDICTIONS[args.dataset], Path(tmp) / "score.json"
        dore("predict", str(args.run / "model"), str(TEST[args.dataset]), "-o", str(result),
             *(["--relation-logits", args.relation_logits] if args.kind == "dore" else []))
        with open(result, "rb") as src, gzip.GzipFile(out / predictions, "wb", mtime=0) as dst:
            shutil.copyfileobj(src, dst)  # mtime 0: the same predictions give the same bytes
        dore("score", str(out / predictions), str(TEST[args.dataset]),
             *(["--train", str(args.run / "docs" / "train.jsonl")] if args.dataset == "docred" else []),
             "--out", str(scored))
        metrics = json.loads(scored.read_text())
    steps, seconds = training_log(args.run)
    saved = args.run / "model"
    card = read_card(saved)
    preset = card.get("preset") or {}
    start = preset.get("init_encoder_from") or preset.get("init_from")
    # the training files beside the claim; an ablation of the same model points at its claim's copies
    logs = f"../{args.ablation_of}/" if args.ablation_of else ""
    if not args.ablation_of:
        for name in TRAINING_FILES:
            if (args.run / "train" / name).exists():
                shutil.copyfile(args.run / "train" / name, out / name)
    if start:  # a teacher or an earlier run: its time is inside the budget, so the claim names it
        ancestor = Path(start)
        if not args.ablation_of:
            shutil.copyfile(ancestor.parent / "train" / "train_log.jsonl", out / "starts_from_train_log.jsonl")
        starts_from = {"model": start, "kind": "classifier" if (ancestor / "classifier.json").exists() else "dore",
                       "optimizer_steps": training_log(ancestor.parent)[0],
                       "lineage_seconds": read_card(ancestor).get("lineage_seconds"),
                       "dev_selected": read_card(ancestor).get("dev_metrics"),
                       "train_log": logs + "starts_from_train_log.jsonl"}
    revision = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True,
                              text=True).stdout.strip()
    record = {"kind": args.kind, "dataset": args.dataset, "split": "test", "setting": SETTING[args.dataset],
              "scorer": metrics["scorer"], "budget_minutes": args.budget_minutes, "optimizer_steps": steps,
              "training_seconds": seconds, "seconds_per_step": round(seconds / max(steps, 1), 3),
              **{k: metrics.get(k) for k in ("f1", "ign_f1", "p", "r")},  # ign_f1: DocRED only (null)
              **({"relation_logits": args.relation_logits} if args.kind == "dore" else {}),
              "dev_selected": card.get("dev_metrics"),
              "decoding_tuned_on_dev": card.get("decoding"),
              "predictions": predictions, "train_log": logs + "train_log.jsonl",
              "command": args.command, "revision": revision,
              **({"starts_from": starts_from} if start else {})}
    (out / "metrics.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: record[k] for k in ("f1", "ign_f1", "p", "r", "optimizer_steps")}))


if __name__ == "__main__":
    main()
