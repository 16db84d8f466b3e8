"""experiments/scirex/windows.py: the window distribution, and windows.md written from windows.json."""

import importlib.util
import json
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[2] / "experiments" / "scirex"


@pytest.fixture(scope="module")
def windows():
    spec = importlib.util.spec_from_file_location("scirex_windows", HERE / "windows.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_distribution_counts_papers_within_each_cap(windows):
    d = windows.distribution([1, 3, 3, 9, 17])
    assert (d["docs"], d["max"], d["median"]) == (5, 17, 3.0)
    assert [d[f"within_{k}"] for k in (2, 4, 8, 16)] == [1, 3, 3, 4]


def test_committed_table_is_the_committed_measurement(windows):
    record = json.loads((HERE / "windows.json").read_text())
    assert (HERE / "windows.md").read_text().startswith(windows.markdown(record))
    assert [s["windows"] for s in record["speed"]] == [2, 4, 8, 16]
    assert record["windows"]["test"]["docs"] == 66 and record["windows"]["train"]["docs"] == 276
