"""A one-item mailbox between the camera callback and the inference worker.

The callback only ever replaces the newest frame; the worker only ever takes the newest. A frame
that is replaced before the worker took it counts as dropped, so a slow model never builds a
queue of stale frames.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class NewestSlot(Generic[T]):
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self.dropped = 0
        self.received = 0

    def put(self, item: T) -> None:
        with self._cond:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self.received += 1
            self._cond.notify()

    def take(self, timeout: float | None = None) -> T | None:
        """The newest item (and empty the slot), or None after `timeout` seconds."""
        with self._cond:
            if self._item is None:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item
