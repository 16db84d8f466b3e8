"""The errors a user can act on, and how each reads in one or two lines (the CLI's message, the
flow's failure message): what is wrong, where, and what to do."""

from __future__ import annotations

from pydantic import ValidationError

from dore.data.model import DataError
from dore.model.backbone import BackboneUnavailable

#: Failures of the input, not of the code: bad data (`DataError`, a missing data file and failed
#: expectations among them), bad parameters, a backbone not on this machine, a missing file or model.
USER_ERRORS = (DataError, ValidationError, BackboneUnavailable, FileNotFoundError)


def describe_error(exc: BaseException) -> str:
    """One of `USER_ERRORS` in a line or two: what is wrong, where, and what to do where the
    message says it (the flow's failure message too)."""
    if isinstance(exc, ValidationError):
        problems = [f"{'.'.join(map(str, e['loc'])) or exc.title}: {e['msg'].removeprefix('Value error, ')}"
                    + (f" (got {e['input']!r})" if isinstance(e["input"], (str, int, float)) else "")
                    for e in exc.errors()]
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        return f"bad parameter{'s' if len(problems) > 1 else ''}: {'; '.join(problems[:3])}{more}"
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"{exc.filename}: no such file or directory"
    return str(exc)
