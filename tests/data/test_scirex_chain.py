"""The SciREX chain's stages on real SciREX documents (issue #15): the all-candidates baseline, the
salience oracle and classifier, the chain's blind input, and the non-salient reader."""

from itertools import product

import numpy as np
import pytest

from dore.chain import blind, gold_mentions, mention_scores, run_chain
from dore.coref import StringMatch, resolve
from dore.coref.baseline import all_candidates, all_candidates_scores
from dore.coref.salience import (
    FEATURES,
    SalienceModel,
    apply_salience,
    cluster_features,
    salient_cluster_scores,
    salient_oracle,
)
from dore.coref.salience_fit import SalienceConfig, fit_salience, gold_training_clusters
from dore.data.model import DataError, Entity, Mention, Relation
from dore.data.scirex import read_non_salient_clusters, read_scirex


@pytest.fixture(scope="module")
def dev(shared_data):
    return read_scirex(shared_data / "scirex" / "dev.jsonl")[0]


@pytest.fixture(scope="module")
def train(shared_data):
    path = shared_data / "scirex" / "train.jsonl.gz"
    return read_scirex(path)[0], read_non_salient_clusters(path)


@pytest.fixture(scope="module")
def salience_model(train):
    docs, non_salient = train
    # 24 training documents, 6 held out (the real stage: 276 and the last 30 of train)
    model, report = fit_salience(docs[:24], docs[-6:], non_salient,
                                 SalienceConfig(c_grid=(1.0,), thresholds=(0.3, 0.5, 0.7, 0.9)))
    return model, report


def test_all_candidates_baseline_on_the_whole_dev_file(dev):
    record = all_candidates_scores(dev)
    assert record["setting"] == "gold_input" and record["documents"] == 66
    for scorer in ("scirex_official", "dore_micro"):
        for arity in ("2ary", "4ary"):
            assert record[scorer][arity]["r"] == pytest.approx(100.0, abs=1e-4)  # every gold tuple is a candidate
    # measured: macro 4-ary F1 71.55 on all 66, 75.19 on the first 50 (the number)
    assert record["scirex_official"]["4ary"]["f1"] == pytest.approx(71.55, abs=0.01)
    assert all_candidates_scores(dev[:50])["scirex_official"]["4ary"]["f1"] == pytest.approx(75.19, abs=0.01)
    assert record["dore_micro"]["4ary"]["fp"] + record["dore_micro"]["4ary"]["tp"] == record["candidates"]["4ary"]


def test_all_candidates_are_every_typed_combination(dev):
    doc = dev[0].model_copy(update={"entities": [e for e in dev[0].entities if e.mentions]})
    sizes = {t: sum(e.type == t for e in doc.entities) for t in ("Task", "Method", "Material", "Metric")}
    candidates = all_candidates(doc)
    fours = [args for args, _ in candidates if len(args) == 4]
    assert len(fours) == len(set(fours)) == np.prod(list(sizes.values()))
    assert all(doc.entities[a].type == t for args in fours for a, t in zip(args, sizes))
    pairs = [args for args, _ in candidates if len(args) == 2]
    assert len(pairs) == sum(sizes[a] * sizes[b] for a, b in product(sizes, sizes) if a < b)


def test_salient_oracle_keeps_exactly_the_clusters_that_map_to_gold(dev):
    docs = dev[:5]
    clusters = resolve(StringMatch(), docs)
    oracle = salient_oracle(docs, clusters)
    assert oracle.setting == "gold_salient_oracle" and oracle.provenance["salience"]["from_setting"] == clusters.setting
    every = salient_cluster_scores(docs, {d.doc_id: d.clusters for d in clusters.docs})
    kept = salient_cluster_scores(docs, {d.doc_id: d.clusters for d in oracle.docs})
    assert kept["p"] == pytest.approx(100.0) and every["p"] < 20  # string-match: mostly non-salient clusters
    assert kept["gold_found"] == every["gold_found"]  # no salient cluster is lost
    assert sum(map(len, (d.clusters for d in oracle.docs))) == kept["correct"] == every["correct"]


def test_non_salient_clusters_are_read_from_train_only(train, shared_data):
    docs, non_salient = train
    assert len(non_salient) == 306 and sum(map(len, non_salient.values())) == 35395
    clusters, labels = gold_training_clusters(docs[0], non_salient[docs[0].doc_id])
    assert sum(labels) == sum(bool(e.mentions) for e in docs[0].entities) and len(clusters) == len(labels)
    with pytest.raises(DataError, match="coref_non_salient"):
        read_non_salient_clusters(shared_data / "scirex" / "dev.jsonl")


def test_salience_classifier_separates_salient_clusters(train, salience_model, tmp_path):
    docs, non_salient = train
    model, report = salience_model
    assert report["train_docs"] == 24 and report["heldout_docs"] == 6 and 0 < report["positives"] < report["examples"]
    heldout = docs[-6:]
    clusters = resolve(StringMatch(), heldout)
    filtered = apply_salience(heldout, clusters, model)
    before = salient_cluster_scores(heldout, {d.doc_id: d.clusters for d in clusters.docs})
    after = salient_cluster_scores(heldout, {d.doc_id: d.clusters for d in filtered.docs})
    assert after["p"] > 3 * before["p"] and after["f1"] > 2 * before["f1"]
    assert filtered.setting == clusters.setting  # a classifier's salience keeps the setting
    # stored as JSON (no pickle); the reloaded model decides the same
    loaded = SalienceModel.load(model.save(tmp_path / "model.json"))
    doc, cdoc = heldout[0], clusters.docs[0]
    doc = next(d for d in heldout if d.doc_id == cdoc.doc_id)
    assert loaded.salient(doc, cdoc.clusters, cdoc.types) == model.salient(doc, cdoc.clusters, cdoc.types)
    assert cluster_features(doc, [], []).shape == (0, len(FEATURES))


def poisoned(doc):
    """Every gold field of a document replaced by junk."""
    junk = Mention(start=0, end=1, text=doc.tokens[0], type="Task")
    return doc.model_copy(update={
        "entities": [Entity(id="poison", type="Metric", mentions=[junk])],
        "relations": [Relation(args=(0, 0, 0, 0), label="relevant")],
        "extra_mentions": [junk], "meta": {**doc.meta, "method_subrelations": {"poison": []}}})


def test_chain_reads_no_gold_field_given_its_mentions(dev, salience_model):
    """`end_to_end` with given mentions: poisoning every gold field of the test documents changes nothing."""
    docs = dev[:4]
    mentions = gold_mentions(docs)  # stand-in for a tagger's output: what matters is that it is fixed
    model, _ = salience_model
    _, clean = run_chain(docs, mentions, mention_source="predicted", salience="model", salience_model=model)
    _, dirty = run_chain([poisoned(d) for d in docs], mentions, mention_source="predicted", salience="model",
                         salience_model=model)
    assert clean["salient"].setting == "end_to_end"
    blinded = [blind(poisoned(d), mentions[d.doc_id]) for d in docs]
    assert blinded == [blind(d, mentions[d.doc_id]) for d in docs]
    assert clean["salient"].docs == dirty["salient"].docs and clean["clusters"].docs == dirty["clusters"].docs
    assert clean["salient"].docs != clean["clusters"].docs  # the salience step did filter
    assert apply_salience(blinded, resolve(StringMatch(), blinded), model).docs == clean["salient"].docs


def test_chain_scores_every_stage_and_survives_a_paper_without_mentions(dev, salience_model):
    docs = dev[:3]
    mentions = {**gold_mentions(docs), docs[0].doc_id: []}
    model, _ = salience_model
    record, results = run_chain(docs, mentions, mention_source="gold", salience="model", salience_model=model)
    assert record["setting"] == "gold_mentions_pred_clusters" and record["docs_without_clusters"] >= 1
    assert results["salient"].by_id()[docs[0].doc_id].clusters == []
    assert 0 < record["mentions"]["r"] < 100 and record["mentions"]["p"] == pytest.approx(100.0)
    assert set(record["coref_quality"]) == {"muc", "b3", "ceafe", "avg_f1"}
    assert record["salient_clusters"]["predicted"] == sum(len(d.clusters) for d in results["salient"].docs)
    oracle, _ = run_chain(docs, gold_mentions(docs), mention_source="gold", salience="oracle")
    assert oracle["setting"] == "gold_salient_oracle" and oracle["salient_clusters"]["p"] == pytest.approx(100.0)
    assert mention_scores(docs, gold_mentions(docs))["f1"] == pytest.approx(100.0)


def test_chain_refuses_an_unknown_salience(dev):
    with pytest.raises(ValueError, match="salience must be one of"):
        run_chain(dev[:1], gold_mentions(dev[:1]), mention_source="gold", salience="gold")
    with pytest.raises(ValueError, match="needs a salience_model"):
        run_chain(dev[:1], gold_mentions(dev[:1]), mention_source="gold", salience="model")


def test_relations_over_predicted_clusters_rescore_from_their_file_alone(dev, tmp_path):
    """`write_relations` keeps what the score needs: read back against the gold file, the same
    relations over the same clusters give the same scores, both scorers, binary and 4-ary."""
    from dore.coref.compose import clusters_to_documents, score_relations
    from dore.coref.io import read_relations, write_relations
    from dore.data.scirex import SCIREX_TYPES

    gold = dev[:6]
    seen = [blind(d, gold_mentions([d])[d.doc_id]) for d in gold]
    salient = salient_oracle(gold, resolve(StringMatch(), seen))
    pred_docs = clusters_to_documents(seen, salient, max_per_type={t: 3 for t in SCIREX_TYPES})
    predictions = {}
    for doc in pred_docs:  # every typed 4-tuple, and one pair per paper (a pair the 4-tuples repeat)
        by_type = [[i for i, e in enumerate(doc.entities) if e.type == t] for t in SCIREX_TYPES]
        predictions[doc.doc_id] = [(args, "relevant") for args in product(*by_type)][:5]
        if predictions[doc.doc_id]:
            predictions[doc.doc_id].append((predictions[doc.doc_id][0][0][:2], "relevant"))
    assert sum(map(len, predictions.values())) > 6
    expected = score_relations(gold, pred_docs, predictions)
    assert expected["scirex_official"]["4ary"]["f1"] > 0
    path = write_relations(tmp_path / "relations.jsonl.gz", pred_docs, predictions)
    again_docs, again = read_relations(path, gold)
    assert again == {k: [(tuple(a), lab) for a, lab in v] for k, v in predictions.items()}
    assert score_relations(gold, again_docs, again) == expected
    assert path.read_bytes() == write_relations(tmp_path / "again.jsonl.gz", pred_docs, predictions).read_bytes()
    with pytest.raises(DataError, match=dev[6].doc_id):  # a paper missing from the file is named
        read_relations(path, [*gold, dev[6]])
