"""Mentions -> entities: the two coreference backends and the entity assembly they share.

- `string-match`: `dore.coref.string_match.StringMatch` (normalised exact match, head words,
  acronyms and definitions, name variants) over the *predicted* mentions with their predicted
  DocRED types; only mentions of the same type merge. SciREX's generic heads do not apply to
  DocRED's types, so that rule is idle here.
- `learned`: the antecedent scorer of `dore.entities.model`; its string features come from the
  same normalisation (`pair_features`), so the network starts from what string matching knows.

`assemble` turns clusters of mentions into `Entity` objects: entities ordered by first mention,
type = the majority of the mentions' types (ties: the first mention's), score = 1 - Π(1 - p_m)
over the mentions' confidences (the chance that at least one mention is real: entities mentioned
often rank first when a model keeps the best N).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dore.coref.string_match import StringMatch, initials, is_short_form, normalize
from dore.data.model import Document, Entity, Mention

COREF_BACKENDS = ("learned", "string-match")
DISTANCE_BUCKETS = (0, 1, 2, 4, 8)  # sentence distance lower bounds (features 5..9)


@dataclass
class PredictedMention:
    start: int
    end: int
    type: str
    confidence: float
    sent_id: int


def pair_features(words: Sequence[str], spans: Sequence[tuple[int, int]], types: Sequence[str],
                  sent_ids: Sequence[int]) -> torch.Tensor:
    """[n, n, 10] float, filled below the diagonal (j < i): same normalised string, same last word,
    one's words within the other's, acronym of the other, same type, sentence distance bucket
    (one-hot over 0, 1, 2-3, 4-7, 8+). Built as whole matrices: a paper has ~1k mentions, and a
    Python loop over its ~500k pairs took seconds."""
    n = len(spans)
    tokens = [normalize(words[s:e]) for s, e in spans]
    keys = ["".join(t) for t in tokens]
    has_words = torch.tensor([bool(t) for t in tokens], dtype=torch.bool)

    def same(values: Sequence) -> torch.Tensor:
        ids = {v: k for k, v in enumerate(dict.fromkeys(values))}
        index = torch.tensor([ids[v] for v in values], dtype=torch.long)
        return index[:, None] == index[None, :]

    both = has_words[:, None] & has_words[None, :]
    vocabulary = {w: k for k, w in enumerate(dict.fromkeys(w for t in tokens for w in t))}
    bags = torch.zeros(n, len(vocabulary))
    for i, t in enumerate(tokens):
        bags[i, [vocabulary[w] for w in set(t)]] = 1.0
    shared, sizes = bags @ bags.T, bags.sum(1)
    within = (shared == sizes[:, None]) | (shared == sizes[None, :])
    spelled_by: dict[str, list[int]] = {}
    for j, (s, e) in enumerate(spans):
        for acronym in initials(words[s:e]):
            spelled_by.setdefault(acronym, []).append(j)
    acronym = torch.zeros(n, n, dtype=torch.bool)
    for i, (s, e) in enumerate(spans):
        if is_short_form(words[s:e]):
            acronym[i, spelled_by.get(keys[i], [])] = True
    acronym = acronym | acronym.T
    sentence = torch.tensor(sent_ids, dtype=torch.long)
    distance = (sentence[:, None] - sentence[None, :]).abs()
    bucket = torch.bucketize(distance, torch.tensor(DISTANCE_BUCKETS[1:]), right=True)
    out = torch.stack([same(keys) & has_words[:, None], same([t[-1] if t else "" for t in tokens]) & both,
                       within & both, acronym, same(types)], -1).float()
    out = torch.cat([out, torch.nn.functional.one_hot(bucket, 5).float()], -1)
    return out * torch.ones(n, n).tril(-1)[..., None]


def learned_clusters(scores: torch.Tensor) -> list[list[int]]:
    """Clusters of mention indices: each mention joins its best antecedent's cluster when that
    scores above the dummy antecedent (0)."""
    n = scores.shape[0]
    cluster_of: list[int] = []
    clusters: list[list[int]] = []
    for i in range(n):
        best = int(scores[i, :i].argmax()) if i else -1
        if best >= 0 and float(scores[i, best]) > 0:
            cluster_of.append(cluster_of[best])
            clusters[cluster_of[best]].append(i)
        else:
            cluster_of.append(len(clusters))
            clusters.append([i])
    return clusters


def string_match_clusters(doc: Document, mentions: Sequence[PredictedMention],
                          matcher: StringMatch | None = None) -> list[list[int]]:
    """Clusters of mention indices by string matching among mentions of the same type."""
    matcher = matcher or StringMatch()
    probe = doc.model_copy(update={"entities": [], "extra_mentions": [
        Mention(start=m.start, end=m.end, text=" ".join(doc.tokens[m.start:m.end]), type=m.type) for m in mentions]})
    index = {(m.start, m.end): i for i, m in enumerate(mentions)}
    return [[index[tuple(span)] for span in cluster] for cluster in matcher.clusters(probe)]


def assemble(doc: Document, mentions: Sequence[PredictedMention], clusters: Sequence[Sequence[int]]
             ) -> tuple[list[Entity], list[float]]:
    """(entities ordered by first mention, their scores); mentions carry char offsets when the
    document has `meta["token_offsets"]`."""
    offsets = doc.meta.get("token_offsets")
    ordered = sorted((sorted(c, key=lambda i: (mentions[i].start, mentions[i].end)) for c in clusters if c),
                     key=lambda c: (mentions[c[0]].start, mentions[c[0]].end))
    entities, scores = [], []
    for cluster in ordered:
        members = [mentions[i] for i in cluster]
        entity_mentions = []
        for m in members:
            chars = {"char_start": offsets[m.start][0], "char_end": offsets[m.end - 1][1]} if offsets else {}
            text = (doc.text[chars["char_start"]: chars["char_end"]] if chars and doc.text is not None
                    else " ".join(doc.tokens[m.start:m.end]))
            entity_mentions.append(Mention(start=m.start, end=m.end, text=text, sent_id=m.sent_id, type=m.type,
                                           **chars))
        types = Counter(m.type for m in members)  # insertion-ordered: ties go to the first mention's type
        entities.append(Entity(mentions=entity_mentions, type=types.most_common(1)[0][0]))
        missing = 1.0
        for m in members:
            missing *= 1.0 - m.confidence
        scores.append(round(1.0 - missing, 6))
    return entities, scores
