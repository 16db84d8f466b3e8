"""`dore entities`: mention detection and coreference for plain text (issue #14)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer

from dore import stages
from dore.cli.base import LimitOpt, NewRunOpt, app, console, option_type, rows_table, with_train_options
from dore.config import EntityParams, TrainConfig
from dore.presets import entity_params


entities_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                           help="Mention detection and coreference for plain text (dore.entities).")
app.add_typer(entities_app, name="entities")
ENTITY_FIELDS = [n for n in EntityParams.model_fields if n not in ("dataset", "train", "artifacts")]


def with_entity_options(command: Callable) -> Callable:
    """One option per `EntityParams` field besides dataset, train and artifacts (derived, as
    `with_train_options` derives the training ones); unset options stay None."""
    signature = inspect.signature(command)
    declared = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    for name in ENTITY_FIELDS:
        field = EntityParams.model_fields[name]
        kind, choices = option_type(field.annotation)
        help_text = " | ".join(choices) + ("; " if choices else "") + (field.description or "")
        option = typer.Option("--" + name.replace("_", "-"), help=f"{help_text} [config default: {field.default}]",
                              show_default=False, rich_help_panel="Entities (dore.config.EntityParams)")
        declared.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                          annotation=Annotated[Optional[kind], option]))
    command.__signature__ = signature.replace(parameters=[*declared, *(
        p for p in signature.parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD)])
    return command


EntityPresetOpt = Annotated[str, typer.Option("--preset", help="full (every training document) | embedded "
                                                               "(the small model of the main job)")]


def _entity_params(preset: str, artifacts: Path | None, options: dict) -> EntityParams:
    """Command-line values over the preset's `EntityParams`; unset `artifacts`: a new run directory."""
    own = {k: v for k, v in options.items() if k in ENTITY_FIELDS and v is not None}
    train = {k: v for k, v in options.items() if k in TrainConfig.model_fields and v is not None}
    root = artifacts or stages.new_run()
    return entity_params(preset, {**own, "train": train}, artifacts=str(root))


@entities_app.command("train")
@with_train_options
@with_entity_options
def entities_train(preset: EntityPresetOpt = "full", artifacts: NewRunOpt = None,
                   resume: Annotated[bool, typer.Option(help="continue from the newest checkpoint")] = True,
                   **options):
    """Train mention detection and coreference (DocRED test.json + Re-DocRED dev_revised minus its last 50
    documents), select on those 50; the recognizer goes to <artifacts>/docred/entities/model."""
    params = _entity_params(preset, artifacts, options)
    summary = stages.train_entities(params, resume=resume)
    console.print(rows_table("entities: best on dev", {k: v for k, v in (summary["best_dev"] or {}).items()}))
    console.print(f"recognizer: {Path(params.artifacts) / params.dataset / 'entities' / 'model'} "
                  f"(default coreference: {summary.get('default_coref')})")


@entities_app.command("evaluate")
def entities_evaluate(artifacts: Annotated[Path, typer.Option("--artifacts", help="the run holding "
                                                                 "<artifacts>/docred/entities/model")],
                      split: Annotated[str, typer.Option(help="test | dev")] = "test",
                      limit: LimitOpt = None,
                      dataset: Annotated[str, typer.Option(help="entity setting: docred | scirex")] = "docred"):
    """Score the recognizer on a split read from its own sentences (no entity information): mention P/R/F1
    (span, span + type) and CoNLL coreference of both backends; writes entities/eval/metrics-<split>.json."""
    params = EntityParams(dataset=dataset, artifacts=str(artifacts), **{f"limit_{split}": limit or None})
    record = stages.evaluate_entities(params, split)
    rows = {f"mentions {k} {m}": v[m] for k, v in record["mentions"].items() for m in ("p", "r", "f1")}
    rows |= {f"coref {b} {k}": (v[k]["f1"] if isinstance(v[k], dict) else v[k])
             for b, v in record["coref"].items() for k in ("muc", "b3", "ceafe", "avg_f1")}
    console.print(rows_table(f"entities {split} [{record['scorer']}] ({record['setting']}; default coreference "
                             f"{record['default_coref']})", rows))
