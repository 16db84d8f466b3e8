"""SciREX relation scorers and coreference cluster metrics (docs/evaluation.md §4).

Every function is pure and returns a dict of scores in **percent** (0-100) that names its
scorer (`"scorer"`) and, for relations, its arity (`"n"`). Gold is always the `list[Document]`
of `dore.data.scirex.read_scirex`: method sub-relations are already merged into their parent
there, exactly as the official `merge_method_subrelations` does, and relation args are in
`SCIREX_TYPES` order (Task, Method, Material, Metric).

- `scirex_official`: the macro-averaged scorer of allenai/SciREX
  `scirex/evaluation_scripts/scirex_relation_evaluate.py`, including its span and cluster
  mapping (`map_span_to_gold`, `match_clusters`).
- `dore_micro`: DORE's micro TP/FP/FN over generated tuples in cluster-id space.
- `clustering_quality`: MUC, B³ and CEAF-e, to report coreference quality.

Never compare numbers from the two relation scorers: one is a macro mean over
(type combination, document) cells that ignores cells without gold, the other a micro count.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from itertools import combinations
from statistics import fmean

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from dore.data.model import DataError, Document
from dore.data.scirex import SCIREX_TYPES

Span = tuple[int, int]

#: The official `used_entities` order: fixes the 6 type pairs and their order.
OFFICIAL_SLOT_ORDER = ("Material", "Metric", "Task", "Method")
#: DORE's binary labels: one class per type pair ("material and metric", ...).
PAIR_LABELS: dict[tuple[str, str], str] = {
    pair: " and ".join(pair).lower() for pair in combinations(OFFICIAL_SLOT_ORDER, 2)}
#: The official script's additive smoothing in every per-cell ratio.
SMOOTHING = 1e-7
#: Both official thresholds are strict: a span IoU or a cluster overlap of exactly 0.5 fails.
THRESHOLD = 0.5


# --- the official SciREX scorer ----------------------------------------------------


def span_iou(a: Span, b: Span) -> float:
    """The official `span_match`: (min(e) - max(s)) / (max(e) - min(s)); negative when disjoint."""
    return (min(a[1], b[1]) - max(a[0], b[0])) / (max(a[1], b[1]) - min(a[0], b[0]))


def map_span_to_gold(span: Span, gold_spans: Sequence[Span]) -> Span:
    """The first gold span, in gold order, with IoU > 0.5; the span itself when none qualifies."""
    return next((g for g in gold_spans if span_iou(span, g) > THRESHOLD), span)


def span_mapper(gold_spans: Sequence[Span]) -> Callable[[Span], Span]:
    """`map_span_to_gold` against fixed gold spans, reading only the gold spans that share a token
    with the span (an IoU above 0.5 needs one): the same answer, without scanning every gold span
    for every predicted one (a paper has ~1k of each)."""
    covering: dict[int, list[int]] = {}
    for k, (start, end) in enumerate(gold_spans):
        for position in range(start, end):
            covering.setdefault(position, []).append(k)

    def mapped(span: Span) -> Span:
        candidates = sorted({k for position in range(span[0], span[1]) for k in covering.get(position, ())})
        return next((gold_spans[k] for k in candidates if span_iou(span, gold_spans[k]) > THRESHOLD), span)

    return mapped


def match_clusters(pred_clusters: Mapping[str, Iterable[Span]], gold_clusters: Mapping[str, Collection[Span]],
                   gold_spans: Sequence[Span]) -> dict[str, str]:
    """The official cluster mapping: predicted name -> gold name.

    A predicted cluster P is the set of its spans mapped by `map_span_to_gold`. It maps to the
    gold cluster G with the highest |P ∩ G| / |P| (normalised by the *predicted* size) iff that
    score is > 0.5. Several predicted clusters may map to one gold cluster. An empty predicted
    cluster maps nowhere (the official code would divide by zero).

    Ties: the official script takes the first gold cluster in the iteration order of a Python
    set of names, which changes with PYTHONHASHSEED. Ties are real in SciREX: a merged parent
    method contains all spans of its sub-method, so a predicted sub-method cluster scores 1.0
    against both. Here a tie goes to the gold cluster P covers best (highest |P ∩ G| / |G|),
    then to the first in `gold_clusters` order: always one of the official outcomes, and the
    identity when the gold clusters are passed as predictions.
    """
    gold_sets = {name: set(spans) for name, spans in gold_clusters.items()}
    to_gold = span_mapper(gold_spans)
    mapping = {}
    for name, spans in pred_clusters.items():
        mapped = {to_gold(tuple(s)) for s in spans}
        if not mapped:
            continue
        best, best_score = None, (0.0, 0.0)
        for gold_name, gold in gold_sets.items():
            shared = len(mapped & gold)
            score = (shared / len(mapped), shared / len(gold) if gold else 0.0)
            if score > best_score:
                best, best_score = gold_name, score
        if best_score[0] > THRESHOLD:
            mapping[name] = best
    return mapping


def scirex_official(gold_docs: Sequence[Document], predictions: Mapping[str, Iterable[Mapping[str, str]]], n: int, *,
                    pred_ner: Mapping[str, Iterable[Sequence]] | None = None,
                    pred_clusters: Mapping[str, Mapping[str, Iterable[Span]]] | None = None) -> dict:
    """The official SciREX relation score (macro over cells), as `scirex_relation_evaluate.py`.

    Args:
        gold_docs: documents from `read_scirex`. Gold preparation as the official script:
            clusters are the relation entities (sub-methods merged, spans de-duplicated, empty
            ones kept); the gold NER the spans map to is `Document.extra_mentions` in order.
        predictions: doc_id -> predicted relations, each a dict slot -> cluster name with slots
            from `SCIREX_TYPES` (positives only: the official file's label-1 rows). A relation
            contributes to a type combination only if it fills all of its slots, so a 4-slot
            dict behaves exactly as the official 4-tuple, and a binary system can pass 2-slot
            dicts. A gold document missing here has no predictions.
        n: 1, 2 or 4. n = 2 loops over the 6 pairs of `OFFICIAL_SLOT_ORDER`, n = 4 over one.
        pred_ner: doc_id -> predicted NER spans (`[s, e]` or `[s, e, type]`). The mapping of a
            span depends only on the span and the gold NER, so this is only checked: every
            predicted cluster span must be in it, as the official script requires.
        pred_clusters: doc_id -> {predicted cluster name: spans}. None is the gold-input
            setting: every name maps to itself. Names that do not map pass through unchanged.

    Per (type combination, document) cell: gold = projected gold tuples whose projected
    entities all have a mention; pred = projected mapped predictions, de-duplicated;
    p = |pred ∩ gold| / (|pred| + 1e-7), r = |pred ∩ gold| / (|gold| + 1e-7),
    f1 = 2pr / (p + r + 1e-7). Cells without gold are dropped (their predictions are free);
    P, R and F1 are plain means over the remaining cells (0 when there are none).

    Returns p, r, f1 (percent), the cell count, the gold, predicted and matched tuple counts
    over the kept cells, the predictions in dropped cells, the same scores per type
    combination (`by_types`), and with `pred_clusters` the official clustering p/r/f1
    (matched predicted / predicted, distinct gold hit / gold, mean over documents).
    """
    if n not in (1, 2, 4):
        raise ValueError(f"n must be 1, 2 or 4, got {n}")
    gold_ids = {doc.doc_id for doc in gold_docs}
    for name, given in (("predictions", predictions), ("pred_clusters", pred_clusters), ("pred_ner", pred_ner)):
        _check_doc_ids(given, gold_ids, name)

    golds, preds, cluster_rows = {}, {}, []
    for doc in gold_docs:
        clusters, relations = _official_gold(doc)
        golds[doc.doc_id] = (clusters, relations)
        mapping: Mapping[str, str] = {}
        if pred_clusters is not None:
            predicted = {name: [tuple(s) for s in spans] for name, spans in pred_clusters.get(doc.doc_id, {}).items()}
            if pred_ner is not None:
                _check_spans_in_ner(doc.doc_id, predicted, pred_ner.get(doc.doc_id, ()))
            mapping = match_clusters(predicted, clusters, [(m.start, m.end) for m in doc.extra_mentions])
            n_pred = sum(1 for spans in predicted.values() if spans)
            cluster_rows.append(_smoothed(len(mapping), n_pred, len(set(mapping.values())), len(clusters)))
        preds[doc.doc_id] = [{slot: mapping.get(name, name) for slot, name in rel.items()}
                             for rel in _predicted_relations(doc.doc_id, predictions.get(doc.doc_id, ()))]

    rows, by_types = [], {}
    totals = Counter()
    for types in combinations(OFFICIAL_SLOT_ORDER, n):
        type_rows = []
        for doc in gold_docs:
            clusters, relations = golds[doc.doc_id]
            gold = {proj for proj in (_project(rel, types) for rel in relations)
                    if all(clusters[name] for _, name in proj)}
            pred = {_project(rel, types) for rel in preds[doc.doc_id] if all(t in rel for t in types)}
            if not gold:
                totals["predicted_in_dropped_cells"] += len(pred)
                continue
            matched = len(pred & gold)
            totals.update(gold=len(gold), predicted=len(pred), matched=matched)
            type_rows.append(_smoothed(matched, len(pred), matched, len(gold)))
        by_types["-".join(types)] = {"cells": len(type_rows), **_mean_percent(type_rows)}
        rows += type_rows

    result = {"scorer": "scirex_official", "n": n, **_mean_percent(rows), "cells": len(rows),
              "gold": totals["gold"], "predicted": totals["predicted"], "matched": totals["matched"],
              "predicted_in_dropped_cells": totals["predicted_in_dropped_cells"], "by_types": by_types}
    if pred_clusters is not None:
        result["clustering"] = {"docs": len(cluster_rows), **_mean_percent(cluster_rows)}
    return result


def _official_gold(doc: Document) -> tuple[dict[str, frozenset[Span]], list[dict[str, str]]]:
    """Relation entities' clusters (name -> spans, empty kept) and the relations as slot -> name."""
    relations = []
    for i, rel in enumerate(doc.relations):
        if len(rel.args) != len(SCIREX_TYPES):
            raise DataError(f"expected {len(SCIREX_TYPES)} args {SCIREX_TYPES}, got {rel.args}",
                            doc=doc.doc_id, field=f"relations[{i}].args")
        relations.append({slot: _entity_name(doc, a) for slot, a in zip(SCIREX_TYPES, rel.args)})
    used = {a for rel in doc.relations for a in rel.args}
    clusters = {_entity_name(doc, i): frozenset((m.start, m.end) for m in doc.entities[i].mentions)
                for i in sorted(used)}
    return clusters, relations


def _entity_name(doc: Document, index: int) -> str:
    name = doc.entities[index].id
    if name is None:
        raise DataError("a SciREX entity needs its cluster name as id", doc=doc.doc_id, field=f"entities[{index}].id")
    return name


def _predicted_relations(doc_id: str, relations: Iterable[Mapping[str, str]]) -> list[Mapping[str, str]]:
    relations = list(relations)
    for i, rel in enumerate(relations):
        if not isinstance(rel, Mapping) or not rel or not set(rel) <= set(SCIREX_TYPES) \
                or not all(isinstance(v, str) for v in rel.values()):
            raise DataError(f"expected a dict slot -> cluster name with slots from {SCIREX_TYPES}, got {rel!r}",
                            doc=doc_id, field=f"predictions[{i}]")
    return relations


def _check_spans_in_ner(doc_id: str, clusters: Mapping[str, list[Span]], ner: Iterable[Sequence]) -> None:
    known = {(item[0], item[1]) for item in ner}
    for name, spans in clusters.items():
        missing = [s for s in spans if s not in known]
        if missing:
            raise DataError(f"span {missing[0]} is not in the predicted NER", doc=doc_id, field=f"pred_clusters.{name}")


def _project(rel: Mapping[str, str], types: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    return tuple((t, rel[t]) for t in types)


def _smoothed(matched_p: int, n_pred: int, matched_r: int, n_gold: int) -> tuple[float, float, float]:
    """The official per-cell p, r, f1 with 1e-7 in every denominator."""
    p = matched_p / (n_pred + SMOOTHING)
    r = matched_r / (n_gold + SMOOTHING)
    return p, r, 2 * p * r / (p + r + SMOOTHING)


def _mean_percent(rows: list[tuple[float, float, float]]) -> dict[str, float]:
    if not rows:
        return {"p": 0.0, "r": 0.0, "f1": 0.0}
    return {key: 100 * fmean(row[i] for row in rows) for i, key in enumerate(("p", "r", "f1"))}


def _check_doc_ids(given: Mapping | None, gold_ids: set[str], name: str) -> None:
    """Join by doc_id only: an unknown id is a pipeline error, never silently ignored."""
    unknown = sorted(set(given or ()) - gold_ids)
    if unknown:
        raise DataError(f"{len(unknown)} doc_id(s) not in the gold documents", doc=unknown[0], field=name)


# --- DORE's micro variant ----------------------------------------------------------------


def dore_micro(gold_docs: Sequence[Document], predictions: Mapping[str, Iterable[Sequence]], n: int, *,
               pred_clusters: Mapping[str, Sequence[Iterable[Span]]] | None = None,
               dore_compat: bool = False) -> dict:
    """DORE's micro P/R/F1 (`ayyyq/DORE` `_eval`, `_eval_4re`, `read_scirex_test`), in cluster-id space.

    Args:
        gold_docs: documents from `read_scirex`.
        predictions: doc_id -> generated tuples, positives only (NA already removed), in
            generation order. n = 2: `(h, t, label)` with `label` a value of `PAIR_LABELS`;
            the reference writes each pair with h < t, so a hit needs that exact order.
            n = 4: four cluster ids, compared as a sorted tuple. A gold document missing here
            has no predictions.
        n: 2 or 4.
        pred_clusters: doc_id -> predicted clusters (lists of spans); a cluster's id is its
            list position. None is the gold-input setting: the ids are the gold entity indices.
        dore_compat: reproduce DORE's two binary quirks: a gold pair whose entities fall on one
            cluster is dropped (else: a false negative), and gold pairs that coincide in
            cluster space are all kept (else: de-duplicated, as 4-ary always is).

    Gold: per type combination, the projections of the gold relations, de-duplicated, whose
    entities all have a mention. End-to-end, each gold entity maps to the predicted cluster
    sharing the most exactly equal spans (at least 1; lowest id on ties); a relation with an
    unmappable entity is a false negative (`unmapped`), and so is a 4-ary relation whose four
    entities do not land on four distinct clusters (`collapsed`).

    Deviation from DORE, on purpose: its end-to-end reference uses the *unmerged* `coref`; here
    the gold is merged as for `scirex_official`, so both scorers see the same relations.

    Counting: predictions are taken in order; one with an id outside the document's clusters
    is skipped (`skipped`: neither TP nor FP); one that equals an unused gold tuple is a TP;
    any other, repeats included, is a FP. P = TP / (TP + FP), R = TP / (TP + FN),
    F1 = 2PR / (P + R), each 0 when its denominator is 0.
    """
    if n not in (2, 4):
        raise ValueError(f"n must be 2 or 4, got {n}")
    gold_ids = {doc.doc_id for doc in gold_docs}
    _check_doc_ids(predictions, gold_ids, "predictions")
    _check_doc_ids(pred_clusters, gold_ids, "pred_clusters")
    labels = set(PAIR_LABELS.values())
    counts = Counter()
    for doc in gold_docs:
        if pred_clusters is None:
            n_ids, cluster_of = len(doc.entities), list(range(len(doc.entities)))
        else:
            clusters = [{tuple(s) for s in spans} for spans in pred_clusters.get(doc.doc_id, ())]
            n_ids, cluster_of = len(clusters), map_gold_to_clusters(doc, clusters)
        remaining = _micro_gold(doc, n, cluster_of, dore_compat, counts)
        for i, pred in enumerate(predictions.get(doc.doc_id, ())):
            ids, key = _micro_key(doc.doc_id, i, pred, n, labels)
            if not all(0 <= c < n_ids for c in ids):
                counts["skipped"] += 1
            elif remaining[key] > 0:
                remaining[key] -= 1
                counts["tp"] += 1
            else:
                counts["fp"] += 1
        counts["fn"] += sum(remaining.values())

    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"scorer": "dore_micro", "n": n, "p": 100 * p, "r": 100 * r, "f1": 100 * f1, "tp": tp, "fp": fp, "fn": fn,
            **{key: counts[key] for key in ("skipped", "unmapped", "collapsed", "dropped")}, "dore_compat": dore_compat}


def map_gold_to_clusters(doc: Document, clusters: Sequence[Collection[Span]]) -> list[int | None]:
    """Per gold entity, the predicted cluster sharing the most exactly equal spans (>= 1; lowest id on ties)."""
    owners: dict[Span, list[int]] = defaultdict(list)
    for cid, spans in enumerate(clusters):
        for span in spans:
            owners[span].append(cid)
    mapping = []
    for entity in doc.entities:
        votes = Counter(cid for span in {(m.start, m.end) for m in entity.mentions} for cid in owners.get(span, ()))
        mapping.append(min(votes, key=lambda cid: (-votes[cid], cid)) if votes else None)
    return mapping


def _micro_gold(doc: Document, n: int, cluster_of: Sequence[int | None], dore_compat: bool,
                counts: Counter) -> Counter:
    """The matchable gold tuples in cluster space; unmatchable ones go straight to `counts`."""
    gold = Counter()
    for types in combinations(OFFICIAL_SLOT_ORDER, n):
        positions = [SCIREX_TYPES.index(t) for t in types]
        projected = {tuple(rel.args[i] for i in positions) for rel in doc.relations}
        for entities in projected:
            if not all(doc.entities[e].mentions for e in entities):
                continue
            ids = [cluster_of[e] for e in entities]
            if None in ids:
                counts["unmapped"] += 1
                counts["fn"] += 1
            elif len(set(ids)) < n:
                counts["collapsed"] += 1
                if n == 2 and dore_compat:
                    counts["dropped"] += 1  # DORE never writes a diagonal pair into its reference
                else:
                    counts["fn"] += 1
            else:
                gold[(min(ids), max(ids), PAIR_LABELS[types]) if n == 2 else tuple(sorted(ids))] += 1
    if not (n == 2 and dore_compat):
        gold = Counter(dict.fromkeys(gold, 1))
    return gold


def _micro_key(doc_id: str, i: int, pred: Sequence, n: int, labels: set[str]) -> tuple[tuple[int, ...], tuple]:
    ids = tuple(pred[:2]) if n == 2 else tuple(pred)
    if len(pred) != (3 if n == 2 else 4) or not all(type(c) is int for c in ids) \
            or (n == 2 and pred[2] not in labels):
        shape = "(h, t, label) with a label from PAIR_LABELS" if n == 2 else "4 cluster ids"
        raise DataError(f"expected {shape}, got {pred!r}", doc=doc_id, field=f"predictions[{i}]")
    return ids, ((*ids, pred[2]) if n == 2 else tuple(sorted(ids)))


# --- coreference cluster quality ---------------------------------------------------


def clustering_quality(gold_clusters: Iterable[Iterable[Hashable]],
                       pred_clusters: Iterable[Iterable[Hashable]]) -> dict:
    """MUC, B³ and CEAF-e P/R/F1 (percent) of predicted against gold clusters, and their mean F1.

    Mentions are any hashable items (e.g. `(start, end)` spans); empty clusters are ignored;
    mentions absent from the other side count as misses (the reference scorer's treatment of
    predicted mentions). Definitions (Pradhan et al. 2014):
    - MUC: R = Σ_K (|K| - |partitions of K by the response|) / Σ_K (|K| - 1), where a mention
      in no response cluster is its own partition; P swaps key and response. A mention listed
      in several clusters of one side (SciREX salient clusters overlap) belongs to the first.
    - B³: R = Σ_K Σ_R |K ∩ R|² / |K| / Σ_K |K|; P swaps key and response.
    - CEAF-e: φ(K, R) = 2|K ∩ R| / (|K| + |R|), summed over the best one-to-one alignment
      (Hungarian); R = Σφ / #key clusters, P = Σφ / #response clusters.
    """
    key = [frozenset(c) for c in gold_clusters]
    response = [frozenset(c) for c in pred_clusters]
    key, response = [c for c in key if c], [c for c in response if c]
    muc = _prf(_muc_recall(key, response), _muc_recall(response, key))
    b3 = _prf(_b_cubed_recall(key, response), _b_cubed_recall(response, key))
    phi = _ceafe_alignment(key, response)
    ceafe = _prf((phi, len(key)), (phi, len(response)))
    return {"scorer": "coref_clustering", "muc": muc, "b3": b3, "ceafe": ceafe,
            "avg_f1": fmean((muc["f1"], b3["f1"], ceafe["f1"]))}


def _muc_recall(key: list[frozenset], response: list[frozenset]) -> tuple[float, float]:
    owner: dict[Hashable, int] = {}
    for i, cluster in enumerate(response):
        for mention in cluster:
            owner.setdefault(mention, i)
    numerator = denominator = 0
    for cluster in key:
        partitions = {owner.get(m, ("missing", m)) for m in cluster}
        numerator += len(cluster) - len(partitions)
        denominator += len(cluster) - 1
    return numerator, denominator


def _overlaps(key: list[frozenset], response: list[frozenset]) -> list[dict[int, int]]:
    """For each key cluster, {response index: |K ∩ R|} over the response clusters it shares a
    mention with, in index order: a corpus has thousands of clusters and each meets a few."""
    clusters_of: dict[Hashable, list[int]] = {}
    for j, cluster in enumerate(response):
        for mention in cluster:
            clusters_of.setdefault(mention, []).append(j)
    overlaps = []
    for cluster in key:
        counts: dict[int, int] = {}
        for mention in cluster:
            for j in clusters_of.get(mention, ()):
                counts[j] = counts.get(j, 0) + 1
        overlaps.append(dict(sorted(counts.items())))
    return overlaps


def _b_cubed_recall(key: list[frozenset], response: list[frozenset]) -> tuple[float, float]:
    numerator = sum(n ** 2 / len(k) for k, shared in zip(key, _overlaps(key, response)) for n in shared.values())
    return numerator, sum(len(k) for k in key)


def _ceafe_alignment(key: list[frozenset], response: list[frozenset]) -> float:
    """Σφ over the best one-to-one alignment. φ is 0 between clusters that share no mention, so the
    alignment is solved per connected component of the overlap graph (exactly the same optimum
    as one assignment over the dense matrix, without its |key| x |response| size)."""
    if not key or not response:
        return 0.0
    overlaps = _overlaps(key, response)
    pairs = [(i, j) for i, shared in enumerate(overlaps) for j in shared]
    if not pairs:
        return 0.0
    rows, cols = np.array(pairs).T
    graph = coo_matrix((np.ones(len(pairs)), (rows, len(key) + cols)), shape=(len(key) + len(response),) * 2)
    _, component = connected_components(graph, directed=False)  # key i is node i, response j node len(key) + j
    members: dict[int, tuple[list[int], list[int]]] = {}
    for node, c in enumerate(component.tolist()):
        side = 0 if node < len(key) else 1
        members.setdefault(c, ([], []))[side].append(node - side * len(key))
    total = 0.0
    for key_members, response_members in members.values():
        if not key_members or not response_members:  # a cluster that meets nothing aligns to nothing
            continue
        position = {j: p for p, j in enumerate(response_members)}
        phi = np.zeros((len(key_members), len(response_members)))
        for r, i in enumerate(key_members):
            for j, n in overlaps[i].items():
                phi[r, position[j]] = 2 * n / (len(key[i]) + len(response[j]))
        matched_rows, matched_cols = linear_sum_assignment(phi, maximize=True)
        total += float(phi[matched_rows, matched_cols].sum())
    return total


def _prf(recall: tuple[float, float], precision: tuple[float, float]) -> dict[str, float]:
    r = recall[0] / recall[1] if recall[1] else 0.0
    p = precision[0] / precision[1] if precision[1] else 0.0
    return {"p": 100 * p, "r": 100 * r, "f1": 100 * (2 * p * r / (p + r) if p + r else 0.0)}
