"""The `dore` command line: `dore.cli.base` holds the app, its help text and the shared options; each
other module adds its commands to the app when imported."""

from dore.env import set_offline_defaults

set_offline_defaults()  # offline hub switches and the BentoML store, before transformers and bentoml read them

import typer.main  # noqa: E402

from dore.cli.base import app  # noqa: E402
from dore.cli import data, stages, scirex, entities  # noqa: E402, F401  (importing registers the commands)

# `dore --help` lists commands in registration order, and the modules group them by topic: keep the
# lifecycle order the help has always shown (a command missing here goes last, in registration order).
COMMAND_ORDER = (
    "convert", "score", "prepare", "validate", "train", "tune", "evaluate", "evaluate-joint",
    "coref", "evaluate-coref", "scirex-baseline", "salience", "scirex-chain",
    "experiments", "attention", "package", "stage", "predict", "extract", "pipeline",
)


def _position(info: typer.models.CommandInfo) -> int:
    name = info.name or typer.main.get_command_name(info.callback.__name__)
    return COMMAND_ORDER.index(name) if name in COMMAND_ORDER else len(COMMAND_ORDER)


app.registered_commands.sort(key=_position)

__all__ = ["app"]
