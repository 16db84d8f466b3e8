"""Speed levers of greedy decoding that must not change what is decoded: finished rows leaving
the batch (`compact_rows`), the reused self-attention cache, and continuous row batching
(documents joining the decoder while others decode), against one-by-one decoding."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from dore.config import DecodingConfig
from dore.decoding.constraint import slot_mask
from dore.decoding.generate import generate_rows, row_setup, start_greedy
from dore.extract import Extractor
from dore.stream import ContinuousExtraction, release_free_heap
from dore.model import entities
from dore.model.backbone import load_backbone
from tests.code.test_decoding import CDR, FAMILIES, documents
from tests.code.test_entities import randomise
from tests.conftest import fixture_docs, fixture_layout

DOC_SLOTS, HEADS = [[0, 1, 3, 4, 5], [1, 2, 3], [0, 3, 4]], [[0, 1], [1, 2], [0, 3, 4]]


@pytest.mark.parametrize("name", ["bart", "bert2bert", "t5"])
def test_compacting_finished_rows_keeps_every_code(name):
    family = FAMILIES[name]()
    entities.attach(family.model, CDR.n_slots)
    randomise(entities.of(family.model))
    ids = family.ids(CDR)
    input_ids, mask = documents(3, pad=family.pad)
    for eos_bias in (1.0, 0.0, -1.0, -3.0):  # one that ends rows at different steps (the rest: budgets)
        bias = torch.zeros(CDR.n_codes)
        bias[CDR.eos_code] = eos_bias
        common = dict(layout=CDR, code_to_id=ids, decoder_prefix=family.prefix, doc_slots=slot_mask(CDR, DOC_SLOTS),
                      max_new_tokens=24, symbol_head=True, code_bias=bias, budgets=[9, 24, 15])
        full = generate_rows(family.model, input_ids, mask, HEADS, compact=False, **common)
        if len({len(r.codes) for r in full}) > 2:
            break
    else:
        pytest.fail("no bias made the rows end at different steps")
    compact = generate_rows(family.model, input_ids, mask, HEADS, compact=True, **common)
    for a, b in zip(full, compact, strict=True):
        assert (a.doc, a.head, a.codes, a.finished) == (b.doc, b.head, b.codes, b.finished)
        assert a.probs == pytest.approx(b.probs, abs=1e-5)


@pytest.mark.parametrize("name", ["bart", "bert2bert"])
def test_decoding_without_the_self_attention_cache_writes_the_same_codes(name):
    family = FAMILIES[name]()
    ids = family.ids(CDR)
    input_ids, mask = documents(3, pad=family.pad)
    doc_of_row, prefixes, constraint = row_setup(HEADS, layout=CDR, code_to_id=ids, decoder_prefix=family.prefix,
                                                 doc_slots=slot_mask(CDR, DOC_SLOTS))
    with torch.no_grad():
        cached = start_greedy(family.model, input_ids, mask, doc_of_row, prefixes, constraint, 12, None).run()
        fresh = start_greedy(family.model, input_ids, mask, doc_of_row, prefixes, constraint, 12, None,
                             self_cache=False).run()
    assert torch.equal(cached[0], fresh[0])
    assert torch.allclose(cached[1], fresh[1], atol=1e-5)


@pytest.mark.parametrize("backbone", ["tiny-bart", "minilm"])
def test_continuous_batching_answers_what_one_by_one_decoding_does(backbone):
    """Documents submitted from several threads, under a rows budget small enough that they join
    the decoder at different steps, get the relations `extract` gives each alone."""
    layout = fixture_layout(n_slots=42)
    extractor = Extractor(load_backbone(backbone, layout, seed=0), layout)
    if backbone == "minilm":  # the main job's recipe: entity symbols, here with a random table
        entities.attach(extractor.backbone.model, layout.n_slots)
        randomise(entities.of(extractor.backbone.model))
    docs = [d for d in fixture_docs("train", "dev", "test") if len(d.entities) <= layout.n_slots][:6]
    decoding = DecodingConfig(symbol_head=True, na_bias=-2.0, eos_bias=1.0, batch_docs=2, max_new_tokens=12)
    alone = [extractor.extract([doc], decoding)[0] for doc in docs]
    assert any(alone), "the untrained model should still write some relations"
    continuous = ContinuousExtraction(extractor, decoding, max_rows=20)
    try:
        with ThreadPoolExecutor(3) as pool:
            futures = list(pool.map(lambda d: continuous.submit([d]), docs))
            together = [f.result(timeout=120)[0] for f in futures]
        pair = continuous.extract(docs[:2])
    finally:
        continuous.close()
    for got, want in zip(together + pair, alone + alone[:2], strict=True):
        # the same relations; confidences as between batch sizes (padding, kernels), to float precision
        assert [(r.args, r.label) for r in got] == [(r.args, r.label) for r in want]
        assert [r.confidence for r in got] == pytest.approx([r.confidence for r in want], abs=1e-5)


def test_continuous_batching_refuses_beams_and_a_document_that_does_not_fit():
    layout = fixture_layout(n_slots=3)
    extractor = Extractor(load_backbone("tiny-bart", layout, seed=0), layout)
    with pytest.raises(ValueError, match="greedily"):
        ContinuousExtraction(extractor, DecodingConfig(num_beams=2))
    continuous = ContinuousExtraction(extractor)
    try:
        big = max(fixture_docs("train"), key=lambda d: len(d.entities))
        with pytest.raises(Exception, match="does not fit"):
            continuous.submit([big])
        assert continuous.extract([]) == []
    finally:
        continuous.close()


def test_length_sorted_batches_give_each_document_its_own_relations():
    layout = fixture_layout(n_slots=42)
    extractor = Extractor(load_backbone("tiny-bart", layout, seed=0), layout)
    docs = [d for d in fixture_docs("train", "dev", "test") if len(d.entities) <= layout.n_slots][:6]
    _, ids = extractor._inputs(docs, DecodingConfig())
    assert sorted(map(len, ids)) != list(map(len, ids)), "the documents should come unsorted"
    decoding = DecodingConfig(symbol_head=True, na_bias=-2.0, eos_bias=1.0, batch_docs=2, max_new_tokens=12)
    plain = extractor.extract(docs, decoding.model_copy(update={"sort_by_length": False}))
    ordered = extractor.extract(docs, decoding)
    assert any(plain)
    for got, want in zip(ordered, plain, strict=True):
        assert [(r.args, r.label) for r in got] == [(r.args, r.label) for r in want]
        assert [r.confidence for r in got] == pytest.approx([r.confidence for r in want], abs=1e-5)


def _rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


def test_the_heap_a_burst_freed_goes_back_to_the_os_when_the_decoder_goes_idle():
    """glibc keeps freed heap pages: without a trim, a service's RSS stays at its busiest peak
    (issue #17's RSS target). A thread's burst of 1 MB tensors, freed, still counts in RSS until
    `release_free_heap`; the continuous decoder trims each time it goes idle."""
    if not Path("/proc/self/statm").exists() or not release_free_heap():
        pytest.skip("glibc's malloc_trim and /proc are Linux-only")

    def burst():
        big = torch.empty(8_000_000)  # freeing an 8 MB mmap'ed block raises glibc's mmap threshold
        del big
        held = [torch.ones(250_000) for _ in range(300)]  # 300 MB of heap, then freed
        del held

    before = _rss_mb()
    worker = threading.Thread(target=burst)
    worker.start()
    worker.join()
    kept = _rss_mb() - before
    release_free_heap()
    assert kept > 150, f"the burst left only {kept:.0f} MB resident: nothing to measure"
    assert _rss_mb() - before < kept - 150

    layout = fixture_layout(n_slots=42)
    extractor = Extractor(load_backbone("tiny-bart", layout, seed=0), layout)
    continuous = ContinuousExtraction(extractor, DecodingConfig(symbol_head=True, max_new_tokens=4))
    try:
        deadline = time.monotonic() + 10
        while continuous.trims == 0 and time.monotonic() < deadline:  # idle from the start
            time.sleep(0.01)
        trims = continuous.trims
        continuous.extract(fixture_docs("dev")[:2])
        while continuous.trims == trims and time.monotonic() < deadline:
            time.sleep(0.01)
        assert continuous.trims == trims + 1, "the decoder went idle without handing the heap back"
    finally:
        continuous.close()
