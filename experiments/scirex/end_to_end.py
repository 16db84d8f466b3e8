"""SciREX end to end, stage by stage, with the trained recognizer (issue #15).

One recognizer pass per split gives the mentions and both coreference backends' clusters; then
the chain (`dore.chain.run_chain`) runs for each backend x salience (the classifier, the gold
oracle, none) and is scored per stage:

- mentions: P/R/F1 on exact span and on span + type, against every gold NER span;
- coreference: MUC / B³ / CEAF-e of the clusters against the gold salient clusters;
- salient clusters: P/R/F1 under the official mapping, after the salience step.

With `--dore` (a SciREX DORE model directory; `--dore-binary` for the binary model), both splits
also get relations, under `scirex_official` (macro) and `dore_micro`, binary and 4-ary, in each
setting, from the most gold to none, so that the stage that loses most shows:

- `gold_input`: the gold salient clusters;
- `gold_mentions/<salience>`: string-match clusters over the gold NER mentions, salience by the
  classifier (`model`) or the gold oracle;
- `<backend>/salience-oracle` = `gold_salient_oracle`: the recognizer's clusters filtered by gold salience;
- `<backend>/salience-model` and `<backend>/salience-recalibrated` = `end_to_end`: nothing gold at
  test time; `recalibrated` is the salience classifier with its threshold chosen again on the
  recognizer's clusters of the held-out papers (it was chosen on string-match clusters of their
  gold NER). The headline is the end-to-end chain with the best held-out relations
  (`_choose_headline`), so with `--splits held_out,test` nothing on test is chosen by test.

The relations behind every score go to `--predictions` (`<setting>.<4ary|binary>.jsonl.gz`,
`dore.coref.io.write_relations`), so each re-scores from the gold file alone; each chain's clusters
and salient clusters to `--predictions`/chain/ (gzip `dore-coref/1` files).

Splits: `held_out` = the last 30 documents of SciREX train (the recognizer's and the salience
classifier's selection documents), `test` = all 66 documents of the official dev file.

    nice -n 5 .venv/bin/python experiments/scirex/end_to_end.py --artifacts runs/scirex-full \
        --dore runs/scirex/w1/scirex/model --out artifacts/scirex/metrics_end_to_end.json
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import time
from pathlib import Path

from dore.chain import blind, gold_mentions, recognize_backends, recognizer_dir, relate, relation_scores, run_chain
from dore.config import PipelineParams, artifacts_dir
from dore.coref.backends import Gold, resolve
from dore.coref.io import dumps_result, write_relations
from dore.coref.salience import SalienceModel, cluster_features
from dore.coref.salience_fit import SalienceConfig, select_threshold
from dore.data.datasets import SPLITS, get_setting
from dore.data.model import atomic_write_text
from dore.entities import EntityRecognizer
from dore.entities.coref import COREF_BACKENDS
from dore.extract import Extractor

SCORE_KEYS = ("scirex_official", "dore_micro")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", required=True, help="run holding scirex/entities/model and scirex/salience")
    parser.add_argument("--out", required=True, help="metrics JSON to write")
    parser.add_argument("--dore", help="SciREX 4-ary DORE model directory: relations on the test split")
    parser.add_argument("--dore-binary", help="SciREX binary DORE model directory (the paper's Table 4 binary model)")
    parser.add_argument("--predictions", help="folder for the test split's clusters and relations "
                                              "(default: <out folder>/end_to_end)")
    parser.add_argument("--splits", default="held_out,test", help="held_out, test or both")
    parser.add_argument("--limit", type=int, default=None, help="first N documents of each split")
    parser.add_argument("--table", action="store_true", help="only print the markdown table of an existing --out")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(Path(args.out).read_text())))
        return
    params = PipelineParams(dataset="scirex", artifacts=args.artifacts)
    splits = get_setting("scirex").read_splits(SPLITS)
    recognizer = EntityRecognizer.from_pretrained(recognizer_dir(params))
    salience_model = SalienceModel.load(artifacts_dir(params) / "salience" / "model.json")
    extractors = {kind: Extractor.from_pretrained(path) for kind, path in (("4ary", args.dore),
                                                                           ("binary", args.dore_binary)) if path}
    out_path = Path(args.out)
    relations_dir = Path(args.predictions or out_path.parent / "end_to_end")
    record = {"setting": "end_to_end (mentions and clusters from the recognizer; salience: classifier, gold "
                         "oracle = gold_salient_oracle, or none)",
              "headline": f"test/{recognizer.default_coref}/salience-model" if extractors else None,
              "scorers": {"scirex_official": "official SciREX macro metric (per document, then averaged)",
                          "dore_micro": "DORE's micro metric, dore_compat=False (exact gold -> predicted cluster "
                                        "mapping, counts over all documents)"},
              "recognizer": {"dir": str(recognizer_dir(params)), "default_coref": recognizer.default_coref,
                             **{k: recognizer.card.get(k) for k in ("dev_metrics", "split_note", "train_docs")},
                             "params": recognizer.card.get("params")},
              "salience_model": salience_model.provenance.get("selected"),
              "dore_models": {kind: {"dir": str(path), "card": _card(path)} for kind, path in
                              (("4ary", args.dore), ("binary", args.dore_binary)) if path},
              "salience_recalibrated": {}, "splits": {}}
    record["budget"] = budget(record)
    recalibrated: dict[str, SalienceModel] = {}  # backend -> the classifier, its threshold chosen on held-out clusters
    for name, split in (("held_out", "dev"), ("test", "test")):
        if name not in args.splits.split(","):
            continue
        gold = splits[split][: args.limit or None]
        started = time.perf_counter()
        predicted = recognize_backends(recognizer, gold, COREF_BACKENDS)
        seconds = time.perf_counter() - started
        out: dict = {"documents": len(gold), "recognize_seconds": round(seconds, 1),
                     "windows": _windows(recognizer, gold)}
        chains = []
        for backend, (mentions, clusters) in predicted.items():
            clusters = clusters if backend == "learned" else None
            if name == "held_out":
                recalibrated[backend], record["salience_recalibrated"][backend] = _recalibrate(
                    gold, mentions, clusters, backend, salience_model)
            models = {"model": salience_model, "oracle": None, "none": None}
            if backend in recalibrated:
                models["recalibrated"] = recalibrated[backend]
            chains += [(f"{backend}/salience-{salience}", mentions, "predicted", salience, model, backend, clusters)
                       for salience, model in models.items()]
        if name == "test" and extractors:  # the gold-mention rows of the ablation
            chains += [(f"gold_mentions/salience-{salience}", gold_mentions(gold), "gold", salience, model,
                        "string-match", None) for salience, model in (("model", salience_model), ("oracle", None))]
        first = {}  # (mentions, backend) -> its first chain
        for key, _mentions, source, *_, backend, _clusters in chains:
            first.setdefault((source, backend), key)
        for key, mentions, source, salience, model, backend, clusters in chains:
            chain, results = run_chain(gold, mentions, mention_source=source,
                                       salience="model" if model is not None else salience, salience_model=model,
                                       clusters=clusters, clusters_from=backend)
            if name == "test":  # each clustering once (with the backend's first chain), each salient set once
                for step, result in results.items():
                    first_chain = key == first[source, backend]
                    if (step == "salient" and salience != "none") or (step == "clusters" and first_chain):
                        _write_gz(relations_dir / "chain" / key.replace("/", "-") / f"{step}.jsonl.gz", result)
            if salience != "none" and extractors:  # all clusters of a paper: the layout would drop most of them
                seen = [blind(d, mentions.get(d.doc_id, ())) for d in gold]  # what the chain may read
                stem = relations_dir / ("" if name == "test" else name) / key
                chain["relations"] = _relations(gold, seen, results["salient"], extractors, stem)
            out[key] = chain
            _save(out_path, record, name, out)
        if name == "held_out" and extractors:
            record["headline"], record["headline_choice"] = _choose_headline(out)
        if name == "test" and extractors:
            gold_input = resolve(Gold(), gold)
            out["gold_input"] = {"setting": "gold_input", "relations": _relations(gold, gold, gold_input, extractors,
                                                                                  relations_dir / "gold_input")}
        _save(out_path, record, name, out)
        print(name, json.dumps({k: _summary(v) for k, v in out.items() if isinstance(v, dict) and "setting" in v}),
              flush=True)
    if "test" in record["splits"]:
        atomic_write_text(relations_dir / "results.md", table(record))


def table(record: dict) -> str:
    """The test split as one markdown table: per chain, each stage's F1 and the relations' F1."""
    test = record["splits"]["test"]
    kinds = list(record.get("dore_models", {}))
    head = ["chain (setting)", "mentions F1", "coref avg F1", "salient clusters F1"]
    head += [f"{kind} {scorer} {n}" for kind in kinds for scorer in SCORE_KEYS
             for n in (("2ary", "4ary") if kind == "4ary" else ("2ary",))]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, chain in test.items():
        if not isinstance(chain, dict) or "setting" not in chain:
            continue
        cells = [f"{key} ({chain['setting']})", _f1(chain.get("mentions")),
                 _f1(chain.get("coref_quality"), "avg_f1"), _f1(chain.get("salient_clusters"))]
        for kind in kinds:
            relations = chain.get("relations", {}).get(kind)
            for scorer in SCORE_KEYS:
                for n in (("2ary", "4ary") if kind == "4ary" else ("2ary",)):
                    cells.append(_f1(relations[scorer][n]) if relations else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _f1(scores: dict | None, key: str = "f1") -> str:
    return f"{scores[key]:.2f}" if scores else "-"


def _recalibrate(gold, mentions, clusters, backend: str, model: SalienceModel) -> tuple[SalienceModel, dict]:
    """The salience classifier with its threshold chosen again, on the recognizer's clusters of the
    held-out papers (it was chosen on string-match clusters of their gold NER): the threshold with the
    best salient-cluster F1 under the official mapping (ties: the lower)."""
    _, results = run_chain(gold, mentions, mention_source="predicted", salience="none", clusters=clusters,
                           clusters_from=backend)
    seen = {d.doc_id: blind(d, mentions.get(d.doc_id, ())) for d in gold}  # features read what the chain may read
    candidates = {c.doc_id: (c.clusters, c.types) for c in results["clusters"].docs}
    features = {doc_id: cluster_features(seen[doc_id], *candidates[doc_id]) for doc_id in candidates}
    model, tried = select_threshold(model, gold, candidates, features, SalienceConfig().thresholds)
    return model, {"selected": next(row for row in tried if row["threshold"] == model.threshold), "tried": tried}


def _choose_headline(held_out: dict) -> tuple[str, dict]:
    """The end-to-end chain (coreference backend x salience threshold) with the best held-out relations:
    the binary model's `dore_micro` binary F1 plus the 4-ary model's `dore_micro` 4-ary F1 (each model's
    own target measure; a missing model counts 0). Decided on the held-out papers, before test is read."""
    scores = {}
    for key, chain in held_out.items():
        if isinstance(chain, dict) and chain.get("setting") == "end_to_end" and "relations" in chain:
            relations = chain["relations"]
            scores[key] = sum(relations[kind]["dore_micro"][n]["f1"]
                              for kind, n in (("binary", "2ary"), ("4ary", "4ary")) if kind in relations)
    best = max(scores, key=scores.get)
    return f"test/{best}", {"rule": "held-out dore_micro: binary model binary F1 + 4-ary model 4-ary F1",
                            "held_out": scores}


def _relations(gold, docs, result, extractors: dict, stem: Path) -> dict:
    """Each DORE model over the result's clusters (`docs`: the papers as the chain read them), scored
    against `gold`: scores, decode time and the predictions' file."""
    out = {}
    for kind, extractor in extractors.items():
        started, before = time.perf_counter(), dataclasses.replace(extractor.stats)
        pred_docs, predictions = relate(docs, result, extractor)
        path = write_relations(stem.with_name(f"{stem.name}.{kind}.jsonl.gz"), pred_docs, predictions)
        cut = {k: getattr(extractor.stats, k) - getattr(before, k)  # what the input window and output budget cut
               for k in ("documents", "truncated_inputs", "lost_entities", "outputs_cut")}
        out[kind] = {**relation_scores(gold, pred_docs, predictions, extractor.layout.arity), **cut,
                     "decode_seconds": round(time.perf_counter() - started, 1), "predictions": str(path)}
    return out


def _write_gz(path: Path, result) -> None:
    """A `dore-coref/1` file, gzip-compressed (`read_result` reads it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(gzip.compress(dumps_result(result).encode(), mtime=0))
    tmp.replace(path)


def _windows(recognizer: EntityRecognizer, gold) -> dict:
    """How the recognizer read the papers: every piece is read when windows start every `stride`
    pieces until the last one."""
    windows = [recognizer.example(d).windows for d in gold]
    body = max(len(i) for w in windows for i in w.ids) - 2  # window minus its two special tokens
    covered = all(w.n_pieces <= (len(w.ids) - 1) * recognizer.stride + body for w in windows)
    return {"window": recognizer.window, "stride": recognizer.stride,
            "mean": round(sum(len(w.ids) for w in windows) / len(windows), 2),
            "max": max(len(w.ids) for w in windows),
            "pieces_mean": round(sum(w.n_pieces for w in windows) / len(windows), 1),
            "every_piece_read": covered, "words_cut": 0}


def budget(record: dict) -> dict:
    """Training wall time of each trained stage (dev evaluation included), from their own summaries:
    the recognizer's and each DORE model's (the salience classifier is a logistic regression: seconds)."""
    recognizer = _card(record["recognizer"]["dir"])
    params = record["recognizer"].get("params") or {}
    out = {"recognizer": {"steps": recognizer.get("steps"), "seconds": recognizer.get("seconds"),
                          "max_minutes": params.get("train", {}).get("max_minutes")}}
    for kind, model in record.get("dore_models", {}).items():
        out[f"dore_{kind}"] = {k: model["card"].get(k) for k in ("steps", "seconds", "lineage_seconds")}
    out["total_minutes"] = round(sum(v.get("lineage_seconds") or v.get("seconds") or 0 for v in out.values()) / 60, 1)
    return out


def _card(model_dir: str) -> dict:
    """What the DORE model's training recorded (its summary next to the model), if anything."""
    summary = Path(model_dir).parent / "train" / "summary.json"
    return json.loads(summary.read_text()) if summary.exists() else {}


def _summary(chain: dict) -> dict:
    row = {"mentions_f1": chain.get("mentions", {}).get("f1"),
           "salient_f1": chain.get("salient_clusters", {}).get("f1")}
    for kind, rel in chain.get("relations", {}).items():
        for scorer in SCORE_KEYS:
            row[f"{kind}/{scorer}"] = {n: round(s["f1"], 2) for n, s in rel[scorer].items()}
    return row


def _save(out_path: Path, record: dict, split: str, out: dict) -> None:
    record["splits"][split] = out
    atomic_write_text(out_path, json.dumps(record, indent=1, default=str))  # after every chain: nothing lost


if __name__ == "__main__":
    main()
