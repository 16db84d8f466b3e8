"""Source sequences: a document's words with every mention wrapped in its entity's symbol.

`<e_k> mention words <e_k>` (docs/method.md §3). The markers are spliced in as ids between the
word pieces of a single tokenization of the document's words, so every word keeps exactly
the pieces it gets without markers, for every tokenizer. (Tokenizing marked *text* is not
safe: BART's tokenizer in transformers 4.x stripped the space after special tokens, so the
word after a marker lost its `Ġ` piece.)

Truncation keeps the head of the document and cuts only where no mention is open, so every
kept start marker has its end marker; entities whose every mention falls past the cut are
reported in `lost_entities` (their relations stay in the gold).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from dore.data.model import DataError, Document
from dore.symbolic.layout import SlotAssignment


@dataclass(frozen=True)
class EncodedInput:
    input_ids: list[int]  # with the backbone's special tokens (CLS..SEP, ..</s>, <s>..</s>)
    lost_entities: list[int]  # entity indices with a slot whose every mention was cut off
    truncated: bool
    n_tokens_before_truncation: int
    chunks: int = 1  # > 1: input_ids are `chunks` framed windows, each padded to the chunk length


def is_byte_level(tokenizer: PreTrainedTokenizerBase) -> bool:
    pre = tokenizer.backend_tokenizer.pre_tokenizer
    if pre is None:
        return False
    state = json.loads(pre.__getstate__())
    return any(p.get("type") == "ByteLevel" for p in state.get("pretokenizers", [state]))


def word_pieces(tokenizer: PreTrainedTokenizerBase, words: Sequence[str]) -> list[list[int]]:
    """The piece ids of each word as it appears in running text, after a space.

    One call with `is_split_into_words=True`, grouped by `word_ids()`. Byte-level BPE
    pre-tokenizes each pre-split word on its own and adds `Ġ` only with `add_prefix_space`
    (off in the released BART/LED/RoBERTa tokenizers), so each word gets the space itself;
    SentencePiece (`▁`) and WordPiece tokenizers need nothing. Whitespace-only words may get
    no pieces at all.
    """
    if not words:
        return []
    if is_byte_level(tokenizer):
        words = [" " + w for w in words]
    enc = tokenizer(list(words), is_split_into_words=True, add_special_tokens=False)
    pieces: list[list[int]] = [[] for _ in words]
    for piece, word in zip(enc["input_ids"], enc.word_ids()):
        pieces[word].append(piece)
    return pieces


def special_frame(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The special ids the tokenizer puts before and after a single sequence."""
    enc = tokenizer(["a"], is_split_into_words=True, add_special_tokens=True)
    word_ids = enc.word_ids()
    first = word_ids.index(0)
    last = len(word_ids) - 1 - word_ids[::-1].index(0)
    return enc["input_ids"][:first], enc["input_ids"][last + 1:]


def encode_document(doc: Document, assignment: SlotAssignment, tokenizer: PreTrainedTokenizerBase,
                    code_to_id: Sequence[int], max_length: int | None, *, chunk_length: int | None = None,
                    pad_id: int | None = None) -> EncodedInput:
    """Mark every mention of every slotted entity and frame the result with the special tokens.

    At each word boundary, end markers come first (later-starting mentions close first),
    then start markers (longer mentions open first): nested mentions nest properly. Repeated
    mentions of one entity on one span are marked once. `max_length` counts the special
    tokens; None keeps the whole document.

    With `chunk_length` (Fusion-in-Decoder style, for documents longer than the encoder's
    positions), the marked body is cut into windows that each fit `chunk_length` with their own
    special tokens, cut where no mention is open when possible; each window is padded with
    `pad_id` to `chunk_length`, and `max_length` then bounds the total (a multiple of it).
    """
    n_words = len(doc.tokens)
    # Mentions as (start, end, slot); a slot's code is its index in code_to_id.
    mentions: set[tuple[int, int, int]] = set()
    for entity, slot in assignment.slot_of.items():
        if not 0 <= entity < len(doc.entities):
            raise DataError(f"slot assignment names entity {entity}, the document has {len(doc.entities)}",
                            doc=doc.doc_id, field="entities")
        for j, m in enumerate(doc.entities[entity].mentions):
            if not 0 <= m.start < m.end <= n_words:
                raise DataError(f"mention span [{m.start}, {m.end}) outside the {n_words} tokens",
                                doc=doc.doc_id, field=f"entities[{entity}].mentions[{j}]")
            mentions.add((m.start, m.end, slot))
    opening, closing = defaultdict(list), defaultdict(list)
    for mention in mentions:
        opening[mention[0]].append(mention)
        closing[mention[1]].append(mention)

    body: list[int] = []
    marker_at: dict[tuple[int, int, int], tuple[int, int]] = {}  # mention -> (start index, end index) in body
    for position, pieces in enumerate([*word_pieces(tokenizer, doc.tokens), []]):
        for start, end, slot in sorted(closing[position], key=lambda m: (-m[0], -m[2])):
            marker_at[start, end, slot] = (marker_at[start, end, slot][0], len(body))
            body.append(code_to_id[slot])
        for start, end, slot in sorted(opening[position], key=lambda m: (-m[1], m[2])):
            marker_at[start, end, slot] = (len(body), -1)
            body.append(code_to_id[slot])
        body.extend(pieces)

    prefix, suffix = special_frame(tokenizer)
    if chunk_length is not None:
        return _chunked(body, marker_at, assignment, prefix, suffix, chunk_length, max_length, pad_id)
    n_full = len(prefix) + len(body) + len(suffix)
    keep = len(body)
    if max_length is not None and n_full > max_length:
        budget = max_length - len(prefix) - len(suffix)
        if budget < 0:
            raise ValueError(f"max_length {max_length} leaves no room inside the special tokens")
        keep = _last_closed_cut(marker_at.values(), len(body), budget)
    kept_slots = {slot for (_, _, slot), (_, end_index) in marker_at.items() if end_index < keep}
    lost = sorted(e for e, slot in assignment.slot_of.items() if slot not in kept_slots)
    return EncodedInput(input_ids=prefix + body[:keep] + suffix, lost_entities=lost,
                        truncated=keep < len(body), n_tokens_before_truncation=n_full)


def _chunked(body: list[int], marker_at: dict, assignment: SlotAssignment, prefix: list[int], suffix: list[int],
             chunk_length: int, max_length: int | None, pad_id: int | None) -> EncodedInput:
    if pad_id is None:
        raise ValueError("chunked encoding needs the pad id")
    window = chunk_length - len(prefix) - len(suffix)
    if window < 1:
        raise ValueError(f"chunk_length {chunk_length} leaves no room inside the special tokens")
    max_chunks = None if max_length is None else max(1, max_length // chunk_length)
    spans = list(marker_at.values())
    ids, start = [], 0
    while start < len(body) and (max_chunks is None or len(ids) < max_chunks * chunk_length):
        rest = [(a - start, b - start) for a, b in spans if b >= start and a >= start]
        cut = _last_closed_cut(rest, len(body) - start, min(window, len(body) - start)) or min(window, len(body) - start)
        piece = prefix + body[start: start + cut] + suffix
        ids += piece + [pad_id] * (chunk_length - len(piece))
        start += cut
    kept_slots = {slot for (_, _, slot), (_, end_index) in marker_at.items() if end_index < start}
    lost = sorted(e for e, slot in assignment.slot_of.items() if slot not in kept_slots)
    n_chunks = max(1, len(ids) // chunk_length)
    if not ids:  # an empty document still gets one framed window
        ids = prefix + suffix + [pad_id] * (chunk_length - len(prefix) - len(suffix))
    return EncodedInput(input_ids=ids, lost_entities=lost, truncated=start < len(body),
                        n_tokens_before_truncation=len(prefix) + len(body) + len(suffix), chunks=n_chunks)


def pad_batch(sequences: Sequence[Sequence[int]], value: int):
    """Right-pad id lists into one long tensor [len(sequences), longest]."""
    out = torch.full((len(sequences), max(map(len, sequences))), value, dtype=torch.long)
    for i, seq in enumerate(sequences):
        out[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out


def encode(model, input_ids, attention_mask, chunk_length: int | None = None):
    """Encoder states of a seq2seq model's inputs: the one encoding every path uses (training,
    every decoder, the analysis), so a model reads a document the same way when it learns and when
    it predicts. LED gets global attention on the first token of every window, as it was trained."""
    extra = {}
    if model.config.model_type == "led":
        glob = torch.zeros_like(attention_mask)
        glob[:, :: chunk_length or glob.shape[1]] = 1
        extra["global_attention_mask"] = glob
    return encode_chunks(model.get_encoder(), input_ids, attention_mask, chunk_length, **extra)


def encode_chunks(encoder, input_ids, attention_mask, chunk_length: int | None, **kwargs):
    """Encoder states of [batch, length] inputs; with `chunk_length`, each window of that many
    tokens is encoded on its own (its own positions) and the states are concatenated back, so the
    decoder cross-attends over the whole document."""
    batch, length = input_ids.shape
    if chunk_length is None or length <= chunk_length:
        return encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
    if length % chunk_length:
        raise ValueError(f"chunked inputs must be padded to a multiple of {chunk_length}, got {length}")
    ids = input_ids.reshape(-1, chunk_length)
    mask = attention_mask.reshape(-1, chunk_length).clone()
    mask[:, 0] = 1  # an all-padding window (a shorter document in the batch) must not yield NaNs
    kwargs = {k: v.reshape(-1, chunk_length) for k, v in kwargs.items()}
    hidden = encoder(input_ids=ids, attention_mask=mask, **kwargs).last_hidden_state
    return hidden.reshape(batch, length, -1)


def _last_closed_cut(pairs, length: int, budget: int) -> int:
    """The largest cut c <= budget (keep body[:c]) that leaves no mention with its start marker
    kept and its end marker dropped."""
    opened = [0] * (length + 2)  # difference array: cuts in (start, end] split a mention
    for start_index, end_index in pairs:
        opened[start_index + 1] += 1
        opened[end_index + 1] -= 1
    depth, safe = 0, 0
    for cut in range(budget + 1):
        depth += opened[cut]
        if depth == 0:
            safe = cut
    return safe
