"""Every committed Re-DocRED test claim re-scores to its number: each `experiments/**/metrics*.json`
that names its predictions (`result*.json.gz`, DocRED's official format) is scored again with the
official scorer on the real `test_revised` (its first `documents`, where the record says so), with
Ign F1 against the local setting's training part (`dev_revised` minus its last 50 documents)."""

import gzip
import json
from pathlib import Path

import pytest

from dore.data.datasets import get_setting
from dore.scoring.score import read_prediction_lines, score

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
CLAIMS = sorted(path for path in EXPERIMENTS.glob("**/metrics*.json")
                if (record := json.loads(path.read_text())).get("dataset") == "docred" and record.get("predictions"))
CDR_CLAIMS = sorted(path for path in EXPERIMENTS.glob("**/metrics*.json")
                    if (record := json.loads(path.read_text())).get("dataset") == "cdr" and record.get("predictions"))


@pytest.fixture(scope="module")
def redocred(shared_data):
    return get_setting("docred").read_splits(("train", "test"), root=shared_data)


def test_there_are_claims_to_check():
    assert {path.parent.name for path in CLAIMS} >= {"main-job", "redocred-dore-pair-90min"}
    assert {path.parent.name for path in CDR_CLAIMS} >= {"cdr-classifier-60min", "cdr-dore-tail-60min",
                                                       "cdr-dore-tail-60min-pair-only", "cdr-dore-tail-60min-decoder-only"}


@pytest.mark.parametrize("path", CLAIMS, ids=lambda p: str(p.relative_to(EXPERIMENTS)))
def test_a_committed_claim_rescores_to_its_numbers(path, redocred):
    record = json.loads(path.read_text())
    assert record["split"] == "test" and record["scorer"] == "docred_official"
    with gzip.open(path.parent / record["predictions"], "rt", encoding="utf-8") as fh:
        results = json.load(fh)
    gold = redocred["test"][: record.get("documents") or len(redocred["test"])]
    rescored = score({}, gold, train_docs=redocred["train"], docred_results=results)
    for key in ("f1", "ign_f1", "p", "r"):
        assert rescored[key] == pytest.approx(record[key], abs=1e-9), key


@pytest.mark.parametrize("path", CDR_CLAIMS, ids=lambda p: str(p.relative_to(EXPERIMENTS)))
def test_a_committed_cdr_claim_rescores_to_its_numbers(path, shared_data):
    """CDR claims (`dore predict`'s JSON lines) re-score with ATLOP's candidate-pair F1 on the real test file."""
    record = json.loads(path.read_text())
    assert record["split"] == "test" and record["scorer"] == "atlop_candidate_f1"
    gold = get_setting("cdr").read_splits(("test",), root=shared_data)["test"]
    rescored = score(read_prediction_lines(path.parent / record["predictions"]), gold)
    for key in ("f1", "p", "r"):
        assert rescored[key] == pytest.approx(record[key], abs=1e-9), key


SCIREX_CLAIMS = sorted(path for path in EXPERIMENTS.glob("**/metrics*.json")
                       if (record := json.loads(path.read_text())).get("dataset") == "scirex" and record.get("predictions"))


def test_a_committed_scirex_claim_rescores_to_its_numbers(shared_data):
    """SciREX claims (`dore predict`'s JSON lines over the official dev file, our test) re-score with the
    official macro metric, binary and 4-ary."""
    assert SCIREX_CLAIMS, "experiments/scirex/gold-input-30min/ should be found"
    gold = get_setting("scirex").read_splits(("test",), root=shared_data)["test"]
    for path in SCIREX_CLAIMS:
        record = json.loads(path.read_text())
        assert record["split"] == "test" and record["scorer"] == "scirex_official" and record["documents"] == len(gold)
        rescored = score(read_prediction_lines(path.parent / record["predictions"]), gold, arity=4)
        for key in ("f1", "p", "r", "f1_4ary"):
            assert rescored[key] == pytest.approx(record[key], abs=1e-9), (path, key)


JOINT = EXPERIMENTS / "joint"


def test_the_committed_joint_claim_rescores_to_its_numbers(redocred):
    """`experiments/joint/`: entities and relations predicted from the sentences alone re-score to
    the committed mention, coreference and joint relation numbers."""
    from dore.joint import read_predictions
    from dore.scoring.entities import entity_scores
    from dore.scoring.joint import joint_scores

    record = json.loads((JOINT / "metrics.json").read_text())
    assert record["split"] == "test" and record["documents"] == len(redocred["test"]) == 500
    docs, relations = read_predictions(JOINT / "predictions.jsonl.gz", redocred["test"])
    rescored = entity_scores(redocred["test"], docs)
    assert rescored["mentions"] == record["entities"]["mentions"]
    # CEAF-e sums its alignment per connected component: the same optimum, summed in another order
    assert rescored["coref"]["scorer"] == record["entities"]["coref"]["scorer"]
    assert flat(rescored["coref"]) == pytest.approx(flat(record["entities"]["coref"]), rel=1e-12)
    assert joint_scores(redocred["test"], docs, relations) == record["relations"]


def flat(scores: dict, prefix: str = "") -> dict:
    """Nested numbers as one level (`ceafe.f1`), for pytest.approx; labels stay as they are."""
    out = {}
    for key, value in scores.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)):
            out[f"{prefix}{key}"] = value
    return out



SCIREX_CHAIN = EXPERIMENTS.parent / "artifacts" / "scirex" / "metrics_end_to_end.json"


def test_the_committed_scirex_chain_rescores_to_its_numbers(shared_data):
    """`artifacts/scirex/metrics_end_to_end.json`: the relations of every chain setting (gold input,
    the gold-mention and oracle ablations, end to end), kept with `write_relations`, re-score from
    the gold file alone to their committed `scirex_official` and `dore_micro` numbers."""
    from dore.coref.compose import score_relations
    from dore.coref.io import read_relations

    record = json.loads(SCIREX_CHAIN.read_text())
    test = record["splits"]["test"]
    gold = get_setting("scirex").read_splits(("test",), root=shared_data)["test"]
    assert test["documents"] == len(gold) == 66
    rows = [(key, kind, relations) for key, chain in test.items() if isinstance(chain, dict)
            for kind, relations in chain.get("relations", {}).items()]
    headline = record["headline"].removeprefix("test/")
    assert {"gold_input", headline} <= {key for key, _, _ in rows}
    assert test[headline]["setting"] == "end_to_end"
    for key, kind, relations in rows:
        docs, predictions = read_relations(EXPERIMENTS.parent / relations["predictions"], gold)
        assert {d.meta["coref"]["setting"] for d in docs} == {test[key]["setting"]}
        rescored = score_relations(gold, docs, predictions, arity=4 if kind == "4ary" else 2)
        for scorer in ("scirex_official", "dore_micro"):
            assert flat(rescored[scorer]) == pytest.approx(flat(relations[scorer]), abs=1e-9), (key, kind, scorer)
