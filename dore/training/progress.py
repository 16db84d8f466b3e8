"""Training progress: a bar in a terminal (step, loss, learning rate, ETA, last dev F1), one plain
line per logged step elsewhere (DVC, Prefect and CI logs), nothing on the other processes."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class Progress:
    def __init__(self, total_steps: int, done_steps: int, *, enabled: bool, stream=None):
        self.stream = stream or sys.stderr
        self.total, self.done, self.initial = total_steps, done_steps, done_steps
        self.started = time.perf_counter()
        self.interactive = enabled and self.stream.isatty()
        self.plain = enabled and not self.interactive
        self.bar = tqdm(total=total_steps, initial=done_steps, unit="step", desc="train", dynamic_ncols=True,
                        file=self.stream, disable=not self.interactive)
        self.fields: dict[str, str] = {}

    def step(self, record: dict | None) -> None:
        """One optimizer step done; `record` is its log line when the step was logged."""
        self.done += 1
        self.bar.update(1)
        if record is None:
            return
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
        eta = f"{rate * (self.total - self.done):.0f} s" if self.total > self.done else "0 s"
        fields = " ".join(f"{k} {v}" for k, v in self.fields.items())
        print(f"train {prefix + ': ' if prefix else ''}step {self.done}/{self.total} {fields} "
              f"elapsed {elapsed:.0f} s eta {eta}", file=self.stream, flush=True)

    def close(self) -> None:
        self.bar.close()
