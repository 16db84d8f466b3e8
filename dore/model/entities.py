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
sampled rows. `TrainConfig.pair_scorer` chooses the pair representation: "low-rank" (the mean
marker state, a rank-256 bilinear form) or "atlop" (ATLOP's, without its context pooling: the
logsumexp of the mention start markers' states and a group bilinear form over blocks of 64). The
"atlop" term can start as a trained classifier's head (`TrainConfig.teacher_pair_head`,
`dore.model.backbone.load_classifier_pair_head`): same features, same form.

Pair-aware tail logits (`TrainConfig.tail_logits`) let the pair term also choose which tails a
row writes: where the decoder's next symbol is a tail or EOS (after the head, after a relation),
each entity's logit gets the pair term's evidence that (head, entity) holds a relation, times a
learned scale (`PairScorer.tail_evidence`). Without them the decoder alone decides which pairs
are written, and the pair term only labels them.
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


PAIR_SCORERS = ("low-rank", "atlop")
PAIR_BLOCK = 64  # ATLOP's group bilinear block size


class PairScorer(nn.Module):
    """Relation logits of (head, tail) pairs from their pooled encoder states.

    - "low-rank": tanh(W_h h) * tanh(W_t t) of width `rank`, read by one linear layer;
    - "atlop": z_h = tanh(W_h h), z_t = tanh(W_t t) of the encoder's width, cut into blocks of 64,
      and score_r = sum over blocks g of z_h[g]' B_r[g] z_t[g] + b_r (ATLOP's group bilinear).

    Both are bilinear in the head and tail features, so a head's `maps` [..., K, n_labels] are
    computed once and each tail reads them with one product (`score`); the outer products of the
    group bilinear are never materialised. The label weights start at zero: the model starts as
    without the term."""

    def __init__(self, encoder_dim: int, n_labels: int, rank: int = PAIR_RANK, kind: str = "low-rank"):
        super().__init__()
        if kind not in PAIR_SCORERS:
            raise ValueError(f"pair scorer {kind!r}; choose one of {', '.join(PAIR_SCORERS)}")
        self.kind = kind
        if kind == "low-rank":
            self.head, self.tail = nn.Linear(encoder_dim, rank), nn.Linear(encoder_dim, rank)
            self.label = nn.Linear(rank, n_labels)
            nn.init.zeros_(self.label.weight)
            nn.init.zeros_(self.label.bias)
        else:
            if encoder_dim % PAIR_BLOCK:
                raise ValueError(f"the atlop pair scorer cuts {encoder_dim} features into blocks of {PAIR_BLOCK}")
            self.head, self.tail = nn.Linear(encoder_dim, encoder_dim), nn.Linear(encoder_dim, encoder_dim)
            self.bilinear = nn.Parameter(torch.zeros(encoder_dim // PAIR_BLOCK, PAIR_BLOCK, PAIR_BLOCK, n_labels))
            self.bias = nn.Parameter(torch.zeros(n_labels))
        self.tail_scale: nn.Parameter | None = None  # pair-aware tail logits (`add_tail_logits`), when trained so

    def features(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        """Each slot's head and tail features [docs, n_slots, K], computed once per document."""
        return torch.tanh(self.head(pooled)), torch.tanh(self.tail(pooled))

    def maps(self, head_features: Tensor) -> Tensor:
        """[..., K, n_labels]: what a head's features make of a tail's (see `score`)."""
        if self.kind == "low-rank":
            return head_features[..., None] * self.label.weight.t()
        blocks = head_features.unflatten(-1, (-1, PAIR_BLOCK))  # [..., G, B]
        return torch.einsum("...gb,gbcl->...gcl", blocks, self.bilinear).flatten(-3, -2)

    @property
    def label_bias(self) -> Tensor:
        return self.label.bias if self.kind == "low-rank" else self.bias

    def score(self, head_features: Tensor, tail_features: Tensor) -> Tensor:
        """[..., n_labels] for heads and tails of the same shape [..., K]."""
        return (tail_features.unsqueeze(-2) @ self.maps(head_features)).squeeze(-2) + self.label_bias

    def add_tail_logits(self, scale: float = 0.0) -> None:
        """Pair-aware tail logits (`TrainConfig.tail_logits`): a learned scale of `tail_evidence`,
        0 to start as without them (1: trust a teacher's head as it is)."""
        self.tail_scale = nn.Parameter(torch.tensor(float(scale), device=self.label_bias.device))

    def tail_evidence(self, head_features: Tensor, tail_features: Tensor) -> Tensor:
        """[rows, n_slots]: for each row's head [rows, K] and every slot as its tail [rows, n_slots, K],
        the scaled evidence that the pair holds a relation: logsumexp of the relation scores minus NA's
        (NA is the last label), the margin by which ATLOP's threshold rule would call the pair positive."""
        scores = torch.bmm(tail_features, self.maps(head_features)) + self.label_bias
        return self.tail_scale * (scores[..., :-1].logsumexp(-1) - scores[..., -1])


def start_markers(source_ids: Tensor, slot_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(document, position, slot) of each mention's start marker, in reading order. A mention is
    wrapped in its slot's token on both sides (`encode_document`), so the starts are a slot's 1st,
    3rd, 5th, ... occurrences; only nested mentions of one entity (rare) would shift this."""
    n = len(slot_ids)
    doc, position, slot = (source_ids[..., None] == slot_ids).nonzero(as_tuple=True)  # by document, then position
    group = doc * n + slot
    counts = torch.bincount(group, minlength=source_ids.shape[0] * n)
    order = torch.argsort(group, stable=True)
    rank = torch.empty_like(group)
    rank[order] = torch.arange(len(group), device=group.device) - (counts.cumsum(0) - counts)[group[order]]
    start = rank % 2 == 0
    return doc[start], position[start], slot[start]


def logsumexp_pooled(source_ids: Tensor, encoder_hidden: Tensor, slot_ids: Tensor) -> Tensor:
    """[docs, n_slots, H]: the logsumexp of the encoder states at each slot's mention start markers
    (ATLOP's entity embedding, as the classifier computes it), 0 for a slot without markers; over
    the markers only, never a dense [docs, n_slots, S, H] tensor."""
    docs, _, hidden = encoder_hidden.shape
    n = len(slot_ids)
    doc, position, slot = start_markers(source_ids, slot_ids)
    values = encoder_hidden[doc, position]  # [markers, H]
    group = doc * n + slot  # each marker's (document, slot)
    peak = values.new_full((docs * n, hidden), float("-inf")).scatter_reduce(
        0, group[:, None].expand_as(values), values.detach(), "amax")
    peak = torch.where(torch.isinf(peak), torch.zeros_like(peak), peak)
    summed = values.new_zeros(docs * n, hidden).index_add(0, group, (values - peak[group]).exp())
    present = summed > 0
    pooled = torch.where(present, summed.clamp(min=1e-30).log() + peak, torch.zeros_like(summed))
    return pooled.view(docs, n, hidden)


def dense_pair_loss(module: "EntityEmbeddings", source_ids: Tensor, encoder_hidden: Tensor, slot_ids: Tensor,
                    labels: Tensor, pairs: Tensor) -> Tensor:
    """ATLOP's adaptive-threshold loss of the pair term alone over every scored pair of each
    document, NA as the threshold class: relations above NA, NA above the rest.

    `labels` [docs, n_slots, n_slots, n_relations + 1] multi-hot (the last column NA), `pairs`
    [docs, n_slots, n_slots] bool: the (head, tail) slot pairs scored; a slot whose markers were
    truncated away has no pooled state and is left out."""
    head, tail = module.pair.features(module.pair_pooled(source_ids, encoder_hidden, slot_ids))
    present = (source_ids[..., None] == slot_ids).any(1)  # [docs, n_slots]
    pairs = pairs & present[:, :, None] & present[:, None, :]
    if not pairs.any():
        return head.sum() * 0.0  # no pair: a zero that keeps the graph
    # every (head, tail) of a document at once: the heads' maps once, not once per pair
    grid = torch.einsum("dtk,dhkl->dhtl", tail, module.pair.maps(head)) + module.pair.label_bias
    docs, heads, tails = pairs.nonzero(as_tuple=True)
    scores = grid[docs, heads, tails]  # [pairs, n_relations + 1]
    target = labels[docs, heads, tails]
    return at_loss(scores.roll(1, -1), target.roll(1, -1))  # NA first: at_loss thresholds at column 0


class EntityEmbeddings(nn.Module):
    def __init__(self, encoder_dim: int, decoder_dim: int, n_slots: int, pair_labels: int | None = None,
                 pair_rank: int = PAIR_RANK, pair_kind: str = "low-rank"):
        super().__init__()
        self.n_slots = n_slots
        self.project = nn.Linear(encoder_dim, decoder_dim)
        nn.init.zeros_(self.project.weight)
        nn.init.zeros_(self.project.bias)
        self.pair = None if pair_labels is None else PairScorer(encoder_dim, pair_labels, pair_rank, pair_kind)
        self.relation_logits = "both"  # an inference switch (module doc), never saved

    def pooled(self, source_ids: Tensor, encoder_hidden: Tensor, slot_ids: Tensor) -> Tensor:
        """[docs, n_slots, encoder_dim]: the mean encoder state at each slot's markers (`slot_ids`:
        the token id of each slot); 0 for a slot without markers."""
        marks = (source_ids[..., None] == slot_ids).to(encoder_hidden.dtype)  # [docs, S, n_slots]
        summed = torch.einsum("dsn,dsh->dnh", marks, encoder_hidden)
        return summed / marks.sum(1).clamp(min=1)[..., None]

    def pair_pooled(self, source_ids: Tensor, encoder_hidden: Tensor, slot_ids: Tensor,
                    mean: Tensor | None = None) -> Tensor:
        """What the pair term reads of each slot: `pooled` (given as `mean` when already computed),
        or the logsumexp for the "atlop" scorer."""
        if self.pair is not None and self.pair.kind == "atlop":
            return logsumexp_pooled(source_ids, encoder_hidden, slot_ids)
        return self.pooled(source_ids, encoder_hidden, slot_ids) if mean is None else mean

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
           pair_rank: int = PAIR_RANK, pair_kind: str = "low-rank", tail_logits: bool = False) -> EntityEmbeddings:
    """Give `model` document-aware entity symbols (idempotent); returns the module. `pair_labels`:
    with pair-aware relation logits over that many labels (relations and NA); `tail_logits`: and
    pair-aware tail logits."""
    module = of(model)
    if module is None:
        module = EntityEmbeddings(*_dims(model), n_slots, pair_labels, pair_rank, pair_kind).to(model.device)
        if tail_logits:
            module.pair.add_tail_logits()
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


def saved_tail_logits(state: dict[str, Tensor]) -> bool:
    """Whether a saved module's `state` has pair-aware tail logits."""
    return "pair.tail_scale" in state


def saved_pair_shape(state: dict[str, Tensor]) -> tuple[int | None, int, str]:
    """(labels, rank, kind) of the pair term in a saved module's `state`; labels None: saved without it."""
    if "pair.bilinear" in state:
        return state["pair.bilinear"].shape[-1], state["pair.head.weight"].shape[0], "atlop"
    if "pair.label.weight" not in state:
        return None, PAIR_RANK, "low-rank"
    labels, rank = state["pair.label.weight"].shape
    return labels, rank, "low-rank"


def saved_state(directory: str | Path) -> dict[str, Tensor]:
    """The module's tensors in a saved model's safetensors files (empty: saved without it)."""
    state = {}
    for path in sorted(Path(directory).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as fh:
            state.update({k.removeprefix(PREFIX): fh.get_tensor(k) for k in fh.keys() if k.startswith(PREFIX)})
    return state

