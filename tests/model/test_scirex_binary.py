"""SciREX's binary model (`scirex-binary`, the paper's Table 4): the same papers, each 4-ary
relation projected onto its type pairs; trained, evaluated and run in the chain as the 4-ary one."""

import json
from itertools import combinations

import pytest

from dore import chain, stages
from dore.config import PipelineParams, TrainConfig, artifacts_dir
from dore.data.datasets import SETTINGS
from dore.symbolic.layout import SCIREX_TYPES, block_sizes_from
from dore.symbolic.linearize import positive_tuples


@pytest.fixture(scope="module", autouse=True)
def _data(shared_data):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DORE_DATA", str(shared_data))
        yield


@pytest.mark.parametrize("dataset, arity", [("scirex", 4), ("scirex-binary", 2)])
def test_scirex_layouts_are_sized_from_the_training_split_alone(dataset, arity):
    docs, layout = stages.layout_of_splits(SETTINGS[dataset])
    assert layout.arity == arity
    train = block_sizes_from(docs["train"], SCIREX_TYPES)
    assert {b.type: b.size for b in layout.blocks} == train
    assert block_sizes_from(docs["test"], SCIREX_TYPES)["Metric"] > train["Metric"]  # a test paper does not fit


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    params = PipelineParams(dataset="scirex-binary", artifacts=str(tmp_path_factory.mktemp("artifacts")),
                            limit_train=2, limit_dev=1, limit_test=2, tune_na_biases=[0.0],
                            train=TrainConfig(backbone="tiny-bart", epochs=1, max_steps=2, batch_docs=2,
                                              chunk_length=256, max_source_length=1024, mixed_precision="no"))
    summary = stages.convert(params)
    stages.train(params, resume=False)
    return params, summary


def test_the_binary_targets_are_the_type_pairs_of_the_4ary_relations():
    docs, layout = stages.layout_of_splits(SETTINGS["scirex-binary"])
    checked = 0
    for doc in docs["train"][:40]:
        assignment = layout.assign(doc)
        tuples, _ = positive_tuples(doc, layout, assignment)
        slotted = [[assignment.slot_of[a] for a in r.args if a in assignment.slot_of] for r in doc.relations]
        pairs = {tuple(sorted(p)) for slots in slotted for p in combinations(slots, 2) if p[0] != p[1]}
        assert set(tuples) == {(a, b, layout.relation_code("relevant")) for a, b in pairs}
        assert all(_block(layout, a) < _block(layout, b) for a, b, _ in tuples)  # two types, earlier block first
        checked += bool(tuples)
    assert checked > 30


def _block(layout, slot):
    return next(i for i, b in enumerate(layout.blocks) if slot in layout.block_range(b.type))


def test_a_binary_model_is_scored_binary_only_and_relates_the_chains_clusters(binary):
    params, _ = binary
    record = stages.evaluate(params)
    assert record["scorer"] == "scirex_official" and "f1_4ary" not in record  # no 4-ary score for pairs
    assert record["entities_dropped_by_layout"] == 0  # the first 2 test papers fit the training blocks
    rows = json.loads((artifacts_dir(params) / "per_relation.json").read_text())
    assert [r["relation"] for r in rows] == ["binary"]
    result = chain.chain_stage(params, "oracle", limit=2)
    assert result["relations"]["setting"] == "gold_salient_oracle"
    pairs = result["relations"]["dore_micro"]["2ary"]
    assert pairs["tp"] + pairs["fn"] > 0 and pairs["dropped"] == 0  # gold pairs to find; every pair has two types
