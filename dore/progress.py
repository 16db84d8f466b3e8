"""Progress of a long step (training, extraction): a bar in a terminal (with the step's figures:
loss, learning rate, dev F1), one plain line per reported step elsewhere (DVC, Prefect and CI
logs), nothing on the other processes of a multi-process run."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class Progress:
    def __init__(self, total_steps: int, done_steps: int = 0, *, enabled: bool = True, stream=None,
                 desc: str = "train", unit: str = "step", budget_seconds: float | None = None):
        """`budget_seconds`: a time budget left (a clock-stopped run): the ETA is at most what is left of it."""
        self.stream = stream or sys.stderr
        self.budget = budget_seconds
        self.total, self.done, self.initial = total_steps, done_steps, done_steps
        self.started = time.perf_counter()
        self.interactive = enabled and self.stream.isatty()
        self.plain = enabled and not self.interactive
        self.desc = desc
        self.bar = tqdm(total=total_steps, initial=done_steps, unit=unit, desc=desc, dynamic_ncols=True,
                        file=self.stream, disable=not self.interactive)
        self.fields: dict[str, str] = {}

    def step(self, record: dict | None = None, n: int = 1) -> None:
        """`n` more steps done; `record` (a training log line) is reported with them."""
        self.done += n
        self.bar.update(n)
        if record is None:
            return
        if "loss" in record:
            self.fields.update(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")
        self.bar.set_postfix(self.fields, refresh=False)
        if self.plain:
            self._line()

    def dev(self, at: float, metrics: dict) -> None:
        if "f1" in metrics:
            self.fields["dev_f1"] = f"{metrics['f1']:.2f}"
            self.bar.set_postfix(self.fields)
        if self.plain:
            self._line(f"dev at epoch {at}")

    def _line(self, prefix: str = "") -> None:
        elapsed = time.perf_counter() - self.started
        rate = elapsed / max(self.done - self.initial, 1)
        eta_s = rate * max(self.total - self.done, 0)
        if self.budget is not None:
            eta_s = min(eta_s, max(self.budget - elapsed, 0.0))
        eta = f"{eta_s:.0f} s"
        fields = " ".join(f"{k} {v}" for k, v in self.fields.items())
        print(f"{self.desc} {prefix + ': ' if prefix else ''}step {self.done}/{self.total} {fields} "
              f"elapsed {elapsed:.0f} s eta {eta}", file=self.stream, flush=True)

    def close(self) -> None:
        self.bar.close()
