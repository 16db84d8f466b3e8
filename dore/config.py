"""Every parameter, declared once (torch-free): training (`TrainConfig`), decoding
(`DecodingConfig`) and one dataset's pipeline (`PipelineParams`).

The CLI derives its options from these fields, `params.yaml` is rendered from them
(`dore.presets`), and the Prefect flow takes them as parameters. Each value is parsed and checked
when the config is built, so a typo fails at once, before any data or model is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dore.data.datasets import ENTITY_SETTINGS, SETTINGS
from dore.symbolic.sampling import SamplingConfig


class TrainConfig(BaseModel):
    """Training hyper-parameters (the CLI, DVC params and Prefect parameters all map onto this)."""

    model_config = ConfigDict(extra="forbid")
    backbone: str = Field("minilm", description="minilm (the embedded default) | tiny-t5 | tiny-bart | tiny-led | "
                          "a hub name | a local directory")
    mode: Literal["rows", "sequence"] = "rows"
    sampling: str = Field("dynamic", description="negative sampling: none | random:0.1 | diagonal:1 | asymmetric:2,1 | "
                          "asymmetric_flipped | dynamic | all")
    order: Literal["row-column", "annotation", "random"] = Field(
        "row-column", description="target tuple order (annotation / random: the paper's order ablations)")
    epochs: int = 10
    max_steps: int | None = Field(None, description="stop after this many optimizer steps")
    max_minutes: float | None = Field(None, description="stop after this much training wall time, summed over resumed runs")
    lr_schedule: Literal["steps", "clock"] = Field(
        "steps", description="linear warm-up and decay over the steps (max_steps, else epochs), or over the clock "
        "(max_minutes: the lr reaches 0 when the time budget ends; budgeted runs)")
    lr: float = 1e-4
    lr_new: float | None = Field(1e-3, description="learning rate of newly initialised parameters (cross-attention, "
                                 "entity tables, a classifier's head): they learn 10x faster; null: lr")
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    batch_docs: int = 4
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    label_smoothing: float = 0.0
    symbol_loss: bool = Field(True, description="softmax over the symbol tokens only: the constrained decoder never "
                              "chooses anything else, and the output layer shrinks from the vocabulary to ~100 rows")
    group_by_length: bool = Field(True, description="batch documents of similar length and decode rows in length "
                                  "buckets, so little compute goes to padding")
    max_source_length: int | None = None
    chunk_length: int | None = Field(None, description="encode long documents in windows of this many tokens and "
                                     "concatenate their states (Fusion-in-Decoder); max_source_length caps the total")
    seed: int = 42
    init: Literal["number", "random"] = "number"
    init_from: str | None = Field(None, description="start from a trained DORE model directory (distant pre-training -> fine-tuning)")
    init_encoder_from: str | None = Field(
        None, description="start the encoder from a trained classifier's (a `--method classifier` model directory "
        "on the same backbone and layout; the teacher lever): the decoder starts fresh, and the classifier's "
        "training time counts in max_minutes")
    teacher_pair_head: bool = Field(
        False, description="with init_encoder_from and pair_scorer atlop: the pair term also starts as that "
        "classifier's head (one trained with context_pooling off, whose head reads the same entity states), so "
        "the pair term starts from the teacher's decisions")
    freeze_encoder: bool = Field(False, description="with init_encoder_from: the encoder keeps the teacher's "
                                 "weights (no gradient, no dropout), so DORE trains its decoder, entity table and "
                                 "pair term on the teacher's entity states, and a step skips the encoder's backward")
    context_pooling: bool = Field(True, description="the classifier (`--method classifier`): ATLOP's localized "
                                  "context pooling (off: the entity states alone, a head a DORE pair term can start "
                                  "from; LED: always off)")
    entity_embeddings: bool = Field(False, description="document-aware entity symbols: each slot's input and output "
                                    "embedding gets its projected mean encoder state at its markers (dore.model.entities)")
    pair_logits: bool = Field(False, description="pair-aware relation logits: where the decoder writes a pair's "
                              "relation, add a bilinear score of the head and tail entities' pooled encoder states "
                              "(dore.model.entities.PairScorer; rows mode, binary relations, with entity_embeddings)")
    pair_scorer: Literal["low-rank", "atlop"] = Field(
        "low-rank", description="the pair term's representation: low-rank (mean marker state, rank-256 bilinear) or "
        "atlop (logsumexp of the marker states, group bilinear over blocks of 64; needs pair_logits)")
    pair_lr: float | None = Field(None, gt=0.0, description="learning rate of the pair term (null: lr_new, as "
                                  "every new part). With teacher_pair_head the term is not new: it starts as a "
                                  "converged head, which lr_new would shake loose; the encoder's lr keeps it")
    pair_loss: float = Field(0.0, ge=0.0, description="weight of an adaptive-threshold loss (ATLOP's, NA as the "
                             "threshold) on the pair term alone over every entity pair of each document, not only "
                             "the pairs of the sampled rows; 0: off (needs pair_logits)")
    tail_logits: bool = Field(False, description="pair-aware tail logits: where the decoder chooses its next tail "
                              "(or EOS), add to each entity's logit the pair term's evidence that (head, entity) "
                              "holds a relation (logsumexp of its relation scores minus NA's), times a learned "
                              "scale that starts at 0 (at 1 with teacher_pair_head); needs pair_logits")
    attention_dropout: float | None = Field(
        None, ge=0.0, le=1.0, description="dropout on attention probabilities in every attention of the backbone "
        "(encoder and decoder); null: the backbone's own (MiniLM: 0.1). 0 lets CPU attention take its fused "
        "kernel: a third off a DORE step, a seventh off a classifier step (bench/bench_train.py)")
    mixed_precision: Literal["no", "bf16", "fp16", "auto"] = "auto"
    eval_every_epochs: int = 1
    checkpoint_every_steps: int = 50
    keep_checkpoints: int = 1
    log_every_steps: int = 10

    @field_validator("sampling")
    @classmethod
    def _sampling_parses(cls, spec: str) -> str:
        SamplingConfig.parse(spec)  # a typo fails when the config loads, not after the model has
        return spec

    @model_validator(mode="after")
    def _consistent(self) -> "TrainConfig":
        if self.entity_embeddings and not self.symbol_loss:
            raise ValueError("entity_embeddings needs symbol_loss: the entity table enters through the symbol head")
        if self.lr_schedule == "clock" and self.max_minutes is None:
            raise ValueError("lr_schedule 'clock' decays over max_minutes: set it")
        if self.pair_logits and not (self.entity_embeddings and self.mode == "rows"):
            raise ValueError("pair_logits needs entity_embeddings and mode 'rows': the pair term reads the entities' "
                             "pooled states, and a row's head is its prefix")
        if self.pair_scorer != "low-rank" and not self.pair_logits:
            raise ValueError("pair_scorer chooses the pair term's representation: it needs pair_logits")
        if self.init_from and self.init_encoder_from:
            raise ValueError("init_from starts the whole model from a DORE model; init_encoder_from only the "
                             "encoder from a classifier: choose one")
        if self.teacher_pair_head and not (self.init_encoder_from and self.pair_scorer == "atlop"):
            raise ValueError("teacher_pair_head starts the atlop pair term from the init_encoder_from classifier's "
                             "head: it needs both (pair_scorer atlop, init_encoder_from)")
        if self.freeze_encoder and not self.init_encoder_from:
            raise ValueError("freeze_encoder keeps a teacher's encoder: it needs init_encoder_from")
        if self.tail_logits and not self.pair_logits:
            raise ValueError("tail_logits reads the pair term: it needs pair_logits")
        if self.pair_lr is not None and not self.pair_logits:
            raise ValueError("pair_lr is the pair term's learning rate: it needs pair_logits")
        if self.pair_loss and not self.pair_logits:
            raise ValueError("pair_loss trains the pair term: it needs pair_logits")
        return self


class DecodingConfig(BaseModel):
    mode: str = "rows"  # rows | sequence
    num_beams: int = 1
    length_penalty: float = 1.0
    max_new_tokens: int | None = None  # default: from the layout (rows ~ 2 tokens/entity, sequence 3/cell)
    na_bias: float = 0.0  # added to the NA logit (chosen on dev)
    eos_bias: float = 0.0  # added to the EOS logit (chosen on dev)
    batch_docs: int = 8
    symbol_head: bool = False  # greedy with the output layer over the symbol tokens only (same choices, faster)
    compact_rows: bool = True  # symbol head: finished rows leave the batch (same codes; off: every row runs to the end)
    sort_by_length: bool = True  # batch documents of similar input lengths (less padding; outputs as one by one)
    order: str = "row-column"  # the model's target order; other orders lift the sorted-heads rule
    chunk_length: int | None = None  # the model's chunked (Fusion-in-Decoder) encoding, as trained
    max_source_length: int | None = None  # input cap as trained (None: the backbone's positions)


class PipelineParams(BaseModel):
    """One dataset's parameters (a section of params.yaml, or a Prefect flow parameter)."""

    model_config = ConfigDict(extra="forbid")
    dataset: str = "docred"
    limit_train: int | None = Field(50, description="first N training documents (None: all)")
    limit_dev: int | None = Field(20, description="first N dev documents (None: all)")
    limit_test: int | None = Field(50, description="first N test documents (None: all)")
    train: TrainConfig = Field(default_factory=TrainConfig)
    num_beams: int = Field(1, description="beam size for the final evaluation (selection is greedy)")
    tune_na_biases: list[float] = Field([0.0, -1.0, -2.0, -3.0], description="NA logit biases tried on dev after "
                                        "training (the best goes into the model card); [0] to skip")
    tune_length_penalties: list[float] = Field([1.0], description="with num_beams > 1: length penalties α tried "
                                               "on dev with those beams after the NA bias (the best goes into the "
                                               "model card); [1.0] to skip")
    entities: EntityParams | None = Field(None, description=(
        "also train an entity recognizer (mentions, coreference; its own train split) and put it in the model, "
        "so the model reads plain text; None: no recognizer"))
    artifacts: str = "artifacts"

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        if name not in SETTINGS:  # a typo fails when the parameters load, before any stage runs
            raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(SETTINGS)}")
        return name


def artifacts_dir(params: PipelineParams) -> Path:
    """Where one dataset's pipeline writes: `<artifacts>/<dataset>/`."""
    return Path(params.artifacts) / params.dataset


class EntityParams(BaseModel):
    """Mention detection and coreference (`dore.entities`): one setting's parameters. Training runs
    in the one loop with `train` (its backbone is the encoder: minilm, or tiny-bart / tiny-t5 for tests)."""

    model_config = ConfigDict(extra="forbid")
    dataset: str = "docred"
    limit_train: int | None = Field(None, description="first N training documents (None: all)")
    limit_dev: int | None = Field(None, description="first N dev documents (None: all)")
    limit_test: int | None = Field(None, description="first N test documents (None: all)")
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(
        lr=1e-4, lr_new=1e-3, epochs=2, batch_docs=4, mixed_precision="no", log_every_steps=10))
    window: int = Field(512, description="encoder window in pieces, special tokens included (capped at the "
                        "encoder's positions); longer documents are read in overlapping windows")
    stride: int = Field(256, description="pieces between the starts of consecutive windows")
    mention_size: int = Field(128, description="width of the mention vectors of the antecedent scorer")
    coref_weight: float = Field(1.0, description="weight of the antecedent loss beside the tagging loss")
    word_shapes: bool = Field(True, description="add a word-shape embedding (capitalisation, digits, "
                              "sentence-initial) to the encoder's input: the uncased MiniLM cannot see case")
    train_chunk_words: int | None = Field(
        None, description="cut each training document into runs of whole sentences of at most this many words "
        "(long papers: a step reads a few windows, not the whole paper); dev and test read whole documents")
    select_metric: Literal["mention_f1", "mention_span_f1"] = Field(
        "mention_f1", description="dev metric that selects the model (mention F1 on span + type, or span only)")
    artifacts: str = "artifacts"

    @field_validator("dataset")
    @classmethod
    def _known_entity_setting(cls, name: str) -> str:
        if name not in ENTITY_SETTINGS:
            raise ValueError(f"no entity setting {name!r}; choose one of {', '.join(ENTITY_SETTINGS)}")
        return name

    @model_validator(mode="after")
    def _windows_fit(self) -> "EntityParams":
        if not 0 < self.stride < self.window:
            raise ValueError(f"stride {self.stride} must be positive and below the window {self.window}")
        return self


PipelineParams.model_rebuild()  # `entities` names EntityParams, declared after it
