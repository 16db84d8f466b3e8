"""SciREX end to end (issue #15): the recognizer's training data (`read_scirex_mentions`, entity
setting `scirex`, training chunks) and the chain over predicted mentions, on real SciREX documents
and a tiny random recognizer. Nothing gold may reach the predictions: a test poisons every gold field."""

import pytest
import torch

from dore.chain import recognize, run_chain
from dore.data.datasets import get_entity_setting
from dore.data.model import Entity, Mention, Relation
from dore.data.scirex import SCIREX_TYPES, read_non_salient_clusters, read_scirex, read_scirex_mentions
from dore.entities import EntityRecognizer
from dore.methods.entities import chunk_document, entity_types
from dore.presets import entity_params


@pytest.fixture(scope="module")
def train_mentions(shared_data):
    return read_scirex_mentions(shared_data / "scirex" / "train.jsonl.gz")


@pytest.fixture(scope="module")
def dev(shared_data):
    return read_scirex(shared_data / "scirex" / "dev.jsonl")[0]


def test_every_ner_span_is_one_mention_salient_clusters_first(train_mentions, shared_data):
    docs, report = train_mentions
    gold = read_scirex(shared_data / "scirex" / "train.jsonl.gz")[0]
    non_salient = read_non_salient_clusters(shared_data / "scirex" / "train.jsonl.gz")
    for doc, source in zip(docs[:20], gold[:20]):
        spans = [(m.start, m.end) for e in doc.entities for m in e.mentions]
        assert len(spans) == len(set(spans)) == len({(m.start, m.end) for m in source.extra_mentions})
        assert not doc.relations and {m.type for e in doc.entities for m in e.mentions} <= set(SCIREX_TYPES)
        salient = [e for e in source.entities if e.mentions]
        # the first entities are the salient clusters (their spans with an NER type)
        first = doc.entities[0]
        assert {(m.start, m.end) for m in first.mentions} <= {(m.start, m.end) for m in salient[0].mentions}
        multi = sum(len(e.mentions) > 1 for e in doc.entities)
        assert multi >= sum(len(c) > 1 for c in non_salient[doc.doc_id]) // 2  # non-salient clusters kept
    assert report.counts["mention_entities"] > 0


def test_entity_setting_scirex_holds_out_the_last_30_and_tests_on_the_dev_file(shared_data):
    splits = get_entity_setting("scirex").read_splits(("train", "dev", "test"), root=shared_data)
    assert (len(splits["train"]), len(splits["dev"]), len(splits["test"])) == (276, 30, 66)
    ids = {k: {d.doc_id for d in v} for k, v in splits.items()}
    assert not (ids["train"] & ids["dev"]) and not (ids["train"] & ids["test"]) and not (ids["dev"] & ids["test"])
    assert entity_types(splits["train"]) == sorted(SCIREX_TYPES)


def test_chunks_cover_the_paper_and_keep_every_mention_inside_a_sentence(train_mentions):
    doc = train_mentions[0][0]
    chunks = chunk_document(doc, 400)
    assert len(chunks) > 5 and sum(len(c.tokens) for c in chunks) == len(doc.tokens)
    assert [w for c in chunks for w in c.tokens] == doc.tokens
    assert all(len(c.tokens) <= 400 or len(c.sentences) == 1 for c in chunks)
    inside = [m for e in doc.entities for m in e.mentions if m.sent_id is not None
              and m.end <= doc.sentences[m.sent_id][1]]
    kept = [(c.doc_id, m) for c in chunks for e in c.entities for m in e.mentions]
    assert len(kept) == len(inside)
    for c in chunks:
        for e in c.entities:
            for m in e.mentions:
                assert " ".join(c.tokens[m.start:m.end]) == m.text


@pytest.fixture(scope="module")
def recognizer(train_mentions):
    """A tiny random recognizer after a few steps on SciREX chunks (its output is noise, but real output)."""
    torch.manual_seed(0)
    rec = EntityRecognizer.new("tiny-bart", SCIREX_TYPES, window=128, stride=96)
    chunks = [c for d in train_mentions[0][:2] for c in chunk_document(d, 100)][:8]
    optimizer = torch.optim.AdamW(rec.model.parameters(), lr=1e-2)
    for _ in range(3):
        tag_loss, coref_loss = EntityRecognizer.loss(rec.model, rec.training_batch([rec.example(c, gold=True)
                                                                                     for c in chunks]))
        (tag_loss + coref_loss).backward()
        optimizer.step()
        optimizer.zero_grad()
    return rec


def poisoned(doc):
    """`doc` with every gold field replaced by nonsense: NER, clusters, types, relations, sections."""
    junk = Mention(start=0, end=1, text=doc.tokens[0], type="Metric", sent_id=0)
    return doc.model_copy(update={
        "entities": [Entity(mentions=[junk], type="Task", id="poison")] * 4,
        "relations": [Relation(args=(0, 1, 2, 3), label="relevant")],
        "extra_mentions": [junk], "meta": {"sections": [[0, len(doc.tokens)]]}})


@pytest.mark.parametrize("coref", ["string-match", "learned"])
def test_end_to_end_predictions_do_not_read_gold(recognizer, dev, coref):
    docs = [d.model_copy(update={"tokens": d.tokens[:600], "sentences": [(s, min(e, 600)) for s, e in d.sentences
                                                                          if s < 600],
                                 "entities": [], "relations": [], "extra_mentions": []}) for d in dev[:2]]
    docs = [d.model_copy(update={"meta": {}}) for d in docs]
    gold = dev[:2]
    mentions, clusters = recognize(recognizer, docs, coref)
    again = recognize(recognizer, [poisoned(d) for d in docs], coref)
    assert (mentions, clusters) == again
    assert all(m.type in SCIREX_TYPES for ms in mentions.values() for m in ms)
    given = clusters if coref == "learned" else None
    record, results = run_chain(gold, mentions, mention_source="predicted", salience="none", clusters=given,
                                clusters_from=coref)
    poisoned_record, poisoned_results = run_chain([poisoned(d) for d in gold], mentions,
                                                  mention_source="predicted", salience="none", clusters=given,
                                                  clusters_from=coref)
    assert record["setting"] == "end_to_end" and record["clusters_from"] == coref
    for name in results:  # the chain's outputs do not move; only the scores against the gold do
        assert results[name].docs == poisoned_results[name].docs
    assert record["mentions"]["predicted"] == sum(len(m) for m in mentions.values())
    assert 0 <= record["mentions"]["span"]["f1"] <= 100


def test_a_paper_without_a_predicted_mention_gets_an_empty_labelled_result(dev):
    record, results = run_chain(dev[:2], {dev[0].doc_id: []}, mention_source="predicted", salience="none",
                                clusters={}, clusters_from="learned")
    assert record["setting"] == "end_to_end" and record["docs_without_clusters"] == 2
    assert record["mentions"]["predicted"] == 0 and record["mentions"]["f1"] == 0.0
    assert all(not d.clusters for d in results["salient"].docs)


def test_scirex_entity_preset_reads_whole_papers_and_trains_on_chunks():
    params = entity_params("scirex")
    assert params.dataset == "scirex" and params.train_chunk_words and params.stride < params.window


def test_dvc_versions_the_recognizer_and_the_end_to_end_chain():
    import yaml
    from pathlib import Path

    stages = yaml.safe_load((Path(__file__).parents[2] / "dvc.yaml").read_text())["stages"]
    entities, chain = stages["scirex-entities"], stages["scirex-chain-end-to-end"]
    assert entities["cmd"] == "dore entities train --preset scirex --artifacts artifacts"
    assert "artifacts/scirex/entities/model" in entities["outs"]
    assert "--mentions predicted" in chain["cmd"] and "artifacts/scirex/entities/model" in chain["deps"]
    assert chain["outs"] == ["artifacts/scirex/chain/predicted-salience-model"]
