"""How many 512-token windows whole SciREX papers need, against training steps per minute (issue #15).

1. Windows: each document of train (SciREX train minus its last 30), held-out (those 30) and test
   (the official dev file) is encoded exactly as the DORE method trains on it (entity markers,
   MiniLM pieces, `chunk_length` 512 windows), with no cap; the number of windows is the length
   of its input over 512.
2. Speed: the embedded SciREX preset (MiniLM; `--batch-docs` overrides its 4 documents per
   step), capped at 2, 4, 8 and 16 windows (`max_source_length` = windows × 512), trains
   `--steps` optimizer steps from the longest training documents with a relation (so every window
   is full), with no dev evaluation; the first step is a warm-up and is not timed.

    nice -n 5 .venv/bin/python experiments/scirex/windows.py --steps 4 --batch-docs 1

Writes the measurements as JSON; `windows.md` is written from them by hand-checked code below
(`--markdown`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from dore import methods
from dore.config import TrainConfig
from dore.data.datasets import SPLITS, get_setting
from dore.model.backbone import initial_backbone
from dore.presets import resolve
from dore.symbolic.layout import default_layout
from dore.training.loop import train as train_loop

WINDOW = 512
SPLIT_NAMES = {"train": "train (276)", "dev": "held-out train (30)", "test": "test = official dev (66)"}


def windows_needed(cfg: TrainConfig, layout, docs) -> list[int]:
    uncapped = cfg.model_copy(update={"max_source_length": None})
    method = methods.get("dore").Method(uncapped, initial_backbone(uncapped, layout), layout)
    counts: Counter = Counter()
    return [math.ceil(len(e.input_ids) / WINDOW) for e in method.examples(docs, counts)]


def steps_per_minute(cfg: TrainConfig, layout, docs, windows: int, steps: int) -> dict:
    capped = cfg.model_copy(update={"max_source_length": windows * WINDOW, "max_steps": steps + 1,
                                    "max_minutes": None, "log_every_steps": 1, "epochs": 1000,
                                    "checkpoint_every_steps": 10_000, "group_by_length": False})
    method = methods.get("dore").Method(capped, initial_backbone(capped, layout), layout)
    with tempfile.TemporaryDirectory() as out:
        result = train_loop(capped, method, docs, out, resume=False)
    seconds = [r["seconds"] for r in result.history if "loss" in r]
    timed = np.diff(seconds)  # step 1 (warm-up) excluded
    # the median, and the fastest step: on a shared machine the other sessions only ever slow a step down
    return {"windows": windows, "max_source_length": windows * WINDOW, "batch_docs": capped.batch_docs,
            "timed_steps": len(timed), "step_seconds": [round(float(t), 1) for t in timed],
            "seconds_per_step": float(np.median(timed)), "fastest_step_seconds": float(np.min(timed)),
            "steps_per_minute": 60 / float(np.median(timed)), "threads": torch.get_num_threads(),
            "load_average_1min_after": os.getloadavg()[0]}


def distribution(counts: list[int]) -> dict:
    a = np.asarray(counts)
    return {"docs": len(a), "mean": float(a.mean()), "median": float(np.median(a)), "p90": float(np.percentile(a, 90)),
            "max": int(a.max()), **{f"within_{k}": int((a <= k).sum()) for k in (2, 4, 8, 16)}}


def markdown(record: dict) -> str:
    lines = ["# SciREX: windows per paper against training speed (issue #15)", "",
             f"Measured by `experiments/scirex/windows.py` ({record['command']}). Backbone MiniLM, windows of "
             f"{WINDOW} MiniLM pieces (`chunk_length`), inputs encoded as the DORE method trains on them "
             "(entity markers included), no cap. CPU: " + record["machine"] + ".", "",
             "## Windows a whole paper needs", "",
             "| split | docs | mean | median | p90 | max | ≤ 2 | ≤ 4 | ≤ 8 | ≤ 16 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for split, d in record["windows"].items():
        lines.append(f"| {SPLIT_NAMES[split]} | {d['docs']} | {d['mean']:.1f} | {d['median']:.0f} | "
                     f"{d['p90']:.0f} | {d['max']} | "
                     + " | ".join(str(d[f"within_{k}"]) for k in (2, 4, 8, 16)) + " |")
    lines += ["", "## Training speed by window cap", "",
              f"Embedded SciREX preset (MiniLM), `batch_docs` {record['speed'][0]['batch_docs']}, the longest "
              "training papers with a relation over mentioned entities (every window full), no dev evaluation; "
              "the first step is a warm-up and not timed.", "",
              "| windows | max_source_length | timed steps | s / step (median) | fastest step (s) "
              "| steps / min (median) | train docs fully read | load avg |", "|---|---|---|---|---|---|---|---|"]
    train = record["windows"]["train"]
    for s in record["speed"]:
        lines.append(f"| {s['windows']} | {s['max_source_length']} | {s['timed_steps']} | "
                     f"{s['seconds_per_step']:.1f} | {s.get('fastest_step_seconds', float('nan')):.1f} | "
                     f"{s['steps_per_minute']:.2f} | {train['within_' + str(s['windows'])]} / {train['docs']} | "
                     f"{s.get('load_average_1min_after', float('nan')):.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per window cap (plus one warm-up)")
    ap.add_argument("--windows", default="2,4,8,16")
    ap.add_argument("--batch-docs", type=int, default=None, help="documents per step (default: the preset's)")
    ap.add_argument("--out", type=Path, default=Path("experiments/scirex/windows.json"))
    ap.add_argument("--machine", default="shared CPU, 2 cores")
    args = ap.parse_args()
    setting = get_setting("scirex")
    docs = setting.read_splits(SPLITS)
    layout = default_layout([d for split in SPLITS for d in docs[split]], setting.reader)
    cfg = resolve("embedded", "scirex").train
    if args.batch_docs:
        cfg = cfg.model_copy(update={"batch_docs": args.batch_docs})
    record: dict = {"command": f"--steps {args.steps} --windows {args.windows} --batch-docs {cfg.batch_docs}",
                    "machine": args.machine,
                    "windows": {}, "speed": []}
    needed = {}
    for split in SPLITS:
        needed[split] = windows_needed(cfg, layout, docs[split])
        record["windows"][split] = distribution(needed[split])
        print(split, record["windows"][split], flush=True)
    # the longest papers with a relation over mentioned entities (a paper without one yields no target rows)
    related = [i for i in np.argsort(needed["train"])[::-1]
               if any(not r.meta["unmentioned"] for r in docs["train"][i].relations)]
    longest = [docs["train"][i] for i in related[: cfg.batch_docs * (args.steps + 1)]]
    for windows in map(int, args.windows.split(",")):
        started = time.perf_counter()
        record["speed"].append(steps_per_minute(cfg, layout, longest, windows, args.steps))
        print(record["speed"][-1], f"{time.perf_counter() - started:.0f} s", flush=True)
        args.out.write_text(json.dumps(record, indent=1))
    args.out.with_suffix(".md").write_text(markdown(record))


if __name__ == "__main__":
    main()
