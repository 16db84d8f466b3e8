"""Parameter presets, in one table: `embedded` (runs anywhere, on CPU) and `paper` (Table 7).

- `params.yaml` (the DVC pipeline's parameters) is the `embedded` preset rendered by
  `python -m dore.presets > params.yaml`; `python -m dore.presets --preset paper` prints the
  paper's settings in the same shape, to paste into a section.
- The Prefect flow resolves its `preset` parameter here (`resolve`).
- `load_section` reads one section of a params file back into `PipelineParams`: the CLI stage
  commands and the DVC stages use it.

A section is named after its dataset and holds `PipelineParams` without `dataset` (the section
name) and `artifacts` (DVC fixes the outputs to `artifacts/<dataset>/`).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from dore.config import EntityParams, PipelineParams
from dore.data.datasets import SETTINGS
from dore.data.model import DataError

Preset = Literal["embedded", "paper"]

# The embedded default: a small real subset and the MiniLM encoder-decoder that ships with the
# package, sized to finish the whole pipeline within 15 minutes on 2 CPU cores.
EMBEDDED: dict[str, Any] = {
    "limit_train": 50, "limit_dev": 20, "limit_test": 50, "num_beams": 1,
    "train": {"epochs": 4, "max_minutes": 8.0, "mixed_precision": "no",
              "log_every_steps": 2},  # enough points for the loss plot
}
# The best measured training recipe of each dataset (issue #13): the switches only, budgets and subsets
# being a preset's. `dore train` without options starts from it, and every embedded section uses it.
# Binary settings (Re-DocRED, measured on its 50 held-out dev documents): entity symbols (18.66 vs 6.44 dev
# F1 for the paper's dynamic negatives at 226 steps), pair-aware relation logits (+2.34) and, with them,
# no sampled negatives (+2.82 over random 10 %): experiments/results.md, experiments/levers/. The
# 90-minute recipe adds a classifier teacher, a second command (README, "Budgeted runs").
BINARY_RECIPE: dict[str, Any] = {"sampling": "none", "entity_embeddings": True, "pair_logits": True}
# SciREX (experiments/scirex/gold-input-30min, on the 30 held-out training papers): entity symbols,
# random 10 % negatives and one 512-piece window (held-out binary 74.04 against 73.31 for 8 windows at the
# same 30 minutes). Its 4-ary tuples have no pair term.
SCIREX_RECIPE: dict[str, Any] = {"sampling": "random:0.1", "entity_embeddings": True, "max_source_length": 512}
RECIPES: dict[str, dict[str, Any]] = {"docred": BINARY_RECIPE, "cdr": BINARY_RECIPE, "gda": BINARY_RECIPE,
                                      "scirex": SCIREX_RECIPE, "scirex-binary": SCIREX_RECIPE}
EMBEDDED_BY_DATASET: dict[str, dict[str, Any]] = {
    # Re-DocRED on all 450 training documents; 260 steps (~9.5 min on 2 cores; 120 steps gave test F1
    # 21.57 on the first 50 documents) with the schedule decaying over them, `max_minutes` a guard so the
    # whole job stays within 15 minutes; the NA bias (positive: answer NA more often) chosen on dev.
    "docred": {"limit_train": None, "tune_na_biases": [2.0, 1.0, 0.0, -1.0],
               "train": {"max_steps": 260, "epochs": 3, "max_minutes": 10.5}},
}

# Table 7 of the paper (appendix A.3), read column by column. Where it is silent: BioBART is the
# large model (Table 3's best), SciREX's LED the base model (Table 4); sampling and decoding mode
# are the best setting without distant pre-training, "negative sampling all + parallel row
# generation" (Table 2). SciREX's batch of 32 long documents is 4 per step x 8 accumulation steps.
_PAPER_COMMON: dict[str, Any] = {
    "limit_train": None, "limit_dev": None, "limit_test": None,
    "train": {"sampling": "all", "mode": "rows", "max_minutes": None, "mixed_precision": "auto",
              "lr_new": None,  # one learning rate for all parameters
              "symbol_loss": False},  # cross-entropy over the whole vocabulary, as the paper trains
}
PAPER: dict[str, dict[str, Any]] = {
    "docred": {"num_beams": 4, "tune_length_penalties": [round(0.2 * k, 1) for k in range(1, 11)],  # A.3
               "train": {"backbone": "t5-large", "lr": 1e-4, "epochs": 40, "batch_docs": 4,
                                         "warmup_ratio": 0.06, "max_source_length": 1024}},
    "cdr": {"num_beams": 1, "train": {"backbone": "GanjinZero/biobart-large", "lr": 2e-5, "epochs": 40,
                                      "batch_docs": 4, "warmup_ratio": 0.1, "max_source_length": 1024}},
    "gda": {"num_beams": 1, "train": {"backbone": "GanjinZero/biobart-large", "lr": 2e-5, "epochs": 10,
                                      "batch_docs": 4, "warmup_ratio": 0.15, "max_source_length": 1024}},
    "scirex": {"num_beams": 1, "train": {"backbone": "allenai/led-base-16384", "lr": 5e-5, "epochs": 40,
                                         "batch_docs": 4, "grad_accum": 8, "warmup_ratio": 0.06,
                                         "max_source_length": 4096}},
}
PAPER["scirex-binary"] = PAPER["scirex"]  # Table 4's binary model: trained as the 4-ary one


# Entity recognition (dore.entities, issue #14). `embedded`: a small mention and coreference model that
# fits inside the main job (~3 minutes on 2 CPU cores: the first 120 training documents, one pass);
# `full`: every training document, 5 epochs (~0.75 s a step on 2 idle cores), 70 minutes as a guard
# (the measured run of experiments/entities/).
ENTITY_PRESETS: dict[str, dict[str, Any]] = {
    # word shapes off here: at 30 steps they cost dev span + type F1 (31.52 vs 32.94, experiments/entities/)
    "embedded": {"limit_train": 120, "word_shapes": False,
                 "train": {"epochs": 1, "max_minutes": 3.0, "lr": 2e-4, "lr_new": 2e-3,
                                               "batch_docs": 4, "mixed_precision": "no", "log_every_steps": 5}},
    "full": {"train": {"epochs": 5, "max_minutes": 70.0, "lr": 1e-4, "lr_new": 1e-3,
                       "batch_docs": 4, "mixed_precision": "no", "log_every_steps": 10,
                       "checkpoint_every_steps": 50}},
    # SciREX papers (~6k words): training reads chunks of ~400 words (one window), prediction the
    # whole paper in windows of 512 pieces that overlap by 64.
    # word shapes off: experiments/scirex/ measured the chain without them (not yet measured with)
    "scirex": {"dataset": "scirex", "window": 512, "stride": 448, "train_chunk_words": 400, "word_shapes": False,
               "train": {"epochs": 1, "max_minutes": 20.0, "lr": 1e-4, "lr_new": 1e-3, "batch_docs": 8,
                         "mixed_precision": "no", "log_every_steps": 5, "checkpoint_every_steps": 20}},
}

EMBEDDED_RECOGNIZER = {"docred": "embedded"}  # datasets whose embedded preset trains a recognizer into the model


def entity_params(preset: str = "full", overrides: Mapping[str, Any] | None = None, *, dataset: str = "docred",
                  artifacts: str = "artifacts") -> EntityParams:
    """`EntityParams` of an entity preset with `overrides` merged in (unknown keys raise)."""
    if preset not in ENTITY_PRESETS:
        raise ValueError(f"unknown entity preset {preset!r}; choose one of {', '.join(ENTITY_PRESETS)}")
    base = EntityParams(dataset=dataset, artifacts=artifacts).model_dump(mode="json")
    return EntityParams.model_validate(merge(merge(base, ENTITY_PRESETS[preset]), overrides))


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """`base` with `overrides` applied; nested mappings merge key by key (`{"train": {"lr": 1e-3}}`)."""
    out = dict(base)
    for key, value in (overrides or {}).items():
        out[key] = merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
    return out


def preset_values(preset: Preset, dataset: str) -> dict[str, Any]:
    """The preset's values for `dataset`, as a params.yaml section (no `dataset`, no `artifacts`)."""
    if dataset not in SETTINGS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(SETTINGS)}")
    if preset == "embedded":
        values = merge(merge(EMBEDDED, {"train": RECIPES[dataset]}), EMBEDDED_BY_DATASET.get(dataset))
        if dataset in EMBEDDED_RECOGNIZER:  # the main job's model also reads plain text
            values["entities"] = entity_params(EMBEDDED_RECOGNIZER[dataset]).model_dump(
                mode="json", exclude={"dataset", "artifacts"})
        return values
    if preset == "paper":
        return merge(_PAPER_COMMON, PAPER[dataset])
    raise ValueError(f"unknown preset {preset!r}; choose embedded or paper")


def resolve(preset: Preset, dataset: str, overrides: Mapping[str, Any] | None = None,
            artifacts: str = "artifacts") -> PipelineParams:
    """`PipelineParams` of a preset, with `overrides` merged in (unknown keys raise)."""
    values = merge(preset_values(preset, dataset), overrides)
    return PipelineParams.model_validate({"dataset": dataset, "artifacts": artifacts, **values})


def load_section(params_file: str | Path, section: str, artifacts: str = "artifacts") -> PipelineParams:
    """One dataset's section of a params file (params.yaml) as `PipelineParams`."""
    path = Path(params_file)
    document = yaml.safe_load(path.read_text()) or {}
    if section not in document:
        raise DataError(f"no section {section!r} (sections: {', '.join(document) or 'none'})", file=path,
                        field=section)
    return PipelineParams.model_validate({"dataset": section, "artifacts": artifacts, **document[section]})


def section_values(params: PipelineParams) -> dict[str, Any]:
    """`params` as a params.yaml section: every field, so DVC tracks each one (the recognizer's
    dataset and output root are the section's own)."""
    return params.model_dump(mode="json", exclude={"dataset": True, "artifacts": True,
                                                   "entities": {"dataset", "artifacts"}})


def render(preset: Preset = "embedded") -> str:
    """A params.yaml with one section per dataset."""
    header = (f"# Generated by `python -m dore.presets --preset {preset} > params.yaml` (the table is in\n"
              "# dore/presets.py). One section per dataset: dore.config.PipelineParams, with `train` the\n"
              "# dore.config.TrainConfig fields. `dore stage <stage> --section <dataset>` and the DVC stages read it.\n")
    body = {name: section_values(resolve(preset, name)) for name in SETTINGS}
    return header + yaml.safe_dump(body, sort_keys=False, default_flow_style=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print a params.yaml for a preset.")
    parser.add_argument("--preset", choices=["embedded", "paper"], default="embedded")
    print(render(parser.parse_args(argv).preset), end="")


if __name__ == "__main__":
    main()
