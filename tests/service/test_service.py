"""DoreService in-process: HTTP-level requests through BentoML's ASGI app (batching dispatcher
included), and a bare instance without a server."""

from __future__ import annotations

import asyncio
import importlib
import json

import pytest
from starlette.testclient import TestClient

from dore.batch import predict_lines, read_inputs
from dore.extract import Extractor
from dore.serving import MAX_DOCUMENT_BYTES, DocumentIn, to_document
from tests.service.conftest import N_SLOTS, relation_keys, token_request

TEXT = "Barack Obama was born in Honolulu . Obama later visited Hawaii and Honolulu again ."


@pytest.fixture(scope="module")
def service(bento_store):
    return importlib.import_module("service")  # after the store exists: it names the model at import


@pytest.fixture(scope="module")
def client(service):
    with TestClient(service.DoreService.to_asgi()) as client:  # runs the lifespan: loads the model
        yield client


@pytest.fixture(scope="module")
def reference(bento_store) -> Extractor:
    """What `dore predict` would load."""
    return Extractor.from_pretrained(bento_store.model_dir)


def extract(client, *documents):
    return client.post("/extract", json={"documents": list(documents)})


def test_redocred_document_as_tokens_matches_extractor(client, bento_store, reference):
    doc = bento_store.docs[0]
    response = extract(client, token_request(doc))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == bento_store.tag
    (result,) = body["documents"]
    expected = reference.extract([doc])[0]
    assert result["id"] == doc.doc_id and expected  # the random tiny model predicts plenty
    assert relation_keys(result["relations"]) == relation_keys(expected)
    names = [" ".join(doc.tokens[e.mentions[0].start:e.mentions[0].end]) for e in doc.entities]
    assert all(r["head_name"] == names[r["head"]] and r["tail_name"] == names[r["tail"]] for r in result["relations"])


def test_text_with_names_is_the_document_with_those_mentions(client, reference):
    entities = [{"names": ["Obama"], "type": "PER"}, {"names": ["Honolulu"]}, {"names": ["hawaii"]}]
    response = extract(client, {"id": "obama", "text": TEXT, "entities": entities})
    assert response.status_code == 200, response.text
    (result,) = response.json()["documents"]
    doc = DocumentIn.model_validate({"text": TEXT, "entities": entities})
    expected = reference.extract([to_document(doc, 0, reference.layout)])[0]
    assert result["id"] == "obama"
    assert relation_keys(result["relations"]) == relation_keys(expected)
    assert {(r["head"], r["head_name"]) for r in result["relations"]} <= {(0, "Obama"), (1, "Honolulu"), (2, "Hawaii")}


PLAIN = ["Barack Obama was born in Honolulu, Hawaii. He met Angela Merkel in Berlin in 2009.",
         "Marie Curie was born in Warsaw. She won the Nobel Prize in 1903."]


def test_text_without_entities_answers_what_dore_predict_writes(client, reference, tmp_path):
    response = extract(client, *({"id": f"t{i}", "text": t} for i, t in enumerate(PLAIN)))
    assert response.status_code == 200, response.text
    answered = response.json()["documents"]
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"id": f"t{i}", "text": t}) + "\n" for i, t in enumerate(PLAIN)))
    cli = [json.loads(line) for line in predict_lines(reference, read_inputs(texts)).splitlines()]
    for text, api, line in zip(PLAIN, answered, cli):
        assert api["id"] == line["doc_id"] and api["entities"], api
        assert [(e["type"], e["name"], [(m["start"], m["end"]) for m in e["mentions"]]) for e in api["entities"]] == \
            [(e["type"], e["name"], [(m["start"], m["end"]) for m in e["mentions"]]) for e in line["entities"]]
        assert all(text[m["start"]:m["end"]] == m["text"] for e in api["entities"] for m in e["mentions"])
        assert [(r["head"], r["tail"], r["label"]) for r in api["relations"]] == \
            [(r["h"], r["t"], r["r"]) for r in line["relations"]]
        assert api["entities_dropped"] == line["entities_dropped"]
    # documents with and without entities in one request
    mixed = extract(client, GOOD, {"text": PLAIN[0]})
    assert mixed.status_code == 200 and mixed.json()["documents"][0]["entities"] is None
    assert mixed.json()["documents"][1]["entities"] == answered[0]["entities"]


def test_several_documents_in_one_request_answer_in_order(client, bento_store):
    docs = [token_request(d) for d in bento_store.docs[:3]]
    response = extract(client, *docs)
    assert response.status_code == 200, response.text
    assert [d["id"] for d in response.json()["documents"]] == [d["id"] for d in docs]


def _entities(n: int) -> list[dict]:
    return [{"mentions": [{"sent": 0, "start": i, "end": i + 1}]} for i in range(n)]


GOOD = {"text": "Obama was born in Honolulu .", "entities": [{"names": ["Obama"]}, {"names": ["Honolulu"]}]}
JSON = {"content-type": "application/json"}
BAD_REQUESTS = {  # name: (request kwargs, status, words the error must contain)
    "malformed JSON": (dict(content=b'{"documents": [', headers=JSON), 400, ["Invalid JSON"]),
    "not UTF-8": (dict(content=b'{"documents": [{"text": "\xff\xfe", "entities": []}]}', headers=JSON), 400,
                  ["Invalid JSON", "unicode"]),
    "no documents field": (dict(json={"docs": []}), 400, ["documents", "Field required"]),
    "no documents": (dict(json={"documents": []}), 400, ["at least 1"]),
    "too many documents": (dict(json={"documents": [GOOD] * 17}), 400, ["at most 16"]),
    "text and tokens": (dict(json={"documents": [{**GOOD, "tokens": [["a"]]}]}), 400, ["either text or tokens"]),
    "text-only, no words": (dict(json={"documents": [{"text": " \n "}]}), 422, ["empty text", "'text'"]),
    "text-only, too large": (dict(json={"documents": [{"text": "word " * (MAX_DOCUMENT_BYTES // 5 + 1)}]}), 413,
                             ["1,000,000 bytes"]),
    "span outside text": (dict(json={"documents": [{"text": "Obama", "entities": [
        {"spans": [{"start": 0, "end": 99}]}]}]}), 422, ["[0, 99)", "outside the 5-character text"]),
    "empty text": (dict(json={"documents": [{"text": " ", "entities": [
        {"spans": [{"start": 0, "end": 1}]}]}]}), 422, ["no words"]),
    "name not found": (dict(json={"documents": [{**GOOD, "entities": [{"names": ["Michelle"]}]}]}), 422,
                       ["'Michelle'", "not found", "entities[0].names[0]"]),
    "document too large": (dict(json={"documents": [{"text": "word " * (MAX_DOCUMENT_BYTES // 5 + 1),
                                                     "entities": [{"names": ["word"]}]}]}), 413, ["1,000,000 bytes"]),
    "too many entities": (dict(json={"documents": [{"tokens": [["w"] * 40], "entities": _entities(N_SLOTS + 1)}]}),
                          422, [f"{N_SLOTS + 1} entities", f"{N_SLOTS} slots"]),
    "mention outside sentence": (dict(json={"documents": [{"tokens": [["a"]], "entities": [
        {"mentions": [{"sent": 0, "start": 0, "end": 2}]}]}]}), 422, ["outside sentence 0"]),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_request_gets_4xx_with_reason_and_service_keeps_answering(client, name):
    kwargs, status, words = BAD_REQUESTS[name]
    response = client.post("/extract", **kwargs)
    assert response.status_code == status, response.text
    assert all(w in response.text for w in words), response.text
    assert "error" in response.json()
    assert extract(client, GOOD).status_code == 200


def test_batch_endpoint_fails_only_the_bad_documents(client, bento_store):
    good = bento_store.docs[0]
    crowded = good.model_copy(update={"entities": good.entities * 3})
    broken = good.model_dump(mode="json")
    broken["entities"][0]["mentions"][0].update(start=len(good.tokens), end=len(good.tokens) + 2)
    response = client.post("/extract_batch", json={"documents": [good.model_dump(mode="json"), broken,
                                                                 crowded.model_dump(mode="json")]})
    assert response.status_code == 200, response.text
    first, second, third = response.json()
    assert first["error"] is None and first["relations"]
    assert second["status"] == 422 and "entities[0].mentions[0]" in second["error"] and not second["relations"]
    assert third["status"] == 422 and "63 entities" in third["error"] and not third["relations"]  # 3 x 21


def test_model_info_health_and_docs(client, bento_store):
    info = client.get("/model").json()
    assert info["model"] == bento_store.tag and info["entity_slots"] == N_SLOTS
    assert info["quantization"] is None  # float unless DORE_QUANTIZE asks for int8
    assert info["relations"]["P17"] == "country" and info["dev_metrics"] == {"f1": 12.5, "ign_f1": 11.0}
    assert info["adaptive_batching"] is False  # the default is continuous batching (service.py)
    assert client.get("/readyz").status_code == 200 and client.get("/livez").status_code == 200
    spec = client.get("/docs.json").json()
    assert {"/extract", "/extract_batch"} <= set(spec["paths"])
    assert client.get("/").status_code == 200


def test_bare_instance_extracts_and_isolates_a_failing_document(service, bento_store, reference, monkeypatch):
    """Without a server there is no dispatcher: `extract` calls the batch method itself. A model
    failure on one document of a batch fails only that document."""
    svc = service.DoreService()
    doc = bento_store.docs[1]
    response = asyncio.run(svc.extract(documents=[DocumentIn.model_validate(token_request(doc))]))
    assert relation_keys([r.model_dump() for r in response.documents[0].relations]) == \
        relation_keys(reference.extract([doc])[0])

    real = svc.extractor.extract

    def fails_on_poison(docs, *args):
        if any(d.doc_id == "poison" for d in docs):
            raise RuntimeError("boom")
        return real(docs, *args)

    # a model without an entity recognizer refuses text-only documents, with the reason
    with monkeypatch.context() as m:
        m.setattr(svc.extractor, "recognizer", None)
        refused = asyncio.run(svc.extract(documents=[DocumentIn(text="Obama was born in Honolulu.")]))
        assert refused.status_code == 422 and b"no entity recognizer" in refused.body

    monkeypatch.setattr(svc.extractor, "extract", fails_on_poison)
    outcomes = svc.extract_batch([doc, doc.model_copy(update={"doc_id": "poison"})])
    assert outcomes[0].error is None and relation_keys([r.model_dump() for r in outcomes[0].relations]) == \
        relation_keys(reference.extract([doc])[0])
    assert outcomes[1].status == 500 and "RuntimeError" in outcomes[1].error
