"""The benchmark settings: which files make train / dev / test, which reader and layout.

Model selection always uses `dev`, never `test`. Where the local data lack a split, the
setting says how it is made (`split_note`), and that note travels with every score:

- docred: Re-DocRED `dev_revised` minus a fixed held-out part (the last 50 documents, in
  file order) is train, that part is dev, `test_revised` is test. Ign F1's fact set is
  built from the documents actually trained on.
- cdr: the official train / dev / test (EoG `*_filter.data`).
- gda: only the test split exists here; it is cut in file order into train (first 700),
  dev (next 100) and test (last 200). Not comparable to published GDA numbers.
- scirex: `train.jsonl.gz` minus its last 30 documents is train, those 30 are dev, and the
  official `dev.jsonl` is the evaluation split (named `test` here; the real test is absent).
  `scirex-binary` reads the same splits for a binary model (each 4-ary relation projected onto
  its type pairs, as the paper's Table 4 trains one).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from dore.data.bio import read_eog
from dore.data.docred import read_docred
from dore.data.model import DataError, Document
from dore.data.report import ReaderReport
from dore.data.scirex import read_scirex, read_scirex_mentions

SPLITS = ("train", "dev", "test")
# The data folder was never imported, or DORE_DATA points elsewhere:
MISSING_DATA = ("no such file. Import the benchmark data with `dore data import` (into data/), or set DORE_DATA to "
                "the folder that holds them")


def data_root() -> Path:
    """`$DORE_DATA`, else `data/` (the DVC-tracked copy), else `../shared/data` beside the checkout."""
    if os.environ.get("DORE_DATA"):
        return Path(os.environ["DORE_DATA"])
    here = Path.cwd() / "data"
    if (here / "redocred").exists():
        return here
    return Path(__file__).resolve().parents[3] / "shared" / "data"


@dataclass(frozen=True)
class Setting:
    name: str
    reader: str  # docred | eog | scirex
    files: dict[str, str]  # split -> file relative to the data root
    carve: dict[str, tuple[str, int, int | None]] = field(default_factory=dict)  # split -> (file split, start, stop)
    split_note: str = ""
    metric: str = "docred_official"
    arity: int | None = None  # SciREX: the tuples the model writes (4, or 2: the type-pair projections)
    layout_splits: tuple[str, ...] = SPLITS  # the splits whose documents size the layout's entity blocks

    def read(self, split: str, root: Path | None = None) -> tuple[list[Document], ReaderReport]:
        root = Path(root or data_root())
        if split in self.carve:
            source, start, stop = self.carve[split]
            docs, report = self.read_file(root / self.files[source])
            docs = docs[start:stop]
            report = report.model_copy(update={"documents": len(docs)})
            return docs, report
        return self.read_file(root / self.files[split])

    def read_file(self, path: Path) -> tuple[list[Document], ReaderReport]:
        if not path.exists():
            raise DataError(MISSING_DATA, file=path)
        return READERS[self.reader](path)

    def check_files(self, root: Path | None = None) -> None:
        """Raise `read_file`'s DataError for the first missing file of the setting: checked before a
        run starts, so a missing data folder fails in a split second."""
        root = Path(root or data_root())
        for file in self.files.values():
            if not (root / file).exists():
                raise DataError(MISSING_DATA, file=root / file)

    def read_splits(self, splits=SPLITS, root: Path | None = None) -> dict[str, list[Document]]:
        """Every split's documents, each source file read once (carved splits share their file)."""
        root = Path(root or data_root())
        files: dict[str, list[Document]] = {}
        out = {}
        for split in splits:
            source, start, stop = self.carve.get(split, (split, None, None))
            if source not in files:
                files[source] = self.read_file(root / self.files[source])[0]
            out[split] = files[source][start:stop]
        return out


def _read_eog(path):
    return read_eog(path, dataset="gda" if "gda" in str(path) else "cdr")


READERS: dict[str, Callable] = {"docred": read_docred, "eog": _read_eog, "scirex": read_scirex,
                              "scirex_mentions": read_scirex_mentions}

_SCIREX = Setting(
    "scirex", "scirex", {"all": "scirex/train.jsonl.gz", "test": "scirex/dev.jsonl"},
    carve={"train": ("all", 0, -30), "dev": ("all", -30, None)},
    split_note="train = SciREX train minus its last 30 docs; dev = those 30; test = official SciREX dev (test absent)",
    metric="scirex_official", arity=4,
    layout_splits=("train",),  # block sizes from training only (issue #15): test entities past them are counted
)
SETTINGS: dict[str, Setting] = {
    "docred": Setting(
        "docred", "docred",
        {"all": "redocred/dev_revised.json", "test": "redocred/test_revised.json"},
        carve={"train": ("all", 0, -50), "dev": ("all", -50, None)},
        split_note="train = Re-DocRED dev_revised minus its last 50 docs; dev = those 50; test = Re-DocRED test_revised",
    ),
    "cdr": Setting(
        "cdr", "eog",
        {"train": "cdr/processed/train_filter.data", "dev": "cdr/processed/dev_filter.data",
         "test": "cdr/processed/test_filter.data"},
        split_note="official CDR train/dev/test (EoG filtered files)", metric="atlop_candidate_f1",
    ),
    "gda": Setting(
        "gda", "eog", {"all": "gda/processed/test.data"},
        carve={"train": ("all", 0, 700), "dev": ("all", 700, 800), "test": ("all", 800, None)},
        split_note="GDA test split only: first 700 docs train, next 100 dev, last 200 test (not comparable to published GDA)",
        metric="atlop_candidate_f1",
    ),
    "scirex": _SCIREX,
    # the paper's separate binary model (its Table 4): the same documents, each 4-ary relation
    # projected onto its pairs of entities of two different types
    "scirex-binary": replace(_SCIREX, name="scirex-binary", arity=2,
                             split_note=_SCIREX.split_note + "; binary: the 4-ary relations projected onto type pairs"),
}


@dataclass(frozen=True)
class EntitySetting:
    """A setting for entity recognition (mentions and coreference, no relations): each split is
    one or more (file, start, stop) slices in file order, read with the DocRED reader."""

    name: str
    parts: dict[str, tuple[tuple[str, int | None, int | None], ...]]
    split_note: str = ""
    reader: str = "docred"

    def read_splits(self, splits=SPLITS, root: Path | None = None) -> dict[str, list[Document]]:
        root = Path(root or data_root())
        files: dict[str, list[Document]] = {}
        out = {}
        for split in splits:
            out[split] = []
            for file, start, stop in self.parts[split]:
                if file not in files:
                    if not (root / file).exists():
                        raise DataError(MISSING_DATA, file=root / file)
                    files[file] = READERS[self.reader](root / file)[0]
                out[split] += files[file][start:stop]
        return out


# Mention detection and coreference train on every document with full entity annotations that is
# not a test document: DocRED test.json (no relation labels, complete entities) and the training
# part of Re-DocRED dev_revised; they select on the same 50 held-out dev documents as `docred`.
ENTITY_SETTINGS: dict[str, EntitySetting] = {
    "docred": EntitySetting(
        "docred",
        {"train": (("docred/test.json", 0, None), ("redocred/dev_revised.json", 0, -50)),
         "dev": (("redocred/dev_revised.json", -50, None),),
         "test": (("redocred/test_revised.json", 0, None),)},
        split_note="entities: train = DocRED test.json (1000 docs, entity annotations only) + Re-DocRED dev_revised "
                   "minus its last 50 docs; dev = those 50; test = Re-DocRED test_revised",
    ),
    # SciREX: the four NER types, coreference from the salient and (train only) non-salient clusters.
    "scirex": EntitySetting(
        "scirex",
        {"train": (("scirex/train.jsonl.gz", 0, -30),), "dev": (("scirex/train.jsonl.gz", -30, None),),
         "test": (("scirex/dev.jsonl", 0, None),)},
        split_note="entities: train = SciREX train minus its last 30 docs; dev = those 30 (selection); "
                   "test = the official SciREX dev file (66 docs, never used for selection)",
        reader="scirex_mentions",
    ),
}


def get_entity_setting(name: str) -> EntitySetting:
    try:
        return ENTITY_SETTINGS[name]
    except KeyError:
        raise ValueError(f"no entity setting {name!r}; choose one of {sorted(ENTITY_SETTINGS)}") from None


def get_setting(name: str) -> Setting:
    try:
        return SETTINGS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(SETTINGS)}") from None
