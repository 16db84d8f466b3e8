"""The two baselines on real Re-DocRED documents: lexical generation and the ATLOP classifier.

Learning tests memorise 3 short documents (the committed fixture's, tests/fixtures/docred) through
the whole chain of each baseline (targets or labels -> training with the methods' pieces or the one
training loop -> generation + parse or threshold decoding -> the official scorer); a break anywhere
keeps F1 near 0. The lexical format's own tests read the real files: their point is the breadth of
real documents (names, punctuation, long relation lists).
"""

import math
from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from dore.config import TrainConfig
from dore.data.docred import load_rel_info, read_docred
from dore.methods.classifier import ClassifierMethod, RelationClassifier
from dore.methods.lexical import (
    SEPARATORS,
    add_separator_tokens,
    ids_to_text,
    lexical_sequences,
    lexical_target,
    lexical_target_ids,
    lexical_target_lengths,
    mention_words,
    parse_lexical,
    predict_lexical,
    relation_names_of,
)
from dore.methods.seq2seq import collate, make_examples, param_groups, row_loss
from dore.model.atlop import ATLOP, at_loss, at_predict
from dore.model.backbone import load_backbone
from dore.scoring.score import score
from dore.stages import scalars
from dore.symbolic.layout import docred_layout
from dore.training.loop import train
from tests.conftest import fixture_docs, fixture_layout


@pytest.fixture(scope="module")
def real(shared_data):
    docs = read_docred(shared_data / "redocred" / "dev_revised.json")[0]
    layout = docred_layout(load_rel_info(shared_data / "docred" / "rel_info.json"), n_slots=45)
    return docs, layout


def unique_names(doc) -> bool:
    names = [" ".join(mention_words(doc, e)) for e in range(len(doc.entities))]
    return len(set(names)) == len(names)


def gold(doc) -> set:
    return {(tuple(r.args), r.label) for r in doc.unique_relations()}


@pytest.fixture(scope="module")
def short_docs():
    """The fixture's 3 documents with the fewest relations (8, 8, 13) and unique entity names; all
    fixture documents have 129-130 tokens."""
    by_relations = sorted(fixture_docs("train", "dev", "test"), key=lambda d: (len(d.unique_relations()), len(d.tokens)))
    docs = [d for d in by_relations if 4 <= len(d.unique_relations()) <= 13 and unique_names(d)][:3]
    assert len(docs) == 3
    return docs


@pytest.fixture(scope="module")
def layout():
    return fixture_layout(n_slots=45)


# --- lexical ---------------------------------------------------------------------------------

def test_lexical_round_trip_on_real_documents(real):
    docs, layout = real
    names = relation_names_of(layout)
    tokenizer = load_backbone("tiny-bart", layout, seed=0).tokenizer
    tokenizer.add_tokens(list(SEPARATORS), special_tokens=True)
    checked = [d for d in docs[:120] if unique_names(d)]
    assert len(checked) > 100
    for doc in checked:
        text = lexical_target(doc, names)
        out, counts = parse_lexical(text, doc, names)
        assert set(out) == gold(doc) and len(out) == len(gold(doc)), doc.doc_id
        assert not {"malformed", "unmatched_strings", "unknown_relations"} & set(counts), doc.doc_id
        # through the token ids: names keep the input's pieces, separators are single tokens
        assert ids_to_text(lexical_target_ids(doc, tokenizer, names), tokenizer) == text, doc.doc_id


def test_lexical_sequences_contract_and_cut_at_a_triplet(real):
    docs, layout = real
    names = relation_names_of(layout)
    backbone = load_backbone("tiny-bart", layout, seed=0)
    triplet_id, _, _ = add_separator_tokens(backbone)
    assert add_separator_tokens(backbone)[0] == triplet_id  # idempotent
    doc = max(docs[:20], key=lambda d: len(d.unique_relations()))
    prefix, eos = backbone.decoder_prefix, backbone.eos_id
    counts = Counter()
    [full] = lexical_sequences(doc, backbone.tokenizer, names, prefix=prefix, eos_id=eos, max_len=None, counts=counts)
    assert full[: len(prefix)] == prefix and full[-1] == eos and full[len(prefix)] == triplet_id and not counts
    stats = lexical_target_lengths([doc], backbone.tokenizer, names, len(full) - 1, prefix_len=len(prefix))
    assert stats["max"] == len(full) and stats["over"] == 1

    max_len = len(full) // 2
    [cut] = lexical_sequences(doc, backbone.tokenizer, names, prefix=prefix, eos_id=eos, max_len=max_len,
                              counts=counts)
    assert len(cut) <= max_len and cut[-1] == eos and cut[:-1] == full[: len(cut) - 1]
    assert full[len(cut) - 1] == triplet_id  # the cut falls before a triplet
    kept, _ = parse_lexical(ids_to_text(cut[len(prefix): -1], backbone.tokenizer), doc, names)
    assert counts["targets_over_decoder_length"] == 1
    assert counts["triplets_cut"] == len(gold(doc)) - len(kept) > 0


def fit_lexical(backbone, layout, docs, cfg: TrainConfig) -> list[float]:
    """The lexical training step as the one loop runs it: the same examples, collate, row_loss
    (full-vocabulary softmax: no symbol head), AdamW groups, warm-up/decay and clipping."""
    from transformers import get_linear_schedule_with_warmup

    counts = Counter()
    names, prefix = relation_names_of(layout), list(backbone.decoder_prefix)
    examples = make_examples(docs, backbone, layout, None, counts)
    batch = collate([(ex, lexical_sequences(ex.doc, backbone.tokenizer, names, prefix=prefix, eos_id=backbone.eos_id,
                                            max_len=backbone.max_target_length, counts=counts))
                     for ex in examples], backbone.pad_id, len(prefix))
    model = backbone.model
    optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * cfg.max_steps), cfg.max_steps)
    model.train()
    losses = []
    for _ in range(cfg.max_steps):
        loss, _ = row_loss(model, batch, code_to_id=None)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert not +counts  # nothing truncated, no target cut
    return losses


def test_tiny_bart_learns_lexical_targets_of_three_real_documents(layout, short_docs):
    torch.manual_seed(0)
    backbone = load_backbone("tiny-bart", layout, seed=0)
    add_separator_tokens(backbone)
    # lr_new=None: one learning rate for every parameter (the calibrated setting; TrainConfig's default is 1e-3)
    losses = fit_lexical(backbone, layout, short_docs, TrainConfig(lr=3e-3, lr_new=None, warmup_ratio=0.05,
                                                                   max_steps=150))
    assert losses[-1] < 0.3 * losses[0]

    # room for the longest target (253 tokens, Louis Chollet): an unfinished generation is a failure
    predictions, counts = predict_lexical(backbone, layout, short_docs, max_new_tokens=300)
    metrics = score(predictions, short_docs)
    assert metrics["scorer"] == "docred_official"
    assert metrics["f1"] >= 80, (metrics["f1"], counts)
    assert counts["malformed"] == counts["unfinished"] == 0


# --- classifier ------------------------------------------------------------------------------

def test_at_loss_matches_the_hand_computed_value():
    logits = torch.tensor([[0.0, 2.0, -1.0],  # relation 1 gold
                           [1.0, 0.0, 3.0]])  # no relation: TH must beat both
    labels = torch.tensor([[0, 1, 0], [1, 0, 0]])
    # pair 1: log(1 + e^-2) ranks r1 over TH, log(1 + e^-1) ranks TH over r2;
    # pair 2: TH over r1 and r2 at once: -log softmax([1, 0, 3])[0] = log(1 + e^-1 + e^2).
    expected = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-1) + math.exp(2))) / 2
    assert at_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    assert at_loss(logits, labels.bool()).item() == pytest.approx(expected, rel=1e-6)


def test_at_predict_keeps_classes_above_threshold_at_most_top_k():
    logits = torch.tensor([[0.0, 2.0, -1.0], [1.0, 0.0, 3.0], [0.0, 1.0, 2.0], [5.0, 1.0, 2.0]])
    expected = torch.tensor([[0, 1, 0], [0, 0, 1], [0, 1, 1], [1, 0, 0]], dtype=torch.bool)
    assert torch.equal(at_predict(logits), expected)
    expected[2, 1] = False
    assert torch.equal(at_predict(logits, top_k=1), expected)


class StubEncoder(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.config = SimpleNamespace(hidden_size=hidden)


def test_group_bilinear_shape_and_values():
    model = ATLOP(StubEncoder(8), n_classes=5, block_size=4, context_pooling=False)
    zh, zt = torch.randn(3, 8), torch.randn(3, 8)
    features = model.group_bilinear_features(zh, zt)
    assert features.shape == (3, 8 * 4)
    # group g, row i, column j -> zh[g*4 + i] * zt[g*4 + j]: no product across groups
    assert features[2, 1 * 16 + 2 * 4 + 3] == pytest.approx((zh[2, 4 + 2] * zt[2, 4 + 3]).item())
    assert model.bilinear.in_features == 32 and model.bilinear.out_features == 5
    assert ATLOP(StubEncoder(8), n_classes=5, context_pooling=False).block_size == 8  # 64 capped to the size
    with pytest.raises(ValueError, match="does not divide"):
        ATLOP(StubEncoder(12), n_classes=5, block_size=8, context_pooling=False)


def test_mention_starts_point_at_start_markers_also_after_truncation(layout, short_docs):
    from dore.model.inputs import word_pieces

    classifier = RelationClassifier.from_backbone(load_backbone("tiny-bart", layout, seed=0), layout)
    markers = set(classifier.marker_ids)
    for cut in (None, 60):
        classifier.max_source_length = cut
        counts = Counter()
        for ex in classifier.examples(short_docs, counts):
            first_piece = [pieces[0] for pieces in word_pieces(classifier.tokenizer, ex.doc.tokens)]
            for entity, positions in zip(ex.doc.entities, ex.starts):
                if cut is None:
                    assert len(positions) == len({(m.start, m.end) for m in entity.mentions})
                for p in positions:
                    assert ex.input_ids[p] in markers
                    q = next(q for q in range(p, len(ex.input_ids)) if ex.input_ids[q] not in markers)
                    assert ex.input_ids[q] in {first_piece[m.start] for m in entity.mentions}  # a mention opens
        assert counts["truncated_inputs"] == (3 if cut else 0)
    assert counts["entities_lost_to_truncation"] > 0


def test_classifier_learns_three_real_documents_and_reloads(layout, short_docs, tmp_path):
    """The classifier in the one training loop: it learns, the model saved at the best dev epoch
    is the selected one, and it reloads (safetensors only) predicting exactly as when it was saved."""
    cfg = TrainConfig(epochs=60, lr=3e-3, warmup_ratio=0.05, batch_docs=3, eval_every_epochs=20,
                      mixed_precision="no", log_every_steps=20)
    method = ClassifierMethod(cfg, load_backbone("tiny-bart", layout, seed=0), layout)
    saved = []

    def evaluate_dev(model, at):
        return scalars(score(method.predict(short_docs), short_docs, train_docs=short_docs))

    def on_best(model, metrics):
        method.save(tmp_path / "clf", dev_metrics=metrics)
        saved.append((metrics["epoch"], method.predict(short_docs)))

    result = train(cfg, method, short_docs, tmp_path / "train", evaluate_dev=evaluate_dev, on_best=on_best)
    assert result.steps == 60 and result.best_dev["f1"] >= 90, result.history
    assert saved and saved[-1][0] == result.best_dev["epoch"]

    assert not [p for p in (tmp_path / "clf").iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl")]
    reloaded = RelationClassifier.from_pretrained(tmp_path / "clf")
    assert reloaded.card["dev_metrics"] == result.best_dev
    predictions = reloaded.predict(short_docs)
    assert predictions == saved[-1][1]  # the selected weights, as they predicted when saved
    assert score(predictions, short_docs)["f1"] == pytest.approx(result.best_dev["f1"])
