"""Training switches that change a backbone's dropout or freeze a part of it (`TrainConfig.attention_dropout`,
`TrainConfig.freeze_encoder`)."""

from __future__ import annotations

import torch


def freeze(module: torch.nn.Module) -> None:
    """No gradient and no dropout in `module` (a frozen encoder's states are the teacher's own)."""
    module.requires_grad_(False)
    for sub in module.modules():
        if isinstance(sub, torch.nn.Dropout):
            sub.p = 0.0
        for rate in ("dropout", "activation_dropout", "attention_dropout", "layerdrop"):  # BART/LED keep floats
            if isinstance(getattr(sub, rate, None), float):
                setattr(sub, rate, 0.0)


# The attention modules whose `dropout` drops attention probabilities (an nn.Dropout or its rate);
# elsewhere `dropout` is the hidden-state dropout (T5LayerSelfAttention, BertSelfOutput).
ATTENTION_DROPOUT_MODULES = ("BertSelfAttention", "BertCrossAttention", "RobertaSelfAttention",
                             "RobertaCrossAttention", "BartAttention", "LEDEncoderSelfAttention",
                             "LEDDecoderAttention", "T5Attention")


def set_attention_dropout(model: torch.nn.Module, rate: float) -> int:
    """Set the attention-probability dropout of every attention module in `model` to `rate`;
    returns how many changed. Raises where the backbone has none we know (the switch would do nothing)."""
    changed = 0
    for module in model.modules():
        if type(module).__name__ not in ATTENTION_DROPOUT_MODULES:
            continue
        if isinstance(module.dropout, torch.nn.Dropout):
            module.dropout.p = rate
        else:
            module.dropout = rate
        changed += 1
    if not changed:
        raise ValueError(f"attention_dropout: no known attention module in {type(model).__name__}")
    return changed
