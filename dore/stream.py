"""Continuous extraction for a service: documents decoded as they arrive, each request answered
when its own documents are done (`ContinuousExtraction`, continuous row batching)."""

from __future__ import annotations

import ctypes
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from dore.config import DecodingConfig
from dore.data.model import Document
from dore.decoding.constraint import Rules, slot_mask
from dore.decoding.continuous import ContinuousRows
from dore.extract import Extractor, PredictedRelation
from dore.model.inputs import pad_batch
from dore.symbolic.layout import SlotAssignment


def release_free_heap() -> bool:
    """Hand the C heap's freed pages back to the OS (glibc's `malloc_trim`); False where there is
    none (macOS, musl). torch's CPU tensors come from malloc, and glibc keeps what a burst freed:
    without this a service's RSS stays at its busiest moment's peak (issue #17: +378 MB after 200
    clients). Under a millisecond when little was freed, a few hundred after a large burst (263 ms
    for 400 MB); called when the decoder goes idle, outside its lock."""
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


@dataclass
class _Request:
    docs: Sequence[Document]
    assignments: list[SlotAssignment]
    future: Future
    results: list = field(default_factory=list)
    left: int = 0
    inputs: list = field(default_factory=list)  # encoded input ids, once the decoding thread has made them


class ContinuousExtraction:
    """`Extractor.extract` for documents that arrive at any time (a service's requests): one
    background thread decodes them with continuous row batching (`dore.decoding.continuous`):
    a submitted document's rows join the decoder at its next step, within `max_rows` rows in
    flight, and each request is answered when its own documents are done, never held back by a
    slower document of another request. Rows mode, greedy, symbol head (the served setting); the
    relations equal `Extractor.extract`'s. `submit` is thread-safe; `close` stops the thread."""

    def __init__(self, extractor: Extractor, decoding: DecodingConfig | None = None, max_rows: int = 1024):
        cfg = decoding or extractor.decoding
        if cfg.mode != "rows" or cfg.num_beams != 1:
            raise ValueError("continuous batching decodes rows greedily (mode 'rows', num_beams 1)")
        self.extractor, self.cfg, self.max_rows = extractor, cfg.model_copy(update={"symbol_head": True}), max_rows
        bb, layout = extractor.backbone, extractor.layout
        bb.model.eval()
        self.decoder = ContinuousRows(bb.model, layout=layout, code_to_id=bb.code_to_id,
                                      decoder_prefix=bb.decoder_prefix,
                                      rules=Rules(sorted_heads=cfg.order == "row-column"),
                                      code_bias=extractor.code_bias(cfg), chunk_length=cfg.chunk_length,
                                      compact=cfg.compact_rows)
        self._pending: deque[tuple[_Request, int]] = deque()  # submitted, not yet seen by the decoding thread
        self._waiting: list[tuple[_Request, int]] = []  # seen (encoded), not yet started; oldest first
        self._wake = threading.Condition()
        self._closed = False
        self.trims = 0  # times the freed heap went back to the OS (the decoder went idle)
        self._threads = torch.get_num_threads()  # the caller's: OpenMP settings are per thread
        self._thread = threading.Thread(target=self._run, name="dore-continuous-decoding", daemon=True)
        self._thread.start()

    def submit(self, docs: Sequence[Document]) -> Future:
        """A future of the documents' relations (as `Extractor.extract` returns them). A document
        that does not fit the model raises LayoutError here, before anything is queued."""
        request = _Request(list(docs), [self.extractor.check_fits(d) for d in docs], Future(),
                           [None] * len(docs), len(docs), [None] * len(docs))
        if not docs:
            request.future.set_result([])
            return request.future
        with self._wake:
            if self._closed:
                raise RuntimeError("this ContinuousExtraction is closed")
            self._pending.extend((request, i) for i in range(len(docs)))
            self._wake.notify()
        return request.future

    def extract(self, docs: Sequence[Document]) -> list[list[PredictedRelation]]:
        return self.submit(docs).result()

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join()

    def _idle(self) -> bool:
        return not self._pending and not self._waiting and self.decoder.idle and not self._closed

    def _admit(self) -> list[tuple[_Request, int]]:
        """The documents to start now: the oldest waiting one, then those closest to it in input
        length (less padding), at most `batch_docs`, within the rows budget (at least the oldest
        when nothing is decoding)."""
        with self._wake:
            self._waiting.extend(self._pending)
            self._pending.clear()
        for request, i in self._waiting:
            if request.inputs[i] is None:
                request.inputs[i] = self.extractor._inputs([request.docs[i]], self.cfg)[1][0]
        if not self._waiting:
            return []
        layout, room = self.extractor.layout, self.max_rows - self.decoder.active_rows
        (oldest, j), rest = self._waiting[0], self._waiting[1:]
        if self.cfg.sort_by_length:
            length = len(oldest.inputs[j])
            rest = sorted(rest, key=lambda item: abs(len(item[0].inputs[item[1]]) - length))
        admitted = []
        for request, i in [(oldest, j), *rest]:
            if len(admitted) == self.cfg.batch_docs:
                break
            rows = len(layout.row_heads(request.assignments[i].slots))
            if rows > room and (admitted or not self.decoder.idle):
                if not admitted:
                    break  # the oldest waits for room; nothing overtakes it
                continue
            admitted.append((request, i))
            room -= rows
        chosen = {(id(r), i) for r, i in admitted}
        self._waiting = [(r, i) for r, i in self._waiting if (id(r), i) not in chosen]
        return admitted

    def _start(self, admitted: list[tuple[_Request, int]]) -> None:
        ex, cfg, bb = self.extractor, self.cfg, self.extractor.backbone
        assignments = [request.assignments[i] for request, i in admitted]
        ids = pad_batch([request.inputs[i] for request, i in admitted], bb.pad_id)
        budgets = [cfg.max_new_tokens or ex.default_max_new_tokens("rows", a) for a in assignments]
        device = next(bb.model.parameters()).device
        self.decoder.add([(request, i, a) for (request, i), a in zip(admitted, assignments)], ids.to(device),
                         (ids != bb.pad_id).long().to(device), [ex.layout.row_heads(a.slots) for a in assignments],
                         slot_mask(ex.layout, [a.slots for a in assignments]).to(device), budgets)

    def _finish(self, key, rows: list) -> None:
        request, i, assignment = key
        _, tuples = self.extractor.parse(assignment, rows, self.cfg)
        request.results[i] = self.extractor.relations(request.docs[i], assignment, tuples)
        request.left -= 1
        if request.left == 0 and not request.future.done():
            request.future.set_result(request.results)

    def _run(self) -> None:
        torch.set_num_threads(self._threads)
        with torch.no_grad():  # grad mode is per thread
            while True:
                if self._idle():  # outside the lock: trimming a large heap takes a few hundred ms
                    self.trims += release_free_heap()  # a burst's peak would stay resident
                with self._wake:
                    while self._idle():
                        self._wake.wait()
                    if self._closed:
                        break
                admitted = []
                try:
                    admitted = self._admit()
                    if admitted:
                        self._start(admitted)
                    for key, rows in self.decoder.step():
                        self._finish(key, rows)
                except Exception as exc:  # noqa: BLE001 - fail what was in flight, keep serving
                    failed = {id(r): r for r, _ in admitted}
                    failed.update({id(k[0]): k[0] for c in self.decoder.cohorts for k in c.keys})
                    self.decoder.cohorts.clear()
                    for request in failed.values():
                        if not request.future.done():
                            request.future.set_exception(exc)
        for request, _ in [*self._pending, *self._waiting]:
            if not request.future.done():
                request.future.set_exception(RuntimeError("extraction stopped"))
