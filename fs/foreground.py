"""How busy the kernel keeps the mount: the uploader's "foreground first" signal.

Uploads share the trio thread with the FUSE handlers, so while the kernel is sending a
stream of requests (``tar x``, ``cp -r``, a build) the uploader holds back and sends what
piled up once the stream ends, in batches. What counts as a stream is a rate, not "any
request lately": a single edit, rename or delete is a handful of requests (about ten for
``open``/``write``/``close``), and waiting out a grace period after them only delayed
the change on every other mount (issue 14: an edit waited 50 or 100 ms for nothing on an
idle mount). ``tar x`` on a mount sends about 12 000 requests a second (400–700 in any
50 ms); the threshold below is far from both.

``request()`` is called by the FUSE adapter for every request; ``busy_for()`` says how
long the uploader should still hold back: 0 unless the last ``BUSY_REQUESTS`` requests all
arrived within ``BUSY_WINDOW``, else the time until the oldest of them leaves the window
(so a burst that has ended frees the uploader ``BUSY_WINDOW`` after it, as before).

**Once a stream, a stream until it pauses.** Uploads slow the requests down (they share
the thread, the cores and the disk), so a rate rule alone flaps: a ``tar x`` dips under
the rate as soon as uploads start, more uploads start, and it took 13–18 s instead of
8–11 s. So a mount found busy stays busy while requests keep coming at all: until none
came for ``BUSY_WINDOW`` (the old rule, but only once a stream was seen).
"""

from __future__ import annotations

import time
from collections import deque

BUSY_WINDOW = 0.05       # seconds
BUSY_REQUESTS = 64       # requests within BUSY_WINDOW that make the mount busy (~1300/s)


class Foreground:
    def __init__(self, window: float = BUSY_WINDOW, requests: int = BUSY_REQUESTS):
        self.window = window
        self._recent: deque[float] = deque(maxlen=requests)   # times of the last requests
        self._stream = False        # a stream was seen and has not paused since

    def request(self, now: float | None = None) -> float:
        """Note a kernel request (made now); returns its (monotonic) time."""
        if now is None:
            now = time.monotonic()
        self._recent.append(now)
        return now

    def busy_for(self, now: float | None = None) -> float:
        """Seconds the uploader should still hold back (0.0: the mount is not busy)."""
        recent = self._recent
        if not recent:
            return 0.0
        if now is None:
            now = time.monotonic()
        if len(recent) == recent.maxlen and recent[0] + self.window > now:
            self._stream = True
            return recent[0] + self.window - now
        if self._stream:
            left = recent[-1] + self.window - now
            if left > 0:
                return left         # the stream goes on, only slower
            self._stream = False
        return 0.0


__all__ = ["BUSY_REQUESTS", "BUSY_WINDOW", "Foreground"]
