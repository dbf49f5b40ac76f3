"""Training scalars (losses, learning rate) read on the host without waiting for the GPU.

Reading a CUDA tensor on the host (``.item()``, or Lightning turning a tensor logged for the
progress bar into a number after every batch) waits for all the work queued before it. With the
whole step one graph replay, the host then prepares the next batch while the GPU idles: a third
of each batch-64 step on an H200 (27.9 ms against the graph's 21 ms, 2026-12-02,
docs/benchmark.md). ``TrainingReadout`` instead copies the scalars into pinned host memory
without blocking and hands them over once the copy has landed, a few steps later, each with the
step it belongs to. On a CPU the values land at once.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch


@dataclass
class Reading:
    """The scalars of one training step, as numbers, and what the caller attached to them."""

    step: int
    values: dict[str, float]
    context: dict = field(default_factory=dict)


class TrainingReadout:
    """Copies of training scalars on their way to the host.

    ``watch`` keeps the newest landed values for a display (one copy in flight at a time, so it
    never queues more work than the GPU finishes); ``request`` asks for one step's values
    without fail (the steps a logger writes), returned by ``landed`` in step order.
    """

    def __init__(self) -> None:
        self.latest: Reading | None = None  # the newest landed watched values
        self._requested: deque = deque()  # (reading, host buffer, event) in step order
        self._watched = None  # the one watch copy in flight

    def watch(self, step: int, scalars: Mapping[str, torch.Tensor]) -> None:
        self._land_watched()
        if self._watched is None:
            self._watched = self._copy(step, scalars, {})
            self._land_watched()

    def request(self, step: int, scalars: Mapping[str, torch.Tensor], **context: Any) -> None:
        self._requested.append(self._copy(step, scalars, context))

    def landed(self, wait: bool = False) -> list[Reading]:
        """The requested readings whose copies have landed (all of them with ``wait``)."""
        readings = []
        while self._requested and (wait or self._done(self._requested[0])):
            readings.append(self._read(self._requested.popleft()))
        return readings

    def newest(self) -> Reading | None:
        self._land_watched()
        return self.latest

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _copy(step, scalars, context):
        names = list(scalars)
        stacked = torch.stack([value.detach().float().reshape(()) for value in scalars.values()])
        if not stacked.is_cuda:
            return Reading(step, dict(zip(names, stacked.tolist())), context), None, None
        host = torch.empty(stacked.shape, dtype=stacked.dtype, pin_memory=True)
        host.copy_(stacked, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return Reading(step, dict.fromkeys(names, float("nan")), context), host, event

    @staticmethod
    def _done(pending) -> bool:
        event = pending[2]
        return event is None or event.query()

    @staticmethod
    def _read(pending) -> Reading:
        reading, host, event = pending
        if event is not None:
            event.synchronize()
            reading.values = dict(zip(reading.values, host.tolist()))
        return reading

    def _land_watched(self):
        if self._watched is not None and self._done(self._watched):
            self.latest = self._read(self._watched)
            self._watched = None
