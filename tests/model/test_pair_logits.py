"""Pair-aware relation logits (`TrainConfig.pair_logits`): the pair term is trained, saved and
restored; decoding adds it exactly where training does; the inference switch removes either part."""

import dataclasses

import pytest
import torch

from dore.config import DecodingConfig, TrainConfig
from dore.decoding.constraint import slot_mask
from dore.decoding.generate import row_setup, start_greedy
from dore.decoding.head import SymbolHead
from dore.extract import Extractor
from dore.methods.dore import DoreMethod
from dore.model import entities
from dore.model.backbone import initial_backbone
from dore.model.inputs import encode, pad_batch
from dore.training.loop import train
from tests.conftest import fixture_docs, fixture_layout


@pytest.fixture(scope="module")
def small():
    docs = sorted(fixture_docs("train", "dev"), key=lambda d: len(d.tokens))
    return docs, fixture_layout(n_slots=40)


def config(**changes) -> TrainConfig:
    return TrainConfig(backbone="tiny-bart", sampling="random:0.1", max_steps=2, epochs=2, lr=1e-4, lr_new=1e-2,
                       batch_docs=2, log_every_steps=1, checkpoint_every_steps=10**6, mixed_precision="no",
                       entity_embeddings=True, **changes)


def extractor(backbone, layout) -> Extractor:
    return Extractor(backbone, layout, DecodingConfig(mode="rows", symbol_head=True))


def test_the_switch_needs_entity_symbols_rows_and_pairs(small):
    with pytest.raises(ValueError, match="pair_logits needs entity_embeddings"):
        TrainConfig(pair_logits=True)
    with pytest.raises(ValueError, match="pair_logits needs entity_embeddings"):
        TrainConfig(pair_logits=True, entity_embeddings=True, mode="sequence")
    with pytest.raises(ValueError, match="4-ary"):
        initial_backbone(config(pair_logits=True), dataclasses.replace(small[1], arity=4))


def test_the_pair_term_starts_at_zero(small):
    """With the label layer at zero, a fresh model extracts what it extracts without the term."""
    docs, layout = small
    with_pair = initial_backbone(config(pair_logits=True), layout)
    without = initial_backbone(config(), layout)
    assert entities.of(with_pair.model).pair is not None and entities.of(without.model).pair is None
    assert extractor(with_pair, layout).extract(docs[:2]) == extractor(without, layout).extract(docs[:2])


def label_weights(pair: entities.PairScorer) -> torch.Tensor:
    """The weights that start at zero: the low-rank label layer, or the group bilinear form."""
    return pair.label.weight if pair.kind == "low-rank" else pair.bilinear


@pytest.mark.parametrize("scorer", entities.PAIR_SCORERS)
def test_the_pair_term_trains_saves_and_reloads(small, tmp_path, scorer):
    docs, layout = small
    cfg = config(pair_logits=True, pair_scorer=scorer)
    backbone = initial_backbone(cfg, layout)
    train(cfg, DoreMethod(cfg, backbone, layout), docs[:4], tmp_path / "train")
    pair = entities.of(backbone.model).pair
    assert pair.kind == scorer
    assert float(label_weights(pair).detach().abs().sum()) > 0  # zero at the start: the loss reached it
    trained = extractor(backbone, layout)
    trained.save_pretrained(tmp_path / "model")
    reloaded = Extractor.from_pretrained(tmp_path / "model")
    restored = entities.of(reloaded.backbone.model).pair
    assert restored is not None and restored.kind == scorer
    assert torch.equal(label_weights(restored), label_weights(pair))
    assert reloaded.extract(docs[:2]) == trained.extract(docs[:2])


def test_the_scorers_compute_their_bilinear_forms():
    """Against the forms written out: the low-rank label(tanh(h) * tanh(t)), and ATLOP's group
    bilinear, a linear layer over the flattened per-block outer products."""
    torch.manual_seed(0)
    h, t = torch.randn(5, 128), torch.randn(5, 128)
    low = entities.PairScorer(128, 7, rank=16)
    torch.nn.init.normal_(low.label.weight)
    torch.nn.init.normal_(low.label.bias)
    zh, zt = low.features(h)[0], low.features(t)[1]
    torch.testing.assert_close(low.score(zh, zt), low.label(zh * zt))
    atlop = entities.PairScorer(128, 7, kind="atlop")
    torch.nn.init.normal_(atlop.bilinear)
    torch.nn.init.normal_(atlop.bias)
    zh, zt = atlop.features(h)[0], atlop.features(t)[1]
    outer = (zh.view(5, 2, 64, 1) * zt.view(5, 2, 1, 64)).flatten(1)  # [pairs, 2 * 64 * 64]
    torch.testing.assert_close(atlop.score(zh, zt), outer @ atlop.bilinear.reshape(-1, 7) + atlop.bias,
                               atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="blocks of 64"):
        entities.PairScorer(100, 7, kind="atlop")
    with pytest.raises(ValueError, match="pair_scorer chooses"):
        TrainConfig(entity_embeddings=True, pair_scorer="atlop")


def test_logsumexp_pooling_reads_each_slots_start_markers_only():
    """Mentions are wrapped in their slot's token on both sides: the 1st, 3rd, ... occurrences of a
    slot's token open its mentions, and only those are pooled (ATLOP's entity embedding)."""
    torch.manual_seed(0)
    hidden = torch.randn(2, 9, 8, requires_grad=True)
    slot_ids = torch.tensor([101, 102, 103])
    #                       <a>  w  </a> <b>  w  </b> <a>  w  </a>
    source = torch.tensor([[101, 5, 101, 102, 7, 102, 101, 9, 101], [9, 102, 9, 102, 9, 9, 9, 102, 9]])
    pooled = entities.logsumexp_pooled(source, hidden, slot_ids)
    torch.testing.assert_close(pooled[0, 0], hidden[0, [0, 6]].logsumexp(0))
    torch.testing.assert_close(pooled[0, 1], hidden[0, 3])
    torch.testing.assert_close(pooled[1, 1], hidden[1, [1, 7]].logsumexp(0))  # the 3rd marker: a start, unclosed
    assert not pooled[0, 2].any() and not pooled[1, 0].any()  # no markers: zero
    pooled[0, 0].sum().backward()
    assert hidden.grad[0, [0, 6]].abs().sum() > 0 and hidden.grad[0, [1, 2, 3, 4, 5, 7, 8]].abs().sum() == 0


def test_start_markers_are_the_classifiers_mention_starts(small):
    """On real encoded documents, the parity rule finds exactly the positions the classifier reads."""
    from dore.methods.classifier import RelationClassifier

    docs, layout = small
    classifier = RelationClassifier.from_backbone(initial_backbone(config(), layout), layout, context_pooling=False)
    slot_ids = torch.as_tensor(classifier.marker_ids[:layout.n_slots])
    for ex in classifier.examples(docs):
        _, position, slot = entities.start_markers(torch.tensor([ex.input_ids]), slot_ids)
        slot_of = layout.assign(ex.doc).slot_of
        expected = sorted((p, slot_of[e]) for e, starts in enumerate(ex.starts) for p in starts)
        assert sorted(zip(position.tolist(), slot.tolist())) == expected


def teacher(small, tmp_path, *, context_pooling: bool = False):
    """A saved classifier whose head is not at its initial values (a trained-looking teacher)."""
    from dore.methods.classifier import RelationClassifier

    _, layout = small
    classifier = RelationClassifier.from_backbone(initial_backbone(config(), layout), layout, seed=3,
                                                  context_pooling=context_pooling)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(1)
        classifier.model.bilinear.weight.normal_(0, 0.05)
        classifier.model.bilinear.bias.normal_(0, 1.0)
    return classifier, classifier.save_pretrained(tmp_path / "teacher")


def test_the_pair_term_starts_as_the_teachers_head(small, tmp_path):
    """`teacher_pair_head`: on the teacher's encoder, the atlop pair term scores every pair as the
    classifier does, its threshold class as NA (the last label); without the switch it starts at zero."""
    from dore.model.inputs import encode

    docs, layout = small
    classifier, directory = teacher(small, tmp_path)
    cfg = config(pair_logits=True, pair_scorer="atlop", init_encoder_from=str(directory), teacher_pair_head=True)
    student = initial_backbone(cfg, layout).model.eval()
    module = entities.of(student)
    slot_ids = torch.as_tensor(classifier.marker_ids[:layout.n_slots])
    examples = classifier.examples(docs[:3])
    with torch.no_grad():
        expected = classifier.model.eval()(**classifier.collate(examples)).split([len(ex.pairs) for ex in examples])
        for ex, logits in zip(examples, expected):
            ids = torch.tensor([ex.input_ids])
            heads, tails = module.pair.features(module.pair_pooled(ids, encode(student, ids, torch.ones_like(ids)),
                                                                   slot_ids))
            slot = layout.assign(ex.doc).slot_of
            h, t = (torch.tensor([slot[p[i]] for p in ex.pairs]) for i in (0, 1))
            scores = module.pair.score(heads[0, h], tails[0, t])
            torch.testing.assert_close(scores, logits.roll(-1, 1), atol=1e-4, rtol=1e-4)
    plain = initial_backbone(config(pair_logits=True, pair_scorer="atlop", init_encoder_from=str(directory)), layout)
    assert not entities.of(plain.model).pair.bilinear.any()  # the switch, not the encoder, brings the head


def test_teacher_pair_head_refuses_what_it_cannot_carry(small, tmp_path):
    from dore.data.model import DataError

    _, layout = small
    with pytest.raises(ValueError, match="teacher_pair_head"):
        config(pair_logits=True, teacher_pair_head=True, init_encoder_from=str(tmp_path))  # low-rank scorer
    with pytest.raises(ValueError, match="teacher_pair_head"):
        config(pair_logits=True, pair_scorer="atlop", teacher_pair_head=True)  # no teacher
    _, pooled = teacher(small, tmp_path, context_pooling=True)
    with pytest.raises(DataError, match="context pooling"):
        initial_backbone(config(pair_logits=True, pair_scorer="atlop", init_encoder_from=str(pooled),
                                teacher_pair_head=True), layout)


def test_pair_slots_read_the_row_head_and_each_tail(small):
    layout = small[1]
    backbone = initial_backbone(config(pair_logits=True), layout)
    code_to_id = torch.as_tensor(backbone.code_to_id)
    head = SymbolHead(backbone.model, code_to_id)
    e = lambda k: int(code_to_id[k])  # noqa: E731
    r = lambda k: int(code_to_id[layout.n_slots + k])  # noqa: E731
    start = 2
    ids = torch.tensor([[start, e(3), e(1), r(0), e(5), r(2), r(4)],
                        [start, e(0), e(2), r(1), e(2), e(7), r(0)]])
    head_slot, tail_slot = head.pair_slots(ids)
    assert head_slot.tolist() == [3, 0]
    assert tail_slot.tolist() == [[-1, -1, 1, -1, 5, -1, -1], [-1, -1, 2, -1, 2, 7, -1]]


def randomized_pair(backbone) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        pair = entities.of(backbone.model).pair
        # the group bilinear sums 64 x 64 products per block where the low-rank form sums 16: a smaller std
        torch.nn.init.normal_(label_weights(pair), std=3.0 if pair.kind == "low-rank" else 3.0 / 8)
        torch.nn.init.normal_(entities.of(backbone.model).project.weight, std=0.3)
        if pair.tail_scale is not None:
            pair.tail_scale.data.fill_(2.0)


def decode_recording(backbone, docs, layout):
    """Greedy decoding of the first document, recording what each step hands `SymbolHead.logits`
    (`pair`, `at_tail`, `tail`, `at_choice`); with the teacher-forced view of the generated rows:
    (steps, generated ids, per-row pair features, a head, the position predicting the first tail)."""
    model, code_to_id = backbone.model.eval(), torch.as_tensor(backbone.code_to_id)
    assignments, input_ids = extractor(backbone, layout)._inputs(docs[:1], DecodingConfig(mode="rows"))
    ids = pad_batch(input_ids, backbone.pad_id)
    mask = (ids != backbone.pad_id).long()
    doc_of_row, prefixes, constraint = row_setup(
        [layout.row_heads(assignments[0].slots)], layout=layout, code_to_id=code_to_id,
        decoder_prefix=backbone.decoder_prefix, doc_slots=slot_mask(layout, [assignments[0].slots]))
    state = start_greedy(model, ids, mask, doc_of_row, prefixes, constraint, 12, None, compact=False)
    seen, logits = [], state.head.logits

    def recording(hidden, table, pair=None, at_tail=None, tail=None, at_choice=None):
        seen.append({"pair": pair, "tail": tail, "at_choice": at_choice})
        return logits(hidden, table, pair, at_tail, tail, at_choice)

    state.head.logits = recording
    with torch.no_grad():
        state.run()
        generated = torch.cat([prefixes, code_to_id[state.result()[0]]], 1)
        head = SymbolHead(model, code_to_id)
        features = head.entity_inputs(ids, encode(model, ids, mask), doc_of_row)[1]
    return seen, generated, features, head, prefixes.shape[1] - 1


@pytest.mark.parametrize("scorer", entities.PAIR_SCORERS)
def test_decoding_adds_the_pair_term_where_training_does(small, scorer):
    """Step by step, greedy decoding hands the logits the pair term that the teacher-forced
    forward computes for the same tokens."""
    docs, layout = small
    backbone = initial_backbone(config(pair_logits=True, pair_scorer=scorer), layout)
    randomized_pair(backbone)
    seen, generated, features, head, first = decode_recording(backbone, docs, layout)
    with torch.no_grad():
        forced = head.pair_logits(features, *head.pair_slots(generated))
    assert any(float(step["pair"].abs().sum()) > 0 for step in seen)  # the randomized term is non-zero at some tail
    for step, recorded in enumerate(seen):
        torch.testing.assert_close(recorded["pair"], forced[:, first + step], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("tail_logits", [False, True])
@pytest.mark.parametrize("mode", ["pair", "decoder"])
def test_relation_logits_switch_removes_one_part(small, tmp_path, mode, tail_logits):
    """"decoder" removes the pair term everywhere, the tail logits included."""
    docs, layout = small
    backbone = initial_backbone(config(pair_logits=True, tail_logits=tail_logits), layout)
    randomized_pair(backbone)
    extractor(backbone, layout).save_pretrained(tmp_path / "model")
    both = Extractor.from_pretrained(tmp_path / "model").extract(docs)
    ablated = Extractor.from_pretrained(tmp_path / "model", relation_logits=mode).extract(docs)
    assert ablated != both
    if mode == "decoder":  # the pair term removed: what the model computes with no pair module
        plain = Extractor.from_pretrained(tmp_path / "model")
        entities.of(plain.backbone.model).pair = None
        assert ablated == plain.extract(docs)


def test_relation_logits_needs_a_pair_model(small, tmp_path):
    docs, layout = small
    extractor(initial_backbone(config(), layout), layout).save_pretrained(tmp_path / "model")
    with pytest.raises(ValueError, match="trained with pair_logits"):
        Extractor.from_pretrained(tmp_path / "model", relation_logits="pair")


def test_dore_predict_takes_the_ablation_and_int8(small, tmp_path):
    from typer.testing import CliRunner

    from dore.cli import app
    from dore.data.model import write_jsonl

    docs, layout = small
    backbone = initial_backbone(config(pair_logits=True), layout)
    randomized_pair(backbone)
    extractor(backbone, layout).save_pretrained(tmp_path / "model")
    write_jsonl(tmp_path / "docs.jsonl", docs)
    runner, written = CliRunner(), {}
    for name, options in {"both": [], "pair": ["--relation-logits", "pair"], "int8": ["--quantize", "all"]}.items():
        out = tmp_path / f"{name}.jsonl"
        result = runner.invoke(app, ["predict", str(tmp_path / "model"), str(tmp_path / "docs.jsonl"), "-o", str(out),
                                     *options])
        assert result.exit_code == 0, result.output
        written[name] = out.read_text()
    assert written["pair"] != written["both"] and written["int8"] != written["both"]
    refused = runner.invoke(app, ["predict", str(tmp_path / "model"), str(tmp_path / "docs.jsonl"), "-o", "-",
                                  "--relation-logits", "classifier"])
    assert refused.exit_code != 0 and "relation_logits must be one of" in str(refused.exception or refused.output)


def test_pair_loss_needs_the_pair_term():
    with pytest.raises(ValueError, match="pair_loss trains the pair term"):
        TrainConfig(entity_embeddings=True, pair_loss=1.0)


def test_pair_targets_cover_every_pair_of_each_document_in_slots(small):
    """The dense targets hold each gold relation at its (head slot, tail slot), NA at every other
    pair, and score every ordered pair of distinct entities."""
    from collections import Counter

    from dore.methods.dore import pair_targets

    docs, layout = small
    cfg = config(pair_logits=True, pair_loss=1.0)
    method = DoreMethod(cfg, initial_backbone(cfg, layout), layout)
    examples = method.examples(docs[:2], Counter())
    labels, pairs = pair_targets(examples, layout)
    na = layout.n_relations
    for d, ex in enumerate(examples):
        slot = ex.assignment.slot_of
        gold = {(slot[r.head], slot[r.tail], layout.relation_code(r.label) - layout.n_slots) for r in ex.doc.relations}
        assert gold and set(map(tuple, labels[d, ..., :na].nonzero().tolist())) == gold
        n = len(ex.doc.entities)
        assert int(pairs[d].sum()) == n * (n - 1)
        related = {(h, t) for h, t, _ in gold}
        assert all(bool(labels[d, h, t, na]) == ((h, t) not in related) for h, t in pairs[d].nonzero().tolist())


@pytest.mark.parametrize("scorer", entities.PAIR_SCORERS)
def test_pair_loss_adds_the_dense_pair_term_to_the_row_loss(small, scorer):
    """The switch adds exactly weight x the pair term's adaptive-threshold loss over every pair;
    ignoring it leaves the row loss alone, which this test tells apart (the dense loss is > 0)."""
    from collections import Counter

    docs, layout = small
    base_cfg = config(pair_logits=True, pair_scorer=scorer)
    dense_cfg = config(pair_logits=True, pair_loss=0.5, pair_scorer=scorer)
    backbone = initial_backbone(base_cfg, layout)
    with torch.no_grad():  # a trained-looking pair term, so the dense loss is not at its zero-init value
        label_weights(entities.of(backbone.model).pair).normal_(0, 0.1)
    base, dense = DoreMethod(base_cfg, backbone, layout), DoreMethod(dense_cfg, backbone, layout)
    examples = base.examples(docs[:2], Counter())
    batch = dense.collate(examples, 0, Counter())
    assert "pair_labels" in batch and "pair_labels" not in base.collate(examples, 0, Counter())
    backbone.model.eval()
    with torch.no_grad():
        row, n = base.loss(backbone.model, batch)
        both, n_both = dense.loss(backbone.model, batch)
        module = entities.of(backbone.model)
        hidden = encode(backbone.model, batch["input_ids"], batch["attention_mask"])
        slot_ids = torch.as_tensor(backbone.code_to_id)[:module.n_slots]
        pair = entities.dense_pair_loss(module, batch["input_ids"], hidden, slot_ids, batch["pair_labels"],
                                        batch["pair_mask"])
    assert n == n_both and float(pair) > 0.1
    assert float(both) == pytest.approx(float(row) + 0.5 * float(pair), rel=1e-5)


@pytest.mark.parametrize("scorer", entities.PAIR_SCORERS)
def test_length_buckets_read_each_rows_own_document_entities(small, scorer):
    """The entity table and pair features are computed once per batch and gathered for each
    bucket's rows: bucketed and unbucketed losses agree (a wrong gather would not)."""
    from collections import Counter

    from dore.methods.seq2seq import row_loss

    docs, layout = small
    cfg = config(pair_logits=True, pair_scorer=scorer)
    backbone = initial_backbone(cfg, layout)
    randomized_pair(backbone)
    method = DoreMethod(cfg, backbone, layout)
    batch = method.collate(method.examples(docs[:3], Counter()), 0, Counter())
    lengths = batch["decoder_attention_mask"].sum(1)
    assert lengths.max() > 2 * lengths.min() and len(set(batch["row_doc"].tolist())) == 3
    ids = torch.as_tensor(backbone.code_to_id)
    backbone.model.eval()
    with torch.no_grad():
        bucketed, n_b = row_loss(backbone.model, batch, code_to_id=ids, bucket=True)
        whole, n_w = row_loss(backbone.model, batch, code_to_id=ids, bucket=False)
    assert n_b == n_w and bucketed.item() == pytest.approx(whole.item(), abs=1e-4)


@pytest.mark.parametrize("pooling", [True, False])
def test_the_classifier_takes_the_context_pooling_switch(small, pooling):
    from dore.methods.classifier import ClassifierMethod

    _, layout = small
    cfg = TrainConfig(backbone="tiny-bart", context_pooling=pooling)
    assert ClassifierMethod(cfg, initial_backbone(cfg, layout), layout).model.context_pooling is pooling


def test_tail_logits_need_the_pair_term():
    with pytest.raises(ValueError, match="tail_logits"):
        config(tail_logits=True)


def test_tail_logits_start_at_zero_train_save_and_reload(small, tmp_path):
    docs, layout = small
    cfg = config(pair_logits=True, tail_logits=True)
    backbone = initial_backbone(cfg, layout)
    pair = entities.of(backbone.model).pair
    assert pair.tail_scale is not None and float(pair.tail_scale) == 0.0
    plain = initial_backbone(config(pair_logits=True), layout)
    assert extractor(backbone, layout).extract(docs[:2]) == extractor(plain, layout).extract(docs[:2])
    train(cfg, DoreMethod(cfg, backbone, layout), docs[:4], tmp_path / "train")
    assert float(pair.tail_scale) != 0.0  # the loss reached the scale
    randomized_pair(backbone)
    trained = extractor(backbone, layout)
    trained.save_pretrained(tmp_path / "model")
    reloaded = Extractor.from_pretrained(tmp_path / "model")
    assert float(entities.of(reloaded.backbone.model).pair.tail_scale) == 2.0
    assert reloaded.extract(docs) == trained.extract(docs)
    plain_reloaded = Extractor.from_pretrained(tmp_path / "model")
    entities.of(plain_reloaded.backbone.model).pair.tail_scale = None  # the switch ignored: other output
    assert plain_reloaded.extract(docs) != trained.extract(docs)


@pytest.mark.parametrize("scorer", entities.PAIR_SCORERS)
def test_tail_evidence_is_the_margin_of_relations_over_na(scorer):
    """Every (row head, slot) at once equals the pair scores one by one: logsumexp over the
    relations minus NA (the last label), times the scale."""
    torch.manual_seed(0)
    pair = entities.PairScorer(128, 5, rank=16, kind=scorer)
    torch.nn.init.normal_(label_weights(pair), std=0.3)
    pair.add_tail_logits(1.5)
    heads, tails = pair.features(torch.randn(3, 128))[0], pair.features(torch.randn(3, 7, 128))[1]
    expected = torch.stack([torch.stack([1.5 * (s[:-1].logsumexp(0) - s[-1]) for s in
                                         (pair.score(heads[r], tails[r, k]) for k in range(7))]) for r in range(3)])
    torch.testing.assert_close(pair.tail_evidence(heads, tails), expected, atol=1e-5, rtol=1e-5)


def test_the_choice_positions_are_after_the_head_and_each_relation(small):
    layout = small[1]
    backbone = initial_backbone(config(pair_logits=True, tail_logits=True), layout)
    code_to_id = torch.as_tensor(backbone.code_to_id)
    head = SymbolHead(backbone.model, code_to_id)
    e = lambda k: int(code_to_id[k])  # noqa: E731
    r = lambda k: int(code_to_id[layout.n_slots + k])  # noqa: E731
    na, pad = int(code_to_id[layout.na_code]), backbone.pad_id
    ids = torch.tensor([[2, e(3), e(1), r(0), e(5), na, pad], [2, e(0), e(2), r(1), e(2), r(4), e(7)]])
    assert head.choice_positions(ids).int().tolist() == [[0, 1, 0, 1, 0, 1, 0], [0, 1, 0, 1, 0, 1, 0]]


def test_decoding_adds_the_tail_term_where_training_does(small):
    """Step by step, greedy decoding adds the tail term at the positions the teacher-forced forward
    adds it, with the same values; the term is live (non-zero) and chosen positions vary."""
    docs, layout = small
    backbone = initial_backbone(config(pair_logits=True, tail_logits=True), layout)
    randomized_pair(backbone)
    seen, generated, features, head, first = decode_recording(backbone, docs, layout)
    with torch.no_grad():
        forced_tail = head.tail_term(features, head.pair_slots(generated)[0])
        forced_choice = head.choice_positions(generated)
    assert float(forced_tail.abs().sum()) > 0
    choices = torch.stack([step["at_choice"] for step in seen], 1)
    assert choices.any() and not choices.all()
    for step, recorded in enumerate(seen):
        torch.testing.assert_close(recorded["tail"], forced_tail, atol=1e-5, rtol=1e-5)
        assert torch.equal(recorded["at_choice"], forced_choice[:, first + step])


def test_a_frozen_encoder_keeps_the_teachers_weights_while_the_rest_trains(small, tmp_path):
    """`freeze_encoder`: training moves the decoder and the pair term, never the encoder, whose
    states carry no dropout (the same input gives the same states in training mode)."""
    docs, layout = small
    _, directory = teacher(small, tmp_path)
    cfg = config(pair_logits=True, pair_scorer="atlop", init_encoder_from=str(directory), teacher_pair_head=True,
                 tail_logits=True, freeze_encoder=True)
    backbone = initial_backbone(cfg, layout)
    model = backbone.model
    encoder = {k: v.clone() for k, v in model.get_encoder().state_dict().items()}
    decoder = {k: v.clone() for k, v in model.get_decoder().state_dict().items()}
    pair = entities.of(model).pair.bilinear.detach().clone()
    train(cfg, DoreMethod(cfg, backbone, layout), docs[:4], tmp_path / "train")
    assert all(torch.equal(v, encoder[k]) for k, v in model.get_encoder().state_dict().items())
    assert any(not torch.equal(v, decoder[k]) for k, v in model.get_decoder().state_dict().items())
    assert not torch.equal(entities.of(model).pair.bilinear, pair)
    _, input_ids = extractor(backbone, layout)._inputs(docs[:1], DecodingConfig(mode="rows"))
    ids = pad_batch(input_ids, backbone.pad_id)
    model.train()
    first, second = (model.get_encoder()(input_ids=ids).last_hidden_state for _ in range(2))
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    with pytest.raises(ValueError, match="freeze_encoder"):
        config(freeze_encoder=True)  # no teacher to keep


def test_pair_lr_gives_the_pair_term_its_own_learning_rate(small):
    """`pair_lr`: every pair-term parameter (and only those) trains at it; the other new parts keep
    lr_new and the pretrained ones lr. Unset, the pair term is one more new part."""
    from dore.methods.seq2seq import param_groups

    _, layout = small
    cfg = config(pair_logits=True, pair_scorer="atlop", tail_logits=True, pair_lr=3e-5)
    model = initial_backbone(cfg, layout).model
    lr_of = {id(p): g["lr"] for g in param_groups(model, cfg) for p in g["params"]}
    named = dict(model.named_parameters())
    pair = {n for n in named if n.startswith(entities.PREFIX + "pair.")}
    assert pair and {lr_of[id(named[n])] for n in pair} == {3e-5}
    assert {lr_of[id(p)] for n, p in named.items() if n.startswith(entities.PREFIX) and n not in pair} == {1e-2}
    assert {lr_of[id(p)] for p in model.get_encoder().parameters()} == {1e-4}
    assert len(lr_of) == len(named)  # every trainable parameter is in exactly one group
    unset = config(pair_logits=True, pair_scorer="atlop")
    groups = param_groups(initial_backbone(unset, layout).model, unset)
    assert {g["lr"] for g in groups} == {1e-4, 1e-2}
    with pytest.raises(ValueError, match="pair_lr"):
        TrainConfig(entity_embeddings=True, pair_lr=1e-4)


def test_the_benches_baseline_copy_is_the_model_without_its_pair_term(small, tmp_path):
    """`bench/baseline_model.py`: the copy has no pair-term tensor, loads as a model without the
    term, and extracts exactly what the original does with the term removed (`decoder`)."""
    import importlib.util
    from pathlib import Path

    from safetensors import safe_open

    path = Path(__file__).resolve().parents[2] / "bench" / "baseline_model.py"
    spec = importlib.util.spec_from_file_location("baseline_model", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    docs, layout = small
    backbone = initial_backbone(config(pair_logits=True, tail_logits=True), layout)
    randomized_pair(backbone)
    extractor(backbone, layout).save_pretrained(tmp_path / "model")
    dropped = bench.strip_pair_term(tmp_path / "model", tmp_path / "copy")
    assert dropped and all(k.startswith(entities.PREFIX + "pair.") for k in dropped)
    with safe_open(str(tmp_path / "copy" / "model.safetensors"), "pt") as fh:
        assert not [k for k in fh.keys() if k.startswith(entities.PREFIX + "pair.")]
        assert any(k.startswith(entities.PREFIX) for k in fh.keys())  # the entity table stays
    copy = Extractor.from_pretrained(tmp_path / "copy")
    assert entities.of(copy.backbone.model).pair is None
    assert copy.extract(docs) == Extractor.from_pretrained(tmp_path / "model", relation_logits="decoder").extract(docs)
    with pytest.raises(FileExistsError):
        bench.strip_pair_term(tmp_path / "model", tmp_path / "copy")
