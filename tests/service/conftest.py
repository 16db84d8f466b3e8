"""A tiny packaged DORE model (with an untrained entity recognizer, for text-only requests) in a
temporary BentoML store, shared by the service tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from dore.data.docred import load_rel_info, read_docred
from dore.data.model import Document
from dore.symbolic.layout import docred_layout
from tests.conftest import DOCRED_FIXTURE

MODEL_NAME = "dore-docred"  # the tag service.py serves by default
N_SLOTS = 30  # the fixture's test and dev documents have at most 21 entities
DEV_METRICS = {"f1": 12.5, "ign_f1": 11.0}


@dataclass(frozen=True)
class Store:
    home: Path  # BENTOML_HOME
    tag: str
    model_dir: Path  # the saved model the store copy was made from
    docs: list[Document]  # Re-DocRED documents: the committed fixture's test (2) then dev (2)


@pytest.fixture(scope="session")
def bento_store(tmp_path_factory) -> Store:
    """`load_backbone("tiny-bart")` saved with `save_pretrained` and put in the store with
    `dore.package.package`, exactly as the pipeline does; BentoML reads this store in-process
    (its container patched) and in servers started with BENTOML_HOME=home."""
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models import ModelStore

    from dore.entities import EntityRecognizer
    from dore.extract import Extractor
    from dore.model.backbone import load_backbone
    from dore.stages import package_model as package

    home = tmp_path_factory.mktemp("bentoml")
    raw = DOCRED_FIXTURE / "raw"  # DocRED-format files, read as the real ones were
    layout = docred_layout(load_rel_info(raw / "rel_info.json"), n_slots=N_SLOTS)
    docs = [doc for split in ("test", "dev") for doc in read_docred(raw / f"{split}.json")[0]]
    recognizer = EntityRecognizer.new("tiny-bart", ["LOC", "MISC", "NUM", "ORG", "PER", "TIME"], seed=0)  # untrained
    model_dir = Extractor(load_backbone("tiny-bart", layout), layout, recognizer=recognizer).save_pretrained(
        tmp_path_factory.mktemp("model") / "model", dev_metrics=DEV_METRICS)
    with pytest.MonkeyPatch.context() as env, BentoMLContainer.bentoml_home.patch(str(home)), \
            BentoMLContainer.model_store.patch(ModelStore(home / "models")):
        env.setenv("BENTOML_HOME", str(home))
        env.setenv("BENTOML_DO_NOT_TRACK", "true")
        env.delenv("DORE_BENTO_MODEL", raising=False)
        env.delenv("DORE_BATCHING", raising=False)
        yield Store(home=home, tag=package(model_dir, MODEL_NAME), model_dir=model_dir, docs=docs)


def token_request(doc: Document) -> dict:
    """A Re-DocRED document as the service's token form: sentences, sentence-relative mentions."""
    starts = [start for start, _ in doc.sentences]
    return {"id": doc.doc_id, "tokens": [doc.tokens[s:e] for s, e in doc.sentences],
            "entities": [{"type": ent.type, "mentions": [
                {"sent": m.sent_id, "start": m.start - starts[m.sent_id], "end": m.end - starts[m.sent_id]}
                for m in ent.mentions]} for ent in doc.entities]}


def relation_keys(relations) -> list[tuple]:
    """(args, label, label name, confidence) of API relations (dicts) or PredictedRelations."""
    return [(tuple(r["args"]), r["label"], r["label_name"], r["confidence"]) if isinstance(r, dict)
            else (r.args, r.label, r.label_name, r.confidence) for r in relations]
