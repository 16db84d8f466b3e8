"""ATLOP (Zhou et al., 2021) on a seq2seq backbone's encoder: the classification baseline's model.

- **Entity embedding**: logsumexp over the hidden states at the entity's mention start markers
  (zeros for an entity whose every mention was truncated away, as ATLOP).
- **Localized context pooling**: the last encoder layer's attention from the start markers,
  averaged over an entity's mentions; a pair's context is the hidden states weighted by the
  head-mean of head x tail attention, renormalised. Needs eager attention (set on the encoder);
  LED's windowed attention has another shape, so LED runs with `context_pooling=False`.
- **Group bilinear classifier**: `tanh(W [entity; context])` for head and tail, then a bilinear
  layer over groups of `block_size` (64, or the embedding size when smaller).
- **Adaptive threshold**: class 0 is ATLOP's TH class; `at_loss` is ATLoss, `at_predict` keeps
  the relations whose logit exceeds TH (at most `top_k`, ATLOP's 4).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from transformers import PretrainedConfig, PreTrainedModel

TH = 0  # the adaptive-threshold class; relation i of the layout is class i + 1


# --- loss and decoding -----------------------------------------------------------------------

def at_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """ATLOP's adaptive-threshold loss. `labels` [pairs, classes] is multi-hot over relations;
    its TH column is ignored. Positives are ranked above TH (softmax over positives and TH),
    TH above the negatives (softmax over TH and negatives); mean over pairs."""
    logits, labels = logits.float(), labels.float().clone()
    labels[:, TH] = 0
    th = torch.zeros_like(labels)
    th[:, TH] = 1
    very_low = -1e30  # not -inf: 0 * -inf would be nan where a class is masked out
    positives = logits.masked_fill((labels + th) == 0, very_low)
    negatives = logits.masked_fill(labels == 1, very_low)
    loss_pos = -(positives.log_softmax(-1) * labels).sum(1)
    loss_th = -(negatives.log_softmax(-1) * th).sum(1)
    return (loss_pos + loss_th).mean()


def at_predict(logits: Tensor, top_k: int | None = None) -> Tensor:
    """Bool [pairs, classes]: the classes scored above TH (at most `top_k` of the highest);
    TH is set where no relation is."""
    keep = logits > logits[:, TH: TH + 1]
    if top_k:
        kth = logits.topk(min(top_k, logits.shape[1]), dim=1).values[:, -1:]
        keep &= logits >= kth
    keep[:, TH] = ~keep[:, TH + 1:].any(1)
    return keep


# --- the model -------------------------------------------------------------------------------

class ATLOP(nn.Module):
    """Encoder + logsumexp entities + localized context pooling + group bilinear classifier."""

    def __init__(self, encoder: PreTrainedModel, n_classes: int, *, emb_size: int | None = None,
                 block_size: int = 64, context_pooling: bool = True):
        super().__init__()
        hidden = encoder.config.hidden_size
        emb_size = emb_size or hidden
        block_size = min(block_size, emb_size)
        if emb_size % block_size:
            raise ValueError(f"block_size {block_size} does not divide emb_size {emb_size}")
        if context_pooling:
            _use_eager_attention(encoder)
        self.encoder, self.context_pooling = encoder, context_pooling
        self.emb_size, self.block_size, self.n_classes = emb_size, block_size, n_classes
        features = 2 * hidden if context_pooling else hidden
        self.head_extractor = nn.Linear(features, emb_size)
        self.tail_extractor = nn.Linear(features, emb_size)
        self.bilinear = nn.Linear(emb_size * block_size, n_classes)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, starts: Sequence[Sequence[Sequence[int]]],
                pairs: Sequence[Tensor]) -> Tensor:
        """Logits [all pairs of the batch, classes]. `starts[d][e]`: start-marker positions of
        entity e of document d; `pairs[d]` [n, 2] (head, tail) entity indices."""
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                           output_attentions=self.context_pooling, return_dict=True)
        hidden = out.last_hidden_state
        if self.context_pooling and not out.attentions:
            raise RuntimeError(f"{type(self.encoder).__name__} returned no attention weights for context pooling")
        heads, tails = [], []
        for d, doc_pairs in enumerate(pairs):
            attention = out.attentions[-1][d] if self.context_pooling else None  # [heads, L, L]
            emb, att = self._entities(hidden[d], attention, starts[d])
            h, t = doc_pairs[:, 0], doc_pairs[:, 1]
            if self.context_pooling:
                ht = (att[h] * att[t]).mean(1)  # [pairs, L]
                context = (ht / (ht.sum(1, keepdim=True) + 1e-5)) @ hidden[d]
                heads.append(torch.cat([emb[h], context], 1))
                tails.append(torch.cat([emb[t], context], 1))
            else:
                heads.append(emb[h])
                tails.append(emb[t])
        zh = torch.tanh(self.head_extractor(torch.cat(heads)))
        zt = torch.tanh(self.tail_extractor(torch.cat(tails)))
        return self.bilinear(self.group_bilinear_features(zh, zt))

    def group_bilinear_features(self, zh: Tensor, zt: Tensor) -> Tensor:
        """[n, emb] x [n, emb] -> [n, emb * block]: the outer product inside each group."""
        groups = (-1, self.emb_size // self.block_size, self.block_size)
        outer = zh.view(groups).unsqueeze(3) * zt.view(groups).unsqueeze(2)  # [n, groups, block, block]
        return outer.reshape(-1, self.emb_size * self.block_size)

    def _entities(self, hidden: Tensor, attention: Tensor | None,
                  starts: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor | None]:
        embs, atts = [], []
        for positions in starts:
            if positions:
                index = torch.tensor(positions, device=hidden.device)
                embs.append(hidden[index].logsumexp(0))
                if attention is not None:
                    atts.append(attention[:, index].mean(1))
            else:  # every mention truncated away
                embs.append(hidden.new_zeros(hidden.shape[-1]))
                if attention is not None:
                    atts.append(attention.new_zeros(attention.shape[0], attention.shape[-1]))
        return torch.stack(embs), torch.stack(atts) if attention is not None else None


def _use_eager_attention(encoder: PreTrainedModel) -> None:
    """Fused attention kernels (sdpa) return no weights. Every module's config is switched:
    EncoderDecoderModel gives its encoder a new config object after the layers took theirs, so
    `set_attn_implementation` alone leaves MiniLM's layers on sdpa."""
    encoder.set_attn_implementation("eager")
    for module in encoder.modules():
        if isinstance(getattr(module, "config", None), PretrainedConfig):
            module.config._attn_implementation = "eager"

