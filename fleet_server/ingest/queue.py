"""The bounded hand-over between the MQTT network thread and the ingest worker."""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

__all__ = ["BatchQueue"]

T = TypeVar("T")


class BatchQueue(Generic[T]):
    """A bounded FIFO whose consumer takes everything waiting (up to a limit) at once.

    `queue.Queue` takes its lock and signals per item on both sides; the worker
    draining it item by item cost a few percent of the process in `bench ingest`.
    `put` blocks while full (TCP backpressure on the broker, never a drop).
    """

    def __init__(self, maxsize: int) -> None:
        self._items: deque[T] = deque()
        self._maxsize = maxsize
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> None:
        with self._lock:
            while len(self._items) >= self._maxsize:
                self._not_full.wait()
            self._items.append(item)
            if len(self._items) == 1:
                self._not_empty.notify()

    def get_batch(self, limit: int) -> list[T]:
        """Wait for at least one item; return up to `limit` in order."""
        with self._lock:
            while not self._items:
                self._not_empty.wait()
            items = self._items
            if len(items) <= limit:
                batch = list(items)
                items.clear()
            else:
                batch = [items.popleft() for _ in range(limit)]
            self._not_full.notify_all()
            return batch
