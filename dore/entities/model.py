"""The entity network: one encoder, two heads (mention tagger, antecedent scorer), trained together.

- **Mentions: BIO tagging** of each word, read at its first piece (`dore.entities.encoder`), with
  tags O, B-type, I-type for the types of the training data. Chosen over span classification
  because DocRED's mentions are short, flat and almost never nested (the few nested or
  overlapping gold mentions are counted and left out of the tags), a tagger costs one linear layer
  and no span enumeration on 2 CPU cores, and constrained Viterbi decoding (no I-X after O or
  after another type; a mention never crosses a sentence) gives well-formed spans.
- **Coreference: antecedent scoring** (Lee et al., 2017, over given mentions): a mention's vector is
  its first and last word states, their mean and its type's embedding; a pair (i, j < i) is scored
  by an MLP over [m_i, m_j, m_i * m_j, string features] (`dore.entities.coref.pair_features`); a
  dummy antecedent scores 0. Trained on gold mentions with the marginal log-likelihood of the gold
  antecedents; at inference each predicted mention links to its best antecedent when that scores
  above the dummy.
- **Word shapes** (`word_shapes`): a shape embedding (`dore.entities.encoder.word_shape`) added to
  each piece's input embedding, as a second token-type embedding would be, so the uncased encoder
  reads capitalisation in context. Zero-initialised: training starts from the pretrained encoder
  unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dore.entities.encoder import N_SHAPES

N_FEATURES = 10  # dore.entities.coref.pair_features


def hidden_size(encoder: nn.Module) -> int:
    config = encoder.config
    return getattr(config, "hidden_size", None) or config.d_model


PAIRS_PER_BLOCK = 1 << 16  # mention pairs scored at once (memory: pairs x pair-MLP input)


class EntityModel(nn.Module):
    def __init__(self, encoder: nn.Module, n_types: int, *, mention_size: int = 128, type_size: int = 32,
                 dropout: float = 0.1, word_shapes: bool = False):
        super().__init__()
        hidden = hidden_size(encoder)
        self.n_types, self.mention_size, self.type_size = n_types, mention_size, type_size
        self.encoder = encoder
        self.shape_embedding = nn.Embedding(N_SHAPES, hidden, padding_idx=0) if word_shapes else None
        if self.shape_embedding is not None:
            nn.init.zeros_(self.shape_embedding.weight)
        self.dropout = nn.Dropout(dropout)
        self.tagger = nn.Linear(hidden, 1 + 2 * n_types)
        self.type_embedding = nn.Embedding(n_types + 1, type_size)  # the last row: no type
        self.mention = nn.Sequential(nn.Linear(3 * hidden + type_size, mention_size), nn.GELU(), nn.Dropout(dropout))
        self.pair = nn.Sequential(nn.Linear(3 * mention_size + N_FEATURES, mention_size), nn.GELU(),
                                  nn.Linear(mention_size, 1))

    @property
    def word_shapes(self) -> bool:
        return self.shape_embedding is not None

    def word_states(self, input_ids: Tensor, attention_mask: Tensor, rows: Tensor, positions: Tensor,
                    shapes: Tensor | None = None) -> Tensor:
        """[words, hidden]: each word's state at its first piece in its window; `shapes` [windows,
        pieces] the pieces' shape classes (read only with `word_shapes`)."""
        if self.shape_embedding is None:
            states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        else:
            embeds = self.encoder.get_input_embeddings()(input_ids) + self.shape_embedding(shapes)
            states = self.encoder(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state
        return self.dropout(states[rows, positions])

    def tag_logits(self, words: Tensor) -> Tensor:
        return self.tagger(words)

    def mention_vectors(self, words: Tensor, spans: Tensor, types: Tensor) -> Tensor:
        """[mentions, mention_size] from one document's word states; spans [mentions, 2] end-exclusive."""
        cumulative = torch.cat([words.new_zeros(1, words.shape[1]), words.cumsum(0)])
        start, end = spans[:, 0], spans[:, 1]
        mean = (cumulative[end] - cumulative[start]) / (end - start).clamp(min=1).unsqueeze(1).to(words.dtype)
        return self.mention(torch.cat([words[start], words[end - 1], mean, self.type_embedding(types)], 1))

    def antecedent_scores(self, mentions: Tensor, features: Tensor) -> Tensor:
        """[n, n]: score of j as the antecedent of i; -inf where j >= i."""
        n = mentions.shape[0]
        rows = max(1, PAIRS_PER_BLOCK // max(n, 1))  # a whole paper has ~1k mentions: score row blocks
        blocks = []
        for first in range(0, n, rows):
            left = mentions[first: first + rows].unsqueeze(1).expand(-1, n, -1)
            right = mentions.unsqueeze(0).expand(left.shape[0], n, -1)
            blocks.append(self.pair(torch.cat([left, right, left * right, features[first: first + rows]],
                                              -1)).squeeze(-1))
        scores = torch.cat(blocks) if blocks else mentions.new_zeros(0, 0)
        earlier = torch.ones(n, n, dtype=torch.bool, device=mentions.device).tril(-1)
        return scores.masked_fill(~earlier, float("-inf"))


def antecedent_loss(scores: Tensor, cluster: Tensor) -> Tensor:
    """Mean over mentions of -log P(a gold antecedent), the dummy (score 0) gold when none is earlier.
    `cluster` [n]: each gold mention's entity index."""
    n = scores.shape[0]
    with_dummy = torch.cat([scores.new_zeros(n, 1), scores], 1)
    same = (cluster.unsqueeze(1) == cluster.unsqueeze(0)) & torch.ones(n, n, dtype=torch.bool,
                                                                        device=scores.device).tril(-1)
    gold = torch.cat([~same.any(1, keepdim=True), same], 1)
    gold_scores = with_dummy.masked_fill(~gold, float("-inf"))
    return (torch.logsumexp(with_dummy, 1) - torch.logsumexp(gold_scores, 1)).mean()


def allowed_transitions(n_types: int) -> Tensor:
    """[tags, tags] bool: I-X only after B-X or I-X."""
    n = 1 + 2 * n_types
    allowed = torch.ones(n, n, dtype=torch.bool)
    for k in range(n_types):
        inside = 2 + 2 * k
        allowed[:, inside] = False
        allowed[1 + 2 * k, inside] = allowed[inside, inside] = True
    return allowed


def viterbi(log_probs: Tensor, allowed: Tensor) -> list[int]:
    """The best tag sequence of one sentence under the transition constraints (no I-X first)."""
    n_tags = log_probs.shape[1]
    penalty = torch.zeros(n_tags, n_tags).masked_fill(~allowed, float("-inf"))
    starts_inside = torch.tensor([t > 0 and t % 2 == 0 for t in range(n_tags)])
    score = log_probs[0].masked_fill(starts_inside, float("-inf"))
    back = []
    for t in range(1, log_probs.shape[0]):
        total = score.unsqueeze(1) + penalty  # [from, to]
        score, best = total.max(0)
        score = score + log_probs[t]
        back.append(best)
    path = [int(score.argmax())]
    for best in reversed(back):
        path.append(int(best[path[-1]]))
    return path[::-1]
