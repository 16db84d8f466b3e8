"""Predicted clusters -> DORE input documents, and DORE's relations over them -> SciREX scores.

`clusters_to_documents` makes one `Document` per SciREX document whose entities are the
backend's clusters, so DORE can mark them in the input and relate them. The gold relations are
*not* copied (they are over the gold clusters): keep the gold documents for scoring.

`score_relations` maps relations predicted over those entities back to the gold, with the
official SciREX cluster mapping (`dore.scoring.scirex.scirex_official`, which calls
`match_clusters`) and DORE's micro variant (`dore_micro`, gold -> predicted exact-span mapping).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from dore.coref.result import CorefDoc, CorefResult, span_types
from dore.data.model import DataError, Document, Entity, Mention
from dore.data.scirex import SCIREX_TYPES
from dore.scoring.scirex import OFFICIAL_SLOT_ORDER, PAIR_LABELS, dore_micro, scirex_official

#: Entity ids of predicted clusters: "cluster:<rank>". SciREX names never hold a ":", so a
#: predicted name that fails to map can never pass for a gold one.
CLUSTER_ID = "cluster:{}"

Predictions = Mapping[str, Iterable[tuple[Sequence[int], str]]]


def clusters_to_documents(docs: Sequence[Document], result: CorefResult, *,
                          max_per_type: Mapping[str, int] | None = None) -> list[Document]:
    """One DORE input document per SciREX document, its entities the result's clusters.

    Entities follow the result's canonical order (first mention, then end); each is typed by its
    cluster's type (majority NER vote; gold: the gold type) and holds one mention per span, typed
    by the document's NER (None when it has none). Ids are the gold names in the gold setting,
    else `cluster:<rank of the cluster in the result>`. Tokens, sentences, NER (`extra_mentions`)
    and meta are the SciREX document's; relations are left empty, and `meta["coref"]` names the
    backend, the setting and the clusters dropped. Joined by doc_id; a document missing from the
    result raises.

    `max_per_type` (e.g. the typed layout's block sizes) keeps, per type, only the clusters with
    the most mentions (ties: the earlier), and drops untyped clusters, so that no entity falls off
    the end of its block just for being mentioned late: string-match finds about 140 clusters per
    SciREX document, against a handful of salient ones, and the big clusters are the salient ones
    far more often than the early ones. None keeps every cluster.
    """
    out = []
    for doc, cdoc in zip(docs, result.for_documents(docs)):
        kept = _largest_per_type(cdoc, max_per_type) if max_per_type is not None else range(len(cdoc.clusters))
        types = span_types(doc)
        entities = [Entity(id=_entity_id(cdoc, i), type=cdoc.types[i],
                           mentions=[Mention(start=s, end=e, text=" ".join(doc.tokens[s:e]), type=types.get((s, e)),
                                             sent_id=doc.sentence_of(s)) for s, e in cdoc.clusters[i]])
                    for i in kept]
        meta = {**doc.meta, "coref": {"backend": result.backend, "setting": result.setting,
                                      "dropped_clusters": len(cdoc.clusters) - len(entities)}}
        out.append(doc.model_copy(update={"entities": entities, "relations": [], "meta": meta}).check())
    return out


def _largest_per_type(cdoc: CorefDoc, max_per_type: Mapping[str, int]) -> list[int]:
    """Indices of the clusters kept: per type, the most mentioned (ties: the earlier), in result order."""
    kept = []
    for ctype, limit in max_per_type.items():
        of_type = [i for i, t in enumerate(cdoc.types) if t == ctype]
        kept += sorted(of_type, key=lambda i: (-len(cdoc.clusters[i]), i))[:limit]
    return sorted(kept)


def _entity_id(cdoc: CorefDoc, index: int) -> str:
    return cdoc.names[index] if cdoc.names is not None else CLUSTER_ID.format(index)


def score_relations(gold_docs: Sequence[Document], pred_docs: Sequence[Document], predictions: Predictions,
                    arity: int = 4) -> dict:
    """SciREX scores of relations predicted over the entities of `clusters_to_documents`.

    Args:
        gold_docs: the SciREX documents from `read_scirex` (the gold relations).
        pred_docs: what `clusters_to_documents` made of them.
        predictions: doc_id -> `(args, label)` over `pred_docs` entity indices, as DORE predicts:
            4 args are the Task, Method, Material, Metric slots in that order; 2 args are a pair
            whose slots are its two entities' types. A pair whose entities are untyped or share a
            type fills no slot: it is dropped and counted (`dropped_pairs`).
        arity: the model's: 4 scores n = 2 (the projection) and n = 4; 2 (a binary model) scores
            n = 2 only, since a binary model writes no 4-ary relation and a 4-ary score of 0 says nothing.

    The setting is the one `clusters_to_documents` recorded in `pred_docs`. `gold_input` scores
    in the official gold-input setting (entity ids are gold names; every mapping is the
    identity); the others map each predicted cluster to a gold cluster with the official
    `match_clusters`, the spans of `pred_docs`' mentions being the predicted NER file.

    Returns the setting, `scirex_official` and `dore_micro` for each n, and the number of dropped pairs.
    """
    if arity not in (2, 4):
        raise ValueError(f"SciREX relations are binary or 4-ary, not {arity}-ary")
    ns = (2,) if arity == 2 else (2, 4)
    settings = {d.meta.get("coref", {}).get("setting") for d in pred_docs}
    if len(settings) != 1 or None in settings:
        raise DataError(f"pred_docs must all come from one clusters_to_documents call, found settings {settings}",
                        field="meta.coref.setting")
    setting = settings.pop()
    by_id = {d.doc_id: d for d in pred_docs}
    for doc in gold_docs:
        if doc.doc_id not in by_id:
            raise DataError("gold document missing from the predicted documents", doc=doc.doc_id, field="pred_docs")
    gold_names = {e.id for d in gold_docs for e in d.entities}
    dropped_pairs = 0
    slot_dicts, micro = {}, {n: {} for n in (2, 4)}
    for doc_id, relations in predictions.items():
        if doc_id not in by_id:
            raise DataError("prediction for a document that is not in pred_docs", doc=doc_id, field="predictions")
        doc = by_id[doc_id]
        slot_dicts[doc_id], micro[2][doc_id], micro[4][doc_id] = [], [], []
        pairs_seen: set[tuple[int, int, str]] = set()
        for i, (args, _label) in enumerate(relations):
            if any(not 0 <= a < len(doc.entities) for a in args) or len(args) not in (2, 4):
                raise DataError(f"expected 2 or 4 entity indices below {len(doc.entities)}, got {tuple(args)}",
                                doc=doc_id, field=f"predictions[{i}]")
            slots = _slots(doc, args)
            if slots is None:
                dropped_pairs += 1
                continue
            names = {slot: doc.entities[a].id for slot, a in slots.items()}
            if setting != "gold_input" and gold_names.intersection(names.values()):
                raise DataError("a predicted entity id equals a gold cluster name", doc=doc_id, field="pred_docs")
            slot_dicts[doc_id].append(names)
            if len(args) == 4:
                micro[4][doc_id].append(tuple(args))  # repeated 4-ary tuples stay repeats at n = 4
            pairs = _pair_entries(slots)
            if arity == 2 and len(args) == 2:
                micro[2][doc_id] += pairs  # a binary model's repeats stay false positives
            else:  # a 4-ary model's n = 2 is the set of its pairs, explicit or projected, once per document
                micro[2][doc_id] += [p for p in pairs if p not in pairs_seen]
                pairs_seen.update(pairs)
    if setting == "gold_input":
        official_kwargs: dict = {}
        micro_ids = _gold_indices(gold_docs, by_id, micro)
        micro_clusters = None
    else:
        official_kwargs = {
            "pred_clusters": {d.doc_id: {e.id: [(m.start, m.end) for m in e.mentions] for e in d.entities}
                              for d in pred_docs},
            "pred_ner": {d.doc_id: [(m.start, m.end, m.type) for e in d.entities for m in e.mentions]
                         for d in pred_docs}}
        micro_ids = micro
        micro_clusters = {d.doc_id: [[(m.start, m.end) for m in e.mentions] for e in d.entities] for d in pred_docs}
    return {"setting": setting,
            "scirex_official": {f"{n}ary": scirex_official(gold_docs, slot_dicts, n, **official_kwargs)
                                for n in ns},
            "dore_micro": {f"{n}ary": dore_micro(gold_docs, micro_ids[n], n, pred_clusters=micro_clusters)
                           for n in ns},
            "dropped_pairs": dropped_pairs}


def _slots(doc: Document, args: Sequence[int]) -> dict[str, int] | None:
    """slot -> entity index: positional for 4 args, by entity type for a pair (None if untypable)."""
    if len(args) == 4:
        return dict(zip(SCIREX_TYPES, args))
    types = [doc.entities[a].type for a in args]
    if None in types or types[0] == types[1] or not set(types) <= set(SCIREX_TYPES):
        return None
    return dict(zip(types, args))


def _pair_entries(slots: Mapping[str, int]) -> list[tuple[int, int, str]]:
    """The binary micro entries of one relation: each pair of its filled slots as (lower index, higher
    index, the pair's label), slots taken in the official order (a pair relation gives one entry)."""
    types = [t for t in OFFICIAL_SLOT_ORDER if t in slots]
    return [(*sorted((slots[first], slots[second])), PAIR_LABELS[(first, second)])
            for i, first in enumerate(types) for second in types[i + 1:]]


def _gold_indices(gold_docs: Sequence[Document], by_id: Mapping[str, Document],
                  micro: dict[int, dict[str, list]]) -> dict[int, dict[str, list]]:
    """Gold setting: `dore_micro` counts in gold entity indices, found by name."""
    out: dict[int, dict[str, list]] = {2: {}, 4: {}}
    gold_by_id = {d.doc_id: d for d in gold_docs}
    for n, per_doc in micro.items():
        for doc_id, tuples in per_doc.items():
            index = {e.id: i for i, e in enumerate(gold_by_id[doc_id].entities)}
            entities = by_id[doc_id].entities
            convert = [index[entities[a].id] for a in range(len(entities))]
            if n == 2:
                out[n][doc_id] = [(*sorted((convert[h], convert[t])), label) for h, t, label in tuples]
            else:
                out[n][doc_id] = [tuple(convert[a] for a in args) for args in tuples]
    return out
