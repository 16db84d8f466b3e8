import pytest


@pytest.fixture(scope="session")
def tiny_overrides() -> dict:
    """Flow overrides for a run of seconds: a tiny random BART, 4 / 2 / 2 documents, 2 steps, no
    entity recognizer (tests/model/test_text_path.py trains one through the same train stage)."""
    return {"limit_train": 4, "limit_dev": 2, "limit_test": 2,
            "train": {"backbone": "tiny-bart", "epochs": 1, "max_steps": 2, "batch_docs": 2, "log_every_steps": 1},
            "entities": None}
