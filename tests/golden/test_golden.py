"""Golden files: the runs of `runs.py` must reproduce `golden.json`, made by the code at its
`made_by.git_commit` (`make_golden.py`), and the committed `model/` must still load and predict
what it predicted then. Numbers within 1e-5 (absolute), everything else exactly."""

import json
import math
from pathlib import Path

import pytest

from tests.golden import runs

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent
GOLDEN = json.loads((HERE / "golden.json").read_text())
TOLERANCE = 1e-5


def assert_matches(got, want, where: str = "") -> None:
    """`got` equals `want` (JSON values), numbers within TOLERANCE; the message names the first difference."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), f"{where}: keys {got!r} != {want!r}"
        for key in want:
            assert_matches(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, (list, tuple)) and len(got) == len(want), f"{where}: {got!r} != {want!r}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_matches(g, w, f"{where}[{i}]")
    elif isinstance(want, (int, float)) and not isinstance(want, bool):
        assert isinstance(got, (int, float)) and not isinstance(got, bool), f"{where}: {got!r} != {want!r}"
        assert math.isclose(got, want, rel_tol=0, abs_tol=TOLERANCE), f"{where}: {got!r} != {want!r}"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def test_golden_config_is_the_runs_config():
    """A changed runs.py (other data or budget) cannot be checked against these files: re-baseline."""
    assert {key: GOLDEN["config"][key] for key in runs.CONFIG} == runs.CONFIG
    assert GOLDEN["config"]["runs"] == {name: train for name, (_, train) in runs.RUNS.items()}


@pytest.mark.parametrize("name", list(runs.RUNS))
def test_run_reproduces_golden(name, tmp_path):
    assert_matches(json.loads(json.dumps(runs.run(name, tmp_path))), GOLDEN["runs"][name], name)


def test_committed_model_predicts_golden(tmp_path):
    want = GOLDEN["saved_model"]["predictions"]["test"]
    assert want, "the golden predictions of the committed model should not be empty"
    assert_matches(runs.dore_predictions(HERE / "model", runs.documents(tmp_path)), want, "saved_model")
