"""Wall-clock time behind one seam, so tests move time instead of waiting (container expiry)."""

from __future__ import annotations

import threading
import time


class Clock:
    """Wall-clock seconds plus an offset that only ever moves forward."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        return time.time() + self._offset

    def now_int(self) -> int:
        """Unix seconds, as the API's ``created_at`` fields carry them."""
        return int(self.now())

    def advance(self, seconds: float) -> float:
        """Move time forward (never back) and return the new now."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._offset += seconds
        return self.now()

    def reset(self) -> None:
        with self._lock:
            self._offset = 0.0

    @property
    def offset(self) -> float:
        return self._offset
