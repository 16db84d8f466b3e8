"""The symbol head: a seq2seq decoder with its output layer cut to the symbol ids, and the
cross-attention keys/values projected once per document and shared by its rows.

Training with the symbol loss and `dore.decoding.generate.fast_greedy` both read the decoder
through it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from transformers import BertLMHeadModel, EncoderDecoderModel, PreTrainedModel, RobertaForCausalLM
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.models.bert.modeling_bert import BertCrossAttention
from transformers.models.roberta.modeling_roberta import gelu

from dore.model import entities


class SymbolHead:
    """The decoder stack of a seq2seq model and its output layer restricted to the symbol ids.

    Used by `fast_greedy` and by training with `symbol_loss` (the softmax over the symbols the
    constrained decoder can choose from). Build it per step in training: it gathers the current
    output weights."""

    def __init__(self, model: PreTrainedModel, code_to_id: Tensor):
        self.scale, self.bias, self.cross_projection = 1.0, None, None
        self.transform: Callable[[Tensor], Tensor] = nn.Identity()
        if isinstance(model, EncoderDecoderModel):
            lm = model.decoder
            if isinstance(lm, BertLMHeadModel):
                self.transform = lm.cls.predictions.transform
                output = lm.cls.predictions.decoder
            elif isinstance(lm, RobertaForCausalLM):
                self.transform = lambda h: lm.lm_head.layer_norm(gelu(lm.lm_head.dense(h)))
                output = lm.lm_head.decoder
            else:
                raise ValueError(f"no symbol head for an encoder-decoder with a {type(lm).__name__} decoder")
            self.decoder = lm.base_model
            if (model.encoder.config.hidden_size != lm.config.hidden_size
                    and getattr(lm.config, "cross_attention_hidden_size", None) is None):
                self.cross_projection = model.enc_to_dec_proj  # as EncoderDecoderModel.forward does
        elif model.config.model_type in ("t5", "bart", "led"):
            self.decoder = model.get_decoder()
            output = model.get_output_embeddings()
            if getattr(model.config, "scale_decoder_outputs", False):  # T5 with tied embeddings
                self.scale = model.config.d_model ** -0.5
            if hasattr(model, "final_logits_bias"):  # BART, LED
                self.bias = model.final_logits_bias[0, code_to_id]
        else:
            raise ValueError(f"no symbol head for model type {model.config.model_type!r}")
        self.weight = output.weight[code_to_id]
        if output.bias is not None:
            self.bias = output.bias[code_to_id] + (0 if self.bias is None else self.bias)
        self.entities = entities.of(model)  # document-aware entity symbols, when attached
        self.code_to_id = code_to_id
        vocab = model.get_decoder().get_input_embeddings().num_embeddings
        self.slot_of_id = None if self.entities is None else entities.slot_lookup(
            code_to_id, self.entities.n_slots, vocab)
        self.is_relation_id = None  # [vocab]: the relation and NA symbols' ids (the pair term's labels)
        if self.entities is not None and self.entities.pair is not None:
            labels = code_to_id[self.entities.n_slots:self.entities.n_slots + self.entities.pair.label_bias.numel()]
            self.is_relation_id = torch.zeros(vocab, dtype=torch.bool, device=code_to_id.device)
            self.is_relation_id[labels] = True

    def logits(self, hidden: Tensor, table: Tensor | None = None, pair: Tensor | None = None,
               at_tail: Tensor | None = None, tail: Tensor | None = None, at_choice: Tensor | None = None) -> Tensor:
        """Symbol logits of decoder states [rows, (T,) H]; `table` [rows, n_slots, H]: the rows'
        entity table, dotted with the states and added to the slots' logits (a pointer); `pair`
        [rows, (T,) n_labels]: the pair term of the relation symbols (`pair_logits`), at the
        positions `at_tail` (bool [rows, (T,)]) that read a tail; `tail` [rows, n_slots]: the
        pair-aware tail logits (`tail_term`), at the positions `at_choice` that choose a tail."""
        hidden = self.transform(hidden * self.scale)
        logits = hidden @ self.weight.T
        if table is not None:
            pointer = torch.einsum("r...h,rnh->r...n", hidden, table.to(hidden.dtype))
            logits = torch.cat([logits[..., :pointer.shape[-1]] + pointer, logits[..., pointer.shape[-1]:]], -1)
        if tail is not None:
            n = tail.shape[-1]
            added = (tail[:, None] if logits.dim() == 3 else tail) * at_choice[..., None].to(tail.dtype)
            logits = torch.cat([logits[..., :n] + added.to(logits.dtype), logits[..., n:]], -1)
        if pair is not None:
            start, end = self.entities.n_slots, self.entities.n_slots + pair.shape[-1]
            relation, pair = logits[..., start:end], pair.to(logits.dtype)
            mode = self.entities.relation_logits
            if mode == "both":
                relation = relation + pair
            elif mode == "pair":  # a classifier in disguise: the decoder state no longer scores the relation
                relation = torch.where(at_tail[..., None], pair, relation)
            elif mode != "decoder":
                raise ValueError(f"relation_logits must be one of {entities.RELATION_LOGITS}, not {mode!r}")
            logits = torch.cat([logits[..., :start], relation, logits[..., end:]], -1)
        return (logits if self.bias is None else logits + self.bias).float()

    def entity_inputs(self, source_ids: Tensor | None, encoder_hidden: Tensor, row_doc: Tensor | None
                      ) -> tuple[Tensor | None, tuple[Tensor, Tensor] | None]:
        """The rows' entity table [rows, n_slots, H] and, with the pair term, each slot's head and
        tail features [rows, n_slots, rank]; None without the module / the term. `encoder_hidden`
        as the encoder wrote it (before any projection), per document."""
        if self.entities is None:
            return None, None
        if source_ids is None:
            raise ValueError("a model with entity embeddings needs the source ids to decode")
        pooled = self.entities.pooled(source_ids, encoder_hidden, self.code_to_id[:self.entities.n_slots])
        table = self.entities.project(pooled)  # per document, then gathered per row
        features = None if self.entities.pair is None else self.entities.pair.features(
            self.entities.pair_pooled(source_ids, encoder_hidden, self.code_to_id[:self.entities.n_slots], pooled))
        return rows_of((table, features), row_doc)

    def pair_slots(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """For decoder inputs `ids` [rows, T] of rows: each row's head slot [rows] (its first entity
        symbol, the prefix's) and the tail slot read at each position [rows, T] (-1: none)."""
        slot = self.slot_of_id[ids]
        is_entity = slot >= 0
        head_pos = is_entity.int().argmax(1)
        after_head = torch.arange(ids.shape[1], device=ids.device) > head_pos[:, None]
        return slot.gather(1, head_pos[:, None]).squeeze(1), slot.masked_fill(~(is_entity & after_head), -1)

    def choice_positions(self, ids: Tensor) -> Tensor:
        """bool [rows, T]: the positions of decoder inputs `ids` [rows, T] whose next symbol is a tail
        or EOS: those that read the row's head or a relation symbol."""
        slot = self.slot_of_id[ids]
        head_pos = (slot >= 0).int().argmax(1)
        return (torch.arange(ids.shape[1], device=ids.device) == head_pos[:, None]) | self.is_relation_id[ids]

    def tail_term(self, features: tuple[Tensor, Tensor], head_slot: Tensor) -> Tensor | None:
        """Pair-aware tail logits [rows, n_slots] of each row's head, or None: a model trained
        without them, or the pair term switched off (`relation_logits` "decoder")."""
        pair = self.entities.pair
        if pair.tail_scale is None or self.entities.relation_logits == "decoder":
            return None
        head_features, tail_features = features
        return pair.tail_evidence(head_features[torch.arange(len(head_slot), device=head_slot.device), head_slot],
                                  tail_features)

    def pair_logits(self, features: tuple[Tensor, Tensor], head_slot: Tensor, tail_slot: Tensor) -> Tensor:
        """The pair term [rows, T, n_labels] of each row's (head, tail at each position); 0 where no tail."""
        head_features, tail_features = features
        rows = torch.arange(len(head_slot), device=head_slot.device)
        maps = self.entities.pair.maps(head_features[rows, head_slot])  # [rows, K, n_labels]: one per row
        tail = tail_features[rows[:, None], tail_slot.clamp(min=0)]
        scores = torch.bmm(tail, maps) + self.entities.pair.label_bias
        return scores * (tail_slot >= 0)[..., None].to(tail.dtype)

    def forward(self, encoder_hidden: Tensor, encoder_attention_mask: Tensor, decoder_input_ids: Tensor,
                decoder_attention_mask: Tensor, row_doc: Tensor | None = None,
                source_ids: Tensor | None = None, document_entities: tuple | None = None) -> Tensor:
        """Teacher-forced symbol logits [rows, T, n_codes].

        With `row_doc` (the document of each row), `encoder_hidden` and its mask are per document
        and the cross-attention keys and values are projected once per document, then shared by
        its rows: with ~20 rows per document that projection was most of a training step.
        `document_entities`: `entity_inputs(source_ids, encoder_hidden, None)`, when the caller
        runs several groups of rows over the same documents. BERT-style decoders read the
        cross-attention grouped per document (`grouped_cross_attention`).
        """
        if document_entities is not None:  # `entity_inputs` per document, computed once for all row groups
            table, features = rows_of(document_entities, row_doc)
        else:
            table, features = self.entity_inputs(source_ids, encoder_hidden, row_doc)
        if self.cross_projection is not None:
            encoder_hidden = self.cross_projection(encoder_hidden)
        cache, groups = None, None
        if row_doc is not None:
            per_document = grouped_cross_attention(self.decoder)
            cache = shared_cross_attention_cache(self.decoder, encoder_hidden, row_doc, per_document=per_document)
            if per_document:  # the grouped cross-attention reads the per-document keys/values, not these states
                groups = row_groups(row_doc, encoder_attention_mask)
                encoder_hidden = encoder_hidden[:1].expand(len(row_doc), -1, -1)
            else:
                encoder_hidden = encoder_hidden.index_select(0, row_doc)
            encoder_attention_mask = encoder_attention_mask.index_select(0, row_doc)
        token = ROW_GROUPS.set(groups)
        try:
            with entities.reading(table, self.slot_of_id):
                out = self.decoder(input_ids=decoder_input_ids, attention_mask=decoder_attention_mask,
                                   encoder_hidden_states=encoder_hidden, encoder_attention_mask=encoder_attention_mask,
                                   past_key_values=cache, use_cache=cache is not None)
        finally:
            ROW_GROUPS.reset(token)
        pair = at_tail = tail = at_choice = None
        if features is not None:
            head_slot, tail_slot = self.pair_slots(decoder_input_ids)
            pair, at_tail = self.pair_logits(features, head_slot, tail_slot), tail_slot >= 0
            tail = self.tail_term(features, head_slot)
            at_choice = None if tail is None else self.choice_positions(decoder_input_ids)
        return self.logits(out.last_hidden_state, table, pair, at_tail, tail, at_choice)


def rows_of(document_entities: tuple[Tensor | None, tuple[Tensor, Tensor] | None], row_doc: Tensor | None
            ) -> tuple[Tensor | None, tuple[Tensor, Tensor] | None]:
    """Per-document entity inputs (table, pair features) gathered for the rows of `row_doc`."""
    table, features = document_entities
    if row_doc is None or table is None:
        return table, features
    return table.index_select(0, row_doc), None if features is None else tuple(f.index_select(0, row_doc)
                                                                               for f in features)


def _cross_attentions(decoder: nn.Module) -> list[tuple[nn.Module, nn.Linear, nn.Linear, int]]:
    """(module, key projection, value projection, head size) of each decoder cross-attention."""
    found = []
    for name, module in decoder.named_modules():
        if isinstance(module, BertCrossAttention):  # BERT / RoBERTa-style warm-started decoders
            found.append((module, module.key, module.value, module.attention_head_size))
        elif name.endswith("encoder_attn"):  # BART, LED
            found.append((module, module.k_proj, module.v_proj, module.head_dim))
        elif name.endswith("EncDecAttention"):  # T5
            found.append((module, module.k, module.v, module.key_value_proj_dim))
    return found


def shared_cross_attention_cache(decoder: nn.Module, encoder_hidden: Tensor, row_doc: Tensor, *,
                                 per_document: bool = False) -> EncoderDecoderCache:
    """A cache whose cross-attention keys/values are projected per document and gathered per row
    (autograd flows through the gather); the decoder's attention layers then skip the projection.
    `per_document`: keep them per document, for `grouped_cross_attention`."""
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    docs, length = encoder_hidden.shape[:2]
    for module, key, value, head_size in sorted(_cross_attentions(decoder), key=lambda m: m[0].layer_idx):
        k = key(encoder_hidden).view(docs, length, -1, head_size).transpose(1, 2)
        v = value(encoder_hidden).view(docs, length, -1, head_size).transpose(1, 2)
        if not per_document:
            k, v = k.index_select(0, row_doc), v.index_select(0, row_doc)
        cache.cross_attention_cache.update(k, v, module.layer_idx)
        cache.is_updated[module.layer_idx] = True
    return cache


@dataclass(frozen=True)
class _RowGroups:
    """Rows laid out as query blocks of their documents: row i is query `slot[i]` of `row_doc[i]`."""

    row_doc: Tensor  # [rows]
    slot: Tensor  # [rows]
    width: int  # the most rows of one document
    mask: Tensor | None  # bool [docs, 1, 1, S] (True: attend), None when nothing is padded


ROW_GROUPS: ContextVar[_RowGroups | None] = ContextVar("dore_row_groups", default=None)


def row_groups(row_doc: Tensor, encoder_mask: Tensor) -> _RowGroups:
    counts = torch.bincount(row_doc, minlength=len(encoder_mask))
    order = torch.argsort(row_doc, stable=True)
    slot = torch.empty_like(row_doc)
    slot[order] = torch.arange(len(row_doc), device=row_doc.device) - (counts.cumsum(0) - counts)[row_doc[order]]
    mask = None if bool(encoder_mask.all()) else encoder_mask.bool()[:, None, None, :]
    return _RowGroups(row_doc, slot, int(counts.max()), mask)


def _grouped_bert_cross_attention(module: BertCrossAttention, original: Callable, hidden_states: Tensor,
                                  encoder_hidden_states: Tensor | None = None, attention_mask: Tensor | None = None,
                                  past_key_values: EncoderDecoderCache | None = None, **kwargs):
    """BertCrossAttention.forward with the rows of a document as queries of one attention over its
    keys/values, cached per document: read once per document, not copied per row. At one query per
    row and step, those copies were half of decoding on CPU; in training, the copies' backward (a
    scatter-add per layer) was an eighth of a step."""
    groups = ROW_GROUPS.get()
    if groups is None or past_key_values is None or not past_key_values.is_updated.get(module.layer_idx):
        return original(hidden_states, encoder_hidden_states=encoder_hidden_states, attention_mask=attention_mask,
                        past_key_values=past_key_values, **kwargs)
    layer = past_key_values.cross_attention_cache.layers[module.layer_idx]
    keys, values = layer.keys, layer.values  # [docs, heads, S, head size]
    (rows, length), (docs, heads, _, size) = hidden_states.shape[:2], keys.shape
    query = module.query(hidden_states).view(rows, length, heads, size)
    grouped = query.new_zeros(docs, groups.width, length, heads, size).index_put((groups.row_doc, groups.slot), query)
    grouped = grouped.permute(0, 3, 1, 2, 4).reshape(docs, heads, groups.width * length, size)
    dropout = module.dropout.p if module.training else 0.0  # what the per-row attention drops in training
    out = F.scaled_dot_product_attention(grouped, keys, values, attn_mask=groups.mask, scale=module.scaling,
                                         dropout_p=dropout)
    out = out.view(docs, heads, groups.width, length, size).permute(0, 2, 3, 1, 4)[groups.row_doc, groups.slot]
    return out.reshape(rows, length, heads * size), None


def grouped_cross_attention(decoder: nn.Module) -> bool:
    """Let the decoder's cross-attention read per-document keys/values for all rows at once while
    `ROW_GROUPS` is set (BERT-style decoders, the embedded default); False where unsupported."""
    modules = [m for m, *_ in _cross_attentions(decoder)]
    if not modules or any(type(m) is not BertCrossAttention for m in modules):
        return False
    for m in modules:
        if not getattr(m, "_dore_grouped", False):  # idempotent; plain calls fall through to the original
            m.forward = functools.partial(_grouped_bert_cross_attention, m, m.forward)
            m._dore_grouped = True
    return True

