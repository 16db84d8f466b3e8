"""SciREX end to end on real documents: train on gold input (chunked encoding), then evaluate with
the gold clusters and with string-match clusters over the gold NER mentions, each labelled."""

import json

import pytest

from dore import chain, stages
from dore.config import PipelineParams, TrainConfig, artifacts_dir


@pytest.fixture(scope="module", autouse=True)
def _data(shared_data):
    """The stages (convert, coref) read the data through `$DORE_DATA`."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DORE_DATA", str(shared_data))
        yield


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    params = PipelineParams(dataset="scirex", artifacts=str(tmp_path_factory.mktemp("artifacts")), limit_train=2,
                            limit_dev=1, limit_test=2, tune_na_biases=[0.0],
                            train=TrainConfig(backbone="tiny-bart", epochs=1, max_steps=1, batch_docs=2,
                                              chunk_length=256, max_source_length=1024, mixed_precision="no"))
    stages.convert(params)
    stages.train(params, resume=False)
    return params


@pytest.mark.parametrize("backend, setting", [("gold", "gold_input"), ("string-match", "gold_mentions_pred_clusters")])
def test_coref_then_dore_then_official_scores(trained, backend, setting):
    summary = stages.coref(trained, backend)
    assert summary["setting"] == setting and summary["docs"] == 66  # the whole official dev file
    record = stages.evaluate_with_coref(trained, backend)
    assert record["setting"] == setting and record["documents"] == 2
    for scorer in ("scirex_official", "dore_micro"):
        assert set(record[scorer]) == {"2ary", "4ary"}
    quality = record["coref_quality"]
    if backend == "gold":
        assert quality["avg_f1"] == pytest.approx(100.0)
    else:
        assert 0 < quality["avg_f1"] < 100
    on_disk = json.loads((artifacts_dir(trained) / f"metrics_{backend}.json").read_text())
    assert on_disk["backend"] == backend and on_disk["setting"] == setting


def test_coref_is_refused_for_other_datasets(tmp_path):
    with pytest.raises(ValueError, match="SciREX only"):
        stages.coref(PipelineParams(dataset="cdr", artifacts=str(tmp_path)), "gold")


@pytest.mark.parametrize("salience", ["oracle", "none"])
def test_chain_stage_relates_the_salient_clusters(trained, salience):
    """The chain on the gold NER mentions: clusters -> salience -> the trained DORE model, each stage scored."""
    record = chain.chain_stage(trained, salience, limit=2)
    setting = "gold_salient_oracle" if salience == "oracle" else "gold_mentions_pred_clusters"
    assert record["setting"] == setting and record["documents"] == 2 and record["relations"]["setting"] == setting
    for scorer in ("scirex_official", "dore_micro"):
        assert set(record["relations"][scorer]) == {"2ary", "4ary"}
    assert record["mentions"]["f1"] == pytest.approx(100.0)  # gold NER as the mentions
    if salience == "oracle":
        assert record["salient_clusters"]["p"] == pytest.approx(100.0)
    on_disk = json.loads((artifacts_dir(trained) / f"metrics_chain_{salience}.json").read_text())
    assert on_disk["setting"] == setting
    assert (artifacts_dir(trained) / "chain" / f"salience-{salience}" / "salient.jsonl").exists()
