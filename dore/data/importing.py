"""`dore data import`: copy the raw benchmark files from a local mirror into `data/`, tracked by DVC.

The files are the ones the benchmark settings read (`dore.data.datasets.SETTINGS`) plus the raw
formats, licences and the unlabelled DocRED test set; `data/coref/` receives imported
coreference outputs. After copying, `dvc add data` records the folder in `data.dvc`
(`dvc push` then stores it on the default remote).

Nothing is downloaded here. Online users fetch the official releases (`OFFICIAL_SOURCES`) into
a folder with the layout of `FILES` and pass it as `--source`.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SOURCE = Path("../shared/data")
DEFAULT_DEST = Path("data")

# Layout of the mirror and of data/: path -> what it is.
FILES: dict[str, str] = {
    "redocred/dev_revised.json": "Re-DocRED dev (500 docs): the docred setting's train + dev",
    "redocred/test_revised.json": "Re-DocRED test (500 docs)",
    "redocred/LICENSE.Re-DocRED": "MIT",
    "docred/rel_info.json": "DocRED relation inventory (96 relations)",
    "docred/test.json": "DocRED test, unlabelled (inference and speed only)",
    "cdr/processed/train_filter.data": "CDR train, ATLOP/EoG format",
    "cdr/processed/dev_filter.data": "CDR dev, ATLOP/EoG format",
    "cdr/processed/test_filter.data": "CDR test, ATLOP/EoG format",
    "cdr/raw/CDR_TrainingSet.PubTator.txt": "CDR train, PubTator",
    "cdr/raw/CDR_DevelopmentSet.PubTator.txt": "CDR dev, PubTator",
    "cdr/raw/CDR_TestSet.PubTator.txt": "CDR test, PubTator",
    "cdr/raw/README.txt": "the corpus README (NCBI public-domain notice)",
    "gda/processed/test.data": "GDA test, ATLOP/EoG format (the gda setting splits it)",
    "gda/raw/testing_data/abstracts.txt": "GDA test, RENET format",
    "gda/raw/testing_data/anns.txt": "GDA test, RENET format",
    "gda/raw/testing_data/labels.csv": "GDA test, RENET format",
    "gda/raw/LICENSE.md": "AGPL-3.0",
    "scirex/train.jsonl.gz": "SciREX train (306 docs), gzipped JSON lines",
    "scirex/dev.jsonl": "SciREX dev (66 docs): the scirex setting's test",
    "scirex/LICENSE.SciREX": "Apache-2.0",
}
CHECKSUMS = "SHA256SUMS"  # `sha256sum` format; verified when the mirror has it
COREF_DIR = "coref"
COREF_README = """# Imported coreference outputs

Put coreference outputs produced outside this project here (for example fast-coref evaluation
logs `<split>.log.jsonl`, or CorefOutput JSON lines), then run `dvc add data` so `data.dvc`
versions them with the benchmark files. `dore data import` copies a mirror's `coref/` folder here.
"""

# Where online users get the files (the mirror's README.md, copied to data/, has the details).
OFFICIAL_SOURCES: dict[str, str] = {
    "redocred": "https://github.com/tonytan48/Re-DocRED (data/dev_revised.json, data/test_revised.json)",
    "docred": "https://github.com/thunlp/DocRED (data/: rel_info.json and test.json, via the README's download links)",
    "cdr/raw": "https://biocreative.bioinformatics.udel.edu/tasks/biocreative-v/track-3-cdr/ (PubTator files)",
    "cdr/processed": "https://github.com/fenchri/edge-oriented-graph (data processing scripts -> *_filter.data)",
    "gda/raw": "https://bitbucket.org/alexwuhkucs/gda-extraction/ (RENET release, testing_data/)",
    "gda/processed": "https://github.com/fenchri/edge-oriented-graph (data processing scripts -> test.data)",
    "scirex": "https://github.com/allenai/SciREX/raw/master/scirex_dataset/release_data.tar.gz "
              "(train.jsonl, gzip it to train.jsonl.gz; dev.jsonl)",
}


class MirrorMissingError(FileNotFoundError):
    """The local mirror lacks files; the message says where to get them."""


@dataclass(frozen=True)
class ImportResult:
    files: int
    bytes: int
    verified: int  # files checked against the mirror's SHA256SUMS
    dvc_file: Path | None


def import_data(source: str | Path = DEFAULT_SOURCE, dest: str | Path = DEFAULT_DEST, *,
                track: bool = True) -> ImportResult:
    """Copy `FILES` (and `coref/`) from `source` to `dest`, verify checksums, then `dvc add dest`."""
    source, dest = Path(source), Path(dest)
    missing = [name for name in FILES if not (source / name).is_file()]
    if missing:
        raise MirrorMissingError(_missing_message(source, missing))
    expected = _read_checksums(source / CHECKSUMS)
    size = verified = 0
    for name in FILES:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, target)  # not copy2: the mirror's read-only mode stays behind
        size += target.stat().st_size
        if name in expected:
            if _sha256(target) != expected[name]:
                raise ValueError(f"{target}: sha256 differs from {source / CHECKSUMS}; the mirror copy is damaged")
            verified += 1
    for extra in ("README.md", CHECKSUMS):  # the mirror's own description and checksums travel along
        if (source / extra).is_file():
            shutil.copyfile(source / extra, dest / extra)
    _import_coref(source / COREF_DIR, dest / COREF_DIR)
    return ImportResult(len(FILES), size, verified, _dvc_add(dest) if track else None)


def _import_coref(source: Path, dest: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, dest, dirs_exist_ok=True, copy_function=shutil.copyfile)
    dest.mkdir(parents=True, exist_ok=True)
    if not (dest / "README.md").exists():
        (dest / "README.md").write_text(COREF_README)


def _dvc_add(dest: Path) -> Path:
    """`dvc add dest` in the DVC repository that contains it; returns the `.dvc` file."""
    from dvc.repo import Repo  # the `ops` extra: only tracking the data needs DVC

    with Repo(str(_dvc_root(dest.resolve()))) as repo:
        repo.add(str(dest.resolve()))
    return dest.resolve().with_name(dest.name + ".dvc")


def _dvc_root(path: Path) -> Path:
    for folder in path.parents:
        if (folder / ".dvc").is_dir():
            return folder
    raise FileNotFoundError(f"{path} is not inside a DVC repository (run `dvc init` first)")


def _read_checksums(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    pairs = (line.split(maxsplit=1) for line in path.read_text().splitlines() if line.strip())
    return {name.strip().lstrip("*"): digest for digest, name in pairs}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _missing_message(source: Path, missing: list[str]) -> str:
    sources = "\n".join(f"  {part}: {url}" for part, url in OFFICIAL_SOURCES.items())
    return (f"no complete data mirror at {source.resolve()}: {len(missing)} of {len(FILES)} files missing "
            f"(first: {', '.join(missing[:3])}). Nothing is downloaded here: with network access, fetch the "
            f"official releases into a folder with this layout (`dore.data.importing.FILES`) and pass it with "
            f"--source:\n{sources}")
