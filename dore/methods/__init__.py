"""The methods the one training loop runs, behind one contract (`dore.training.loop.Method`):
DORE itself and the two baselines of the paper's comparisons. Each names its trainer class and a
`load(model_dir)` that returns a predictor for scoring a split."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dore.methods import classifier, dore, lexical


@dataclass(frozen=True)
class MethodSpec:
    Method: type  # (TrainConfig, Backbone, IdLayout) -> a `dore.training.loop.Method` with predict/save/summary
    load: Callable[[str | Path], Any]  # model dir -> a predictor with `card` and `predict_split(docs, num_beams)`


METHODS: dict[str, MethodSpec] = {
    "dore": MethodSpec(dore.DoreMethod, dore.load),
    "lexical": MethodSpec(lexical.LexicalMethod, lexical.load),
    "classifier": MethodSpec(classifier.ClassifierMethod, classifier.load),
}


def get(name: str) -> MethodSpec:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}") from None
