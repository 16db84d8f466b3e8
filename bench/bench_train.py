"""Training-step benchmark: DORE and the same-encoder classifier, each with its attention dropout as
the backbone has it and at 0 (`TrainConfig.attention_dropout`), on the same real batches, in one run.

    python bench/bench_train.py [--docs 40] [--batch-docs 4] [--threads 2] [--rounds 2]

Reads the Re-DocRED training split as the local setting defines it (`dev_revised` minus its last 50
documents), builds each method from the MiniLM package weights with the 90-minute recipe (entity
symbols, pair term, no sampled negatives), and times forward and backward + optimizer step per batch
of `--batch-docs` documents. Variants take turns batch by batch, so load on the machine hits every
variant alike; the first round warms up and is not counted. Writes bench/results/train_step.md and
.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dore.env import set_offline_defaults  # noqa: E402

set_offline_defaults()

from dore import methods  # noqa: E402
from dore.data.datasets import get_setting  # noqa: E402
from dore.stages import layout_of_splits  # noqa: E402
from dore.model.backbone import initial_backbone  # noqa: E402
from dore.presets import resolve  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
RECIPE = {"entity_embeddings": True, "pair_logits": True, "sampling": "none", "mixed_precision": "no"}


def variants(batch_docs: int) -> dict[str, tuple[str, dict]]:
    out = {}
    for method in ("dore", "classifier"):
        for rate in (None, 0.0):
            name = f"{method}, attention dropout {'0.1 (MiniLM)' if rate is None else '0'}"
            out[name] = (method, {**RECIPE, "batch_docs": batch_docs, "attention_dropout": rate})
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=40, help="training documents timed (batches of --batch-docs)")
    parser.add_argument("--batch-docs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="passes over the documents; the first is warm-up")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    splits, layout = layout_of_splits(get_setting("docred"))
    docs = splits["train"][: args.docs]
    runs = {}
    for name, (method, overrides) in variants(args.batch_docs).items():
        cfg = resolve("embedded", "docred", {"train": overrides}).train
        torch.manual_seed(0)
        trainer = methods.get(method).Method(cfg, initial_backbone(cfg, layout), layout)
        examples = trainer.examples(docs, Counter())
        batches = [trainer.collate(examples[i:i + args.batch_docs], 0, Counter())
                   for i in range(0, len(examples), args.batch_docs)]
        optimizer = torch.optim.AdamW(trainer.model.parameters(), lr=1e-5)
        runs[name] = (trainer, batches, optimizer, {"forward": [], "backward_step": []})
    n_batches = len(next(iter(runs.values()))[1])
    for round_ in range(args.rounds):
        for b in range(n_batches):
            for trainer, batches, optimizer, times in runs.values():
                trainer.model.train()
                start = time.perf_counter()
                loss, _ = trainer.loss(trainer.model, batches[b])
                middle = time.perf_counter()
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if round_:  # the first round warms up
                    times["forward"].append(middle - start)
                    times["backward_step"].append(time.perf_counter() - middle)
    rows = {}
    for name, (*_, times) in runs.items():
        forward, backward = statistics.mean(times["forward"]), statistics.mean(times["backward_step"])
        rows[name] = {"forward_s": round(forward, 3), "backward_step_s": round(backward, 3),
                      "step_s": round(forward + backward, 3), "steps_timed": len(times["forward"])}
    result = {"docs": args.docs, "batch_docs": args.batch_docs, "threads": args.threads, "rounds": args.rounds,
              "recipe": RECIPE, "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
              "variants": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "train_step.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"# Training step, {args.docs} Re-DocRED training documents in batches of {args.batch_docs}, "
             f"{args.threads} torch threads\n", "| variant | forward s | backward + step s | step s |", "|---|---|---|---|"]
    lines += [f"| {name} | {r['forward_s']} | {r['backward_step_s']} | **{r['step_s']}** |" for name, r in rows.items()]
    (RESULTS / "train_step.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
