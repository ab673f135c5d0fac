"""Caches of pure work keyed by content: the same schema parsed or compiled twice in one process
(a registry reopened, schemas reloaded, every test's registry) costs one computation.

Keys are the canonical JSON of the inputs (sorted keys, no whitespace), so two equal documents
share an entry whatever their key order. Values must be immutable or never mutated by callers.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def canonical_key(*parts: Any) -> str:
    """A short digest of the canonical JSON of `parts` (dicts by sorted keys)."""
    data = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(data.encode()).hexdigest()


class ContentCache(Generic[T]):
    """A bounded, thread-safe least-recently-used map from a content key to a computed value."""

    def __init__(self, maxsize: int = 256):
        self.maxsize = maxsize
        self._items: OrderedDict[Hashable, T] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The value stored under `key`, computing and storing it on a miss."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
        value = compute()  # outside the lock: two threads may compute one key, both correct
        with self._lock:
            self.misses += 1
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
