"""Which documents go into which batch: a pure function of (seed, epoch, rank), so a resumed run
and every process of a multi-process run agree without talking to each other."""

from __future__ import annotations

import random
from collections.abc import Sequence


def epoch_batches(lengths: Sequence[int], batch_docs: int, *, seed: int, epoch: int, rank: int = 0, world: int = 1,
                  group_by_length: bool = False) -> list[list[int]]:
    """This process's batches of document indices for one epoch, a pure function of (seed, epoch).

    With several processes the documents left after an even split (fewer than `world`) sit this
    epoch out: the shuffle picks others each epoch, and the loop counts them.
    With `group_by_length`, each window of 16 batches is sorted by length before it is cut into
    batches, and the batches are then shuffled (HF's LengthGroupedSampler idea): far less padding,
    still a random order.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    order = order[: len(order) - len(order) % world]  # every process takes as many steps (DDP needs it)
    mine = order[rank::world]
    if group_by_length:
        window = batch_docs * 16
        mine = [i for k in range(0, len(mine), window) for i in sorted(mine[k: k + window], key=lambda i: -lengths[i])]
    batches = [mine[i: i + batch_docs] for i in range(0, len(mine), batch_docs)]
    if group_by_length:
        rng.shuffle(batches)
    return batches
