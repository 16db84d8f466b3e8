"""The entity setting trains on no test document: DocRED test.json + Re-DocRED dev_revised minus its
last 50 documents, selects on those 50, tests on test_revised."""

from dore.data.datasets import ENTITY_SETTINGS, SETTINGS


def test_entity_training_and_selection_share_no_title_with_test_revised(shared_data):
    splits = ENTITY_SETTINGS["docred"].read_splits(("train", "dev", "test"), root=shared_data)
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [1450, 50, 500]
    test_titles = {d.title for d in splits["test"]}
    assert not {d.title for d in splits["train"]} & test_titles
    assert not {d.title for d in splits["dev"]} & test_titles
    # the one title DocRED test.json shares with Re-DocRED is in dev_revised's training part
    docred_test = {d.title for d in splits["train"][:1000]}
    assert docred_test & {d.title for d in splits["train"][1000:]} == {"ABBA Live"}
    assert not docred_test & {d.title for d in splits["dev"]}


def test_entity_dev_and_test_are_the_relation_settings_own(shared_data):
    relation = SETTINGS["docred"].read_splits(("dev", "test"), root=shared_data)
    entities = ENTITY_SETTINGS["docred"].read_splits(("dev", "test"), root=shared_data)
    for split in ("dev", "test"):
        assert [d.doc_id for d in entities[split]] == [d.doc_id for d in relation[split]]
