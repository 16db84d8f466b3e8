"""Which earlier tuple does the decoder look at when it predicts a relation? (paper Figure 3, App. A.4)

A document is decoded as one sequence `h t r h t r ... EOS` (greedy, constrained: the Extractor's
own `generate_sequence`), then the model reads that sequence once more, teacher-forced, with
attention weights returned. For each tuple i >= 1, at the decoder position whose next token is its
relation r, the last decoder layer's self-attention (heads pooled) is summed over the tokens of each
earlier tuple j < i; the earlier tuple with the largest sum is the one tuple i "points to". The
decoder prefix (start token, BART's `<s>`) belongs to no tuple and is left out, as in the paper.

If the decoder only tracked recency, tuple i would point to tuple i-1; the paper reports that DORE
points to earlier tuples sharing an entity instead. `attention_statistics` measures exactly that,
against the recency baseline (the share of tuples whose previous tuple shares an entity).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

from dore.config import DecodingConfig
from dore.data.formats import read_any
from dore.data.model import DataError, Document
from dore.extract import Extractor
from dore.model.inputs import encode
from dore.symbolic.layout import NA_NAME, SlotAssignment


@contextmanager
def eager_attention(model: PreTrainedModel) -> Iterator[None]:
    """Switch every (sub)model to eager attention, which returns weights (fused kernels return
    none), and restore each config's own setting afterwards. Every module's config is switched:
    an EncoderDecoderModel's parts may hold config objects other than the ones the top model lists."""
    configs = {id(m.config): m.config for m in model.modules()
               if isinstance(getattr(m, "config", None), PretrainedConfig)}
    saved = {key: config._attn_implementation for key, config in configs.items()}
    try:
        for config in configs.values():
            config._attn_implementation = "eager"
        yield
    finally:
        for key, config in configs.items():
            config._attn_implementation = saved[key]


def sequence_decoding(extractor: Extractor) -> DecodingConfig:
    """The extractor's own decoding settings, as one greedy sequence per document."""
    return extractor.decoding.model_copy(update={"mode": "sequence", "num_beams": 1, "symbol_head": False})


@torch.no_grad()
def generate_codes(extractor: Extractor, doc: Document, decoding: DecodingConfig | None = None
                   ) -> tuple[SlotAssignment, torch.Tensor, list[int]]:
    """Encode `doc` and decode it with `Extractor.generate`, as `Extractor.predict_tuples` does
    (same budget, biases, rules); returns the assignment, the input ids [1, n] and the
    generated codes before EOS, NA tuples included (the model attends to them too)."""
    cfg = decoding or sequence_decoding(extractor)
    if cfg.mode != "sequence":
        raise ValueError(f"tuple attention needs single-sequence decoding, not mode={cfg.mode!r}")
    ((assignment, ids, (decoded,)),) = extractor.generate([doc], cfg)
    input_ids = torch.tensor([ids], device=next(extractor.backbone.model.parameters()).device)
    return assignment, input_ids, decoded.codes


@torch.no_grad()
def last_layer_self_attention(extractor: Extractor, input_ids: torch.Tensor, decoder_codes: Sequence[int],
                              chunk_length: int | None = None) -> torch.Tensor:
    """One teacher-forced pass over prefix + `decoder_codes`: the last decoder layer's
    self-attention averaged over heads, [T, T] (row: query position, column: key position)."""
    bb = extractor.backbone
    model = bb.model
    device = input_ids.device
    decoder_ids = torch.tensor([[*bb.decoder_prefix, *(bb.code_to_id[c] for c in decoder_codes)]], device=device)
    attention_mask = (input_ids != bb.pad_id).long()
    with eager_attention(model):
        hidden = encode(model, input_ids, attention_mask, chunk_length)
        out = model(encoder_outputs=BaseModelOutput(last_hidden_state=hidden), attention_mask=attention_mask,
                    decoder_input_ids=decoder_ids, decoder_attention_mask=torch.ones_like(decoder_ids),
                    output_attentions=True, return_dict=True)
    if not out.decoder_attentions or out.decoder_attentions[-1] is None:
        raise RuntimeError(f"{type(model).__name__} returned no decoder attention weights")
    return out.decoder_attentions[-1][0].float().mean(0).cpu()


def describe_tuple(codes: Sequence[int], doc: Document, assignment: SlotAssignment, extractor: Extractor) -> dict:
    """A tuple's codes, entity indices and names, relation label and name (NA: label None)."""
    layout = extractor.layout
    entity_of = assignment.entity_of
    args = [entity_of[slot] for slot in codes[:-1]]
    relation = codes[-1] - layout.n_slots
    is_na = codes[-1] == layout.na_code
    return {"codes": list(codes), "args": args, "names": [doc.entities[a].name for a in args],
            "label": None if is_na else layout.relations[relation],
            "label_name": NA_NAME if is_na else layout.relation_names[relation]}


def tuple_attention(extractor: Extractor, doc: Document, decoding: DecodingConfig | None = None) -> list[dict]:
    """For each generated tuple i >= 1, the earlier tuple it attends to most when predicting its
    relation (see the module docstring). Each row:

    `index` i; `tuple` and `top_tuple` (describe_tuple); `top` j < i; `weight`: the head-averaged
    attention mass on tuple j's tokens, in [0, 1] (the paper sums heads: same argmax, H times the
    value); `weights`: that mass for every j < i; `shares_entity` (top vs i), `top_is_previous`
    (j == i-1), `previous_shares_entity` (tuple i-1 vs i: the recency baseline).
    A last tuple cut off by the token budget is left out.
    """
    cfg = decoding or sequence_decoding(extractor)
    assignment, input_ids, codes = generate_codes(extractor, doc, cfg)
    size = extractor.layout.arity + 1
    n_tuples = len(codes) // size
    if n_tuples < 2:
        return []
    codes = codes[: n_tuples * size]
    attention = last_layer_self_attention(extractor, input_ids, codes, cfg.chunk_length)
    start = len(extractor.backbone.decoder_prefix)  # decoder position of the first generated code
    tuples = [codes[k * size: (k + 1) * size] for k in range(n_tuples)]
    rows = []
    for i in range(1, n_tuples):
        query = start + i * size + size - 2  # the last argument's position: its next token is r
        weights = [float(attention[query, start + j * size: start + (j + 1) * size].sum()) for j in range(i)]
        top = max(range(i), key=weights.__getitem__)
        entities = set(tuples[i][:-1])
        rows.append({"index": i, "tuple": describe_tuple(tuples[i], doc, assignment, extractor),
                     "top": top, "top_tuple": describe_tuple(tuples[top], doc, assignment, extractor),
                     "weight": weights[top], "weights": weights,
                     "shares_entity": bool(entities & set(tuples[top][:-1])), "top_is_previous": top == i - 1,
                     "previous_shares_entity": bool(entities & set(tuples[i - 1][:-1]))})
    return rows


def summarise(rows_per_doc: Sequence[Sequence[dict]]) -> dict:
    """Counts and shares over the analysed tuples of several documents (None: no tuple)."""
    rows = [row for rows in rows_per_doc for row in rows]
    counts = {key: sum(row[key] for row in rows)
              for key in ("shares_entity", "previous_shares_entity", "top_is_previous")}

    def share(key: str) -> float | None:
        return counts[key] / len(rows) if rows else None

    return {"documents": len(rows_per_doc), "tuples": len(rows),
            "top_shares_entity": counts["shares_entity"], "share_top_shares_entity": share("shares_entity"),
            "previous_shares_entity": counts["previous_shares_entity"],
            "baseline_share": share("previous_shares_entity"),  # what attending to tuple i-1 would give
            "top_is_previous": counts["top_is_previous"], "share_top_is_previous": share("top_is_previous")}


def attention_statistics(extractor: Extractor, docs: Sequence[Document],
                         decoding: DecodingConfig | None = None) -> dict:
    """Over `docs`: how often the top-attended earlier tuple shares an entity with the tuple being
    predicted, against the recency baseline, and how often it simply is the previous tuple."""
    return summarise([tuple_attention(extractor, doc, decoding) for doc in docs])


def _tuple_text(t: dict) -> str:
    return f"({', '.join(t['names'])}) {t['label_name']}"


def render(doc: Document, rows: Sequence[dict]) -> str:
    """One document's tuples, each with the earlier tuple it attends to most and that weight."""
    lines = [f"{doc.doc_id}: the earlier tuple most attended (last decoder layer) when each relation is predicted"]
    if not rows:
        lines.append("  fewer than two tuples generated")
    else:
        lines.append(f"  #0 {_tuple_text(rows[0]['top_tuple'])}")
    for row in rows:
        marks = [m for m, on in (("shares entity", row["shares_entity"]), ("previous", row["top_is_previous"])) if on]
        lines.append(f"  #{row['index']} {_tuple_text(row['tuple'])}  <- #{row['top']} {_tuple_text(row['top_tuple'])}"
                     f"  w={row['weight']:.3f}" + (f"  [{', '.join(marks)}]" if marks else ""))
    return "\n".join(lines)


def main(model_dir: str | Path, docs_path: str | Path, doc_index: int, n_docs_for_stats: int) -> dict:
    """`dore attention MODEL_DIR DOCS --doc N`: document N's tuple attention (rows and text) and
    the statistics over the first `n_docs_for_stats` documents (document N's rows reused)."""
    extractor = Extractor.from_pretrained(model_dir)
    docs, _, _ = read_any(docs_path)
    if not 0 <= doc_index < len(docs):
        raise DataError(f"document index {doc_index} is outside the {len(docs)} documents", file=docs_path,
                        field="--doc")
    rows = tuple_attention(extractor, docs[doc_index])
    stats_docs = docs[: max(0, n_docs_for_stats)]
    per_doc = [rows if k == doc_index else tuple_attention(extractor, d) for k, d in enumerate(stats_docs)]
    return {"doc_id": docs[doc_index].doc_id, "rows": rows, "text": render(docs[doc_index], rows),
            "statistics": summarise(per_doc)}
