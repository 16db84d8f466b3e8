"""int8 dynamic quantization for CPU serving (`Extractor.from_pretrained(..., quantize=True)`):
the linear layers become int8 except the output layer the symbol head reads, a quantized model
loads and decodes, and it stays close to the float model."""

from pathlib import Path

import torch
from torch import nn

from dore.config import DecodingConfig
from dore.extract import Extractor
from dore.model import entities
from dore.model.backbone import load_backbone
from dore.model.inputs import encode, encode_document
from dore.model.quantize import linear_layers_to_quantize, quantize_int8
from tests.code.test_entities import randomise
from tests.conftest import fixture_docs, fixture_layout

GOLDEN_MODEL = Path(__file__).resolve().parents[1] / "golden" / "model"


def test_saved_model_loads_quantized_and_decodes():
    plain, quantized = Extractor.from_pretrained(GOLDEN_MODEL), Extractor.from_pretrained(GOLDEN_MODEL, quantize="all")
    model = quantized.backbone.model
    linear = [m for m in model.modules() if type(m) is nn.Linear]
    assert linear == [model.get_output_embeddings()]  # every other linear layer is int8
    assert getattr(model, "dore_quantized", None) == "int8-dynamic (all)"
    docs = fixture_docs("test")
    decoding = DecodingConfig(symbol_head=True, na_bias=-30.0, eos_bias=-30.0, max_new_tokens=6)  # every row writes
    got, want = quantized.extract(docs, decoding), plain.extract(docs, decoding)
    assert sum(map(len, got)) > 0 and len(got) == len(docs)
    same = sum(a.label == b.label and a.args == b.args for g, w in zip(got, want) for a, b in zip(g, w))
    assert same >= 0.5 * sum(map(len, want))  # approximate, not random


def test_quantized_minilm_with_entity_symbols_stays_close_to_float():
    layout = fixture_layout(n_slots=42)
    float_model = load_backbone("minilm", layout, seed=0)
    entities.attach(float_model.model, layout.n_slots)
    randomise(entities.of(float_model.model))
    names = linear_layers_to_quantize(float_model.model)
    assert names and not any(n.startswith("dore_entities") for n in names)
    doc = fixture_docs("test")[0]
    bb = float_model
    ids = torch.tensor([encode_document(doc, layout.assign(doc), bb.tokenizer, bb.code_to_id, 512).input_ids])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        before = encode(float_model.model.eval(), ids, mask)
        after = encode(quantize_int8(float_model.model), ids, mask)
    cosine = torch.nn.functional.cosine_similarity(before, after, dim=-1)
    assert float(cosine.mean()) > 0.95 and float(cosine.min()) > 0.85  # measured: 0.965 and 0.927
    extractor = Extractor(float_model, layout)  # now quantized: the grouped cross-attention path runs on it
    rels = extractor.extract(fixture_docs("test"), DecodingConfig(symbol_head=True, max_new_tokens=6))
    assert len(rels) == 2


def test_decoder_scope_leaves_the_encoder_float():
    model = Extractor.from_pretrained(GOLDEN_MODEL, quantize="decoder").backbone.model
    encoder = {id(m) for m in model.get_encoder().modules()}
    float_linear = [m for m in model.modules() if type(m) is nn.Linear]
    assert float_linear and all(id(m) in encoder or m is model.get_output_embeddings() for m in float_linear)
    assert any(type(m) is not nn.Linear and "Linear" in type(m).__name__ for m in model.get_decoder().modules())
