"""Constrained decoding through HF `generate` (beam search, full-vocabulary output layer)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

from dore.decoding.constraint import SymbolConstraint


class _SymbolLogProbs(LogitsProcessor):
    """Records each step's log-probabilities of the symbol ids (after the constraint), leaving the
    scores as they are: keeping `output_scores` would hold steps x hypotheses x vocabulary floats."""

    def __init__(self, code_to_id: Tensor):
        self.code_to_id = code_to_id
        self.steps: list[Tensor] = []

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        self.steps.append(scores.log_softmax(-1)[:, self.code_to_id])
        return scores


class _Renormalize(LogitsProcessor):
    """Log-probabilities over the allowed tokens only. Beam search normalises over the whole
    vocabulary before the processors run; a model trained with the symbol loss never learned to
    push ordinary words down, so their mass must not enter the beam scores."""

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        return scores.log_softmax(-1)


class _CodeBias(LogitsProcessor):
    """Adds a fixed bias to the symbol ids' scores."""

    def __init__(self, code_to_id: Tensor, bias: Tensor):
        self.code_to_id, self.bias = code_to_id, bias

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        return scores.index_add(1, self.code_to_id, self.bias.expand(len(scores), -1))


@contextmanager
def only_generation_config(model: PreTrainedModel, config: GenerationConfig) -> Iterator[None]:
    """`generate` fills unset options from `model.generation_config`; a checkpoint's text defaults
    there (BART's forced BOS/EOS, no_repeat_ngram_size, beams) would fight the constraint."""
    saved = model.generation_config
    model.generation_config = config
    try:
        yield
    finally:
        model.generation_config = saved


def _pad_id(model: PreTrainedModel) -> int | None:
    pad = model.generation_config.pad_token_id
    return model.config.pad_token_id if pad is None else pad


def generate_with_hf(model: PreTrainedModel, hidden: Tensor, attention_mask: Tensor, prefixes: Tensor,
              constraint: SymbolConstraint, *, num_beams: int, length_penalty: float, max_new_tokens: int,
              code_bias: Tensor | None, logits_processor: Sequence[LogitsProcessor]) -> tuple[Tensor, Tensor]:
    """`model.generate` under the constraint: codes [rows, T] and their probabilities [rows, T]."""
    recorder = _SymbolLogProbs(constraint.code_to_id)
    bias = [] if code_bias is None else [_CodeBias(constraint.code_to_id, code_bias)]
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, num_beams=num_beams, length_penalty=length_penalty, do_sample=False,
        eos_token_id=int(constraint.code_to_id[constraint.layout.eos_code]), pad_token_id=_pad_id(model),
        decoder_start_token_id=int(prefixes[0, 0]), return_dict_in_generate=True)
    with only_generation_config(model, config):
        out = model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=hidden), attention_mask=attention_mask,
                             decoder_input_ids=prefixes, generation_config=config,
                             logits_processor=LogitsProcessorList([*logits_processor, *bias, constraint,
                                                                   _Renormalize(), recorder]))
    codes = constraint.codes_of(out.sequences[:, prefixes.shape[1]:])
    n_steps = codes.shape[1]
    source = (out.beam_indices.clamp(min=0) if num_beams > 1  # the flat beam each token came from
              else torch.arange(len(codes), device=codes.device)[:, None].expand_as(codes))
    logp = torch.stack(recorder.steps[:n_steps], 1)  # [flat beams, T, n_codes]
    picked = logp[source, torch.arange(n_steps, device=codes.device), codes.clamp(min=0)]
    return codes, picked.exp().masked_fill(codes < 0, float("nan"))

