"""The `dore` command line: one sub-command per lifecycle stage (each calls the stage's function)."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import click
import typer
from rich.console import Console
from rich.table import Table

from dore import stages
from dore.config import PipelineParams, TrainConfig
from dore.data.datasets import SETTINGS
from dore.errors import USER_ERRORS, describe_error
from dore.training.loop import processes


class DoreCommands(typer.core.TyperGroup):
    """`dore`'s commands, ended by an error the user can act on (`USER_ERRORS`) with its message
    (what, where, what to do) and status 1 instead of a traceback; `--debug` shows the traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except USER_ERRORS as exc:
            if ctx.params.get("debug"):
                raise
            # SystemExit with a message: Python prints it to stderr and exits 1, no traceback
            raise SystemExit(f"error: {describe_error(exc)}\n(dore --debug ... shows the traceback)") from None


# Plain (click) help and usage errors: they wrap to the terminal, where rich's tables cut option
# names and choice lists at 80 columns.
app = typer.Typer(cls=DoreCommands, add_completion=False, no_args_is_help=True, help=__doc__, rich_markup_mode=None)
console = Console(width=None if Console().is_terminal else 160)


@app.callback()
def options(debug: Annotated[bool, typer.Option("--debug", envvar="DORE_DEBUG",
                                                help="show the traceback of an expected error too")] = False):
    """Options of every command (read by `DoreCommands`)."""


def rows_table(title: str, rows: dict, *, key: str = "metric", value: str = "value") -> Table:
    table = Table(title=title)
    table.add_column(key)
    table.add_column(value, justify="right")
    for k, v in rows.items():
        table.add_row(str(k), f"{v:.2f}" if isinstance(v, float) else "n/a" if v is None else str(v))
    return table


def run_params(dataset: str, artifacts: Path | None, limit_train=None, limit_dev=None, limit_test=None, *,
                run: typing.Literal["new", "latest"] = "new", **train) -> PipelineParams:
    """Command-line values -> checked `PipelineParams`; unset options keep the config's defaults.
    Unset `artifacts`: a new run directory (`run="new"`, commands that write a run; claimed once the
    values and the backbone are checked) or the latest run with a trained model of the dataset
    (`"latest"`, commands that read one)."""
    limits = {"limit_train": limit_train or None, "limit_dev": limit_dev or None, "limit_test": limit_test or None}
    params = PipelineParams(dataset=dataset, **limits,
                            train=TrainConfig(**{k: v for k, v in train.items() if v is not None}))
    if run == "latest":
        return params.model_copy(update={"artifacts": str(artifacts or stages.latest_run(dataset))})
    if artifacts is None and processes().num_processes > 1:  # torchrun: each process would claim a run of its own
        raise typer.BadParameter("name the run when training with several processes", param_hint="--artifacts")
    return stages.start_run(params, artifacts)


def with_train_options(command: Callable) -> Callable:
    """Give `command` one option per `TrainConfig` field (`--lr`, `--entity-embeddings/--no-...`),
    derived from the config, so each parameter is declared once; unset options stay None."""
    signature = inspect.signature(command)
    hints = typing.get_type_hints(command, include_extras=True)  # the command modules' annotations are strings
    declared = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()
                if p.kind is not inspect.Parameter.VAR_KEYWORD]
    for name, field in TrainConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        kind, choices = option_type(field.annotation)
        help_text = field.description or ""
        if choices:
            help_text = f"{' | '.join(choices)}" + (f"; {help_text}" if help_text else "")
        default = "null" if field.default is None else field.default
        option = typer.Option(f"{flag}/--no-{flag[2:]}" if kind is bool else flag,
                              help=f"{help_text} [config default: {default}]", show_default=False,
                              rich_help_panel="Training (dore.config.TrainConfig)")
        declared.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                          annotation=Annotated[Optional[kind], option]))
    command.__signature__ = signature.replace(parameters=declared)
    return command


def option_type(annotation: Any) -> tuple[type, list[str]]:
    """The command-line type of a config field, and its choices when it is a Literal."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    if typing.get_origin(args[0]) is typing.Literal:
        return str, [str(c) for c in typing.get_args(args[0])]
    if typing.get_origin(annotation) is typing.Literal:
        return str, [str(c) for c in typing.get_args(annotation)]
    return args[0], []


Dataset = typing.Literal[tuple(SETTINGS)]  # a choice: an unknown name is a usage error before anything runs
DatasetOpt = Annotated[Dataset, typer.Option(help="the benchmark setting")]
NewRunOpt = Annotated[Optional[Path], typer.Option(
    "--artifacts", help="output root (writes <artifacts>/<dataset>/); unset: a new run directory runs/<time> "
                        "(`dvc repro` alone writes artifacts/)")]
RunOpt = Annotated[Optional[Path], typer.Option(
    "--artifacts", help="the run to read (<artifacts>/<dataset>/model); unset: the latest run under runs/ with one")]
ArtifactsOpt = Annotated[Path, typer.Option(help="artifacts root")]
LimitOpt = Annotated[Optional[int], typer.Option(help="first N documents of the split (0 or unset: all)")]


LatestOpt = Annotated[bool, typer.Option("--latest/--no-latest", help="also make it dore-<dataset>:latest, the "
                                                                   "model `bentoml serve` loads by default")]
