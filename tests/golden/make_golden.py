"""Write tests/golden/golden.json and tests/golden/model/ with the current code.

    PYTHONPATH=. python tests/golden/make_golden.py [--dir tests/golden]

Every run of `runs.RUNS` trains in a fresh temporary folder; the "dore_rows" model is copied to
`<dir>/model/` and its predictions, reloaded from there, are recorded under "saved_model". Run it
only to re-baseline: the point of the golden files is that they come from the code before a change
(another --dir, then `diff -r`, checks determinism).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the checkout's `dore` and `tests`, before any installed copy
# Offline, as the Makefile runs: read at import by the HF libraries, and saved in tokenizer_config.json
os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1",
                   "BENTOML_DO_NOT_TRACK": "true"})

from tests.golden import runs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=HERE, help="where golden.json and model/ go")
    args = parser.parse_args()
    model = args.dir / "model"
    golden = {"made_by": {"git_commit": _git("rev-parse", "HEAD"), "python": platform.python_version(),
                          **{p: version(p) for p in ("torch", "transformers", "accelerate", "tokenizers")}},
              "config": {**runs.CONFIG, "runs": {name: train for name, (_, train) in runs.RUNS.items()},
                         "resolved": {name: runs.resolved(name) for name in runs.RUNS}},
              "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in runs.RUNS:
            workdir = Path(tmp) / name
            golden["runs"][name] = runs.run(name, workdir)
            if name == "dore_rows":
                shutil.rmtree(model, ignore_errors=True)
                shutil.copytree(runs.model_dir(workdir), model)
        golden["saved_model"] = {"from": "dore_rows", "predictions": {
            "test": runs.dore_predictions(model, runs.documents(Path(tmp) / "docs"))}}
    (args.dir / "golden.json").write_text(json.dumps(golden, indent=1) + "\n")
    print(f"wrote {args.dir / 'golden.json'} and {model}")


def _git(*argv: str) -> str | None:
    done = subprocess.run(["git", *argv], cwd=HERE, capture_output=True, text=True)
    return done.stdout.strip() or None


if __name__ == "__main__":
    main()
