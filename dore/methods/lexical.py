"""Lexical generation baseline (REBEL / seq2rel style): relations written as text.

The model reads exactly DORE's input (every mention wrapped in its entity's marker) and writes,
per document, one sequence of triplets

    <triplet> Julian Reinard <rel> country of citizenship <tail> Germany <triplet> ... EOS

- **Entity strings** are the entity's canonical name: the words of its first mention (DocRED's
  vertexSet name, `Entity.name`), pieced word by word exactly as in the marked input
  (`word_pieces`), so the decoder can copy the input's own pieces.
- **Relation strings** are the relation names (`rel_info.json` values, `IdLayout.relation_names`).
- **Order**: `"row-column"` (default, DORE's order): by head, then tail, in first-appearance
  numbering, several relations of one pair in relation order; `"annotation"`: as annotated.
  Duplicates are removed first; there are no negatives.
- **Separators** are three added special tokens, as REBEL (`<triplet> <subj> <obj>`) and seq2rel
  (`@CID@`...) add theirs. Ordinary punctuation does not work across DORE's backbones: a
  tokenizer keeps only what its vocabulary has (`|` is `<unk>` in the tiny T5 vocabulary, which
  also lacks `<`, `[` and `@`), and every character it does keep, but `;`, occurs in Re-DocRED
  entity names (`.`, `,`, `-`, `:`, `/`, `&`, quotes, brackets). `;` alone cannot mark both the
  triplet and the field boundaries. Added special tokens are kept by every tokenizer, are never
  split, lower-cased or merged with a neighbour, and cost one decoder step each.

`parse_lexical` maps generated strings back to entities (exact mention string, then normalized:
lower case, no accents, punctuation, articles or spaces) and counts every string it cannot map;
`generate_lexical` is plain (unconstrained) beam or greedy search from one encoding per document.

`LexicalMethod` trains in the one loop (`dore.training.loop`): one sequence per document,
full-vocabulary loss, the same optimizer, budget, checkpoints and resume as DORE; selection on
dev F1 of greedy generation; the selected model (backbone with the separators, `layout.json`,
`lexical_model.json`) is scored by `LexicalPredictor`, with the generated tokens per document
as its decoder steps.
"""

from __future__ import annotations

import json
import re
import statistics
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import torch
from tokenizers import AddedToken
from torch.nn.utils.rnn import pad_sequence
from transformers import EncoderDecoderModel, GenerationConfig, PreTrainedTokenizerBase
from transformers.modeling_outputs import BaseModelOutput

from dore.config import TrainConfig
from dore.data.model import DataError, Document, atomic_dir, atomic_write_text
from dore.decoding.hf import only_generation_config
from dore.extract import Predictions
from dore.methods.seq2seq import Example, collate, make_examples, param_groups, row_loss
from dore.model.backbone import Backbone, load_trained, model_parts
from dore.model.inputs import encode, encode_document, word_pieces
from dore.symbolic.layout import IdLayout

LEXICAL_CARD = "lexical_model.json"
TRIPLET, REL, TAIL = "<triplet>", "<rel>", "<tail>"
SEPARATORS = (TRIPLET, REL, TAIL)
Order = Literal["row-column", "annotation"]
Triplet = tuple[int, int, str]  # head entity, tail entity, relation label (document numbering)
Prediction = tuple[tuple[int, ...], str]  # (args, label), as `dore.scoring.score.score` takes it

Key = Callable[[str], str]  # a string's form at one matching level

_ARTICLES = frozenset({"a", "an", "the"})
_FIELDS = re.compile(f"({re.escape(REL)}|{re.escape(TAIL)})")


def relation_names_of(layout: IdLayout) -> dict[str, str]:
    """Label -> name, in the layout's relation order (the order of a pair's several relations)."""
    return dict(zip(layout.relations, layout.relation_names))


# --- targets ---------------------------------------------------------------------------------

def mention_words(doc: Document, entity: int) -> list[str]:
    """The words of the entity's first mention: its canonical name, as the input shows it."""
    mentions = doc.entities[entity].mentions
    if not mentions:
        raise DataError("entity has no mention to write it with", doc=doc.doc_id, field=f"entities[{entity}]")
    return doc.tokens[mentions[0].start: mentions[0].end]


def lexical_triplets(doc: Document, relation_names: Mapping[str, str], order: Order = "row-column") -> list[Triplet]:
    """The document's de-duplicated relations as (head, tail, label), in target order."""
    rel_rank = {label: i for i, label in enumerate(relation_names)}
    triplets = []
    for rel in doc.unique_relations():
        if len(rel.args) != 2:
            raise DataError(f"lexical targets are binary, relation {rel.label!r} has {len(rel.args)} arguments",
                            doc=doc.doc_id, field="relations")
        if rel.label not in rel_rank:
            raise DataError(f"relation {rel.label!r} has no name", doc=doc.doc_id, field="relations")
        triplets.append((rel.head, rel.tail, rel.label))
    if order == "row-column":
        rank = {e: r for r, e in enumerate(doc.entity_order())}
        triplets.sort(key=lambda x: (rank[x[0]], rank[x[1]], rel_rank[x[2]]))
    elif order != "annotation":
        raise ValueError(f"order must be 'row-column' or 'annotation', not {order!r}")
    return triplets


def lexical_target(doc: Document, relation_names: Mapping[str, str], order: Order = "row-column") -> str:
    """The target text of one document (empty when it has no relation)."""
    return " ".join(f"{TRIPLET} {' '.join(mention_words(doc, h))} {REL} {relation_names[label]} "
                    f"{TAIL} {' '.join(mention_words(doc, t))}"
                    for h, t, label in lexical_triplets(doc, relation_names, order))


def add_separator_tokens(backbone, *, seed: int = 0) -> tuple[int, int, int]:
    """Add the separators as special tokens and grow the embeddings (new rows: the model's own
    random initialisation, seeded); a no-op when they are there. Returns their ids."""
    tokenizer, model = backbone.tokenizer, backbone.model
    vocab = tokenizer.get_vocab()
    missing = [s for s in SEPARATORS if s not in vocab]
    if missing:
        tokenizer.add_tokens([AddedToken(s, lstrip=False, rstrip=False, special=True, normalized=False)
                              for s in missing], special_tokens=True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for part in model_parts(model):
                rows = part.get_input_embeddings().num_embeddings
                part.resize_token_embeddings(max(len(tokenizer), rows), mean_resizing=False)
        if isinstance(model, EncoderDecoderModel):
            model.config.vocab_size = model.config.decoder.vocab_size
    return separator_ids(tokenizer)


def separator_ids(tokenizer: PreTrainedTokenizerBase) -> tuple[int, int, int]:
    ids = tokenizer.convert_tokens_to_ids(list(SEPARATORS))
    if tokenizer.convert_ids_to_tokens(ids) != list(SEPARATORS):
        raise ValueError(f"the tokenizer lacks the separators {SEPARATORS}: call add_separator_tokens first")
    return tuple(ids)


def lexical_target_ids(doc: Document, tokenizer: PreTrainedTokenizerBase, relation_names: Mapping[str, str],
                       order: Order = "row-column") -> list[int]:
    """Target token ids: separator ids spliced between the word pieces of names and relations."""
    return _target_ids(doc, tokenizer, relation_names, order, separator_ids(tokenizer))


def _target_ids(doc, tokenizer, relation_names, order, separators: Sequence[int]) -> list[int]:
    triplet_id, rel_id, tail_id = separators
    fields = []
    for h, t, label in lexical_triplets(doc, relation_names, order):
        fields += [(triplet_id, mention_words(doc, h)), (rel_id, relation_names[label].split()),
                   (tail_id, mention_words(doc, t))]
    pieces = iter(word_pieces(tokenizer, [w for _, words in fields for w in words]))
    ids = []
    for separator, words in fields:
        ids.append(separator)
        for _ in words:
            ids.extend(next(pieces))
    return ids


def lexical_sequences(doc: Document, tokenizer: PreTrainedTokenizerBase, relation_names: Mapping[str, str], *,
                      prefix: Sequence[int], eos_id: int, max_len: int | None, counts: Counter,
                      order: Order = "row-column") -> list[list[int]]:
    """The decoder sequence of one document, as `dore.methods.dore.decoder_sequences` returns them:
    `[prefix + target + [EOS]]` (one sequence, the same every epoch). Past `max_len` the target
    is cut before a triplet and keeps its EOS; counted in `targets_over_decoder_length` and
    `triplets_cut`, never silent."""
    target = lexical_target_ids(doc, tokenizer, relation_names, order)
    seq = [*prefix, *target, eos_id]
    if max_len is not None and len(seq) > max_len:
        triplet_id = separator_ids(tokenizer)[0]
        starts = [i for i, tok in enumerate(seq) if tok == triplet_id]
        keep = max((i for i in starts if i < max_len), default=len(prefix))
        counts["targets_over_decoder_length"] += 1
        counts["triplets_cut"] += sum(i >= keep for i in starts)
        seq = seq[:keep] + [eos_id]
    return [seq]


def lexical_target_lengths(docs: Sequence[Document], tokenizer: PreTrainedTokenizerBase,
                           relation_names: Mapping[str, str], max_len: int | None, *, prefix_len: int = 1,
                           order: Order = "row-column") -> dict:
    """Decoder sequence lengths (prefix + target + EOS; a separator is one token whether or not
    the tokenizer has it yet) and how many exceed `max_len`, the decoder's positions."""
    lengths = [prefix_len + len(_target_ids(d, tokenizer, relation_names, order, (-1, -1, -1))) + 1 for d in docs]
    if not lengths:
        return {"documents": 0, "max_len": max_len, "over": 0}
    return {"documents": len(lengths), "max_len": max_len,
            "over": sum(n > max_len for n in lengths) if max_len is not None else 0,
            "mean": round(statistics.fmean(lengths), 1), "median": statistics.median(lengths),
            "p95": statistics.quantiles(lengths, n=20, method="inclusive")[-1] if len(lengths) > 1 else lengths[0],
            "max": max(lengths)}


# --- generation ------------------------------------------------------------------------------

def ids_to_text(ids: Sequence[int], tokenizer: PreTrainedTokenizerBase) -> str:
    """Generated ids (after the prefix, before EOS) -> text; the pieces between separators are
    decoded on their own, so decoding never merges a name into a separator."""
    names = dict(zip(separator_ids(tokenizer), SEPARATORS))
    parts, segment = [], []

    def flush():
        if text := tokenizer.decode(segment, skip_special_tokens=True).strip():
            parts.append(text)
        segment.clear()

    for i in ids:
        if i in names:
            flush()
            parts.append(names[i])
        else:
            segment.append(i)
    flush()
    return " ".join(parts)


@torch.no_grad()
def generate_lexical(backbone, layout: IdLayout, docs: Sequence[Document], *, num_beams: int = 1,
                     length_penalty: float = 1.0, max_new_tokens: int | None = None, batch_docs: int = 8,
                     max_source_length: int | None = None, chunk_length: int | None = None,
                     counts: Counter | None = None) -> list[str]:
    """Generated text per document: each batch is encoded once (as trained: `max_source_length`,
    `chunk_length`), then plain `generate` (no constraint) continues the decoder prefix.
    `counts`: truncated inputs, unfinished outputs and generated tokens (EOS included)."""
    counts = Counter() if counts is None else counts
    model, tokenizer = backbone.model, backbone.tokenizer
    model.eval()
    device = next(model.parameters()).device
    prefix = torch.tensor(backbone.decoder_prefix, device=device)
    if max_new_tokens is None:
        max_new_tokens = (backbone.max_target_length or 1024) - len(prefix)
    config = GenerationConfig(max_new_tokens=max_new_tokens, num_beams=num_beams, length_penalty=length_penalty,
                              do_sample=False, eos_token_id=backbone.eos_id, pad_token_id=backbone.pad_id,
                              decoder_start_token_id=int(prefix[0]))
    max_length = max_source_length or (None if chunk_length else backbone.max_source_length)
    texts = []
    for start in range(0, len(docs), batch_docs):
        chunk = docs[start: start + batch_docs]
        encoded = [encode_document(d, layout.assign(d), tokenizer, backbone.code_to_id, max_length,
                                   chunk_length=chunk_length, pad_id=backbone.pad_id) for d in chunk]
        counts["truncated_inputs"] += sum(e.truncated for e in encoded)
        ids = pad_sequence([torch.tensor(e.input_ids) for e in encoded], batch_first=True,
                           padding_value=backbone.pad_id).to(device)
        attention = (ids != backbone.pad_id).long()  # chunked inputs hold padding inside
        hidden = encode(model, ids, attention, chunk_length)
        with only_generation_config(model, config):  # the checkpoint's own text defaults stay out
            out = model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=hidden), attention_mask=attention,
                                 decoder_input_ids=prefix.expand(len(chunk), -1), generation_config=config)
        for row in out[:, len(prefix):].tolist():
            finished = backbone.eos_id in row
            counts["unfinished"] += not finished
            counts["generated_tokens"] += row.index(backbone.eos_id) + 1 if finished else len(row)
            texts.append(ids_to_text(row[: row.index(backbone.eos_id)] if finished else row, tokenizer))
    return texts


# --- parsing ---------------------------------------------------------------------------------

def normalize(text: str) -> str:
    """Lower case, accents, punctuation, symbols, articles and spaces removed (SQuAD-style, and
    what an uncased WordPiece decoder gives back: `U.S.` and `u. s.` both become `us`)."""
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(c for c in text if not unicodedata.combining(c) and unicodedata.category(c)[0] not in "PS")
    return "".join(w for w in text.split() if w not in _ARTICLES)


def _squash(text: str) -> str:
    return " ".join(text.split())


class EntityMatcher:
    """Strings -> entities of one document: an exact mention string (source text or words), else
    a normalized one. A string naming several entities goes to the one whose canonical name it
    is, then to the first-appearing one (deterministic), and is counted as ambiguous."""

    def __init__(self, doc: Document):
        rank = {e: r for r, e in enumerate(doc.entity_order())}
        self._tables: list[tuple[dict[str, list[int]], Key]] = []  # per level: form -> entities, best first
        for key in (_squash, normalize):
            table: dict[str, set[int]] = {}
            canonical: dict[int, set[str]] = {}
            for e, ent in enumerate(doc.entities):
                for j, m in enumerate(ent.mentions):
                    for s in {key(m.text), key(" ".join(doc.tokens[m.start: m.end]))} - {""}:
                        table.setdefault(s, set()).add(e)
                        if j == 0:
                            canonical.setdefault(e, set()).add(s)
            self._tables.append(({s: sorted(es, key=lambda e: (s not in canonical.get(e, ()), rank[e]))
                                  for s, es in table.items()}, key))

    def match(self, text: str, counts: Counter) -> int | None:
        for level, (table, key) in enumerate(self._tables):
            if found := table.get(key(text)):
                counts["normalized_matches"] += level == 1
                counts["ambiguous_strings"] += len(found) > 1
                return found[0]
        counts["unmatched_strings"] += 1
        return None


def _relation_tables(relation_names: Mapping[str, str]) -> list[tuple[dict[str, str], Key]]:
    tables = []
    for key in (_squash, normalize):
        table: dict[str, str] = {}
        for label, name in relation_names.items():
            table.setdefault(key(name), label)  # the first relation wins a (never seen) name clash
        tables.append((table, key))
    return tables


def parse_lexical(text: str, doc: Document, relation_names: Mapping[str, str]) -> tuple[list[Prediction], Counter]:
    """Generated text -> ([((head, tail), label)], counts), in the document's entity numbering.

    A triplet is `<triplet> head <rel> relation <tail> tail`; anything else between two
    `<triplet>`s (a missing or repeated separator, an empty field, text before the first
    triplet) is `malformed` and dropped whole, never shifting later triplets. Counts:
    `malformed`, `unknown_relations`, `unmatched_strings` (head or tail naming no entity),
    `ambiguous_strings` (naming several; resolved, see EntityMatcher), `normalized_matches`,
    `repeated_entity` (head = tail, dropped), `duplicate` (dropped).
    """
    counts: Counter = Counter()
    entities, relations = EntityMatcher(doc), _relation_tables(relation_names)
    lead, *chunks = text.split(TRIPLET)
    counts["malformed"] += bool(lead.strip())
    out, seen = [], set()
    for chunk in chunks:
        parts = [p.strip() for p in _FIELDS.split(chunk)]
        if len(parts) != 5 or parts[1] != REL or parts[3] != TAIL or not all(parts):
            counts["malformed"] += 1
            continue
        label = next((table[key(parts[2])] for table, key in relations if key(parts[2]) in table), None)
        counts["unknown_relations"] += label is None
        head, tail = entities.match(parts[0], counts), entities.match(parts[4], counts)
        if label is None or head is None or tail is None:
            continue
        if head == tail:
            counts["repeated_entity"] += 1
        elif ((head, tail), label) in seen:
            counts["duplicate"] += 1
        else:
            seen.add(((head, tail), label))
            out.append(((head, tail), label))
    return out, +counts


def predict_lexical(backbone, layout: IdLayout, docs: Sequence[Document], **generate) -> tuple[dict, Counter]:
    """`{doc_id: [(args, label)]}` for `dore.scoring.score.score`, and the summed generation and parse counts."""
    counts: Counter = Counter()
    names = relation_names_of(layout)
    predictions = {}
    for doc, text in zip(docs, generate_lexical(backbone, layout, docs, counts=counts, **generate)):
        predictions[doc.doc_id], doc_counts = parse_lexical(text, doc, names)
        counts.update(doc_counts)
    return predictions, +counts


def save_lexical(directory: str | Path, backbone: Backbone, layout: IdLayout, **card) -> Path:
    """Backbone (safetensors weights, tokenizer with symbols and separators), layout and the card
    (`lexical_model.json`, not DORE's card: `Extractor.from_pretrained` refuses this model);
    written to a temporary folder and renamed so a reader never sees half a model."""
    with atomic_dir(directory) as tmp:
        backbone.save_pretrained(tmp)
        atomic_write_text(tmp / "layout.json", layout.to_json())
        atomic_write_text(tmp / LEXICAL_CARD, json.dumps({"target_format": "lexical", "family": backbone.family,
                                                         **card}, indent=1, default=str))
    return Path(directory)


def load_lexical(directory: str | Path) -> tuple[Backbone, IdLayout, dict]:
    """A model saved by `save_lexical`: (backbone, layout, card)."""
    directory = Path(directory)
    if not (directory / LEXICAL_CARD).exists():
        raise FileNotFoundError(f"{directory} is not a saved lexical model (no {LEXICAL_CARD})")
    card = json.loads((directory / LEXICAL_CARD).read_text())
    layout = IdLayout.from_dict(json.loads((directory / "layout.json").read_text()))
    backbone = load_trained(directory, layout)
    separator_ids(backbone.tokenizer)  # a model saved without them cannot have learned the format
    return backbone, layout, card


# --- the method ----------------------------------------------------------------------------

def lexical_config(cfg: TrainConfig) -> TrainConfig:
    """`cfg` for the baseline: one sequence per document. The symbolic target's own settings
    (`sampling`, `symbol_loss`) do not apply: there are no rows, negatives or symbols; everything
    else (backbone, init, order, optimizer, budget) is used as given."""
    return cfg.model_copy(update={"mode": "sequence"})


class LexicalMethod:
    """The lexical baseline's training contract (`dore.training.loop.Method`), dev prediction and saving."""

    def __init__(self, cfg: TrainConfig, backbone: Backbone, layout: IdLayout):
        self.cfg, self.backbone, self.layout = lexical_config(cfg), backbone, layout
        add_separator_tokens(backbone, seed=cfg.seed)
        self.model = backbone.model
        self.relation_names = relation_names_of(layout)
        self.decoding = {"num_beams": 1, "max_source_length": cfg.max_source_length, "chunk_length": cfg.chunk_length}
        self.train_docs: Sequence[Document] = ()

    def examples(self, docs: Sequence[Document], counts: Counter) -> list[Example]:
        self.train_docs = docs  # for the summary's target lengths
        return make_examples(docs, self.backbone, self.layout, self.cfg.max_source_length, counts,
                             self.cfg.chunk_length)

    def collate(self, examples: Sequence[Example], epoch: int, counts: Counter) -> dict | None:
        bb, prefix = self.backbone, list(self.backbone.decoder_prefix)
        # no negatives: the same target every epoch
        batch = [(ex, lexical_sequences(ex.doc, bb.tokenizer, self.relation_names, prefix=prefix, eos_id=bb.eos_id,
                                        max_len=bb.max_target_length, counts=counts, order=self.cfg.order))
                 for ex in examples]
        return collate(batch, bb.pad_id, len(prefix))

    def loss(self, model, batch: dict) -> tuple[torch.Tensor, int]:
        # the targets are words: the softmax covers the whole vocabulary
        return row_loss(model, batch, label_smoothing=self.cfg.label_smoothing, code_to_id=None,
                        bucket=self.cfg.group_by_length, chunk_length=self.cfg.chunk_length)

    def param_groups(self, cfg: TrainConfig) -> list[dict]:
        return param_groups(self.model, cfg)

    def predict(self, docs: Sequence[Document]) -> Predictions:
        return predict_lexical(self.backbone, self.layout, docs, **self.decoding)[0]

    def save(self, directory: str | Path, **card) -> Path:
        card["preset"] = self.cfg.model_dump()
        return save_lexical(directory, self.backbone, self.layout, decoding=self.decoding, **card)

    def summary(self) -> dict:
        bb = self.backbone
        return {"target_lengths": lexical_target_lengths(self.train_docs, bb.tokenizer, self.relation_names,
                                                         bb.max_target_length, prefix_len=len(bb.decoder_prefix),
                                                         order=self.cfg.order)}


class LexicalPredictor:
    """A saved lexical model scoring a split."""

    def __init__(self, directory: str | Path):
        self.backbone, self.layout, self.card = load_lexical(directory)

    def predict_split(self, docs: Sequence[Document], num_beams: int) -> tuple[Predictions, int, dict]:
        """(predictions, generated tokens, what the metrics record adds: the generation and parse
        counts, and the split's target lengths against the decoder's positions)."""
        bb = self.backbone
        predictions, counts = predict_lexical(bb, self.layout, docs, **{**self.card["decoding"], "num_beams": num_beams})
        generated, truncated = counts.pop("generated_tokens", 0), counts.pop("truncated_inputs", 0)
        lengths = lexical_target_lengths(docs, bb.tokenizer, relation_names_of(self.layout), bb.max_target_length,
                                         prefix_len=len(bb.decoder_prefix), order=self.card["preset"]["order"])
        return predictions, generated, {"parse_repairs": dict(counts), "truncated_inputs": truncated,
                                        "target_lengths": lengths}


def load(directory: str | Path) -> LexicalPredictor:
    return LexicalPredictor(directory)
