"""Text in, relations out (#14): text -> sentences and words -> mentions -> entities -> DORE
relations, one implementation behind `Extractor.extract_text`, `dore predict` and the service.
The recognizer here is untrained (random tiny-bart heads): these tests check the plumbing, not
the quality (experiments/entities/ has the trained numbers)."""

import gzip
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dore.cli import app
from dore.data.docred import load_rel_info
from dore.data.model import DataError, Document, Entity, Mention, Relation
from dore.data.text import TOKEN_OFFSETS, document_from_text
from dore.entities import EntityRecognizer
from dore.extract import ENTITIES_DIR, Extractor
from dore.joint import joint_metrics, joint_predict, prediction_record, read_predictions
from dore.scoring.entities import entity_scores
from dore.scoring.joint import joint_scores
from dore.model.backbone import load_backbone
from dore.symbolic.layout import docred_layout
from tests.conftest import DOCRED_FIXTURE, fixture_docs, install_docred_fixture

DOCRED_TYPES = ["LOC", "MISC", "NUM", "ORG", "PER", "TIME"]
TEXTS = ["Barack Obama was born in Honolulu, Hawaii. He met Angela Merkel in Berlin in 2009.",
         "Marie Curie was born in Warsaw. She won the Nobel Prize in Physics in 1903 with Pierre Curie."]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    layout = docred_layout(load_rel_info(DOCRED_FIXTURE / "raw" / "rel_info.json"), n_slots=30)
    recognizer = EntityRecognizer.new("tiny-bart", DOCRED_TYPES, seed=0)
    extractor = Extractor(load_backbone("tiny-bart", layout, seed=0), layout, recognizer=recognizer)
    return extractor.save_pretrained(tmp_path_factory.mktemp("text") / "model")


@pytest.fixture(scope="module")
def extractor(model_dir):
    return Extractor.from_pretrained(model_dir)


def test_a_saved_model_carries_its_recognizer_and_finds_it_beside_it_too(model_dir, tmp_path):
    assert (model_dir / ENTITIES_DIR / "entities.json").exists()
    run = tmp_path / "run" / "docred"  # a run's layout: <dataset>/model and <dataset>/entities/model
    shutil.copytree(model_dir, run / "model", ignore=shutil.ignore_patterns(ENTITIES_DIR))
    assert Extractor.from_pretrained(run / "model").recognizer is None
    shutil.copytree(model_dir / ENTITIES_DIR, run / ENTITIES_DIR / "model")
    assert Extractor.from_pretrained(run / "model").recognizer is not None


def test_text_gives_entities_with_character_spans_and_relations_over_them(extractor):
    results = extractor.extract_text(TEXTS)
    assert [r.document.doc_id for r in results] == ["0", "1"]
    for text, result in zip(TEXTS, results):
        entities = result.document.entities
        assert entities and len(entities) <= extractor.layout.n_slots
        for ent in entities:
            assert ent.type in DOCRED_TYPES and ent.name == ent.mentions[0].text
            for m in ent.mentions:
                assert text[m.char_start:m.char_end] == m.text
        for rel in result.relations:
            assert all(0 <= a < len(entities) for a in rel.args)
            assert rel.names == tuple(entities[a].name for a in rel.args)
    # a string and the document it reads as give the same answer
    again = extractor.extract_text([document_from_text(TEXTS[0], "0")])[0]
    assert again.to_dict() == results[0].to_dict()


def test_entities_beyond_the_slots_keep_the_highest_scoring_and_count_the_rest(extractor):
    small = Extractor(extractor.backbone, docred_layout(load_rel_info(DOCRED_FIXTURE / "raw" / "rel_info.json"),
                                                        n_slots=2))
    doc = Document(doc_id="d", tokens=list("abcde"), sentences=[(0, 5)], entities=[
        Entity(type="PER", mentions=[Mention(start=i, end=i + 1, text="abcde"[i])]) for i in range(5)],
        meta={"entity_scores": [0.1, 0.9, 0.3, 0.8, 0.2]})
    kept, dropped = small.fit_slots(doc)
    assert dropped == 3 and [e.name for e in kept.entities] == ["b", "d"]  # best two, in document order
    assert kept.meta["entity_scores"] == [0.9, 0.8]


def test_a_model_without_recognizer_refuses_text_with_the_reason(extractor):
    bare = Extractor(extractor.backbone, extractor.layout)
    with pytest.raises(DataError, match="no entity recognizer"):
        bare.extract_text(TEXTS[:1])


def poisoned(doc: Document) -> Document:
    """Every gold field wrong: mentions moved, types and labels changed, relations reversed."""
    entities = [Entity(type="MISC", mentions=[Mention(start=0, end=1, text=doc.tokens[0], type="MISC")])
                for _ in doc.entities]
    relations = [Relation(args=(r.args[1], r.args[0]), label="P17") for r in doc.relations]
    return doc.model_copy(update={"entities": entities, "relations": relations, "title": "poison",
                                  "meta": {**doc.meta, TOKEN_OFFSETS: None}})


def test_joint_predictions_never_see_the_gold(extractor):
    gold = fixture_docs("test")
    clean = [prediction_record(r) for r in joint_predict(extractor, gold)]
    dirty = [prediction_record(r) for r in joint_predict(extractor, [poisoned(d) for d in gold])]
    assert clean == dirty
    assert all(set(rec) == {"title", "entities", "relations"} for rec in clean)
    metrics = joint_metrics(gold, joint_predict(extractor, gold))
    assert set(metrics["relations"]) == {"strict", "strict_typed", "relaxed"}
    assert 0 <= metrics["entities"]["mentions"]["span_type"]["f1"] <= 100 and "avg_f1" in metrics["entities"]["coref"]


def test_dore_predict_reads_plain_text_jsonl_and_sents_only_docred(model_dir, tmp_path):
    runner = CliRunner()
    story = tmp_path / "story.txt"
    story.write_text(TEXTS[0])
    result = runner.invoke(app, ["predict", str(model_dir), str(story), "-o", "-"])
    assert result.exit_code == 0, result.output
    (line,) = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    assert line["doc_id"] == "story" and line["entities"]
    assert all(TEXTS[0][m["start"]:m["end"]] == m["text"] for e in line["entities"] for m in e["mentions"])

    lines = tmp_path / "texts.jsonl"
    lines.write_text("".join(json.dumps({"id": f"t{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    out = tmp_path / "out.jsonl"
    assert runner.invoke(app, ["predict", str(model_dir), str(lines), "-o", str(out)]).exit_code == 0
    written = [json.loads(x) for x in out.read_text().splitlines()]
    assert [w["doc_id"] for w in written] == ["t0", "t1"]
    assert written[0]["entities"] == line["entities"] and written[0]["relations"] == line["relations"]

    raw = json.loads((DOCRED_FIXTURE / "raw" / "test.json").read_text())
    for doc in raw:
        doc.pop("vertexSet"), doc.pop("labels", None)
    sents_only = tmp_path / "sents.json"
    sents_only.write_text(json.dumps(raw))
    out = tmp_path / "sents.jsonl"
    assert runner.invoke(app, ["predict", str(model_dir), str(sents_only), "-o", str(out)]).exit_code == 0
    assert [json.loads(x)["doc_id"] for x in out.read_text().splitlines()] == [d["title"] for d in raw]


def test_evaluate_joint_scores_the_test_documents_from_their_sentences_alone(model_dir, tmp_path):
    install_docred_fixture(tmp_path / "run")
    shutil.copytree(model_dir, tmp_path / "run" / "docred" / "model")
    result = CliRunner().invoke(app, ["evaluate-joint", "--artifacts", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "relations strict F1" in result.output and "mention F1 (span + type)" in result.output
    out = tmp_path / "run" / "docred" / "joint"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["documents"] == 2
    assert metrics["gold_entities"]["scorer"] == "docred_official"
    assert set(metrics["relations"]) == {"strict", "strict_typed", "relaxed"}
    lines = gzip.decompress((out / "predictions.jsonl.gz").read_bytes()).decode().splitlines()
    assert [json.loads(line)["title"] for line in lines] == [d.doc_id for d in fixture_docs("test")]
    # the committed form is enough to score again: the same mentions, clusters and joint relations
    gold = fixture_docs("test")
    docs, relations = read_predictions(out / "predictions.jsonl.gz", gold)
    assert entity_scores(gold, docs) == metrics["entities"]
    assert joint_scores(gold, docs, relations) == metrics["relations"]


def test_packaging_carries_the_runs_recognizer_into_the_store(model_dir, tmp_path):
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models import ModelStore

    from dore.stages import package_model

    run = tmp_path / "run" / "docred"
    shutil.copytree(model_dir, run / "model", ignore=shutil.ignore_patterns(ENTITIES_DIR))
    shutil.copytree(model_dir / ENTITIES_DIR, run / ENTITIES_DIR / "model")
    home = tmp_path / "bentoml"
    with BentoMLContainer.bentoml_home.patch(str(home)), BentoMLContainer.model_store.patch(ModelStore(home / "models")):
        import bentoml

        tag = package_model(run / "model", "dore-docred")
        packaged = Path(bentoml.models.get(tag).path)
        assert (packaged / ENTITIES_DIR / "entities.json").exists()
        assert bentoml.models.get(tag).info.metadata["entity_recognizer"] is True
        assert Extractor.from_pretrained(packaged).recognizer is not None


def test_a_section_with_entities_trains_its_recognizer_into_the_model(shared_data, tmp_path, monkeypatch):
    """What `dvc repro train@docred` does with the embedded preset's `docred.entities`, shrunk."""
    from dore import stages
    from dore.config import EntityParams, PipelineParams, TrainConfig

    monkeypatch.setenv("DORE_DATA", str(shared_data))
    install_docred_fixture(tmp_path)
    tiny = {"backbone": "tiny-bart", "max_steps": 2, "epochs": 1, "mixed_precision": "no"}
    params = PipelineParams(dataset="docred", artifacts=str(tmp_path), limit_dev=2, limit_test=2,
                            train=TrainConfig(**tiny), tune_na_biases=[0.0],
                            entities=EntityParams(limit_train=3, limit_dev=2, train=TrainConfig(**tiny)))
    summary = stages.train(params, fresh=True)
    assert summary["entities"]["steps"] >= 1
    model = Extractor.from_pretrained(tmp_path / "docred" / "model")
    assert (tmp_path / "docred" / "model" / ENTITIES_DIR / "entities.json").exists() and model.recognizer
    assert model.extract_text(TEXTS[:1])[0].document.doc_id == "0"
