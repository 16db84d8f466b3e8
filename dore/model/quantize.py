"""int8 dynamic quantization of a seq2seq model's linear layers, for CPU serving.

`torch.ao.quantization.quantize_dynamic` stores each linear layer's weights as int8 (a
scale per output channel) and quantizes its inputs on the fly; the matrix products then run in int8. Left in
float: the output layer (the symbol head reads its weight rows, `dore.decoding.head`) and the
entity-symbol projection (one small product per document). The quantized model is for
inference only and is never saved: quantize after loading (`Extractor.from_pretrained(...,
quantize=True)`). What it costs in F1 is measured, not assumed (bench/bench_decoding.py).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from transformers import PreTrainedModel


# int8 weights with one scale per output channel: on MiniLM's encoder, token states kept a mean
# cosine of 0.96 to the float ones against 0.92 with one scale per tensor
PER_CHANNEL = torch.ao.quantization.per_channel_dynamic_qconfig


SCOPES = ("all", "decoder")  # which linear layers: every one, or the decoder's only (the encoder stays float)


def linear_layers_to_quantize(model: PreTrainedModel, scope: str = "all") -> set[str]:
    """Names of the model's `nn.Linear` modules that take int8 weights."""
    if scope not in SCOPES:
        raise ValueError(f"quantization scope must be one of {SCOPES}, not {scope!r}")
    output = model.get_output_embeddings()
    encoder = {id(m) for m in model.get_encoder().modules()} if scope == "decoder" else set()
    return {name for name, module in model.named_modules()
            if type(module) is nn.Linear and module is not output and not name.startswith("dore_entities")
            and id(module) not in encoder}


def quantize_int8(model: PreTrainedModel, scope: str = "all") -> PreTrainedModel:
    """`model` (eval mode) with int8 dynamic quantization of its linear layers (`scope`), in place."""
    model.eval()
    names = linear_layers_to_quantize(model, scope)
    with warnings.catch_warnings():
        # torch.ao.quantization and quantized tensors are deprecated in favour of torchao, not yet removed
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*", category=UserWarning)
        torch.ao.quantization.quantize_dynamic(model, dict.fromkeys(names, PER_CHANNEL),
                                               dtype=torch.qint8, inplace=True)
    model.dore_quantized = f"int8-dynamic ({scope})"
    return model
