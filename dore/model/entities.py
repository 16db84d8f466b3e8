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

Pair-aware relation logits (`TrainConfig.pair_logits`, rows mode, binary relations) add one more
term where the decoder writes the relation of a (head, tail) pair: a low-rank bilinear form over
the two entities' pooled encoder states, one score per relation symbol and NA (`PairScorer`).
The classifier baselines score a pair this way; here the term joins the decoder's own logits,
so the output is still a constrained, generated sequence. Its label layer starts at zero (the
model starts as without it). `relation_logits` switches either part off at inference, to show
what each contributes: "both" (default), "pair" (the pair term alone at relation positions)
or "decoder" (no pair term). With `TrainConfig.pair_loss` the term is also trained alone on every
entity pair of a document (`dense_pair_loss`), where the decoder only sees the pairs of its
sampled rows.
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

from dore.model.atlop import at_loss

PREFIX = "dore_entities."
PAIR_RANK = 256  # width of the pair term's bilinear form (ATLOP's grouped bilinear reads 768 x 64 features)
RELATION_LOGITS = ("both", "pair", "decoder")

# (per-row table [rows, n_slots, dim], slot of each vocabulary id [vocab] (-1: not an entity)),
# set only while the decoder runs: the encoder of BART/T5 shares the embedding module.
_READING: ContextVar[tuple[Tensor, Tensor] | None] = ContextVar("dore_entity_reading", default=None)


class PairScorer(nn.Module):
    """Relation logits of (head, tail) pairs from their pooled encoder states: a bilinear form of
    rank `rank`, tanh(W_h h) * tanh(W_t t) read by one linear layer over the relation labels."""

    def __init__(self, encoder_dim: int, n_labels: int, rank: int = PAIR_RANK):
        super().__init__()
        self.head, self.tail = nn.Linear(encoder_dim, rank), nn.Linear(encoder_dim, rank)
        self.label = nn.Linear(rank, n_labels)
        nn.init.zeros_(self.label.weight)
        nn.init.zeros_(self.label.bias)

    def features(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        """Each slot's head and tail features [docs, n_slots, rank], computed once per document."""
        return torch.tanh(self.head(pooled)), torch.tanh(self.tail(pooled))

    def score(self, head_features: Tensor, tail_features: Tensor) -> Tensor:
        return self.label(head_features * tail_features)


def dense_pair_loss(module: "EntityEmbeddings", source_ids: Tensor, encoder_hidden: Tensor, slot_ids: Tensor,
                    labels: Tensor, pairs: Tensor) -> Tensor:
    """ATLOP's adaptive-threshold loss of the pair term alone over every scored pair of each
    document, NA as the threshold class: relations above NA, NA above the rest.

    `labels` [docs, n_slots, n_slots, n_relations + 1] multi-hot (the last column NA), `pairs`
    [docs, n_slots, n_slots] bool: the (head, tail) slot pairs scored; a slot whose markers were
    truncated away has no pooled state and is left out."""
    pooled = module.pooled(source_ids, encoder_hidden, slot_ids)
    head, tail = module.pair.features(pooled)
    present = (source_ids[..., None] == slot_ids).any(1)  # [docs, n_slots]
    pairs = pairs & present[:, :, None] & present[:, None, :]
    if not pairs.any():
        return pooled.sum() * 0.0  # no pair: a zero that keeps the graph
    docs, heads, tails = pairs.nonzero(as_tuple=True)
    scores = module.pair.score(head[docs, heads], tail[docs, tails])  # [pairs, n_relations + 1]
    target = labels[docs, heads, tails]
    return at_loss(scores.roll(1, -1), target.roll(1, -1))  # NA first: at_loss thresholds at column 0


class EntityEmbeddings(nn.Module):
    def __init__(self, encoder_dim: int, decoder_dim: int, n_slots: int, pair_labels: int | None = None,
                 pair_rank: int = PAIR_RANK):
        super().__init__()
        self.n_slots = n_slots
        self.project = nn.Linear(encoder_dim, decoder_dim)
        nn.init.zeros_(self.project.weight)
        nn.init.zeros_(self.project.bias)
        self.pair = None if pair_labels is None else PairScorer(encoder_dim, pair_labels, pair_rank)
        self.relation_logits = "both"  # an inference switch (module doc), never saved

    def pooled(self, source_ids: Tensor, encoder_hidden: Tensor, slot_ids: Tensor) -> Tensor:
        """[docs, n_slots, encoder_dim]: the mean encoder state at each slot's markers (`slot_ids`:
        the token id of each slot); 0 for a slot without markers."""
        marks = (source_ids[..., None] == slot_ids).to(encoder_hidden.dtype)  # [docs, S, n_slots]
        summed = torch.einsum("dsn,dsh->dnh", marks, encoder_hidden)
        return summed / marks.sum(1).clamp(min=1)[..., None]

    def table(self, source_ids: Tensor, encoder_hidden: Tensor, slot_ids: Tensor) -> Tensor:
        """[docs, n_slots, decoder_dim]: the projected `pooled` states."""
        return self.project(self.pooled(source_ids, encoder_hidden, slot_ids))


def of(model: nn.Module) -> EntityEmbeddings | None:
    """The module of a model (also inside a DDP wrapper), or None."""
    model = getattr(model, "module", model)
    return getattr(model, "dore_entities", None)


def _dims(model: PreTrainedModel) -> tuple[int, int]:
    decoder_dim = model.get_decoder().get_input_embeddings().embedding_dim
    if isinstance(model, EncoderDecoderModel):
        return model.config.encoder.hidden_size, decoder_dim
    return model.config.d_model, decoder_dim


def attach(model: PreTrainedModel, n_slots: int, pair_labels: int | None = None,
           pair_rank: int = PAIR_RANK) -> EntityEmbeddings:
    """Give `model` document-aware entity symbols (idempotent); returns the module. `pair_labels`:
    with pair-aware relation logits over that many labels (relations and NA)."""
    module = of(model)
    if module is None:
        module = EntityEmbeddings(*_dims(model), n_slots, pair_labels, pair_rank).to(model.device)
        model.dore_entities = module  # a submodule: parameters, state_dict, .to() follow it
    embeddings = model.get_decoder().get_input_embeddings()
    if not getattr(embeddings, "_dore_entity_hook", False):
        embeddings.register_forward_hook(_add_to_embeddings)
        embeddings._dore_entity_hook = True
    return module


def set_relation_logits(model: nn.Module, mode: str) -> None:
    """Which parts score relation symbols at inference: "both", "pair" or "decoder" (module doc)."""
    if mode not in RELATION_LOGITS:
        raise ValueError(f"relation_logits must be one of {RELATION_LOGITS}, not {mode!r}")
    module = of(model)
    if module is None or module.pair is None:
        if mode != "both":
            raise ValueError(f"relation_logits {mode!r} needs a model trained with pair_logits")
        return
    module.relation_logits = mode


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


def saved_pair_shape(state: dict[str, Tensor]) -> tuple[int | None, int]:
    """(labels, rank) of the pair term in a saved module's `state`; labels None: saved without it."""
    if "pair.label.weight" not in state:
        return None, PAIR_RANK
    labels, rank = state["pair.label.weight"].shape
    return labels, rank


def saved_state(directory: str | Path) -> dict[str, Tensor]:
    """The module's tensors in a saved model's safetensors files (empty: saved without it)."""
    state = {}
    for path in sorted(Path(directory).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as fh:
            state.update({k.removeprefix(PREFIX): fh.get_tensor(k) for k in fh.keys() if k.startswith(PREFIX)})
    return state

