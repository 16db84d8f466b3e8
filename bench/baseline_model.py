"""A copy of a trained DORE model that the benches' baseline revision can load.

The baseline revision of #17's benches (53de7be) predates the pair term (`pair_logits`): it
refuses a model that has one ("Unexpected key(s) ... pair.head.weight"). The benches compare
every configuration on one model file, so this writes a copy without the pair term (its weights
and the card's switch); everything else, tokenizer and entity table included, is the same file.
The copy extracts differently from the original (the pair term is gone): it is a timing model,
not a model to score.

    python bench/baseline_model.py artifacts/docred/model runs/nopair/docred/model
    dore package --dataset docred --artifacts runs/nopair          # -> dore-docred:<version>
    bench/run_service_matrix.sh dore-docred:<version>
    OMP_NUM_THREADS=1 python bench/bench_decoding.py --model runs/nopair/docred/model --levers-only
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

PAIR_PREFIX = "dore_entities.pair."  # dore.model.entities.PREFIX + the pair term's attribute


def strip_pair_term(source: Path, target: Path) -> list[str]:
    """Copy `source` to `target` without the pair term; returns the weight names dropped."""
    if target.exists():
        raise FileExistsError(f"{target} exists: choose a new folder")
    shutil.copytree(source, target)
    weights = target / "model.safetensors"
    with safe_open(str(weights), "pt") as fh:
        metadata, state = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}
    dropped = sorted(k for k in state if k.startswith(PAIR_PREFIX))
    save_file({k: v for k, v in state.items() if k not in dropped}, str(weights), metadata=metadata)
    card_file = target / "dore_model.json"
    card = json.loads(card_file.read_text())
    for section in (card, card.get("preset") or {}, (card.get("preset") or {}).get("train") or {}):
        if isinstance(section, dict) and section.get("pair_logits"):
            section["pair_logits"], section["tail_logits"] = False, False
    card_file.write_text(json.dumps(card, indent=1))
    return dropped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path, help="a trained DORE model folder")
    ap.add_argument("target", type=Path, help="a new folder for the copy")
    args = ap.parse_args()
    dropped = strip_pair_term(args.source, args.target)
    print(f"{args.target}: {len(dropped)} pair-term tensors dropped" if dropped else
          f"{args.target}: no pair term, copied as is")


if __name__ == "__main__":
    main()
