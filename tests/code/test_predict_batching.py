"""A document's extraction does not depend on the documents it is batched with."""

from dore.data.docred import load_rel_info, read_docred
from dore.layout import docred_layout
from dore.model.backbone import load_backbone
from dore.predict import DecodingConfig, Extractor


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
        budget = extractor.default_max_new_tokens(mode, [extractor.check_fits(small)])
        tuple_len = layout.arity + (mode == "sequence")
        assert len(alone) * tuple_len <= budget * (len(small.entities) if mode == "rows" else 1)
