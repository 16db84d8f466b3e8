"""Text path vs given entities, side by side in one run: how much reading plain text costs.

    python bench/bench_text.py MODEL_DIR [--docs 50] [--repeats 2]

The model needs an entity recognizer (its `entities/`, or its run's `<dataset>/entities/model`).
On the first `--docs` documents of Re-DocRED `test_revised` (their own sentences; the text path
drops every gold field first, as `dore evaluate-joint` does), alternating the two paths `--repeats`
times after a warm-up, it reports documents per second for:

- `gold entities`: `Extractor.extract` on the annotated documents (what `dore predict` does with a
  DocRED file);
- `text path`: `Extractor.extract_text` (recognizer, coreference, slot fitting, DORE);
- `recognizer only`: the entity recognizer alone.

Writes bench/results/text_path.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dore.env import set_offline_defaults  # noqa: E402

set_offline_defaults()

from dore.data.docred import read_docred  # noqa: E402
from dore.extract import Extractor  # noqa: E402
from dore.joint import without_gold  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def fits(extractor: Extractor, doc) -> bool:
    try:
        extractor.check_fits(doc)
        return True
    except ValueError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/redocred/test_revised.json"))
    parser.add_argument("--docs", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    extractor = Extractor.from_pretrained(args.model)
    if extractor.recognizer is None:
        sys.exit(f"error: {args.model} has no entity recognizer (entities/ inside it, or <run>/<dataset>/entities/model)")
    docs = [d for d in read_docred(args.data)[0] if fits(extractor, d)][: args.docs]
    blind = [without_gold(d) for d in docs]
    paths = {"gold entities": lambda: extractor.extract(docs),
             "text path": lambda: extractor.extract_text(blind),
             "recognizer only": lambda: extractor.recognizer.recognize(blind)}
    for run in paths.values():  # warm-up
        run()
    seconds = {name: 0.0 for name in paths}
    for _ in range(args.repeats):
        for name, run in paths.items():
            started = time.perf_counter()
            run()
            seconds[name] += time.perf_counter() - started
    rows = {name: {"docs_per_s": round(args.repeats * len(docs) / s, 3), "seconds_per_doc": round(s / args.repeats / len(docs), 4)}
            for name, s in seconds.items()}
    record = {"model": str(args.model), "documents": len(docs), "repeats": args.repeats, "threads": args.threads,
              "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
              "torch": torch.__version__, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "text_path.json").write_text(json.dumps(record, indent=1))
    table = ["| path | docs/s | s/doc |", "|---|---|---|"] + \
        [f"| {name} | {r['docs_per_s']} | {r['seconds_per_doc']} |" for name, r in rows.items()]
    (RESULTS / "text_path.md").write_text(
        f"# Text path vs given entities\n\n{len(docs)} test_revised documents, {args.repeats} repeats, "
        f"{args.threads} torch threads, model `{args.model}`.\n\n" + "\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
