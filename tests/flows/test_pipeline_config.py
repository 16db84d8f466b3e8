"""The DVC pipeline's configuration: params.yaml, the presets, dvc.yaml, and the data import."""

import hashlib
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from dore.data.datasets import SETTINGS
from dore.data.importing import FILES, MirrorMissingError, import_data
from dore.data.model import DataError
from dore.presets import load_section, resolve
from dore.stages import STAGES

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("dataset", sorted(SETTINGS))
def test_params_yaml_is_the_embedded_preset(dataset):
    assert load_section(REPO / "params.yaml", dataset) == resolve("embedded", dataset), \
        "params.yaml is out of date: python -m dore.presets > params.yaml"


def test_paper_preset_follows_table_7():
    docred, gda, scirex = (resolve("paper", d) for d in ("docred", "gda", "scirex"))
    assert (docred.train.backbone, docred.train.lr, docred.train.epochs, docred.num_beams) == ("t5-large", 1e-4, 40, 4)
    assert (gda.train.epochs, gda.train.warmup_ratio, gda.train.lr) == (10, 0.15, 2e-5)
    assert scirex.train.batch_docs * scirex.train.grad_accum == 32 and scirex.train.max_source_length == 4096
    assert docred.limit_train is None and docred.train.max_minutes is None  # all data, no time budget
    assert not any(p.train.symbol_loss or p.train.entity_embeddings or p.train.pair_logits  # not the paper's
                   for p in (docred, gda, scirex))


def test_overrides_merge_into_the_preset_and_unknown_keys_raise():
    params = resolve("embedded", "cdr", {"limit_train": 4, "train": {"backbone": "tiny-bart"}}, artifacts="/tmp/x")
    assert (params.dataset, params.limit_train, params.limit_dev, params.artifacts) == ("cdr", 4, 20, "/tmp/x")
    assert (params.train.backbone, params.train.max_minutes) == ("tiny-bart", 8.0)  # the rest of `train` stays
    with pytest.raises(ValidationError, match="lerning_rate"):
        resolve("embedded", "cdr", {"train": {"lerning_rate": 1.0}})
    with pytest.raises(ValueError, match="unknown dataset"):
        resolve("embedded", "docred2")


def test_a_missing_section_is_named(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"docred": {"limit_train": 3}}))
    assert load_section(tmp_path / "params.yaml", "docred").limit_train == 3
    with pytest.raises(DataError, match="no section 'cdr'.*docred"):
        load_section(tmp_path / "params.yaml", "cdr")


def test_dvc_pipeline_runs_every_stage_of_every_setting_on_its_own_data():
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        stages = {s.addressing: s for s in repo.index.stages if "@" in s.addressing}
        coref = {a: s for a, s in stages.items() if a.split("@")[0] in ("coref", "evaluate-coref", "scirex-chain")}
    assert set(coref) == {f"{name}@{backend}" for name in ("coref", "evaluate-coref") for backend in ("gold", "string-match")} \
        | {f"scirex-chain@{salience}" for salience in ("model", "oracle", "none")}
    assert all(o.def_path.startswith("artifacts/scirex/") for s in coref.values() for o in s.outs)
    stages = {a: s for a, s in stages.items() if a not in coref}
    assert set(stages) == {f"{name}@{d}" for name in STAGES for d in SETTINGS}
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for address, stage in stages.items():
        name, dataset = address.split("@")
        assert stage.cmd == f"dore stage {name} --section {dataset}"
        keys = [key for dep in stage.deps for key in getattr(dep, "params", None) or []]  # `docred.train`, ...
        assert all(k.split(".", 1)[0] == dataset and k.split(".", 1)[1] in params[dataset] for k in keys), keys
        assert name != "train" or keys == [f"{dataset}.train", f"{dataset}.tune_na_biases",
                                                f"{dataset}.tune_length_penalties", f"{dataset}.entities"]
        assert all(Path(o.def_path).parts[:2] == ("artifacts", dataset) for o in stage.outs), address
        if name in ("validate", "convert"):
            deps = [Path(d.def_path) for d in stage.deps]
            read = [Path("data", f) for f in SETTINGS[dataset].files.values()]
            assert all(any(d == f or d in f.parents for d in deps) for f in read), address


def test_every_file_a_setting_reads_is_imported():
    assert {f for s in SETTINGS.values() for f in s.files.values()} | {"docred/rel_info.json"} <= set(FILES)


def _mirror(root: Path, damaged: str | None = None) -> Path:
    lines = []
    for name in FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"content of {name}\n")
        lines.append(f"{hashlib.sha256((root / name).read_bytes()).hexdigest()}  {name}")
    if damaged:
        (root / damaged).write_text("damaged\n")
    (root / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    (root / "coref" / "fast-coref").mkdir(parents=True)
    (root / "coref" / "fast-coref" / "dev.log.jsonl").write_text("{}\n")
    return root


def test_import_copies_the_mirror_and_tracks_it_with_dvc(tmp_path):
    from dvc.repo import Repo

    mirror = _mirror(tmp_path / "mirror")
    Repo.init(str(tmp_path / "project"), no_scm=True).close()
    result = import_data(mirror, tmp_path / "project" / "data")
    data = tmp_path / "project" / "data"
    assert (result.files, result.verified) == (len(FILES), len(FILES))
    assert all((data / name).read_text() == f"content of {name}\n" for name in FILES)
    assert (data / "coref" / "fast-coref" / "dev.log.jsonl").exists() and (data / "coref" / "README.md").exists()
    record = yaml.safe_load(result.dvc_file.read_text())["outs"][0]
    assert result.dvc_file == tmp_path / "project" / "data.dvc"
    assert record["path"] == "data" and record["nfiles"] == len(FILES) + 3  # + SHA256SUMS, coref log, coref README


def test_a_damaged_mirror_file_is_refused(tmp_path):
    mirror = _mirror(tmp_path / "mirror", damaged="scirex/dev.jsonl")
    with pytest.raises(ValueError, match="scirex/dev.jsonl: sha256 differs"):
        import_data(mirror, tmp_path / "data", track=False)


def test_a_missing_mirror_says_where_the_official_files_are(tmp_path):
    n = len(FILES)
    with pytest.raises(MirrorMissingError, match=rf"(?s){n} of {n} files missing.*tonytan48/Re-DocRED"):
        import_data(tmp_path / "nowhere", tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_the_shared_mirror_matches_the_manifest_and_its_checksums(shared_data, tmp_path):
    result = import_data(shared_data, tmp_path / "data", track=False)
    assert result.verified == len(FILES) and result.dvc_file is None


def test_cli_stage_and_data_import_refuse_bad_input(tmp_path):
    from typer.testing import CliRunner

    from dore.cli import app

    runner = CliRunner()
    unknown = runner.invoke(app, ["stage", "fit", "--section", "docred"])
    assert unknown.exit_code == 2 and "'fit'; choose one of" in unknown.output
    no_mirror = runner.invoke(app, ["data", "import", "--source", str(tmp_path / "no"), "--dest", str(tmp_path / "d")])
    assert no_mirror.exit_code == 1 and "no complete data mirror" in no_mirror.output


def test_the_full_budget_scirex_run_is_recorded_by_its_own_dvc_lock():
    """experiments/scirex/dvc.yaml: the measured chain (recognizer, salience, both DORE models, the chain)
    as DVC stages; its dvc.lock records the committed outputs, byte for byte."""
    from dvc.repo import Repo

    pipeline = REPO / "experiments" / "scirex"
    with Repo(str(REPO)) as repo:
        stages = {s.name: s for s in repo.index.stages if s.path == str(pipeline / "dvc.yaml")}
    assert set(stages) == {"recognizer", "salience", "dore-4ary", "dore-binary", "end-to-end"}
    chain = stages["end-to-end"]
    assert {str(Path(d.def_path)) for d in chain.deps} >= {o.def_path for s in ("recognizer", "dore-4ary", "dore-binary")
                                                           for o in stages[s].outs if o.use_cache}
    lock = yaml.safe_load((pipeline / "dvc.lock").read_text())["stages"]
    assert set(lock) == set(stages) and all(entry["outs"] for entry in lock.values())
    assert "--max-minutes 45" in lock["recognizer"]["cmd"] and "--max-minutes 30" in lock["dore-4ary"]["cmd"]
    recorded = {o["path"]: o["md5"] for o in lock["end-to-end"]["outs"]}
    committed = REPO / "artifacts" / "scirex" / "metrics_end_to_end.json"
    assert recorded["artifacts/scirex/metrics_end_to_end.json"] == hashlib.md5(committed.read_bytes()).hexdigest()


def test_every_dvc_stage_writes_under_artifacts_never_the_latest_run():
    """A stage command without `--artifacts artifacts` would read the newest run under runs/ (or, on a
    fresh clone, find none and fail): each one names DVC's output root, or is `dore stage`, which does."""
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        commands = {s.addressing: s.cmd for s in repo.index.stages if s.path == str(REPO / "dvc.yaml")}
    assert commands and all(cmd.startswith("dore ") for cmd in commands.values())
    loose = {a: c for a, c in commands.items() if not c.startswith("dore stage ") and "--artifacts artifacts" not in c}
    assert not loose
