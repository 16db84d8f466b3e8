import json
import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DORE_SHARED_DATA", REPO.parent / "shared" / "data"))
FIXTURES = REPO / "tests" / "fixtures"  # committed; see tests/fixtures/README.md
DOCRED_FIXTURE = FIXTURES / "docred"
TINY_CORPUS = FIXTURES / "tiny_corpus.json"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.fail(f"real data not found at {SHARED_DATA} (set DORE_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny models run ~100x slower when 2 threads contend on a 2-core machine."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session", autouse=True)
def _tiny_tokenizer_corpus():
    """The `tiny-*` backbones train their tokenizer on tests/fixtures/tiny_corpus.json: the very text
    they read by default from the real data (the first 100 Re-DocRED dev documents), so the same
    tokenizers, without the real data. Subprocesses started by the tests inherit it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DORE_TINY_CORPUS", str(TINY_CORPUS))
        yield


# --- the committed Re-DocRED fixture (tests/fixtures/docred) -------------------------------------

def fixture_docs(*splits: str) -> list:
    """The fixture's canonical documents of `splits` (train: 4, dev: 2, test: 2), in file order."""
    from dore.data.model import read_jsonl

    return [doc for split in splits for doc in read_jsonl(DOCRED_FIXTURE / f"{split}.jsonl")]


def fixture_layout(n_slots: int | None = None):
    """The real `docred` setting's layout (layout.json: 100 slots), or DocRED's 96 relations with
    `n_slots` entity slots (`docred_layout` of the fixture's copy of rel_info.json)."""
    from dore.data.docred import load_rel_info
    from dore.symbolic.layout import IdLayout, docred_layout

    if n_slots is None:
        return IdLayout.from_dict(json.loads((DOCRED_FIXTURE / "layout.json").read_text()))
    return docred_layout(load_rel_info(DOCRED_FIXTURE / "raw" / "rel_info.json"), n_slots=n_slots)


def install_docred_fixture(artifacts, limit_train: int | None = None) -> Path:
    """Write `<artifacts>/docred/docs/` as the convert stage leaves it, from the fixture (without
    `raw/`), so that `dore train` and the comparison runner find it converted and read no data.
    `limit_train` keeps the first N train documents, as convert's `limit_train` would."""
    from dore.data.model import atomic_write_text, write_jsonl

    docs = Path(artifacts) / "docred" / "docs"
    shutil.copytree(DOCRED_FIXTURE, docs, ignore=shutil.ignore_patterns("raw"), dirs_exist_ok=True)
    if limit_train is not None:
        kept = fixture_docs("train")[:limit_train]
        write_jsonl(docs / "train.jsonl", kept)
        summary = json.loads((docs / "summary.json").read_text())
        summary["train"] = {"documents": len(kept), "relations": sum(len(d.unique_relations()) for d in kept)}
        atomic_write_text(docs / "summary.json", json.dumps(summary, indent=1))
    return docs


def fixture_data_root(mp: pytest.MonkeyPatch, root: Path) -> Path:
    """Make `root` a data root of the committed fixture's raw files and point the `docred` setting at
    it (`DORE_DATA`, and the setting's carve: in this process only, where `dore` commands run by
    CliRunner and the flow's tasks run too), so that validate and convert run for real without the
    real data. dev_revised.json holds the fixture's train, test and dev documents and is carved as
    the real one (its last documents held out as dev), with 2 held out: train = 6 documents, dev = 2;
    test_revised.json holds its test then dev documents (4). Limits of at most 4 / 2 / 2 keep the
    fixture's first documents of each split; with exactly 4 / 2 / 2 convert writes the fixture's
    files byte for byte. Without limits, train and test have documents the fixture does not."""
    import dataclasses

    from dore.data import datasets

    raw = DOCRED_FIXTURE / "raw"
    train, dev, test = (json.loads((raw / f"{split}.json").read_text()) for split in ("train", "dev", "test"))
    (root / "redocred").mkdir(parents=True)
    (root / "docred").mkdir()
    (root / "redocred" / "dev_revised.json").write_text(json.dumps(train + test + dev))
    (root / "redocred" / "test_revised.json").write_text(json.dumps(test + dev))
    shutil.copyfile(raw / "rel_info.json", root / "docred" / "rel_info.json")
    carve = {"train": ("all", 0, -len(dev)), "dev": ("all", -len(dev), None)}
    mp.setitem(datasets.SETTINGS, "docred", dataclasses.replace(datasets.SETTINGS["docred"], carve=carve))
    mp.setenv("DORE_DATA", str(root))
    return root


@pytest.fixture
def store(tmp_path):
    """A temporary BentoML store, in this process and in the ones it starts."""
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models import ModelStore

    home = tmp_path / "bentoml"
    with pytest.MonkeyPatch.context() as env, BentoMLContainer.bentoml_home.patch(str(home)), \
            BentoMLContainer.model_store.patch(ModelStore(home / "models")):
        env.setenv("BENTOML_HOME", str(home))
        yield home
