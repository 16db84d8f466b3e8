"""The lifecycle stages, one function each: validate -> convert -> train -> evaluate -> package
(plus `tune`, and SciREX's `coref` and `evaluate_with_coref`).

Every entry point runs these functions with a `PipelineParams`: the CLI (`dore validate|prepare|
train|tune|evaluate|package|pipeline`), the DVC stages (`dore stage <name> --section <dataset>`,
`STAGES`) and the Prefect tasks (flows/). Results are small JSON-able dicts (never pickles) and
files under `<artifacts>/<dataset>/` (DVC: `artifacts/`; the CLI and the flow: a new `runs/<time>/`
unless named). Training and evaluation take a `method` (`dore.methods`): DORE, or a baseline
through the same loop and the same metrics record.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from dore import methods
from dore.config import EntityParams, PipelineParams, TrainConfig, artifacts_dir
from dore.coref.compose import clusters_to_documents, score_relations
from dore.coref.io import read_result
from dore.coref.quality import coref_quality
from dore.coref.run import run_coref
from dore.data.datasets import SPLITS, data_root, get_setting
from dore.data.docred import load_rel_info
from dore.data.model import DataError, Document, atomic_dir, atomic_write_text, read_jsonl, write_jsonl
from dore.extract import ENTITIES_DIR, MODEL_CARD, Extractor, recognizer_dir, training_data_hash
from dore.methods import entities as entity_stages
from dore.model.backbone import check_backbone, initial_backbone
from dore.scoring.docred import per_relation_f1
from dore.scoring.score import docred_records, score
from dore.symbolic.layout import IdLayout, default_layout
from dore.training.loop import TrainResult, processes
from dore.training.loop import train as train_loop

# --- runs: where a run writes, unless the user names an output ----------------------------------

RUNS = Path("runs")  # the CLI's and the flow's runs; `artifacts/` belongs to DVC (`dore stage`)


def new_run(root: Path = RUNS) -> Path:
    """Claim a new run directory `runs/<local time>` (`-2`, `-3`, ... when another run started in
    the same second), so runs never overwrite each other or the DVC-tracked `artifacts/`."""
    root.mkdir(parents=True, exist_ok=True)
    stamp, n = time.strftime("%Y%m%d-%H%M%S"), 1
    while True:
        run = root / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            run.mkdir()  # atomic: of two runs in one second, one gets the name
            return run
        except FileExistsError:
            n += 1


def start_run(params: PipelineParams, artifacts: str | Path | None = None) -> PipelineParams:
    """`params` writing under `artifacts`, else under a new run directory. The backbone and the data
    are checked first, so a run that could not train fails in a split second and claims no directory."""
    check_backbone(params.train)
    if artifacts is None or not (Path(artifacts) / params.dataset / "docs" / "train.jsonl").exists():
        get_setting(params.dataset).check_files()  # converted documents need no raw files
    return params.model_copy(update={"artifacts": str(artifacts if artifacts is not None else new_run())})


def latest_run(dataset: str, root: Path = RUNS) -> Path:
    """The run whose `<dataset>/model` was saved last: what reads a trained model when no run is named."""
    models = [p for p in root.glob(f"*/{dataset}/model") if p.is_dir()]
    if not models:
        raise FileNotFoundError(f"no trained {dataset} model under {root}/: train one (`dore train --dataset "
                                f"{dataset}`) or name a run with --artifacts")
    return max(models, key=lambda p: p.stat().st_mtime).parents[1]


# --- data ----------------------------------------------------------------------------------------

def validate(params: PipelineParams) -> dict:
    """Read every split (structural errors raise DataError) and run the content expectations."""
    from dore.validate import validate_or_raise  # great-expectations: the `ops` extra, slow to import

    setting = get_setting(params.dataset)
    out = artifacts_dir(params) / "validation"
    docs, layout = layout_of_splits(setting)
    summary = {}
    for split, split_docs in docs.items():
        result = validate_or_raise(split_docs, layout, name=f"{params.dataset}-{split}", report_dir=out)
        summary[split] = {"documents": len(split_docs), "success": result.success, "report": str(result.html_path)}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    return summary


def layout_of_splits(setting) -> tuple[dict[str, list[Document]], IdLayout]:
    """Every split's documents, and the layout sized from the setting's `layout_splits` (all of
    them, so that test documents fit, except where the setting sizes it from training alone)."""
    docs = setting.read_splits(SPLITS)
    rel_info = load_rel_info(data_root() / "docred" / "rel_info.json") if setting.reader == "docred" else None
    return docs, default_layout([d for split in setting.layout_splits for d in docs[split]], setting.reader,
                                rel_info, arity=setting.arity)


def convert(params: PipelineParams) -> dict:
    """Splits -> `docs/{train,dev,test}.jsonl` (canonical documents) and `layout.json`, sized as
    `layout_of_splits` says."""
    setting = get_setting(params.dataset)
    out = artifacts_dir(params) / "docs"
    limits = {"train": params.limit_train, "dev": params.limit_dev, "test": params.limit_test}
    docs, layout = layout_of_splits(setting)
    counts = {}
    for split in SPLITS:
        kept = docs[split][: limits[split]] if limits[split] else docs[split]
        write_jsonl(out / f"{split}.jsonl", kept)
        counts[split] = {"documents": len(kept), "relations": sum(len(d.unique_relations()) for d in kept)}
    atomic_write_text(out / "layout.json", layout.to_json())
    atomic_write_text(out / "summary.json", json.dumps({"split_note": setting.split_note, **counts}, indent=1))
    return counts


def load_split(params: PipelineParams, split: str) -> list[Document]:
    return list(read_jsonl(artifacts_dir(params) / "docs" / f"{split}.jsonl"))


def load_layout(params: PipelineParams) -> IdLayout:
    return IdLayout.from_dict(json.loads((artifacts_dir(params) / "docs" / "layout.json").read_text()))


# --- training ------------------------------------------------------------------------------------

def training_summary(result: TrainResult) -> dict:
    """What `train` returns (and writes to `train/summary.json`) about a `TrainResult`."""
    return {"steps": result.steps, "epochs": result.epochs_done, "seconds": round(result.seconds, 1),
            "best_dev": result.best_dev, "counts": result.counts}


def scalars(metrics: dict) -> dict:
    """The numbers of a metrics dict (no nested tables, no flags)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _card_location(model_dir: Path) -> tuple[Path, str | None]:
    """Where a trained model keeps its card: DORE's card file, or the `card` entry of a classifier's config."""
    classifier_config = model_dir / methods.classifier.CONFIG_FILE
    if not (model_dir / MODEL_CARD).exists() and classifier_config.exists():
        return classifier_config, "card"
    return model_dir / MODEL_CARD, None


def read_card(model_dir: Path) -> dict:
    """A trained model's card (DORE or classifier); {} when it has none."""
    path, key = _card_location(model_dir)
    document = json.loads(path.read_text()) if path.exists() else {}
    return document.get(key, {}) if key else document


def update_card(model_dir: Path, **values) -> None:
    """Merge `values` into a trained model's card (DORE or classifier), atomically."""
    path, key = _card_location(model_dir)
    document = json.loads(path.read_text())
    (document.setdefault(key, {}) if key else document).update(values)
    atomic_write_text(path, json.dumps(document, indent=1, default=str))


def ancestor_seconds(cfg: TrainConfig) -> float:
    """Training seconds behind the model a run starts from: an `init_from` DORE model or an
    `init_encoder_from` classifier (its `lineage_seconds`: its own run and every run it started
    from), which a budgeted run counts inside its `max_minutes` (a fair budget, #13)."""
    start = cfg.init_from or cfg.init_encoder_from
    if not start:
        return 0.0
    card = read_card(Path(start))
    if "lineage_seconds" in card:
        return float(card["lineage_seconds"])
    if cfg.max_minutes is not None:
        raise DataError("records no training time, so a run with max_minutes cannot count it in its budget",
                        file=_card_location(Path(start))[0], field="lineage_seconds")
    return 0.0


def train(params: PipelineParams, *, method: str = "dore", resume: bool = True, fresh: bool = False) -> dict:
    """Train `method` on `train`, select on `dev` (never test); the selected model goes to `model/`.
    `fresh`: start over (DVC removes a stage's outputs before it runs; the flow does the same).
    DORE then chooses its NA bias on dev (`tune_na_biases`)."""
    check_backbone(params.train)  # before minutes of conversion, not after
    out = artifacts_dir(params)
    with processes().main_process_first():  # the others read what the main process prepared
        if fresh and processes().is_main_process:
            shutil.rmtree(out / "train", ignore_errors=True)
        if not (out / "docs" / "train.jsonl").exists() and processes().is_main_process:
            convert(params)
    cfg = params.train
    layout = load_layout(params)
    train_docs, dev_docs = load_split(params, "train"), load_split(params, "dev")
    spent = ancestor_seconds(cfg)
    trainer = methods.get(method).Method(cfg, initial_backbone(cfg, layout), layout)
    card = {"preset": cfg.model_dump(), "training_data_sha256": training_data_hash(train_docs),
            "split_note": get_setting(params.dataset).split_note}

    def evaluate_dev(model, at) -> dict:
        return scalars(score(trainer.predict(dev_docs), dev_docs, train_docs=train_docs))

    def on_best(model, metrics: dict) -> None:
        trainer.save(out / "model", **card, dev_metrics=metrics)

    result = train_loop(cfg, trainer, train_docs, out / "train", evaluate_dev=evaluate_dev, on_best=on_best,
                        resume=resume and not fresh, spent_seconds=spent)
    summary = {**training_summary(result), **trainer.summary(), "lineage_seconds": round(spent + result.seconds, 1)}
    if processes().is_main_process:  # with N processes only the main one tunes and writes; the others wait
        if method in ("dore", "classifier") and read_card(out / "model"):  # what a run started from it counts
            update_card(out / "model", lineage_seconds=summary["lineage_seconds"])
        if method == "dore" and result.best_dev is not None and (
                len(params.tune_na_biases) > 1 or len(params.tune_length_penalties) > 1):
            tuned = tune_decoding(params, na_biases=params.tune_na_biases,
                                  length_penalties=params.tune_length_penalties)
            summary["decoding_tuned_on_dev"] = {**tuned["chosen"], "dev_f1": tuned["dev_f1"]}
        atomic_write_text(out / "train" / "summary.json", json.dumps(summary, indent=1, default=str))
        if fresh:
            export_training_curves(params)
    processes().wait_for_everyone()
    if params.entities is not None and result.best_dev is not None:
        summary["entities"] = train_recognizer_into_model(params, resume=resume, fresh=fresh)
    return summary


def train_recognizer_into_model(params: PipelineParams, *, resume: bool = True, fresh: bool = False) -> dict:
    """The section's entity recognizer (`params.entities`), trained into `<dataset>/entities/` and
    copied into the model (`model/entities/`), so the model and its DVC cache read plain text."""
    entity_params = params.entities.model_copy(update={"dataset": params.dataset, "artifacts": params.artifacts})
    summary = entity_stages.train_entities(entity_params, resume=resume, fresh=fresh)
    if processes().is_main_process:
        source, target = artifacts_dir(params) / "entities" / "model", artifacts_dir(params) / "model" / ENTITIES_DIR
        with atomic_dir(target) as tmp:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
    processes().wait_for_everyone()
    return {k: summary[k] for k in ("steps", "best_dev", "default_coref") if k in summary}


def tune_decoding(params: PipelineParams, na_biases: Sequence[float] = (0.0, -1.0, -2.0, -3.0, -4.0),
                  eos_biases: Sequence[float] = (0.0,), length_penalties: Sequence[float] = (1.0,)) -> dict:
    """Choose the decoding on dev (never test) and store it in the model card.

    First the NA and EOS logit biases, greedily (the generative counterpart of ATLOP's adaptive
    threshold: a model that learned "no relation" too well is pushed toward answering); then, when
    the final evaluation uses beams (`params.num_beams` > 1) and several `length_penalties` are
    given, the length penalty α with those beams (the paper tunes α on dev, appendix A.3). The
    selection metric is dev F1."""
    out = artifacts_dir(params)
    extractor = Extractor.from_pretrained(out / "model")
    extractor.check_decoding(extractor.decoding.model_copy(update={"num_beams": params.num_beams}))
    dev_docs, train_docs = load_split(params, "dev"), load_split(params, "train")

    def dev_f1(**decoding) -> dict:
        cfg = extractor.decoding.model_copy(update=decoding)
        return {**decoding, **scalars(score(extractor.predictions(dev_docs, cfg), dev_docs, train_docs=train_docs))}

    sweep = [dev_f1(na_bias=na, eos_bias=eos, num_beams=1) for na in na_biases for eos in eos_biases]
    best = max(sweep, key=lambda r: (r["f1"], -abs(r["na_bias"]) - abs(r["eos_bias"])))
    chosen = {"na_bias": best["na_bias"], "eos_bias": best["eos_bias"]}
    if params.num_beams > 1 and len(length_penalties) > 1:
        # as the final evaluation decodes with beams (`predict_split`): HF generate, not the greedy symbol head
        beams = [dev_f1(**chosen, num_beams=params.num_beams, symbol_head=False, length_penalty=alpha)
                 for alpha in length_penalties]
        best = max(beams, key=lambda r: (r["f1"], -abs(r["length_penalty"] - 1.0)))
        chosen["length_penalty"] = best["length_penalty"]
        sweep += beams
    card = {**extractor.card, "decoding": {**extractor.decoding.model_dump(), **chosen}, "decoding_tuned_on": "dev"}
    atomic_write_text(out / "model" / MODEL_CARD, json.dumps(card, indent=1, default=str))
    atomic_write_text(out / "train" / "decoding_sweep.json", json.dumps(sweep, indent=1))
    return {"chosen": chosen, "dev_f1": best["f1"], "sweep": sweep}


# --- evaluation ----------------------------------------------------------------------------------

def evaluate(params: PipelineParams, split: str = "test", *, method: str = "dore") -> dict:
    """Score the selected model on `split`: `metrics.json` (DVC metrics) and per-relation F1.
    Every method reports through `write_evaluation`, so their records compare."""
    predictor = methods.get(method).load(artifacts_dir(params) / "model")
    docs = load_split(params, split)
    started = time.perf_counter()
    predictions, decoder_steps, extra = predictor.predict_split(docs, params.num_beams)
    record = write_evaluation(params, split, docs, predictions, seconds=time.perf_counter() - started,
                              decoder_steps=decoder_steps, **extra,
                              dev_selected=predictor.card.get("dev_metrics"))
    if record["scorer"] != "docred_official":  # write_evaluation writes DocRED's own table
        rows = single_relation_rows(record, {r.label for d in docs for r in d.relations})
        atomic_write_text(artifacts_dir(params) / "per_relation.json", json.dumps(rows, indent=1))
    return record


def write_evaluation(params: PipelineParams, split: str, docs, predictions: dict, *, seconds: float,
                     decoder_steps: int, **extra) -> dict:
    """Score `predictions` of `split` (decoded in `seconds`, `decoder_steps` in all) and write the
    record to `metrics.json`, with per-relation F1 for the DocRED scorer; `extra` joins the record."""
    out = artifacts_dir(params)
    metrics = score(predictions, docs, train_docs=load_split(params, "train"), arity=get_setting(params.dataset).arity)
    record = {"dataset": params.dataset, "split": split, "setting": get_setting(params.dataset).split_note,
              "scorer": metrics["scorer"], **scalars(metrics), "documents": len(docs),
              "decode_seconds": round(seconds, 2), "docs_per_second": round(len(docs) / max(seconds, 1e-9), 3),
              "decoder_steps_per_doc": round(decoder_steps / max(len(docs), 1), 2), **extra}
    atomic_write_text(out / "metrics.json", json.dumps(record, indent=1, default=str))
    if metrics["scorer"] == "docred_official":
        per_rel = per_relation_f1(docred_records(predictions), docs)
        rows = [{"relation": r, **v} for r, v in sorted(per_rel.items())]
        atomic_write_text(out / "per_relation.json", json.dumps(rows, indent=1))
    return record


def single_relation_rows(record: dict, labels: set[str]) -> list[dict]:
    """Per-relation rows (the shape of DocRED's table) for datasets scored as one relation:
    CDR / GDA (their one label), SciREX (binary and 4-ary tuples)."""
    if record["scorer"] == "scirex_official":
        rows = [{"relation": "binary", "p": record["p"], "r": record["r"], "f1": record["f1"]}]
        return rows + ([{"relation": "4-ary", "f1": record["f1_4ary"]}] if "f1_4ary" in record else [])  # binary model
    return [{"relation": "/".join(sorted(labels)) or record["dataset"], "p": record["p"], "r": record["r"],
             "f1": record["f1"]}]


def export_training_curves(params: PipelineParams) -> None:
    """`train/train_log.jsonl` -> `plots/train_loss.csv` (loss by step) and `plots/dev_f1.csv`
    (dev metrics by epoch): DVC plots read CSV, not JSON lines."""
    out = artifacts_dir(params)
    records = [json.loads(line) for line in (out / "train" / "train_log.jsonl").read_text().splitlines() if line]
    steps = [{k: r[k] for k in ("step", "epoch", "loss", "lr")} for r in records if "loss" in r]
    dev = [{k: v for k, v in r.items() if k in ("step", "epoch") or k.startswith("dev_")}
           for r in records if "dev_f1" in r]
    atomic_write_text(out / "plots" / "train_loss.csv", _csv(steps, ["step", "epoch", "loss", "lr"]))
    atomic_write_text(out / "plots" / "dev_f1.csv", _csv(dev, ["epoch", "step", "dev_f1"]))


def _csv(rows: list[dict], first: list[str]) -> str:
    """CSV with the `first` columns leading (present even without rows), then any others."""
    columns = first + sorted({k for r in rows for k in r} - set(first))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


# --- packaging -----------------------------------------------------------------------------------

def package_model(model_dir: str | Path, name: str, *, move_latest: bool = True) -> str:
    """Copy a saved DORE model directory into a new BentoML model version; returns its tag.
    `move_latest=False` leaves `<name>:latest` (what `bentoml serve` loads) where it was, when there was one."""
    import bentoml  # the `ops` extra: only packaging and serving need it
    from bentoml.exceptions import NotFound

    kept = None
    if not move_latest:
        with contextlib.suppress(NotFound):  # the first version of a name is its latest
            kept = bentoml.models.get(f"{name}:latest").tag.version
    model_dir = Path(model_dir)
    card = json.loads((model_dir / MODEL_CARD).read_text())
    metadata = {k: card[k] for k in ("family", "training_data_sha256", "split_note") if k in card}
    metadata["dev_metrics"] = scalars(card.get("dev_metrics") or {})
    entities = recognizer_dir(model_dir)  # the run's entity recognizer travels with the model
    metadata["entity_recognizer"] = entities is not None
    with bentoml.models.create(name=name, labels={"framework": "dore"}, metadata=metadata) as bento_model:
        shutil.copytree(model_dir, bento_model.path, dirs_exist_ok=True)
        if entities is not None and entities != model_dir / ENTITIES_DIR:
            shutil.copytree(entities, Path(bento_model.path) / ENTITIES_DIR)
    if kept is not None:  # the store names `latest`'s version in `<store>/<name>/latest`
        (Path(bentoml.models.get(bento_model.tag).path).parent / "latest").write_text(kept)
    return str(bento_model.tag)


def package(params: PipelineParams, *, move_latest: bool = True) -> dict:
    """Put the selected model into the BentoML store; `package.json` records where it went and
    which version `dore-<dataset>:latest` (the served one) is now."""
    import bentoml  # the `ops` extra

    model_dir = artifacts_dir(params) / "model"
    tag = package_model(model_dir, f"dore-{params.dataset}", move_latest=move_latest)
    record = {"tag": tag, "bento_path": str(bentoml.models.get(tag).path), "model_dir": str(model_dir.resolve()),
              "latest": str(bentoml.models.get(f"dore-{params.dataset}:latest").tag)}
    atomic_write_text(artifacts_dir(params) / "package.json", json.dumps(record, indent=1))
    return record


# --- SciREX with a coreference component (gold_input / gold_mentions_pred_clusters / gold_salient_oracle / end_to_end) -----

def coref(params: PipelineParams, backend: str, split: str = "test", import_path: str | None = None) -> dict:
    """Cluster the split's documents with a coreference backend (dore.coref) into
    `coref/<backend>.jsonl` (cached and versioned by DVC), with the backend's coreference quality
    against the gold salient clusters in `coref_<backend>.json`."""
    setting = get_setting(params.dataset)
    if setting.reader != "scirex":
        raise ValueError(f"coreference backends serve SciREX only, not {params.dataset!r}")
    if split in setting.carve:
        raise ValueError(f"split {split!r} is carved out of a file; run coreference on 'test' (official SciREX dev)")
    out = artifacts_dir(params) / "coref"
    summary = run_coref(backend, data_root() / setting.files[split], out / f"{backend}.jsonl", import_path)
    summary = {**summary, "split": split, "output": str(out / f"{backend}.jsonl")}
    atomic_write_text(artifacts_dir(params) / f"coref_{backend}.json", json.dumps(summary, indent=1, default=str))
    return summary


def evaluate_with_coref(params: PipelineParams, backend: str) -> dict:
    """The selected model on the test split with entities from a coreference result: clusters ->
    DORE entities (first mention order, typed by majority vote, the largest kept per type block)
    -> generation -> relations over clusters -> official SciREX scores (cluster mapping) and the
    micro variant, plus the backend's coreference quality. Writes `metrics_<backend>.json`."""
    out = artifacts_dir(params)
    extractor = Extractor.from_pretrained(out / "model")
    gold = load_split(params, "test")
    result = read_result(out / "coref" / f"{backend}.jsonl")
    blocks = {b.type: b.size for b in extractor.layout.blocks if b.type is not None}
    pred_docs = clusters_to_documents(gold, result, max_per_type=blocks or None)
    started = time.perf_counter()
    predictions = extractor.predictions(pred_docs)
    seconds = time.perf_counter() - started
    scores = score_relations(gold, pred_docs, predictions, arity=extractor.layout.arity)
    quality = coref_quality(gold, result)
    record = {"dataset": params.dataset, "split": "test", "setting": scores["setting"], "backend": backend,
              "split_note": get_setting(params.dataset).split_note,
              "scirex_official": scores["scirex_official"], "dore_micro": scores["dore_micro"],
              "dropped_pairs": scores["dropped_pairs"], "documents": len(gold),
              "coref_quality": {k: quality[k]["f1"] for k in ("muc", "b3", "ceafe")} | {"avg_f1": quality["avg_f1"]},
              "clusters_dropped_by_layout": sum(d.meta["coref"]["dropped_clusters"] for d in pred_docs),
              "decode_seconds": round(seconds, 2)}
    atomic_write_text(out / f"metrics_{backend}.json", json.dumps(record, indent=1, default=str))
    return record


# --- what `dore stage <name>` (DVC) and the Prefect tasks run --------------------------------------

def train_stage(params: PipelineParams) -> dict:
    """A fresh training run and its plot data."""
    return train(params, fresh=True)


# --- entity recognition for plain text (issue #14): mentions and coreference -----------------------

def train_entities(params: EntityParams, *, resume: bool = True, fresh: bool = False) -> dict:
    """Train the mention tagger and antecedent scorer on the entity setting's train split, select on
    dev, choose the default coreference backend on dev: `<artifacts>/<dataset>/entities/model`."""
    return entity_stages.train_entities(params, resume=resume, fresh=fresh)


def evaluate_entities(params: EntityParams, split: str = "test") -> dict:
    """Mention P/R/F1 and CoNLL coreference of both backends on `split`, read from its own sentences
    with no entity information: `<artifacts>/<dataset>/entities/eval/metrics-<split>.json`."""
    return entity_stages.evaluate_entities(params, split)


STAGES: dict[str, Callable[[PipelineParams], dict]] = {
    "validate": validate, "convert": convert, "train": train_stage, "evaluate": evaluate, "package": package,
}
PIPELINE_ORDER = ("validate", "convert", "train", "evaluate", "package")
