"""SciREX end to end, stage by stage, with the trained recognizer (issue #15).

One recognizer pass per split gives the mentions and both coreference backends' clusters; then
the chain (`dore.chain.run_chain`, relations off: no SciREX DORE model is trained here) runs for
each backend x salience (the classifier, the gold oracle, none) and is scored per stage:

- mentions: P/R/F1 on exact span and on span + type, against every gold NER span;
- coreference: MUC / B³ / CEAF-e of the clusters against the gold salient clusters;
- salient clusters: P/R/F1 under the official mapping, after the salience step.

Splits: `held_out` = the last 30 documents of SciREX train (the recognizer's and the salience
classifier's selection documents), `test` = all 66 documents of the official dev file.

    nice -n 5 .venv/bin/python experiments/scirex/end_to_end.py --artifacts runs/scirex-e2e \
        --out experiments/scirex/metrics_end_to_end_chain.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from dore.chain import recognize_backends, recognizer_dir, run_chain
from dore.config import PipelineParams, artifacts_dir
from dore.coref.io import write_result
from dore.coref.salience import SalienceModel
from dore.data.datasets import SPLITS, get_setting
from dore.data.model import atomic_write_text
from dore.entities import EntityRecognizer
from dore.entities.coref import COREF_BACKENDS

SALIENCE = ("model", "oracle", "none")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", required=True, help="run holding scirex/entities/model and scirex/salience")
    parser.add_argument("--out", required=True, help="metrics JSON to write")
    parser.add_argument("--limit", type=int, default=None, help="first N documents of each split")
    args = parser.parse_args()
    params = PipelineParams(dataset="scirex", artifacts=args.artifacts)
    splits = get_setting("scirex").read_splits(SPLITS)
    recognizer = EntityRecognizer.from_pretrained(recognizer_dir(params))
    salience_model = SalienceModel.load(artifacts_dir(params) / "salience" / "model.json")
    record = {"setting": "end_to_end (mentions and clusters from the recognizer; salience: classifier, gold "
                         "oracle = gold_salient_oracle, or none)",
              "recognizer": {"dir": str(recognizer_dir(params)), "default_coref": recognizer.default_coref,
                             **{k: recognizer.card.get(k) for k in ("dev_metrics", "split_note", "train_docs")},
                             "params": recognizer.card.get("params")},
              "salience_model": salience_model.provenance.get("selected"),
              "relations": "not run: no SciREX DORE model is trained in this run", "splits": {}}
    for name, split in (("held_out", "dev"), ("test", "test")):
        gold = splits[split][: args.limit or None]
        started = time.perf_counter()
        predicted = recognize_backends(recognizer, gold, COREF_BACKENDS)
        seconds = time.perf_counter() - started
        windows = [recognizer.example(d).windows for d in gold]
        # every piece of every paper is read: windows start every `stride` pieces until the last piece
        body = max(len(i) for w in windows for i in w.ids) - 2  # window minus its two special tokens
        covered = all(w.n_pieces <= (len(w.ids) - 1) * recognizer.stride + body for w in windows)
        out: dict = {"documents": len(gold), "recognize_seconds": round(seconds, 1),
                     "windows": {"window": recognizer.window, "stride": recognizer.stride,
                                 "mean": round(sum(len(w.ids) for w in windows) / len(windows), 2),
                                 "max": max(len(w.ids) for w in windows), "pieces_mean": round(
                                     sum(w.n_pieces for w in windows) / len(windows), 1),
                                 "every_piece_read": covered, "words_cut": 0}}
        for backend, (mentions, clusters) in predicted.items():
            for salience in SALIENCE:
                chain, results = run_chain(gold, mentions, mention_source="predicted", salience=salience,
                                           salience_model=salience_model if salience == "model" else None,
                                           clusters=clusters if backend == "learned" else None,
                                           clusters_from=backend)
                out[f"{backend}/salience-{salience}"] = chain
                if name == "test":
                    for step, result in results.items():
                        write_result(Path(args.out).parent / "chain" / f"{backend}-salience-{salience}"
                                     / f"{step}.jsonl", result)
        record["splits"][name] = out
        print(name, json.dumps({k: (v["mentions"]["f1"], v["mentions"]["span"]["f1"], v["coref_quality"]["avg_f1"],
                                    v["salient_clusters"]["f1"]) for k, v in out.items() if "/" in k}),
              flush=True)
        atomic_write_text(Path(args.out), json.dumps(record, indent=1, default=str))  # each split as it ends


if __name__ == "__main__":
    main()
