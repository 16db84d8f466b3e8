"""Deterministic, weight-free coreference over a document's gold NER mentions (`string-match`).

Mentions are the distinct spans of `Document.extra_mentions` (SciREX `ner`; the first type wins
for a repeated span). A mention is linked only to mentions **of the same NER type**, through its
normalised string (its *key*): mentions corefer when their keys are connected by the rules below
(union-find over keys, so the result does not depend on mention order).

Normalisation of a mention's words: a plural acronym loses its "s" ("CNNs" -> "CNN"); lower-case;
every character that is not a letter or digit removed (so "Bi - LSTM", "Bi-LSTM" and "BiLSTM"
agree); tokens left empty dropped; determiners and possessives ("the", "a", "our", ...) dropped;
each token singularised by suffix rules ("networks" -> "network", "entries" -> "entry"). A mention
"long ( short )" is normalised as its long form. The key is the tokens joined without spaces.

Rules (each can be switched off in `StringMatchConfig`):

1. **Same key** (always): case, hyphenation, plural and determiner variants.
2. **Generic heads**: trailing generic words of the type ("dataset", "corpus" for Material;
   "task" for Task; "score" for Metric; "model", "network" for Method) are left out of the key
   while something remains, so "SQuAD dataset" ~ "SQuAD", "F1 score" ~ "F1".
3. **Acronyms**: a one-word mention written with at least two capitals ("CNN", "mAP", "ELUs") is
   linked to every mention whose initials spell it: "convolutional neural network", "long short -
   term memory" (a hyphenated compound gives one initial or one per part), "question answering over
   knowledge bases" (with or without function words).
4. **Definitions**: a long form directly followed by a bracketed short form, "natural language
   inference ( NLI )", links the two when the short form's letters occur in order in the long
   form, starting with its first letter (irregular acronyms such as "SNLI" or "RGCNN"). The short
   form need not be a mention: its key is linked, and its later mentions follow. A mention that
   holds the whole "long ( short )" counts too.
5. **Head match**: a key that ends other keys of the type ("translation" in "machine
   translation") is linked to the one of them with the most mentions, then the fewest words; on a
   full tie it is linked to none, so a generic head cannot chain unrelated entities together.
6. **Name variants**: a one-word name written with two capitals ("CIFAR", "MPII", "Res2Net") is
   linked in the same way to a key it begins ("CIFAR - 10", "MPII Human Pose").

Tuned on SciREX train (never on dev or test): every rule adds to the mean of MUC, B³ and CEAF-e F1
against the gold salient clusters (`dore.coref.quality`).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import partial

from dore.coref.result import CorefDoc, Span, typed_doc
from dore.data.model import Document

DETERMINERS = frozenset({"a", "an", "the", "this", "that", "these", "those", "our", "its", "their", "his", "her",
                         "my", "your", "each", "every"})
FUNCTION_WORDS = frozenset({"of", "for", "and", "on", "in", "with", "over", "to", "by", "from", "at", "via"})
GENERIC_HEADS: dict[str, frozenset[str]] = {
    "Material": frozenset({"dataset", "data", "corpus", "corpora", "benchmark", "database", "collection"}),
    "Task": frozenset({"task", "problem"}),
    "Metric": frozenset({"score", "metric", "measure"}),
    "Method": frozenset({"model", "method", "approach", "algorithm", "framework", "architecture", "network",
                         "representation", "module"}),
}
_NOT_ALNUM = re.compile(r"[^0-9a-z]+")
_PLURAL_ACRONYM = re.compile(r"^[A-Za-z0-9]*[A-Z][A-Za-z0-9]*[A-Z0-9]s$")
_OPEN, _CLOSE, _HYPHENS = ("(", "["), (")", "]"), ("-", "–", "—")


@dataclass(frozen=True)
class StringMatchConfig:
    generic_heads: bool = True
    acronyms: bool = True
    definitions: bool = True
    head_match: bool = True
    name_variants: bool = True
    max_short_form: int = 3  # most words between the brackets of a definition

    def to_dict(self) -> dict:
        return asdict(self)


def singular(token: str) -> str:
    """Suffix-rule singular of a lower-case token; short and non-alphabetic tokens are kept."""
    if len(token) <= 3 or not token.isalpha():
        return token
    if token.endswith("ies") and len(token) > 4:
        return token[:-3] + "y"
    if token.endswith(("sses", "shes", "ches", "xes")):
        return token[:-2]
    if token.endswith("s") and not token.endswith(("ss", "us", "is")):
        return token[:-1]
    return token


def normalize(words: Sequence[str]) -> tuple[str, ...]:
    """The normalised tokens of a mention's words (see the module docstring)."""
    tokens = (_NOT_ALNUM.sub("", (w[:-1] if _PLURAL_ACRONYM.match(w) else w).lower()) for w in words)
    return tuple(singular(t) for t in tokens if t and t not in DETERMINERS)


def is_short_form(words: Sequence[str]) -> bool:
    """One word (hyphens aside) written with at least two capitals: "CNN", "mAP", "Bi - LSTM"."""
    text = "".join(words)
    return 2 <= len(text) <= 12 and sum(c.isupper() for c in text) >= 2 and len(normalize(words)) >= 1 \
        and all(w in _HYPHENS or _NOT_ALNUM.sub("", w.lower()) for w in words)


def initials(words: Sequence[str]) -> set[str]:
    """The acronyms a long form's words can spell: a hyphenated compound gives one initial or one
    per part; function words are counted or skipped. Empty for fewer than two words."""
    if len(words) < 2:
        return set()
    compounds: list[list[str]] = []  # each: the normalised parts of one hyphenated compound
    joined = False
    for w in words:
        if w in _HYPHENS:
            joined = bool(compounds)
            continue
        tokens = normalize([w])
        if tokens:
            if joined:
                compounds[-1].append(tokens[0])
            else:
                compounds.append([tokens[0]])
        joined = False
    out = set()
    for skip_function_words in (False, True):
        kept = [c for c in compounds if not (skip_function_words and c[0] in FUNCTION_WORDS)]
        for letters in ("".join(c[0][0] for c in kept), "".join(p[0] for c in kept for p in c)):
            if len(letters) >= 2:
                out.add(letters)
    return out


def abbreviates(short: str, long_tokens: Sequence[str]) -> bool:
    """`short`'s letters occur in order in the long form, the first at the long form's start."""
    long = "".join(long_tokens)
    if not short or not long or short[0] != long[0]:
        return False
    rest = iter(long)
    return all(c in rest for c in short)


class _UnionFind:
    def __init__(self):
        self.parent: dict = {}

    def find(self, x):
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a, b) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)  # the smaller node is the root: order-independent


class StringMatch:
    """The `string-match` backend (setting `gold_mentions_pred_clusters`)."""

    name = "string-match"
    setting = "gold_mentions_pred_clusters"

    def __init__(self, config: StringMatchConfig | None = None):
        self.config = config or StringMatchConfig()

    def parameters(self) -> dict:
        return self.config.to_dict()

    def report(self) -> dict:
        return {}

    def resolve(self, docs: Iterable[Document]) -> list[CorefDoc]:
        return [typed_doc(doc, self.clusters(doc), with_mentions=False) for doc in docs]

    def clusters(self, doc: Document) -> list[list[Span]]:
        """The clusters of one document's NER mentions (singletons included), in no set order."""
        cfg, words = self.config, doc.tokens
        mention_type: dict[Span, str] = {}
        for m in doc.extra_mentions:
            if m.type is not None:
                mention_type.setdefault((m.start, m.end), m.type)
        long_words = {span: _long_form(words[span[0]:span[1]]) for span in mention_type}
        tokens_of = {span: normalize(long_words[span]) for span in mention_type}
        key_of = {span: self._key(tokens_of[span], t) for span, t in mention_type.items()}

        links = _UnionFind()
        for span, t in mention_type.items():
            if key_of[span]:
                links.find((t, key_of[span]))
        if cfg.definitions:
            for span, short in self._definitions(words, mention_type):
                links.union((mention_type[span], key_of[span]), (mention_type[span], short))
        if cfg.acronyms:
            by_initials: dict[tuple[str, str], set[str]] = defaultdict(set)
            for span, t in mention_type.items():
                for letters in initials(long_words[span]):
                    by_initials[t, letters].add(key_of[span])
            for span, t in mention_type.items():
                if is_short_form(words[span[0]:span[1]]):
                    for long_key in by_initials.get((t, "".join(tokens_of[span])), ()):
                        links.union((t, key_of[span]), (t, long_key))
        if cfg.head_match or cfg.name_variants:
            counts: dict[str, Counter[tuple[str, ...]]] = defaultdict(Counter)
            names: dict[str, set[str]] = defaultdict(set)
            for span, t in mention_type.items():
                if tokens_of[span]:
                    counts[t][self._stripped(tokens_of[span], t)] += 1
                    if len(tokens_of[span]) == 1 and is_short_form(words[span[0]:span[1]]):
                        names[t].add(tokens_of[span][0])
            for t, count in counts.items():
                if cfg.head_match:
                    for short, longer in _extensions(count, _tails):
                        links.union((t, "".join(short)), (t, "".join(longer)))
                if cfg.name_variants:
                    for name, longer in _extensions(count, partial(_name_head, names=names[t])):
                        links.union((t, "".join(name)), (t, "".join(longer)))

        groups: dict[object, list[Span]] = defaultdict(list)
        for span, t in mention_type.items():
            # A mention with nothing left after normalisation (e.g. "%") only matches itself.
            groups[links.find((t, key_of[span])) if key_of[span] else span].append(span)
        return list(groups.values())

    def _stripped(self, tokens: tuple[str, ...], mtype: str) -> tuple[str, ...]:
        if self.config.generic_heads:
            generic = GENERIC_HEADS.get(mtype, frozenset())
            while len(tokens) > 1 and tokens[-1] in generic:
                tokens = tokens[:-1]
        return tokens

    def _key(self, tokens: tuple[str, ...], mtype: str) -> str:
        return "".join(self._stripped(tokens, mtype))

    def _definitions(self, words: Sequence[str], mention_type: dict[Span, str]) -> Iterable[tuple[Span, str]]:
        """(long-form mention, short-form key) for every "long ( short )" at or inside a mention."""
        limit = self.config.max_short_form
        for s, e in mention_type:
            short_span = _bracketed_at(words, e, limit) or _bracketed_inside(words, s, e, limit)
            if short_span is None:
                continue
            long_tokens = normalize(words[s:min(e, short_span[0] - 1)])
            short = "".join(normalize(words[short_span[0]:short_span[1]]))
            if len(long_tokens) >= 2 and len(short) >= 2 and abbreviates(short, long_tokens):
                yield (s, e), short


def _extensions(counts: Counter[tuple[str, ...]], parts: Callable[[tuple[str, ...]], list[tuple[str, ...]]]
                ) -> Iterable[tuple[tuple[str, ...], tuple[str, ...]]]:
    """(key, the longer key it stands for) for every key that is one of `parts(k)` of other keys k.

    The longer key is the one with the most mentions, then the fewest words; when two tie on
    both, the key stands for neither.
    """
    extensions: dict[tuple[str, ...], list[tuple[str, ...]]] = defaultdict(list)
    for key in counts:
        for part in parts(key):
            if part in counts and part != key:
                extensions[part].append(key)
    for short, longer in extensions.items():
        ranked = sorted((-counts[k], len(k), k) for k in longer)
        if len(ranked) == 1 or ranked[0][:2] != ranked[1][:2]:
            yield short, ranked[0][2]


def _tails(key: tuple[str, ...]) -> list[tuple[str, ...]]:
    return [key[i:] for i in range(1, len(key))]


def _name_head(key: tuple[str, ...], names: set[str]) -> list[tuple[str, ...]]:
    return [key[:1]] if key[0] in names else []


def _bracketed_at(words: Sequence[str], i: int, limit: int) -> Span | None:
    """[start, end) of the 1..limit words inside a bracket pair opening at word i."""
    if i >= len(words) or words[i] not in _OPEN:
        return None
    close = next((j for j in range(i + 1, min(len(words), i + limit + 2)) if words[j] in _CLOSE), None)
    return (i + 1, close) if close is not None and close > i + 1 else None


def _bracketed_inside(words: Sequence[str], s: int, e: int, limit: int) -> Span | None:
    """The bracketed short form that ends a mention words[s:e] = "long ( short )", if any."""
    if e - s < 4 or words[e - 1] not in _CLOSE:
        return None
    opening = next((i for i in range(e - 2, s, -1) if words[i] in _OPEN), None)
    inside = _bracketed_at(words, opening, limit) if opening is not None else None
    return inside if inside is not None and inside[1] == e - 1 else None


def _long_form(words: Sequence[str]) -> Sequence[str]:
    """A mention "long ( short )" stands for its long form."""
    opening = next((i for i, w in enumerate(words) if i > 0 and w in _OPEN), None)
    return words[:opening] if opening is not None else words
