"""Document-aware entity symbols (dore.model.entities): the table, the zero start, and that greedy
decoding and teacher-forced training read the table the same way, for every backbone family."""

import pytest
import torch

from dore.decoding.constraint import SymbolConstraint, slot_mask
from dore.decoding.generate import generate_rows, generate_sequence
from dore.decoding.head import SymbolHead
from dore.model import entities
from dore.model.inputs import encode
from tests.code.test_decoding import CDR, FAMILIES, documents

LAYOUT, DOC_SLOTS, HEADS = CDR, [[0, 1, 3, 4, 5], [1, 2, 3]], [[0, 1], [1, 2]]


def marked_documents(family, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Random documents whose words are wrapped here and there by their slots' marker ids."""
    input_ids, mask = documents(2, pad=family.pad)
    for doc, slots in enumerate(DOC_SLOTS):
        for i, slot in enumerate(slots):
            for at in (1 + 4 * i, 3 + 4 * i):  # <e_k> word <e_k>
                input_ids[doc, at] = ids[slot]
    return input_ids, mask


def randomise(module: entities.EntityEmbeddings, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)


def test_table_is_the_projected_mean_of_the_marker_states():
    module = entities.EntityEmbeddings(4, 3, n_slots=3)
    randomise(module)
    source = torch.tensor([[7, 50, 7, 51, 52, 8, 53, 8, 9]])
    hidden = torch.randn(1, 9, 4)
    table = module.table(source, hidden, torch.tensor([7, 8, 6]))
    expected = torch.stack([hidden[0, [0, 2]].mean(0), hidden[0, [5, 7]].mean(0), torch.zeros(4)])
    assert torch.allclose(table[0], module.project(expected), atol=1e-6)


@pytest.mark.parametrize("name", FAMILIES)
def test_attached_module_starts_as_a_no_op(name):
    family = FAMILIES[name]()
    ids = family.ids(LAYOUT)
    input_ids, mask = marked_documents(family, ids)
    common = dict(layout=LAYOUT, code_to_id=ids, decoder_prefix=family.prefix,
                  doc_slots=slot_mask(LAYOUT, DOC_SLOTS), max_new_tokens=16, symbol_head=True)
    before = generate_rows(family.model, input_ids, mask, HEADS, **common)
    entities.attach(family.model, LAYOUT.n_slots)
    after = generate_rows(family.model, input_ids, mask, HEADS, **common)
    assert sum(len(r.codes) for r in before) > 0
    for a, b in zip(before, after, strict=True):
        assert a.codes == b.codes and a.probs == pytest.approx(b.probs, abs=1e-6)
    randomise(entities.of(family.model))
    moved = generate_rows(family.model, input_ids, mask, HEADS, **common)
    assert [r.probs for r in moved] != [r.probs for r in before]  # the table reaches the decoder


@pytest.mark.parametrize("name", FAMILIES)
def test_greedy_decoding_and_teacher_forcing_read_the_table_alike(name):
    """Each greedy choice (and its probability) is the masked argmax of the teacher-forced symbol
    logits of the same sequence: training and decoding add the table at the same places."""
    family = FAMILIES[name]()
    ids = family.ids(LAYOUT)
    input_ids, mask = marked_documents(family, ids)
    randomise(entities.attach(family.model, LAYOUT.n_slots))
    rows = generate_rows(family.model, input_ids, mask, HEADS, layout=LAYOUT, code_to_id=ids,
                         decoder_prefix=family.prefix, doc_slots=slot_mask(LAYOUT, DOC_SLOTS), max_new_tokens=16,
                         symbol_head=True)
    width = max(len(r.codes) for r in rows)
    assert width >= 3
    code_to_id = torch.tensor(ids)
    heads = [h for hs in HEADS for h in hs]
    row_doc = torch.tensor([r.doc for r in rows])
    prefix = [family.prefix + [ids[h]] for h in heads]
    eos = LAYOUT.eos_code
    sequences = torch.tensor([p + [ids[c] for c in r.codes + [eos] * (width - len(r.codes))]
                              for p, r in zip(prefix, rows)])
    head = SymbolHead(family.model, code_to_id)
    with torch.no_grad():
        hidden = encode(family.model, input_ids, mask)  # as decoding encodes (LED: global attention)
        logits = head.forward(hidden, mask, sequences[:, :-1], torch.ones_like(sequences[:, :-1]), row_doc=row_doc,
                              source_ids=input_ids)
    constraint = SymbolConstraint(LAYOUT, ids, slot_mask(LAYOUT, DOC_SLOTS)[row_doc], mode="rows",
                                  prefix_len=len(prefix[0]), heads=heads)
    start = len(prefix[0]) - 1
    for t in range(width):
        allowed = constraint.allowed_codes(sequences[:, :start + 1 + t])
        logp = logits[:, start + t].masked_fill(~allowed, float("-inf")).log_softmax(-1)
        for i, r in enumerate(rows):
            if t < len(r.codes):
                assert int(logp[i].argmax()) == r.codes[t]
                assert float(logp[i, r.codes[t]].exp()) == pytest.approx(r.probs[t], abs=1e-5)


def test_generate_and_a_missing_source_are_refused():
    family = FAMILIES["bart"]()
    ids = family.ids(LAYOUT)
    input_ids, mask = marked_documents(family, ids)
    entities.attach(family.model, LAYOUT.n_slots)
    with pytest.raises(ValueError, match="symbol head"):
        generate_sequence(family.model, input_ids, mask, layout=LAYOUT, code_to_id=ids, decoder_prefix=family.prefix,
                          doc_slots=slot_mask(LAYOUT, DOC_SLOTS), max_new_tokens=8, symbol_head=False)
    head = SymbolHead(family.model, torch.tensor(ids))
    with pytest.raises(ValueError, match="source ids"):
        head.entity_inputs(None, torch.zeros(2, 24, 32), None)
