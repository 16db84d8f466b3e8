"""The entity recognizer end to end on the tiny random encoder: trained through the one loop,
saved (safetensors, no pickle), reloaded, and reading documents with no entity information."""

import json

import pytest
import torch

from dore.config import EntityParams, TrainConfig
from dore.data.model import Entity, Mention
from dore.entities import EntityRecognizer
from dore.entities.coref import COREF_BACKENDS
from dore.methods.entities import EntityMethod, blind, entity_types, flat_dev_metrics
from dore.training.loop import train
from tests.conftest import fixture_docs


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("entities")
    train_docs, dev_docs = fixture_docs("train"), fixture_docs("dev")
    params = EntityParams(window=64, stride=32, train=TrainConfig(  # 64 pieces: every document needs windows
        backbone="tiny-bart", epochs=3, batch_docs=2, lr=3e-3, lr_new=3e-3, mixed_precision="no",
        log_every_steps=1, checkpoint_every_steps=1000))
    method = EntityMethod(params, entity_types(train_docs))
    result = train(params.train, method, train_docs, out / "train",
                   evaluate_dev=lambda model, at: flat_dev_metrics(method.evaluate(dev_docs)["scores"]),
                   select_metric="mention_f1")
    method.save(out / "model", note="test")
    return method.recognizer, out / "model", result


def test_training_lowers_the_loss_and_counts_what_it_leaves_out(trained):
    _, _, result = trained
    losses = [r["loss"] for r in result.history if "loss" in r]
    assert losses[-1] < losses[0]
    assert result.counts["documents_longer_than_one_window"] > 0
    assert result.counts["gold_mentions"] > 0
    assert {"mention_f1", "coref_f1_learned", "coref_f1_string_match"} <= set(result.best_dev)


def test_saved_recognizer_reloads_without_pickle_and_predicts_the_same(trained):
    recognizer, directory, _ = trained
    assert not [p.name for p in directory.iterdir() if p.suffix in (".bin", ".pt", ".pkl", ".pickle")]
    config = json.loads((directory / "entities.json").read_text())
    assert config["types"] == ["LOC", "MISC", "NUM", "ORG", "PER", "TIME"] and config["card"]["note"] == "test"
    reloaded = EntityRecognizer.from_pretrained(directory)
    docs = [blind(d) for d in fixture_docs("test")]
    for backend in COREF_BACKENDS:
        assert reloaded.recognize(docs, coref=backend) == recognizer.recognize(docs, coref=backend)


def test_word_shapes_reach_the_encoder_and_old_recognizers_load_without_them(trained, tmp_path):
    recognizer, directory, _ = trained
    assert recognizer.model.word_shapes and json.loads((directory / "entities.json").read_text())["word_shapes"]
    doc = blind(fixture_docs("test")[0])
    batch = recognizer.collate([recognizer.example(doc)])
    assert batch["shapes"].shape == batch["input_ids"].shape and batch["shapes"].max() > 0
    model = recognizer.model.eval()
    args = (batch["input_ids"], batch["attention_mask"], batch["rows"], batch["positions"])
    with torch.no_grad():
        states = model.word_states(*args, batch["shapes"])
        lowered = model.word_states(*args, torch.where(batch["shapes"] > 0, 1, 0))  # every word "lower"
    assert not torch.allclose(states, lowered)  # trained shape embeddings change what the encoder reads

    old = EntityRecognizer.new("tiny-bart", recognizer.types, window=64, stride=32, word_shapes=False)
    old.save_pretrained(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "entities.json").read_text())
    del config["word_shapes"]  # as saved before shapes existed
    (tmp_path / "old" / "entities.json").write_text(json.dumps(config))
    reloaded = EntityRecognizer.from_pretrained(tmp_path / "old")
    assert not reloaded.model.word_shapes
    assert reloaded.recognize([doc]) == old.recognize([doc])


def test_predicted_entities_are_well_formed(trained):
    _, directory, _ = trained
    recognizer = EntityRecognizer.from_pretrained(directory)
    for doc in recognizer.recognize([blind(d) for d in fixture_docs("test")]):
        doc.check()
        firsts = [(e.mentions[0].start, e.mentions[0].end) for e in doc.entities]
        assert firsts == sorted(firsts)
        assert len(doc.meta["entity_scores"]) == len(doc.entities)
        assert all(0 <= s <= 1 for s in doc.meta["entity_scores"])
        for entity in doc.entities:
            assert entity.type in recognizer.types
            for m in entity.mentions:
                s, e = doc.sentences[m.sent_id]
                assert s <= m.start < m.end <= e and m.type in recognizer.types


def test_gold_entities_in_the_input_change_nothing(trained):
    """Poison every gold field (mentions, types, relations): the predictions stay the same."""
    recognizer, _, _ = trained
    gold = fixture_docs("test")
    poisoned = [d.model_copy(update={"entities": [Entity(mentions=[Mention(start=0, end=1, text="x", type="PER")],
                                                         type="NUM") for _ in d.entities]}) for d in gold]
    for backend in COREF_BACKENDS:
        assert recognizer.recognize(poisoned, coref=backend) == recognizer.recognize([blind(d) for d in gold],
                                                                                     coref=backend)
