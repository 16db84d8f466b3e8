"""Tuple attention (paper Figure 3): invariants, a recount of the statistics, and the summed weights
checked against a direct model call, on untrained tiny models forced to emit four tuples."""

import pytest
import torch

from dore.analysis import attention_statistics, generate_codes, main, render, sequence_decoding, tuple_attention
from dore.config import DecodingConfig
from dore.data.model import DataError, write_jsonl
from dore.extract import Extractor
from dore.model.backbone import load_backbone
from tests.conftest import fixture_docs, fixture_layout

N_TUPLES = 4
# No EOS before the budget: an untrained model then emits exactly N_TUPLES (h t r) tuples.
FORCED = DecodingConfig(mode="sequence", eos_bias=-1e4, max_new_tokens=3 * N_TUPLES)


@pytest.fixture(scope="module")
def docs():
    dev = fixture_docs("train", "dev")  # Re-DocRED dev_revised documents
    return sorted((d for d in dev if len(d.entities) >= 4), key=lambda d: len(d.tokens))[:2]


@pytest.fixture(scope="module")
def layout():
    return fixture_layout(n_slots=40)


@pytest.fixture(scope="module", params=["tiny-t5", "tiny-bart"])  # decoder prefixes of 1 and 2 tokens
def extractor(request, layout):
    return Extractor(load_backbone(request.param, layout, seed=0), layout, FORCED)


def test_rows_point_to_an_earlier_tuple(extractor, docs):
    implementation = extractor.backbone.model.config._attn_implementation
    for doc in docs:
        _, _, codes = generate_codes(extractor, doc)
        tuples = [tuple(codes[k: k + 3]) for k in range(0, len(codes), 3)]
        rows = tuple_attention(extractor, doc)
        assert [r["index"] for r in rows] == list(range(1, N_TUPLES))
        assert [tuple(r["tuple"]["codes"]) for r in rows] == tuples[1:]
        for row in rows:
            i, j = row["index"], row["top"]
            assert 0 <= j < i and len(row["weights"]) == i
            assert all(0.0 <= w <= 1.0 for w in row["weights"])
            assert row["weight"] == max(row["weights"]) == row["weights"][j]
            assert tuple(row["top_tuple"]["codes"]) == tuples[j]
            assert row["shares_entity"] == bool(set(tuples[i][:2]) & set(tuples[j][:2]))
            assert row["previous_shares_entity"] == bool(set(tuples[i][:2]) & set(tuples[i - 1][:2]))
            assert row["top_is_previous"] == (j == i - 1)
            assert row["tuple"]["names"] == [doc.entities[a].name for a in row["tuple"]["args"]]
        # attention over tuples < i sums to at most the whole row
        assert sum(rows[-1]["weights"]) <= 1.0 + 1e-6
    assert extractor.backbone.model.config._attn_implementation == implementation  # restored


def test_weights_equal_a_direct_model_call(extractor, docs):
    doc = docs[0]
    rows = tuple_attention(extractor, doc)
    _, input_ids, codes = generate_codes(extractor, doc)
    bb = extractor.backbone
    model = bb.model
    original = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            decoder_ids = torch.tensor([bb.decoder_prefix + [bb.code_to_id[c] for c in codes]])
            out = model(input_ids=input_ids, decoder_input_ids=decoder_ids, output_attentions=True)
    finally:
        model.set_attn_implementation(original)
    last = out.decoder_attentions[-1][0]  # [heads, T, T]
    start = len(bb.decoder_prefix)
    for row in rows:
        i = row["index"]
        query = start + 3 * i + 1  # position of tuple i's tail: the next token is its relation
        for j, weight in enumerate(row["weights"]):
            expected = last[:, query, start + 3 * j: start + 3 * j + 3].sum() / last.shape[0]
            assert weight == pytest.approx(float(expected), abs=1e-5)


def test_statistics_recount_the_rows(extractor, docs):
    stats = attention_statistics(extractor, docs)
    rows = [row for doc in docs for row in tuple_attention(extractor, doc)]
    assert stats["documents"] == len(docs) and stats["tuples"] == len(rows) == len(docs) * (N_TUPLES - 1)
    for count, share, key in (("top_shares_entity", "share_top_shares_entity", "shares_entity"),
                              ("previous_shares_entity", "baseline_share", "previous_shares_entity"),
                              ("top_is_previous", "share_top_is_previous", "top_is_previous")):
        assert stats[count] == sum(r[key] for r in rows)
        assert stats[share] == pytest.approx(stats[count] / len(rows))
        assert 0.0 <= stats[share] <= 1.0


def test_main_reads_a_saved_model_and_renders(extractor, docs, tmp_path):
    model_dir = Extractor(extractor.backbone, extractor.layout, FORCED).save_pretrained(tmp_path / "model")
    docs_path = write_jsonl(tmp_path / "docs.jsonl", docs)
    result = main(model_dir, docs_path, doc_index=1, n_docs_for_stats=2)
    assert result["doc_id"] == docs[1].doc_id
    assert result["rows"] == tuple_attention(extractor, docs[1])
    assert result["statistics"] == attention_statistics(extractor, docs)
    text = result["text"]
    assert text == render(docs[1], result["rows"])
    for row in result["rows"]:
        assert row["tuple"]["label_name"] in text and f"<- #{row['top']} " in text
        assert all(name in text for name in row["tuple"]["names"])
    with pytest.raises(DataError, match="document index 2"):
        main(model_dir, docs_path, doc_index=2, n_docs_for_stats=0)


def test_rows_mode_is_refused(extractor, docs):
    with pytest.raises(ValueError, match="single-sequence"):
        tuple_attention(extractor, docs[0], sequence_decoding(extractor).model_copy(update={"mode": "rows"}))
