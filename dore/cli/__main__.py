"""`python -m dore.cli ...` (and `torchrun ... -m dore.cli ...`): the `dore` command."""

from dore.cli import app

if __name__ == "__main__":
    app()
