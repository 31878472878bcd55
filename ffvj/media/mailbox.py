"""A one-slot, newest-wins handoff between two threads.

Live video wants the *latest* frame, not every frame: a queue between a 30 fps camera and a
25 fps renderer grows without bound or adds a frame of latency per backlog slot. A
:class:`Mailbox` holds at most one item; ``put`` replaces it, and the reader either waits
for something new (``get``) or takes whatever is there now (``peek_latest``).

    box = Mailbox()
    box.put(frame)            # producer thread; never blocks
    frame = box.get(0.1)      # consumer: next *new* item, or None after 0.1 s
    frame = box.peek_latest() # consumer: the last item put, without waiting (None if never)
    box.close()               # wakes waiters; later gets return None at once

``dropped`` counts items that were replaced before anybody took them, which is the number
to watch when a producer outruns its consumer. Waiting uses a :class:`threading.Condition`
(no polling), and nothing here holds more than one item.
"""

from __future__ import annotations

import threading
import time
from typing import Generic, TypeVar

T = TypeVar("T")


class Mailbox(Generic[T]):
    """One slot; the newest item wins. Safe to use from any number of threads."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._fresh = False  # True while the current item has not been taken by get()
        self._closed = False
        self.puts = 0  # items ever put
        self.dropped = 0  # items overwritten before get() took them

    def put(self, item: T) -> None:
        """Replace the slot's item (never blocks) and wake one waiting ``get``."""
        with self._cond:
            if self._fresh:
                self.dropped += 1
            self._item = item
            self._fresh = True
            self.puts += 1
            self._cond.notify()

    def get(self, timeout: float | None = None) -> T | None:
        """Wait for an item not yet taken by ``get`` and return it.

        Returns None when ``timeout`` seconds pass first, or once the mailbox is closed.
        The item stays available to ``peek_latest``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._fresh and not self._closed:
                if deadline is None:
                    self._cond.wait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    self._cond.wait(remaining)
            if not self._fresh:  # closed with nothing new
                return None
            self._fresh = False
            return self._item

    def peek_latest(self) -> T | None:
        """The last item put (taken or not), or None if nothing was ever put. Never waits."""
        with self._cond:
            return self._item

    def close(self) -> None:
        """Wake every waiter; ``get`` returns None from now on unless a fresh item is there."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
