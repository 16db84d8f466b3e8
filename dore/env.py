"""Offline-first defaults: no analytics, no hub access (docs/stack.md §10), and the checkout's
own BentoML model store, so every entry point (CLI, DVC stages, flows, service) packages into and
serves from the same `.bentoml`.

Set before the heavy libraries are imported; a value the user already set wins (HF_HUB_OFFLINE=0
to download, BENTOML_HOME=... for another store). Commands that are not dore's (`bentoml serve`,
`bentoml build`) read the same values from the shell: `eval "$(python -m dore.env)"`.
"""

import os
import shlex
from pathlib import Path

OFFLINE_DEFAULTS = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "BENTOML_DO_NOT_TRACK": "true",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_EVALUATE_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def project_root() -> Path:
    """The checkout dore runs from (the folder above the package, when it holds the project's
    pyproject.toml: an editable install), else the working directory."""
    checkout = Path(__file__).resolve().parents[1]
    return checkout if (checkout / "pyproject.toml").exists() else Path.cwd()


def bentoml_home() -> Path:
    """The project's BentoML home: `$BENTOML_HOME`, else `.bentoml` in the checkout."""
    return Path(os.environ.get("BENTOML_HOME") or project_root() / ".bentoml")


def set_offline_defaults() -> None:
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)
    os.environ["BENTOML_HOME"] = str(bentoml_home())  # before bentoml resolves its store (once per process)


if __name__ == "__main__":  # the same defaults as shell exports, for the shell's own commands
    set_offline_defaults()
    for key in [*OFFLINE_DEFAULTS, "BENTOML_HOME"]:
        print(f"export {key}={shlex.quote(os.environ[key])}")
