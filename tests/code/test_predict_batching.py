"""A document's extraction does not depend on the documents it is batched with, and its default
token budget holds every cell of its matrix; a cut output is counted."""

from dore.config import DecodingConfig
from dore.data.docred import load_rel_info, read_docred
from dore.extract import Extractor
from dore.model.backbone import load_backbone
from dore.symbolic.layout import docred_layout
from dore.symbolic.linearize import build_targets
from dore.symbolic.sampling import SamplingConfig


def test_batch_companions_do_not_change_a_documents_relations(shared_data):
    docs = read_docred(shared_data / "redocred" / "test_revised.json")[0][:6]
    small, large = min(docs, key=lambda d: len(d.entities)), max(docs, key=lambda d: len(d.entities))
    assert len(large.entities) > len(small.entities) + 5  # very different default budgets
    layout = docred_layout(load_rel_info(shared_data / "docred" / "rel_info.json"), n_slots=42)
    extractor = Extractor(load_backbone("tiny-bart", layout, seed=0), layout)  # untrained: runs to its budget
    for mode in ("rows", "sequence"):
        decoding = DecodingConfig(mode=mode, symbol_head=True, eos_bias=-30, na_bias=-30)  # run to the budget
        alone = extractor.extract([small], decoding)[0]
        batched = extractor.extract([large, small], decoding)[1]
        assert alone and [r.model_dump() for r in alone] == [r.model_dump() for r in batched], mode
        budget = extractor.default_max_new_tokens(mode, extractor.check_fits(small))
        tuple_len = layout.arity + (mode == "sequence")
        assert len(alone) * tuple_len <= budget * (len(small.entities) if mode == "rows" else 1)


def test_sequence_budget_holds_every_target_and_cuts_are_counted(shared_data):
    """The old default (12 tokens per entity) cut 96 of the 500 test documents' diagonal targets."""
    docs = read_docred(shared_data / "redocred" / "test_revised.json")[0][:60]
    layout = docred_layout(load_rel_info(shared_data / "docred" / "rel_info.json"), n_slots=100)
    extractor = Extractor(load_backbone("tiny-bart", layout, seed=0), layout)
    positions = extractor.backbone.max_target_length - len(extractor.backbone.decoder_prefix) - 1
    longest = 0
    for strategy in ("diagonal:1", "all"):
        for doc in docs:
            assignment = extractor.check_fits(doc)
            target = build_targets(doc, layout, SamplingConfig.parse(strategy), seed=0, epoch=0).sequence()
            budget = extractor.default_max_new_tokens("sequence", assignment)
            assert len(target) <= budget or budget == positions, (doc.doc_id, strategy)  # else cut, and counted
            longest = max(longest, len(target) / max(len(assignment.slots), 1))
    assert longest > 12  # the documents do need more than the old budget
    decoding = DecodingConfig(mode="sequence", symbol_head=True, eos_bias=-30, max_new_tokens=6)
    extractor.extract(docs[:2], decoding)
    assert extractor.stats.outputs_cut == 2
