"""The SciREX chain, stage by stage, each measured (issue #15; docs/scirex_coref.md §7).

    mentions -> clusters (string-match) -> salience -> DORE relations over the salient clusters

- `blind`: what the chain may read of a test document: words, sentences, sections and the
  mentions given to it; every gold field (entities, relations, NER, sub-relations) is gone, so
  nothing gold can reach the clusters, the salience or the relations.
- `run_chain`: the chain on given mentions. There is no mention tagger in this module: the mentions
  are an argument (the gold NER for `gold_mentions_pred_clusters` and `gold_salient_oracle`; a
  tagger's output for `end_to_end`). It measures every stage against the gold: mention P/R/F1,
  coreference MUC / B³ / CEAF-e against the gold salient clusters, salient-cluster P/R/F1 under the
  official mapping, and, given a DORE model, relations under `scirex_official` and `dore_micro`.
- Stage entry points (CLI, DVC): `all_candidates_stage`, `salience_stage`, `chain_stage`. They read
  whole SciREX files from the data root (`test` = all 66 documents of the official dev file), not
  the limited `docs/` of a training run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, get_args

from dore.config import PipelineParams, artifacts_dir
from dore.coref.backends import resolve
from dore.coref.baseline import all_candidates_scores
from dore.coref.compose import clusters_to_documents, score_relations
from dore.coref.io import write_result
from dore.coref.quality import coref_quality
from dore.coref.result import CorefDoc, CorefResult, typed_doc
from dore.coref.salience import SalienceModel, apply_salience, salient_cluster_scores, salient_oracle
from dore.coref.salience_fit import SalienceConfig, candidate_clusters, fit_salience
from dore.coref.string_match import StringMatch
from dore.data.datasets import SPLITS, data_root, get_setting
from dore.data.model import DataError, Document, Mention, atomic_write_text
from dore.data.scirex import read_non_salient_clusters
from dore.entities import EntityRecognizer
from dore.entities.coref import COREF_BACKENDS
from dore.extract import Extractor
from dore.methods.entities import entities_dir
from dore.presets import entity_params

MentionSource = Literal["gold", "predicted"]
Span = tuple[int, int]
Salience = Literal["model", "oracle", "none"]
SALIENCE: tuple[str, ...] = get_args(Salience)


def blind(doc: Document, mentions: Sequence[Mention]) -> Document:
    """`doc` as the chain may see it: words, sentences and sections, with `mentions` as its NER."""
    meta = {"sections": doc.meta["sections"]} if "sections" in doc.meta else {}
    return Document(doc_id=doc.doc_id, tokens=doc.tokens, sentences=doc.sentences, entities=[], relations=[],
                    extra_mentions=list(mentions), meta=meta).check()


def gold_mentions(docs: Sequence[Document]) -> dict[str, list[Mention]]:
    """The gold NER mentions of each document (for the settings that read them)."""
    return {d.doc_id: list(d.extra_mentions) for d in docs}


def recognize(recognizer: EntityRecognizer, docs: Sequence[Document], coref: str | None = None
              ) -> tuple[dict[str, list[Mention]], dict[str, list[list[Span]]]]:
    """The recognizer's mentions and clusters (backend `coref`, None: its default) of each document,
    read from words and sentences only: every other field is dropped before the recognizer sees it."""
    coref = coref or recognizer.default_coref
    return recognize_backends(recognizer, docs, (coref,))[coref]


def recognize_backends(recognizer: EntityRecognizer, docs: Sequence[Document], backends: Sequence[str]
                       ) -> dict[str, tuple[dict[str, list[Mention]], dict[str, list[list[Span]]]]]:
    """`recognize` for several backends from one encoder pass: backend -> (mentions, clusters)."""
    plain = [Document(doc_id=d.doc_id, tokens=d.tokens, sentences=d.sentences, entities=[], relations=[]).check()
             for d in docs]
    out = {}
    for backend, predicted in recognizer.recognize_backends(plain, backends).items():
        mentions, clusters = {}, {}
        for doc in predicted:
            mentions[doc.doc_id] = sorted((m.model_copy(update={"char_start": None, "char_end": None})
                                           for e in doc.entities for m in e.mentions), key=lambda m: (m.start, m.end))
            clusters[doc.doc_id] = [[(m.start, m.end) for m in e.mentions] for e in doc.entities]
        out[backend] = (mentions, clusters)
    return out


def mention_scores(gold_docs: Sequence[Document], mentions: Mapping[str, Sequence[Mention]]) -> dict:
    """Mention P/R/F1 (percent): exact span and type against the gold NER, distinct spans, micro."""
    gold = {(d.doc_id, m.start, m.end, m.type) for d in gold_docs for m in d.extra_mentions}
    pred = {(doc_id, m.start, m.end, m.type) for doc_id, ms in mentions.items() for m in ms}
    tp = len(gold & pred)
    p = tp / len(pred) if pred else 0.0
    r = tp / len(gold) if gold else 0.0
    span_tp = len({g[:3] for g in gold} & {q[:3] for q in pred})
    ps = span_tp / len({q[:3] for q in pred}) if pred else 0.0
    rs = span_tp / len({g[:3] for g in gold}) if gold else 0.0
    return {"scorer": "mentions_exact_span_and_type", "p": 100 * p, "r": 100 * r,
            "f1": 100 * (2 * p * r / (p + r) if p + r else 0.0), "gold": len(gold), "predicted": len(pred), "tp": tp,
            "span": {"scorer": "mentions_exact_span", "p": 100 * ps, "r": 100 * rs,
                     "f1": 100 * (2 * ps * rs / (ps + rs) if ps + rs else 0.0)}}


def run_chain(gold_docs: Sequence[Document], mentions: Mapping[str, Sequence[Mention]], *,
              mention_source: MentionSource, salience: Salience, salience_model: SalienceModel | None = None,
              extractor: Extractor | None = None, clusters: Mapping[str, Sequence[Sequence[Span]]] | None = None,
              clusters_from: str = "string-match") -> tuple[dict, dict[str, CorefResult]]:
    """Run the chain on `mentions` (doc_id -> mentions; a document missing has none) and score each stage.

    `clusters` (doc_id -> clusters of mention spans, e.g. the recognizer's learned coreference,
    named by `clusters_from`) replace string-match; unset, string-match clusters the mentions.

    The setting follows from what was gold: the salience oracle gives `gold_salient_oracle`; else
    gold mentions give `gold_mentions_pred_clusters`, predicted ones `end_to_end`. Returns the
    metrics and the coreference results of each step (`clusters`, `salient`), for versioning.
    """
    unknown = sorted(set(mentions) - {d.doc_id for d in gold_docs})
    if unknown:
        raise DataError(f"{len(unknown)} document(s) with mentions are not in the gold", doc=unknown[0],
                        field="mentions")
    if salience not in SALIENCE or mention_source not in ("gold", "predicted"):
        raise ValueError(f"salience must be one of {SALIENCE} and mention_source gold or predicted, "
                         f"got {salience!r}, {mention_source!r}")
    if (salience == "model") != (salience_model is not None):
        raise ValueError("salience='model' needs a salience_model, and only it does")
    docs = [blind(d, mentions.get(d.doc_id, ())) for d in gold_docs]
    setting = "gold_mentions_pred_clusters" if mention_source == "gold" else "end_to_end"
    if clusters is None:
        clusters_result = resolve(StringMatch(), docs).model_copy(update={"setting": setting})
    else:
        clusters_result = given_clusters(docs, clusters, setting, clusters_from)
    clusters = clusters_result
    if salience == "model":
        salient = apply_salience(docs, clusters, salience_model)
    elif salience == "oracle":
        salient = salient_oracle(gold_docs, clusters)
    else:
        salient = clusters
    record = {"setting": salient.setting, "mentions_from": mention_source, "clusters_from": clusters_from,
              "salience": salience, "documents": len(gold_docs),
              "mentions": mention_scores(gold_docs, mentions),
              "coref_quality": _quality(gold_docs, clusters),
              "salient_clusters": salient_cluster_scores(gold_docs, {d.doc_id: d.clusters for d in salient.docs}),
              "salient_coref_quality": _quality(gold_docs, salient),
              "docs_without_clusters": sum(not d.clusters for d in salient.docs)}
    if extractor is not None:
        record["relations"] = relations(gold_docs, docs, salient, extractor)
    return record, {"clusters": clusters, "salient": salient}


def given_clusters(docs: Sequence[Document], clusters: Mapping[str, Sequence[Sequence[Span]]], setting: str,
                   backend: str) -> CorefResult:
    """A `CorefResult` of clusters made elsewhere (typed by their mentions' types in `docs`)."""
    unknown = sorted(set(clusters) - {d.doc_id for d in docs})
    if unknown:
        raise DataError("clusters for a document that is not in the input", doc=unknown[0], field="clusters")
    out: list[CorefDoc] = [typed_doc(d, clusters.get(d.doc_id, ()), with_mentions=setting == "end_to_end")
                           for d in docs]
    return CorefResult(backend=backend, setting=setting, docs=sorted(out, key=lambda d: d.doc_id))


def relate(docs: Sequence[Document], result: CorefResult, extractor: Extractor
           ) -> tuple[list[Document], dict[str, list]]:
    """DORE over the result's clusters (the largest per type block kept): the input documents made of
    the clusters, and the predictions over their entities (`Extractor.predictions`)."""
    blocks = {b.type: b.size for b in extractor.layout.blocks if b.type is not None}
    pred_docs = clusters_to_documents(docs, result, max_per_type=blocks or None)
    return pred_docs, extractor.predictions(pred_docs)


def relation_scores(gold_docs: Sequence[Document], pred_docs: Sequence[Document], predictions: Mapping[str, list],
                    arity: int) -> dict:
    """`score_relations`, with what the layout dropped counted."""
    return {**score_relations(gold_docs, pred_docs, predictions, arity=arity),
            "clusters_dropped_by_layout": sum(d.meta["coref"]["dropped_clusters"] for d in pred_docs),
            "docs_without_entities": sum(not d.entities for d in pred_docs)}


def relations(gold_docs: Sequence[Document], docs: Sequence[Document], result: CorefResult,
              extractor: Extractor) -> dict:
    """DORE over the result's clusters, scored against the gold."""
    started = time.perf_counter()
    pred_docs, predictions = relate(docs, result, extractor)
    return {**relation_scores(gold_docs, pred_docs, predictions, extractor.layout.arity),
            "decode_seconds": round(time.perf_counter() - started, 2)}


def _quality(gold_docs: Sequence[Document], result: CorefResult) -> dict:
    q = coref_quality(gold_docs, result)
    return {k: q[k]["f1"] for k in ("muc", "b3", "ceafe")} | {"avg_f1": q["avg_f1"]}


# --- stage entry points ----------------------------------------------------------------------------

def _scirex_splits(params: PipelineParams) -> dict[str, list[Document]]:
    setting = get_setting(params.dataset)
    if setting.reader != "scirex":
        raise ValueError(f"the SciREX chain serves SciREX only, not {params.dataset!r}")
    return setting.read_splits(SPLITS)


def _write(params: PipelineParams, name: str, record: dict) -> dict:
    atomic_write_text(artifacts_dir(params) / name, json.dumps(record, indent=1, default=str))
    return record


def all_candidates_stage(params: PipelineParams) -> dict:
    """The all-candidates baseline on every test document (the official dev file): `metrics_all_candidates.json`."""
    test = _scirex_splits(params)["test"]
    return _write(params, "metrics_all_candidates.json", {
        **all_candidates_scores(test), "split": "test", "split_note": get_setting(params.dataset).split_note})


def salience_stage(params: PipelineParams, config: SalienceConfig | None = None, train_limit: int | None = None
                   ) -> dict:
    """Train the salience classifier on train (`train_limit`: its first N documents; unset: all), select
    on the held-out train documents (`dev`), save it to `salience/model.json`, and score it on held-out
    and test: `metrics_salience.json`."""
    splits = _scirex_splits(params)
    if train_limit:
        splits["train"] = splits["train"][:train_limit]
    setting = get_setting(params.dataset)
    train_file = setting.files[setting.carve["train"][0]] if "train" in setting.carve else setting.files["train"]
    non_salient = read_non_salient_clusters(data_root() / train_file)
    model, report = fit_salience(splits["train"], splits["dev"], non_salient, config)
    model.save(salience_path(params))
    scores = {}
    for split, candidates in (("dev", "gold"), ("dev", "string-match"), ("test", "string-match")):
        docs = splits[split]
        by_id = {d.doc_id: d for d in docs}
        clusters = candidate_clusters(docs, non_salient, candidates)
        kept = {doc_id: [c for c, keep in zip(cl, model.salient(by_id[doc_id], cl, types)) if keep]
                for doc_id, (cl, types) in clusters.items()}
        scores[f"{split}/{candidates}"] = {
            "salient": salient_cluster_scores(docs, kept),
            "all_clusters": salient_cluster_scores(docs, {k: cl for k, (cl, _) in clusters.items()})}
    return _write(params, "metrics_salience.json", {"split_note": setting.split_note,
                                             "selection": report, "scores": scores,
                                             "note": "dev = the 30 held-out train documents (selection); test = the "
                                                     "official dev file; candidates: gold = salient + non-salient "
                                                     "gold clusters, string-match = over the gold NER mentions"})


def chain_stage(params: PipelineParams, salience: Salience, *, relate: bool = True, limit: int | None = None,
                mentions_from: MentionSource = "gold", coref: str | None = None) -> dict:
    """The chain on all test documents, salience from the trained model (`salience/model.json`), the
    oracle or none, and DORE's relations with the run's model (`model/`) when `relate`. Mentions:
    the gold NER (`gold`), or the trained recognizer's (`predicted`, `<artifacts>/scirex/entities/model`),
    clustered by `coref` (string-match | learned; None: the backend the recognizer chose on the held-out
    train documents). `limit` (unset: all 66; not `params.limit_test`, which defaults to 50) keeps the
    first documents. Writes `chain/[predicted-]salience-<salience>/{clusters,salient}.jsonl` and
    `metrics_chain_[predicted_]<salience>.json`."""
    test = _scirex_splits(params)["test"][: limit or None]
    out = artifacts_dir(params)
    model = SalienceModel.load(salience_path(params)) if salience == "model" else None
    extractor = Extractor.from_pretrained(out / "model") if relate else None
    clusters, clusters_from, recognizer_card = None, "string-match", None
    if mentions_from == "predicted":
        recognizer = EntityRecognizer.from_pretrained(recognizer_dir(params))
        coref = coref or recognizer.default_coref
        if coref not in COREF_BACKENDS:
            raise ValueError(f"coref backend {coref!r}; choose one of {', '.join(COREF_BACKENDS)}")
        started = time.perf_counter()
        mentions, predicted_clusters = recognize(recognizer, test, coref)
        recognizer_card = {"dir": str(recognizer_dir(params)), "coref": coref,
                           "default_coref": recognizer.default_coref,
                           "recognize_seconds": round(time.perf_counter() - started, 1),
                           **{k: recognizer.card.get(k) for k in ("dev_metrics", "split_note", "train_docs")}}
        if coref == "learned":
            clusters, clusters_from = predicted_clusters, "learned"
    else:
        mentions = gold_mentions(test)
    record, results = run_chain(test, mentions, mention_source=mentions_from, salience=salience,
                                salience_model=model, extractor=extractor, clusters=clusters,
                                clusters_from=clusters_from)
    prefix = "predicted-" if mentions_from == "predicted" else ""
    for name, result in results.items():
        write_result(out / "chain" / f"{prefix}salience-{salience}" / f"{name}.jsonl", result)
    return _write(params, f"metrics_chain_{prefix.replace('-', '_')}{salience}.json",
                  {**record, "split": "test", "split_note": get_setting(params.dataset).split_note,
                   "dore_model": str(out / "model") if relate else None, "recognizer": recognizer_card,
                   "salience_model": model.provenance.get("selected") if model is not None else None})


def salience_path(params: PipelineParams) -> Path:
    """Where the salience classifier is: `<artifacts>/scirex/salience/model.json`, one for both
    SciREX settings (salience does not depend on the relations' arity)."""
    return Path(params.artifacts) / "scirex" / "salience" / "model.json"


def recognizer_dir(params: PipelineParams):
    """Where the chain reads the SciREX recognizer: `<artifacts>/scirex/entities/model`."""
    return entities_dir(entity_params("scirex", artifacts=params.artifacts)) / "model"
