"""The one-slot newest-wins mailbox between threads."""

from __future__ import annotations

import threading
import time

from ffvj.media.mailbox import Mailbox


def test_newest_wins_and_counts_dropped():
    box: Mailbox[int] = Mailbox()
    assert box.peek_latest() is None
    assert box.get(timeout=0) is None
    for i in range(5):
        box.put(i)
    assert box.dropped == 4  # 0..3 were replaced before anybody took them
    assert box.get(timeout=0) == 4
    assert box.get(timeout=0) is None  # nothing new since
    assert box.peek_latest() == 4  # but the latest item is still there to look at
    box.put(5)
    assert box.dropped == 4  # 4 had been taken, so replacing it drops nothing
    assert box.puts == 6


def test_get_times_out():
    box: Mailbox[int] = Mailbox()
    start = time.monotonic()
    assert box.get(timeout=0.05) is None
    assert time.monotonic() - start >= 0.04


def test_get_wakes_on_put_from_another_thread():
    box: Mailbox[str] = Mailbox()
    got = []
    reader = threading.Thread(target=lambda: got.append(box.get(timeout=10)))
    reader.start()
    time.sleep(0.05)  # let the reader block (not required for correctness)
    box.put("frame")
    reader.join(5)
    assert not reader.is_alive()
    assert got == ["frame"]


def test_close_wakes_waiters():
    box: Mailbox[int] = Mailbox()
    results = []
    readers = [threading.Thread(target=lambda: results.append(box.get())) for _ in range(3)]
    for r in readers:
        r.start()
    time.sleep(0.05)
    box.close()
    for r in readers:
        r.join(5)
        assert not r.is_alive()
    assert results == [None, None, None]
    assert box.closed
    assert box.get(timeout=1) is None  # returns at once once closed


def test_fresh_item_still_delivered_after_close():
    box: Mailbox[int] = Mailbox()
    box.put(7)
    box.close()
    assert box.get() == 7
    assert box.get() is None


def test_producer_faster_than_consumer_keeps_one_item():
    box: Mailbox[int] = Mailbox()
    n = 2000
    done = threading.Event()

    def produce():
        for i in range(n):
            box.put(i)
        done.set()

    taken = []
    producer = threading.Thread(target=produce)
    producer.start()
    while not done.is_set():
        item = box.get(timeout=0.01)
        if item is not None:
            taken.append(item)
    producer.join()
    last = box.get(timeout=0)
    if last is not None:
        taken.append(last)
    assert taken == sorted(taken)  # never an older item after a newer one
    assert taken[-1] == n - 1  # the newest always arrives
    assert len(taken) + box.dropped == n  # every item was either taken or counted as dropped
