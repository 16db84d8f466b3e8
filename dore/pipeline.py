"""The lifecycle stages, one function each: validate -> convert -> train -> evaluate -> package.

The CLI (`dore validate|prepare|train|evaluate|package|pipeline`), the DVC stages
(`dvc.yaml`) and the Prefect tasks (`flows/train.py`) all call these functions; results are
files under `artifacts/<dataset>/` and small JSON-able dicts (never pickles).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from dore.data.model import atomic_write_text, read_jsonl, write_jsonl
from dore.datasets import SPLITS, get_setting
from dore.train import TrainConfig, TrainResult

if TYPE_CHECKING:
    from dore.layout import IdLayout
    from dore.model.backbone import Backbone


class PipelineParams(BaseModel):
    """One dataset's parameters (a section of params.yaml, or a Prefect flow parameter)."""

    model_config = ConfigDict(extra="forbid")
    dataset: str = "docred"
    limit_train: int | None = Field(50, description="first N training documents (None: all)")
    limit_dev: int | None = Field(20, description="first N dev documents (None: all)")
    limit_test: int | None = Field(50, description="first N test documents (None: all)")
    train: TrainConfig = Field(default_factory=TrainConfig)
    num_beams: int = Field(1, description="beam size for the final evaluation (selection is greedy)")
    tune_na_biases: list[float] = Field([0.0, -1.0, -2.0, -3.0], description="NA logit biases tried on dev after "
                                        "training (the best goes into the model card); [0] to skip")
    artifacts: str = "artifacts"


def artifacts_dir(params: PipelineParams) -> Path:
    return Path(params.artifacts) / params.dataset


def validate(params: PipelineParams) -> dict:
    """Read every split (structural errors raise DataError) and run the content expectations."""
    from dore.validate import validate_or_raise

    setting = get_setting(params.dataset)
    out = artifacts_dir(params) / "validation"
    docs, layout = _splits_and_layout(setting)
    summary = {}
    for split, split_docs in docs.items():
        result = validate_or_raise(split_docs, layout, name=f"{params.dataset}-{split}", report_dir=out)
        summary[split] = {"documents": len(split_docs), "success": result.success, "report": str(result.html_path)}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    return summary


def _splits_and_layout(setting):
    """Every split's documents, and the layout sized from all of them (so test documents fit)."""
    from dore.convert import default_layout

    docs = setting.read_splits(SPLITS)
    return docs, default_layout([d for split in SPLITS for d in docs[split]], setting.reader, _rel_info(setting))


def _rel_info(setting) -> dict | None:
    if setting.reader != "docred":
        return None
    from dore.data.docred import load_rel_info
    from dore.datasets import data_root

    return load_rel_info(data_root() / "docred" / "rel_info.json")


def convert(params: PipelineParams) -> dict:
    """Splits -> `docs/{train,dev,test}.jsonl` (canonical documents) and `layout.json`.

    The layout is sized from all splits so that evaluation documents fit the model.
    """
    setting = get_setting(params.dataset)
    out = artifacts_dir(params) / "docs"
    limits = {"train": params.limit_train, "dev": params.limit_dev, "test": params.limit_test}
    docs, layout = _splits_and_layout(setting)
    counts = {}
    for split in SPLITS:
        kept = docs[split][: limits[split]] if limits[split] else docs[split]
        write_jsonl(out / f"{split}.jsonl", kept)
        counts[split] = {"documents": len(kept), "relations": sum(len(d.unique_relations()) for d in kept)}
    atomic_write_text(out / "layout.json", layout.to_json())
    atomic_write_text(out / "summary.json", json.dumps({"split_note": setting.split_note, **counts}, indent=1))
    return counts


def load_split(params: PipelineParams, split: str):
    return list(read_jsonl(artifacts_dir(params) / "docs" / f"{split}.jsonl"))


def load_layout(params: PipelineParams):
    from dore.layout import IdLayout

    return IdLayout.from_dict(json.loads((artifacts_dir(params) / "docs" / "layout.json").read_text()))


def initial_backbone(cfg: TrainConfig, layout: IdLayout) -> Backbone:
    """The backbone training starts from: a trained model (`init_from`) or `cfg.backbone`."""
    from dore.model.backbone import load_backbone, load_trained

    from dore.model import entities

    backbone = (load_trained(cfg.init_from, layout) if cfg.init_from
                else load_backbone(cfg.backbone, layout, init=cfg.init, seed=cfg.seed))
    if cfg.entity_embeddings:
        entities.attach(backbone.model, layout.n_slots)
    return backbone


def training_summary(result: TrainResult) -> dict:
    """What `train` returns (and writes to `train/summary.json`) about a `dore.train.TrainResult`."""
    return {"steps": result.steps, "epochs": result.epochs_done, "seconds": round(result.seconds, 1),
            "best_dev": result.best_dev, "counts": result.counts}


def train(params: PipelineParams, *, resume: bool = True) -> dict:
    """Train on `train`, select on `dev` (never test); the selected model goes to `model/`."""
    from dore.evaluate import score
    from dore.predict import DecodingConfig, Extractor, training_data_hash
    from dore.train import train as train_loop

    cfg = params.train
    if cfg.target_format != "symbolic":
        raise ValueError(f"target_format {cfg.target_format!r} is a baseline: train it with dore.baselines.lexical")
    layout = load_layout(params)
    train_docs, dev_docs = load_split(params, "train"), load_split(params, "dev")
    backbone = initial_backbone(cfg, layout)
    decoding = DecodingConfig(mode=cfg.mode, num_beams=1, symbol_head=True, order=cfg.order,  # select greedily
                              chunk_length=cfg.chunk_length, max_source_length=cfg.max_source_length)
    extractor = Extractor(backbone, layout, decoding)
    out = artifacts_dir(params)
    data_hash = training_data_hash(train_docs)

    def evaluate_dev(model, epoch):
        preds = _predictions(extractor, dev_docs)
        return _scalars(score(preds, dev_docs, train_docs=train_docs))

    def on_best(model, metrics):
        extractor.save_pretrained(out / "model", preset=cfg.model_dump(), training_data_sha256=data_hash,
                                  dev_metrics=metrics, split_note=get_setting(params.dataset).split_note)

    result = train_loop(cfg, backbone, layout, train_docs, out / "train", evaluate_dev=evaluate_dev,
                        on_best=on_best, resume=resume)
    summary = training_summary(result)
    if result.best_dev is not None and len(params.tune_na_biases) > 1:
        tuned = tune_decoding(params, na_biases=params.tune_na_biases)
        summary["decoding_tuned_on_dev"] = {**tuned["chosen"], "dev_f1": tuned["dev_f1"]}
    atomic_write_text(out / "train" / "summary.json", json.dumps(summary, indent=1, default=str))
    return summary


def tune_decoding(params: PipelineParams, na_biases=(0.0, -1.0, -2.0, -3.0, -4.0),
                  eos_biases=(0.0,)) -> dict:
    """Choose the NA and EOS logit biases on dev (never test) and store them in the model card.

    The generative counterpart of ATLOP's adaptive threshold: a model that learned "no relation"
    too well is pushed toward answering. Greedy decoding, the selection metric is dev F1.
    """
    from dore.evaluate import score
    from dore.predict import MODEL_CARD, Extractor

    out = artifacts_dir(params)
    extractor = Extractor.from_pretrained(out / "model")
    dev_docs, train_docs = load_split(params, "dev"), load_split(params, "train")
    sweep = []
    for na in na_biases:
        for eos in eos_biases:
            decoding = extractor.decoding.model_copy(update={"na_bias": na, "eos_bias": eos, "num_beams": 1})
            metrics = _scalars(score(_predictions(extractor, dev_docs, decoding), dev_docs, train_docs=train_docs))
            sweep.append({"na_bias": na, "eos_bias": eos, **metrics})
    best = max(sweep, key=lambda r: (r["f1"], -abs(r["na_bias"]) - abs(r["eos_bias"])))
    card = {**extractor.card, "decoding": {**extractor.decoding.model_dump(), "na_bias": best["na_bias"],
                                           "eos_bias": best["eos_bias"]}, "decoding_tuned_on": "dev"}
    atomic_write_text(out / "model" / MODEL_CARD, json.dumps(card, indent=1, default=str))
    atomic_write_text(out / "train" / "decoding_sweep.json", json.dumps(sweep, indent=1))
    return {"chosen": {"na_bias": best["na_bias"], "eos_bias": best["eos_bias"]}, "dev_f1": best["f1"], "sweep": sweep}


def _predictions(extractor, docs, decoding=None):
    return {d.doc_id: [(r.args, r.label) for r in rels] for d, rels in zip(docs, extractor.extract(docs, decoding))}


def _scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def evaluate(params: PipelineParams, split: str = "test") -> dict:
    """Score the selected model on `split`; writes `metrics.json` (DVC metrics) and per-relation F1."""
    from dore.predict import Extractor

    extractor = Extractor.from_pretrained(artifacts_dir(params) / "model")
    docs = load_split(params, split)
    started = time.perf_counter()
    decoding = extractor.decoding.model_copy(update={"num_beams": params.num_beams,
                                                     "symbol_head": extractor.decoding.symbol_head and params.num_beams == 1})
    preds = _predictions(extractor, docs, decoding)
    return write_evaluation(params, split, docs, preds, seconds=time.perf_counter() - started,
                            decoder_steps=extractor.stats.decoder_steps, parse_repairs=dict(extractor.stats.parse),
                            dev_selected=extractor.card.get("dev_metrics"))


def write_evaluation(params: PipelineParams, split: str, docs, predictions: dict, *, seconds: float,
                     decoder_steps: int, **extra) -> dict:
    """Score `predictions` of `split` (decoded in `seconds`, `decoder_steps` in all) and write the
    record to `metrics.json`, with per-relation F1 for the DocRED scorer; `extra` joins the record.
    Every kind of model (DORE, the baselines) reports through here, so their records compare."""
    from dore.evaluate import score

    out = artifacts_dir(params)
    metrics = score(predictions, docs, train_docs=load_split(params, "train"))
    record = {"dataset": params.dataset, "split": split, "setting": get_setting(params.dataset).split_note,
              "scorer": metrics["scorer"], **_scalars(metrics), "documents": len(docs),
              "decode_seconds": round(seconds, 2), "docs_per_second": round(len(docs) / max(seconds, 1e-9), 3),
              "decoder_steps_per_doc": round(decoder_steps / max(len(docs), 1), 2), **extra}
    atomic_write_text(out / "metrics.json", json.dumps(record, indent=1, default=str))
    if metrics["scorer"] == "docred_official":
        from dore.evaluate import docred_records
        from dore.scoring.docred import per_relation_f1

        per_rel = per_relation_f1(docred_records(predictions), docs)
        rows = [{"relation": r, **v} for r, v in sorted(per_rel.items())]
        atomic_write_text(out / "per_relation.json", json.dumps(rows, indent=1))
    return record


# --- SciREX with a coreference component (gold_input / pred_coref_gold_mentions / end_to_end) -------

def coref(params: PipelineParams, backend: str, split: str = "test", import_path: str | None = None) -> dict:
    """Stage `coref`: cluster the split's documents with a coreference backend (dore.coref) into
    `coref/<backend>.jsonl` (cached and versioned by DVC), with the backend's coreference quality
    against the gold salient clusters in `coref_<backend>.json`."""
    from dore.coref.run import run_coref
    from dore.datasets import data_root

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
    from dore.coref.compose import clusters_to_documents, score_relations
    from dore.coref.io import read_result
    from dore.coref.quality import coref_quality
    from dore.predict import Extractor

    out = artifacts_dir(params)
    extractor = Extractor.from_pretrained(out / "model")
    gold = load_split(params, "test")
    result = read_result(out / "coref" / f"{backend}.jsonl")
    blocks = {b.type: b.size for b in extractor.layout.blocks if b.type is not None}
    pred_docs = clusters_to_documents(gold, result, max_per_type=blocks or None)
    started = time.perf_counter()
    predictions = _predictions(extractor, pred_docs)
    seconds = time.perf_counter() - started
    scores = score_relations(gold, pred_docs, predictions)
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
