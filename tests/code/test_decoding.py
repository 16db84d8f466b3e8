"""Constrained decoding: each rule, its lookahead, encode-once rows, beams, the symbol head."""

import random
from dataclasses import dataclass

import pytest
import torch
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    BertConfig,
    BertLMHeadModel,
    BertModel,
    EncoderDecoderModel,
    LEDConfig,
    LEDForConditionalGeneration,
    LogitsProcessor,
    PrefixConstrainedLogitsProcessor,
    PreTrainedModel,
    RobertaConfig,
    RobertaForCausalLM,
    RobertaModel,
    T5Config,
    T5ForConditionalGeneration,
)
from transformers.models.bert.modeling_bert import BertCrossAttention

from dore.decoding.constraint import Rules, SymbolConstraint, random_walk, slot_mask
from dore.decoding.generate import Decoded, generate_rows, generate_sequence
from dore.decoding.reference import allowed_tokens_fn, time_constraint_step
from dore.model.inputs import encode
from dore.symbolic.layout import EntityBlock, IdLayout, cdr_layout, scirex_layout

VOCAB = 300
TOY = IdLayout("toy", (EntityBlock(None, 6),), ("P1", "P2", "P3"), ("one", "two", "three"))
UNTYPED_4ARY = IdLayout("untyped-4ary", (EntityBlock(None, 6),), ("rel",), ("relevant",), arity=4)
CDR = cdr_layout(3, 3)
SCIREX_2 = scirex_layout(2, {"Task": 2, "Method": 2, "Material": 2, "Metric": 1})
SCIREX_4 = scirex_layout(4, {"Task": 2, "Method": 2, "Material": 2, "Metric": 2})
# layout, the document's slots
CASES = {"toy": (TOY, [0, 2, 3, 5]), "cdr": (CDR, [0, 2, 3, 4]), "scirex-2": (SCIREX_2, [0, 2, 3, 4, 6]),
         "scirex-4": (SCIREX_4, [0, 1, 2, 4, 5, 6]), "untyped-4": (UNTYPED_4ARY, [0, 1, 3, 4, 5])}


def symbol_ids(layout: IdLayout, eos_id: int) -> list[int]:
    """Arbitrary, scattered vocabulary ids for the symbols (specials stay below 10)."""
    ids = torch.randperm(VOCAB - 10, generator=torch.Generator().manual_seed(layout.n_codes)) + 10
    return ids[:layout.n_codes - 1].tolist() + [eos_id]


@dataclass
class Family:
    """A tiny random backbone: model, decoder prefix, EOS and pad ids."""

    model: PreTrainedModel
    prefix: list[int]
    eos: int
    pad: int

    def __post_init__(self):
        self.model.eval()

    def ids(self, layout: IdLayout) -> list[int]:
        return symbol_ids(layout, self.eos)


def tiny_t5():
    torch.manual_seed(0)
    config = T5Config(vocab_size=VOCAB, d_model=32, d_ff=64, num_layers=2, num_heads=2, d_kv=16, dropout_rate=0.0,
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    return Family(T5ForConditionalGeneration(config), [0], eos=1, pad=0)


def tiny_bart():
    torch.manual_seed(0)
    config = BartConfig(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, dropout=0.0,
                        max_position_embeddings=256, bos_token_id=0, pad_token_id=1, eos_token_id=2,
                        decoder_start_token_id=2)
    model = BartForConditionalGeneration(config)
    model.final_logits_bias.normal_(0, 0.1)  # so that the symbol head must add it
    model.generation_config.forced_eos_token_id = None  # the re-encoding reference calls generate directly
    return Family(model, [2, 0], eos=2, pad=1)


def tiny_bert2bert():
    torch.manual_seed(0)
    kwargs = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  max_position_embeddings=256, pad_token_id=0, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0)
    decoder = BertLMHeadModel(BertConfig(is_decoder=True, add_cross_attention=True, **kwargs))
    decoder.cls.predictions.decoder.bias.data.normal_(0, 0.1)
    model = EncoderDecoderModel(encoder=BertModel(BertConfig(**kwargs)), decoder=decoder)
    for config in (model.config, model.generation_config):
        config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 2, 0, 3
    return Family(model, [2], eos=3, pad=0)


def tiny_led():
    torch.manual_seed(0)
    config = LEDConfig(vocab_size=VOCAB, d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2,
                       decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, dropout=0.0,
                       attention_window=[8], max_encoder_position_embeddings=128,
                       max_decoder_position_embeddings=128, bos_token_id=0, pad_token_id=1, eos_token_id=2,
                       decoder_start_token_id=2)
    model = LEDForConditionalGeneration(config)
    model.final_logits_bias.normal_(0, 0.1)
    model.generation_config.forced_eos_token_id = None
    return Family(model, [2, 0], eos=2, pad=1)


def tiny_roberta2roberta():
    torch.manual_seed(0)
    kwargs = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                  max_position_embeddings=256, pad_token_id=1, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0)
    decoder = RobertaForCausalLM(RobertaConfig(is_decoder=True, add_cross_attention=True, **kwargs))
    # a wider encoder: the decoder sees it through EncoderDecoderModel's projection
    model = EncoderDecoderModel(encoder=RobertaModel(RobertaConfig(**{**kwargs, "hidden_size": 48})), decoder=decoder)
    for config in (model.config, model.generation_config):
        config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 0, 1, 2
    return Family(model, [0], eos=2, pad=1)


@pytest.fixture(scope="module")
def t5():
    return tiny_t5()


@pytest.fixture(scope="module")
def bart():
    return tiny_bart()


FAMILIES = {"t5": tiny_t5, "bart": tiny_bart, "bert2bert": tiny_bert2bert, "led": tiny_led,
            "roberta2roberta": tiny_roberta2roberta}


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    return FAMILIES[request.param]()


def documents(n_docs: int, length: int = 24, pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random word ids; document i > 0 is right-padded by 3 i tokens."""
    ids = torch.randint(10, VOCAB, (n_docs, length), generator=torch.Generator().manual_seed(n_docs))
    mask = torch.ones_like(ids)
    for i in range(1, n_docs):
        mask[i, length - 3 * i:] = 0
        ids[i, length - 3 * i:] = pad
    return ids, mask


class Bias(LogitsProcessor):
    """Adds `push` to a scripted id per row and generated position, and a fixed vector to all."""

    def __init__(self, script: list[list[int]], prefix_len: int, num_beams: int = 1, fixed: torch.Tensor | None = None,
                 push: float = 1e4):
        self.script = [row for row in script for _ in range(num_beams)]
        self.prefix_len, self.fixed, self.push = prefix_len, fixed, push

    def __call__(self, input_ids, scores):
        scores = scores if self.fixed is None else scores + self.fixed
        step = input_ids.shape[1] - self.prefix_len
        rows = [(r, ids[step]) for r, ids in enumerate(self.script) if step < len(ids)]
        if rows:
            scores = scores.clone()
            scores[[r for r, _ in rows], [i for _, i in rows]] += self.push
        return scores


def eos_penalty(family: Family, value: float = -1e4) -> torch.Tensor:
    fixed = torch.zeros(VOCAB)
    fixed[family.eos] = value
    return fixed


def run(family: Family, layout: IdLayout, slots: list[int], script: list[int] | None = None, *,
        heads: list[int] | None = None, rules: Rules = Rules(), raw: bool = False,
        fixed: torch.Tensor | None = None, **kwargs):
    """Generate for one document, pushing a script of codes (or raw ids) and/or a fixed bias."""
    ids = family.ids(layout)
    to_ids = (lambda s: s) if raw else (lambda s: [ids[c] for c in s])
    common = dict(layout=layout, code_to_id=ids, decoder_prefix=family.prefix, doc_slots=slot_mask(layout, [slots]),
                  rules=rules)
    num_beams = kwargs.get("num_beams", 1)
    input_ids, mask = documents(1, pad=family.pad)
    if heads is None:
        bias = Bias([to_ids(script or [])], len(family.prefix), num_beams, fixed)
        return generate_sequence(family.model, input_ids, mask, logits_processor=[bias], **common, **kwargs)
    bias = Bias([to_ids(script or [])] * len(heads), len(family.prefix) + 1, num_beams, fixed)
    return generate_rows(family.model, input_ids, mask, [heads], logits_processor=[bias], **common, **kwargs)


def tuples_of(decoded, layout: IdLayout) -> list[tuple[int, ...]]:
    """Whole tuples of one output (rows: with the head put back); asserts the output is well formed."""
    start = () if decoded.head is None else (decoded.head,)
    per = layout.arity + 1 - len(start)
    assert decoded.finished and len(decoded.codes) % per == 0, decoded
    return [start + tuple(decoded.codes[i:i + per]) for i in range(0, len(decoded.codes), per)]


def assert_well_formed(outputs, layout: IdLayout, slots: list[int], strict: bool = False) -> list[tuple[int, ...]]:
    domain = set(layout.cell_domain(slots))
    relations = range(layout.n_slots, layout.na_code + 1)
    found = []
    for out in outputs:
        tuples = tuples_of(out, layout)
        assert all(t[:-1] in domain and t[-1] in relations for t in tuples), tuples
        assert len(set(tuples)) == len(tuples)
        if out.head is None:
            assert [t[0] for t in tuples] == sorted(t[0] for t in tuples)
        if strict:
            assert tuples == sorted(tuples)
        found += tuples
    return found


# --- each rule, shown by a model pushed to break it ------------------------------------------

R0, R1 = TOY.relation_code("P1"), TOY.relation_code("P2")


def test_a_slot_kinds(t5):
    script = [0, 2, 3, TOY.eos_code]  # an entity where the relation belongs
    assert run(t5, TOY, [0, 2, 3, 5], script, rules=Rules(slot_kinds=False))[0].codes == script[:-1]
    out = run(t5, TOY, [0, 2, 3, 5], script, max_new_tokens=12)[0]
    assert all((code >= TOY.n_slots) == (i % 3 == 2) for i, code in enumerate(out.codes))


@pytest.mark.parametrize("layout, slots, script", [
    (TOY, [0, 2, 3], [5, 2, R0]),  # not a slot of this document
    (CDR, [0, 1, 3, 4], [3, 4, CDR.na_code]),  # a Disease head
    (SCIREX_2, [0, 2, 3], [2, 0, SCIREX_2.na_code]),  # tail from an earlier block
    (SCIREX_4, [0, 2, 4, 6, 7], [2, 0, 4, 6, SCIREX_4.na_code]),  # each position its own block
    (UNTYPED_4ARY, [0, 1, 2, 3, 4], [1, 0, 2, 3, UNTYPED_4ARY.na_code]),  # a < b < c < d
], ids=["doc", "cdr", "scirex-2", "scirex-4", "untyped-4"])
def test_b_document_slots_and_types(t5, layout, slots, script):
    script = script + [layout.eos_code]
    assert run(t5, layout, slots, script, rules=Rules(document_slots=False))[0].codes == script[:-1]
    per = layout.arity + 1
    out = run(t5, layout, slots, script, max_new_tokens=3 * per, fixed=eos_penalty(t5, -5.0))[0]
    tuples = [tuple(out.codes[i:i + per]) for i in range(0, len(out.codes) - per + 1, per)]
    assert tuples and all(t[:-1] in layout.cell_domain(slots) for t in tuples)


def test_c_sorted_heads(t5):
    script = [3, 0, R0, 0, 2, R0, TOY.eos_code]
    assert run(t5, TOY, [0, 2, 3], script, rules=Rules(sorted_heads=False))[0].codes == script[:-1]
    heads = [t[0] for t in tuples_of(run(t5, TOY, [0, 2, 3], script)[0], TOY)]
    assert len(heads) >= 2 and heads == sorted(heads)


@pytest.mark.parametrize("mode", ["sequence", "rows"])
def test_d_distinct_args(t5, mode):
    heads = [2] if mode == "rows" else None
    script = ([2, R0] if heads else [2, 2, R0]) + [TOY.eos_code]
    assert run(t5, TOY, [0, 2, 3], script, heads=heads, rules=Rules(distinct_args=False))[0].codes == script[:-1]
    out = run(t5, TOY, [0, 2, 3], script, heads=heads, fixed=eos_penalty(t5, -5.0))[0]
    assert out.codes and all(t[0] != t[1] for t in tuples_of(out, TOY))


def test_e_no_repeat(t5):
    script = [0, 2, R0, 0, 2, R0, TOY.eos_code]
    assert run(t5, TOY, [0, 2, 3], script, rules=Rules(no_repeat=False))[0].codes == script[:-1]
    tuples = tuples_of(run(t5, TOY, [0, 2, 3], script)[0], TOY)
    assert len(tuples) >= 2 and len(set(tuples)) == len(tuples)


@pytest.mark.parametrize("script", [[0, 3, R0, 0, 2, R0], [0, 2, R1, 0, 2, R0], [0, 2, R0, 0, 2, TOY.na_code]],
                         ids=["tail-order", "relation-order", "na-on-used-cell"])
def test_f_strict_order(t5, script):
    script = script + [TOY.eos_code]
    assert run(t5, TOY, [0, 2, 3], script)[0].codes == script[:-1]
    tuples = tuples_of(run(t5, TOY, [0, 2, 3], script, rules=Rules(strict_order=True))[0], TOY)
    assert len(tuples) >= 2 and tuples == sorted(set(tuples))
    assert all(t[2] != TOY.na_code or t[:2] != u[:2] for t, u in zip(tuples[1:], tuples))


def test_g_eos_at_boundary(t5):
    script = [0, TOY.eos_code]
    out = run(t5, TOY, [0, 2, 3], script, rules=Rules(eos_at_boundary=False))[0]
    assert out.finished and out.codes == [0]
    assert tuples_of(run(t5, TOY, [0, 2, 3], script)[0], TOY)


@pytest.mark.parametrize("raw_id", [0, 1, 5], ids=["bos", "pad", "word"])
def test_h_symbols_only(bart, raw_id):  # BART: BOS 0, pad 1; its decoder start is EOS, a symbol
    ids = bart.ids(TOY)
    script = [raw_id, ids[2], ids[R0], ids[TOY.eos_code]]
    out = run(bart, TOY, [0, 2, 3], script, rules=Rules(symbols_only=False), raw=True)[0]
    assert out.codes == [-1, 2, R0] and out.finished
    out = run(bart, TOY, [0, 2, 3], script, raw=True, max_new_tokens=12)[0]
    assert out.codes and -1 not in out.codes


def test_rows_never_generate_the_head(t5):
    heads = [0, 2, 3]
    script = [2, R0, 2, R1, TOY.eos_code]
    outputs = run(t5, TOY, [0, 2, 3], script, heads=heads, max_new_tokens=30, fixed=eos_penalty(t5, -4.0))
    assert [o.head for o in outputs] == heads
    for out in outputs:
        tuples = tuples_of(out, TOY)
        assert tuples and all(t[0] == out.head != t[1] for t in tuples)


# --- whole outputs ---------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("mode", ["sequence", "rows"])
def test_decoding_without_eos_ends_only_when_exhausted(t5, case, mode):
    """With EOS pushed down, decoding runs until nothing but EOS is allowed: no dead end on the way,
    whole tuples only, typed blocks respected. Rows then hold every (cell, relation) of their head;
    a single sequence, whose heads never decrease, every one of its last head."""
    layout, slots = CASES[case]
    heads = slots if mode == "rows" else None  # includes heads that start no cell (their rows stay empty)
    outputs = run(t5, layout, slots, heads=heads, fixed=eos_penalty(t5), max_new_tokens=200)
    found = assert_well_formed(outputs, layout, slots)
    heads = {t[0] for t in found} if mode == "rows" else {max(t[0] for t in found)}
    relations = range(layout.n_slots, layout.na_code + 1)
    cells = [c for c in layout.cell_domain(slots) if c[0] in heads or mode == "sequence" and c[0] > max(heads)]
    assert sorted(t for t in found if t[0] in heads) == sorted(c + (r,) for c in cells for r in relations)
    if mode == "rows":
        assert heads == {c[0] for c in layout.cell_domain(slots)}


@pytest.mark.parametrize("mode", ["sequence", "rows"])
def test_strict_order_generation_is_sorted(t5, mode):
    layout, slots = CASES["scirex-4"]
    heads = [0, 1] if mode == "rows" else None
    outputs = run(t5, layout, slots, heads=heads, fixed=eos_penalty(t5), max_new_tokens=120,
                  rules=Rules(strict_order=True))
    assert assert_well_formed(outputs, layout, slots, strict=True)


@pytest.mark.parametrize("length_penalty", [0.5, 2.0])
@pytest.mark.parametrize("case, mode", [("toy", "sequence"), ("cdr", "rows"), ("scirex-4", "sequence")])
def test_beam_outputs_are_well_formed(t5, case, mode, length_penalty):
    layout, slots = CASES[case]
    slots = slots[:3] if case == "toy" else slots  # at most 72 tokens to exhaust the domain
    heads = slots if mode == "rows" else None
    outputs = run(t5, layout, slots, heads=heads, num_beams=3, length_penalty=length_penalty, max_new_tokens=80,
                  fixed=eos_penalty(t5))
    assert assert_well_formed(outputs, layout, slots)
    assert all(0 < p <= 1 for out in outputs for p in out.probs)


def test_every_beam_is_well_formed(t5):
    """All beams `generate` keeps, not only the best, obey the constraint."""
    layout, slots = CASES["scirex-4"]
    ids, num_beams = t5.ids(layout), 4
    constraint = SymbolConstraint(layout, ids, slot_mask(layout, [slots]), mode="sequence", prefix_len=1,
                                  num_beams=num_beams)
    input_ids, mask = documents(1)
    sequences = t5.model.generate(
        input_ids=input_ids, attention_mask=mask, decoder_input_ids=torch.tensor([t5.prefix]), do_sample=False,
        logits_processor=[Bias([[]], 1, num_beams, eos_penalty(t5, -3.0)), constraint], num_beams=num_beams,
        num_return_sequences=num_beams, length_penalty=1.5, max_new_tokens=60)
    beams = []
    for codes in constraint.codes_of(sequences[:, 1:]).tolist():
        end = codes.index(layout.eos_code)
        beams.append(Decoded(doc=0, head=None, codes=codes[:end], probs=[], finished=True))
    assert len({tuple(b.codes) for b in beams}) == num_beams
    assert assert_well_formed(beams, layout, slots)


# --- encode once -----------------------------------------------------------------------------

@pytest.mark.parametrize("num_beams", [1, 2])
def test_rows_encode_once_equals_reencoding(family, num_beams):
    layout, heads_per_doc = TOY, [[0, 2, 3], [1, 4]]
    slots = slot_mask(layout, [[0, 2, 3, 5], [1, 4, 5]])
    input_ids, mask = documents(2, pad=family.pad)
    ids = family.ids(layout)
    calls = []
    hook = family.model.get_encoder().register_forward_hook(
        lambda module, args, out: calls.append(out.last_hidden_state.shape[0]))
    try:
        rows = generate_rows(family.model, input_ids, mask, heads_per_doc, layout=layout, code_to_id=ids,
                             decoder_prefix=family.prefix, doc_slots=slots, num_beams=num_beams, max_new_tokens=16)
    finally:
        hook.remove()
    assert calls == [2]  # one encoder pass, each document once

    doc_of_row = torch.tensor([0, 0, 0, 1, 1])
    heads = [h for hs in heads_per_doc for h in hs]
    prefixes = torch.tensor([family.prefix + [ids[h]] for h in heads])
    constraint = SymbolConstraint(layout, ids, slots[doc_of_row], mode="rows", prefix_len=prefixes.shape[1],
                                  heads=heads, num_beams=num_beams)
    sequences = family.model.generate(input_ids=input_ids[doc_of_row], attention_mask=mask[doc_of_row],
                                      decoder_input_ids=prefixes, do_sample=False, num_beams=num_beams,
                                      logits_processor=[constraint, lambda ids, scores: scores.log_softmax(-1)],
                                      max_new_tokens=16, eos_token_id=family.eos)  # beams score allowed tokens only
    reference = constraint.codes_of(sequences[:, prefixes.shape[1]:]).tolist()
    assert [r.doc for r in rows] == doc_of_row.tolist() and [r.head for r in rows] == heads
    assert sum(len(r.codes) for r in rows) > 0
    for row, ref in zip(rows, reference):
        assert row.codes == ref[:len(row.codes)] and (not row.finished or ref[len(row.codes)] == layout.eos_code)


def test_decoding_encodes_as_training_does(family):
    """Every path reads a document through `encode`: LED gets global attention on the first token
    of each window when it decodes, as it does in training (without it, states moved by 0.0127)."""
    layout, heads_per_doc = TOY, [[0, 2], [1]]
    input_ids, mask = documents(2, pad=family.pad)
    seen = []
    hook = family.model.get_encoder().register_forward_hook(lambda module, args, out: seen.append(out.last_hidden_state))
    try:
        generate_rows(family.model, input_ids, mask, heads_per_doc, layout=layout, code_to_id=family.ids(layout),
                      decoder_prefix=family.prefix, doc_slots=slot_mask(layout, [[0, 2, 5], [1, 4]]),
                      max_new_tokens=2, symbol_head=True)
    finally:
        hook.remove()
    with torch.no_grad():
        trained = encode(family.model, input_ids, mask)
    assert len(seen) == 1 and torch.allclose(seen[0], trained, atol=1e-6)
    if family.model.config.model_type == "led":  # the global attention really changes the states
        plain = family.model.get_encoder()(input_ids=input_ids, attention_mask=mask).last_hidden_state
        assert not torch.allclose(plain, trained, atol=1e-4)


@pytest.mark.parametrize("biased", [False, True])
@pytest.mark.parametrize("mode", ["sequence", "rows"])
def test_symbol_head_picks_the_tokens_of_generate(family, mode, biased):
    layout, docs = CDR, [[0, 1, 3, 4, 5], [1, 2, 3]]
    input_ids, mask = documents(2, pad=family.pad)
    code_bias = torch.zeros(layout.n_codes)
    code_bias[[layout.na_code, layout.eos_code]] = torch.tensor([0.3, -2.0])
    common = dict(layout=layout, code_to_id=family.ids(layout), decoder_prefix=family.prefix,
                  doc_slots=slot_mask(layout, docs), max_new_tokens=24, code_bias=code_bias if biased else None)
    if mode == "rows":
        outputs = [generate_rows(family.model, input_ids, mask, [[0, 1], [1, 2]], symbol_head=fast, **common)
                   for fast in (False, True)]
    else:
        outputs = [generate_sequence(family.model, input_ids, mask, symbol_head=fast, **common)
                   for fast in (False, True)]
    full, fast = outputs
    assert sum(len(o.codes) for o in full) >= 3  # at least a whole tuple
    for a, b in zip(full, fast):
        assert (a.doc, a.head, a.codes, a.finished) == (b.doc, b.head, b.codes, b.finished)
        assert a.probs == pytest.approx(b.probs, abs=1e-5)


def test_rows_read_their_documents_cross_attention_once():
    """BERT-style decoders (the embedded default) group each document's rows as queries of one
    cross-attention over its keys/values; documents with unequal row counts and padding decode as
    `generate` does. Sharp attention, so that a row given another row's context would show."""
    from dore.decoding.head import grouped_cross_attention

    family = tiny_bert2bert()
    with torch.no_grad():
        for module in family.model.decoder.modules():
            if isinstance(module, BertCrossAttention):
                module.query.weight.mul_(40)
                module.key.weight.mul_(40)
    layout, docs = CDR, [[0, 1, 3, 4, 5], [1, 2, 3], [0, 4]]
    input_ids, mask = documents(3, pad=family.pad)
    common = dict(layout=layout, code_to_id=family.ids(layout), decoder_prefix=family.prefix,
                  doc_slots=slot_mask(layout, docs), max_new_tokens=24)
    heads = [[0, 1, 3], [], [0]]
    full, fast = [generate_rows(family.model, input_ids, mask, heads, symbol_head=h, **common) for h in (False, True)]
    assert grouped_cross_attention(family.model.decoder.base_model)
    assert not grouped_cross_attention(tiny_t5().model.get_decoder())  # T5 reads keys/values copied per row
    for a, b in zip(full, fast, strict=True):
        assert (a.doc, a.head, a.codes, a.finished) == (b.doc, b.head, b.codes, b.finished)
        assert a.probs == pytest.approx(b.probs, abs=1e-5)


@pytest.mark.parametrize("symbol_head", [False, True])
def test_code_bias_applies_with_either_head(t5, symbol_head):
    code_bias = torch.zeros(TOY.n_codes)
    code_bias[[TOY.na_code, TOY.eos_code]] = torch.tensor([50.0, -5.0])
    input_ids, mask = documents(1)
    out = generate_sequence(t5.model, input_ids, mask, layout=TOY, code_to_id=t5.ids(TOY), decoder_prefix=t5.prefix,
                            doc_slots=slot_mask(TOY, [[0, 2, 3]]), code_bias=code_bias, symbol_head=symbol_head)[0]
    first_of_cell = {}
    for t in tuples_of(out, TOY):
        first_of_cell.setdefault(t[:2], t[2])
    assert first_of_cell and set(first_of_cell.values()) == {TOY.na_code}  # NA first, until rule (e) bars it


# --- the constraint against its per-hypothesis Python twin -----------------------------------

RULE_SETS = [Rules(), Rules(strict_order=True), Rules(no_repeat=False), Rules(distinct_args=False),
             Rules(eos_at_boundary=False), Rules(symbols_only=False), Rules(sorted_heads=False)]
# without rule (b) the Python twin enumerates every slot tuple: binary layouts only
MASK_CASES = [(case, rules) for case in CASES for rules in RULE_SETS] + [
    (case, Rules(document_slots=False, strict_order=True)) for case in ("toy", "cdr", "scirex-2")]


def rule_changes(rules: Rules) -> str:
    return ",".join(f"{k}={v}" for k, v in vars(rules).items() if v != getattr(Rules(), k)) or "default"


@pytest.mark.parametrize("case, rules", MASK_CASES, ids=[f"{c}-{rule_changes(r)}" for c, r in MASK_CASES])
@pytest.mark.parametrize("mode", ["sequence", "rows"])
def test_vectorised_masks_equal_python_baseline(case, mode, rules):
    layout, _ = CASES[case]
    rng = random.Random(f"{case}{mode}")
    docs = [sorted(rng.sample(range(layout.n_slots), rng.randint(2, layout.n_slots))) for _ in range(3)]
    heads = [rng.choice(range(layout.n_slots)) for _ in docs] if mode == "rows" else None
    ids, num_beams, prefix_len = symbol_ids(layout, 1), 2, 2 if mode == "rows" else 1
    constraint = SymbolConstraint(layout, ids, slot_mask(layout, docs), mode=mode, prefix_len=prefix_len,
                                  heads=heads, num_beams=num_beams, rules=rules)
    baseline = PrefixConstrainedLogitsProcessor(
        allowed_tokens_fn(layout, ids, docs, mode=mode, prefix_len=prefix_len, vocab_size=VOCAB, heads=heads,
                          rules=rules), num_beams)
    state = torch.zeros(len(docs) * num_beams, 1, dtype=torch.long)
    if mode == "rows":
        state = torch.cat([state, constraint.code_to_id[constraint.heads][:, None]], 1)
    generator, scores = torch.Generator().manual_seed(0), torch.zeros(len(state), VOCAB)
    complete = rules.sorted_heads or not rules.strict_order  # the lookahead's guarantee
    for _ in range(40):
        running = ~(constraint.codes_of(state[:, prefix_len:]) == layout.eos_code).any(1)
        if not running.any():
            break
        masks = constraint(state, scores).isinf()
        assert torch.equal(masks[running], baseline(state, scores).isinf()[running])
        if complete:
            assert not masks[running].all(1).any(), "a dead end"
        state = random_walk(constraint, state, 1, generator)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("mode", ["sequence", "rows"])
def test_first_cells_are_the_cell_domain(case, mode):
    """Walking every allowed first tuple gives exactly the layout's cells (rows: those of the head)."""
    layout, slots = CASES[case]
    heads = slots if mode == "rows" else [None]
    ids = symbol_ids(layout, 1)
    for head in heads:
        constraint = SymbolConstraint(layout, ids, slot_mask(layout, [slots]), mode=mode, prefix_len=1,
                                      heads=None if head is None else [head])
        start = [] if head is None else [head]
        cells, frontier = set(), [start]
        while frontier:
            cell = frontier.pop()
            if len(cell) == layout.arity:
                cells.add(tuple(cell))
                continue
            state = torch.tensor([[0] + [ids[c] for c in cell[len(start):]]])
            allowed = constraint.allowed_codes(state)[0].nonzero().flatten().tolist()
            assert all(c < layout.n_slots or (c == layout.eos_code and len(cell) == len(start)) for c in allowed)
            frontier += [cell + [c] for c in allowed if c < layout.n_slots]
        domain = {c for c in layout.cell_domain(slots) if head is None or c[0] == head}
        assert cells == domain


def test_time_constraint_step_reports_both():
    timing = time_constraint_step(TOY, [[0, 1, 2, 4]] * 3, mode="rows", heads=[0, 1, 4], num_beams=2,
                                  generated=10, vocab_size=VOCAB, repeats=2)
    assert timing["hypotheses"] == 6 and timing["vectorised_ms"] > 0 and timing["python_ms"] > 0


def test_constructor_rejects_bad_inputs():
    ids = symbol_ids(TOY, 1)
    with pytest.raises(ValueError, match="distinct ids"):
        SymbolConstraint(TOY, ids[:-1], slot_mask(TOY, [[0]]), mode="sequence", prefix_len=1)
    with pytest.raises(ValueError, match="heads are required"):
        SymbolConstraint(TOY, ids, slot_mask(TOY, [[0]]), mode="rows", prefix_len=2)
    with pytest.raises(ValueError, match="outside"):
        slot_mask(TOY, [[7]])
