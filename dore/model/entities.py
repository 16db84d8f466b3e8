"""Document-aware entity symbols (`TrainConfig.entity_embeddings`, off by default).

An entity symbol `<e_k>` means "the k-th entity of *this* document", yet its embedding is the
same in every document: the decoder can learn which mentions it stands for only through the
cross-attention, which a warm-started encoder-decoder (the MiniLM default) starts from random.
With this module each slot also gets the mean encoder state at its marker tokens, projected
into the decoder, and the decoder uses it on both sides of a symbol:

- reading: added to the slot's input embedding wherever the decoder reads `<e_k>`;
- writing: dotted with the decoder state and added to the slot's logit (a pointer over the
  document's entities, as the pair representation of a classifier reads its markers).

The projection starts at zero, so a model with the module attached computes exactly what it
computed without it; training moves it only as far as it helps. It is a submodule of the
seq2seq model (`model.dore_entities`), so checkpoints and `save_pretrained` carry it and
`dore.model.backbone.load_trained` restores it. Decoding goes through `SymbolHead` (greedy with the symbol output
layer); HF `generate` does not know the module and is refused for such models.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor, nn
from transformers import EncoderDecoderModel, PreTrainedModel

PREFIX = "dore_entities."

# (per-row table [rows, n_slots, dim], slot of each vocabulary id [vocab] (-1: not an entity)),
# set only while the decoder runs: the encoder of BART/T5 shares the embedding module.
_READING: ContextVar[tuple[Tensor, Tensor] | None] = ContextVar("dore_entity_reading", default=None)


class EntityEmbeddings(nn.Module):
    def __init__(self, encoder_dim: int, decoder_dim: int, n_slots: int):
        super().__init__()
        self.n_slots = n_slots
        self.project = nn.Linear(encoder_dim, decoder_dim)
        nn.init.zeros_(self.project.weight)
        nn.init.zeros_(self.project.bias)

    def table(self, source_ids: Tensor, encoder_hidden: Tensor, slot_ids: Tensor) -> Tensor:
        """[docs, n_slots, decoder_dim]: the projected mean encoder state at each slot's markers
        (`slot_ids`: the token id of each slot); a slot without markers gets the projection of 0."""
        marks = (source_ids[..., None] == slot_ids).to(encoder_hidden.dtype)  # [docs, S, n_slots]
        summed = torch.einsum("dsn,dsh->dnh", marks, encoder_hidden)
        return self.project(summed / marks.sum(1).clamp(min=1)[..., None])


def of(model: nn.Module) -> EntityEmbeddings | None:
    """The module of a model (also inside a DDP wrapper), or None."""
    model = getattr(model, "module", model)
    return getattr(model, "dore_entities", None)


def _dims(model: PreTrainedModel) -> tuple[int, int]:
    decoder_dim = model.get_decoder().get_input_embeddings().embedding_dim
    if isinstance(model, EncoderDecoderModel):
        return model.config.encoder.hidden_size, decoder_dim
    return model.config.d_model, decoder_dim


def attach(model: PreTrainedModel, n_slots: int) -> EntityEmbeddings:
    """Give `model` document-aware entity symbols (idempotent); returns the module."""
    module = of(model)
    if module is None:
        module = EntityEmbeddings(*_dims(model), n_slots).to(model.device)
        model.dore_entities = module  # a submodule: parameters, state_dict, .to() follow it
    embeddings = model.get_decoder().get_input_embeddings()
    if not getattr(embeddings, "_dore_entity_hook", False):
        embeddings.register_forward_hook(_add_to_embeddings)
        embeddings._dore_entity_hook = True
    return module


def _add_to_embeddings(module: nn.Module, args: tuple, output: Tensor) -> Tensor | None:
    state = _READING.get()
    if state is None:
        return None
    table, slot_of_id = state
    slot = slot_of_id[args[0]]  # [rows, T]
    rows = torch.arange(len(slot), device=slot.device)[:, None]
    added = table[rows, slot.clamp(min=0)] * (slot >= 0)[..., None].to(table.dtype)
    return output + added.to(output.dtype)


@contextmanager
def reading(table: Tensor | None, slot_of_id: Tensor | None) -> Iterator[None]:
    """While the decoder runs: its entity-symbol inputs get their row's `table` entries."""
    token = _READING.set(None if table is None else (table, slot_of_id))
    try:
        yield
    finally:
        _READING.reset(token)


def slot_lookup(code_to_id: Tensor, n_slots: int, vocab_size: int) -> Tensor:
    """[vocab]: the slot of each entity symbol's token id, -1 for every other token."""
    lookup = torch.full((vocab_size,), -1, dtype=torch.long, device=code_to_id.device)
    lookup[code_to_id[:n_slots]] = torch.arange(n_slots, device=code_to_id.device)
    return lookup


def saved_state(directory: str | Path) -> dict[str, Tensor]:
    """The module's tensors in a saved model's safetensors files (empty: saved without it)."""
    state = {}
    for path in sorted(Path(directory).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as fh:
            state.update({k.removeprefix(PREFIX): fh.get_tensor(k) for k in fh.keys() if k.startswith(PREFIX)})
    return state

