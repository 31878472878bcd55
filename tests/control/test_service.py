"""What every control service shares: one lifecycle, and the latest-value sender that talks back."""

import logging
import threading
import time

import pytest

from ffvj.control.service import LatestValueSender, Service, browser_refusal, host_name, local_names
from ffvj.reporting import Counts
from tests.helpers import wait_until


class Recorder(Service):
    def __init__(self, fail: bool = False):
        super().__init__()
        self.fail, self.events = fail, []

    def _start(self):
        self.events.append("start")
        if self.fail:
            raise OSError("port in use")

    def _close(self):
        self.events.append("close")


def test_the_lifecycle_is_written_once():
    svc = Recorder()
    assert svc.start() is svc and svc.start() is svc  # idempotent
    with svc:
        pass
    svc.close()
    assert svc.events == ["start", "close"] and svc.closed
    with pytest.raises(RuntimeError, match="was closed"):
        svc.start()
    never = Recorder()
    never.close()  # before start: nothing to close
    assert never.events == []
    assert svc.status() is None and svc.poll() is None and svc.report("drive", 1.0) is None  # the loop's hooks


def test_a_start_that_fails_closes_what_it_opened_and_raises():
    svc = Recorder(fail=True)
    with pytest.raises(OSError, match="port in use"):
        svc.start()
    assert svc.events == ["start", "close"] and svc.closed


def test_the_latest_value_per_key_goes_out_at_a_capped_rate():
    batches = []
    sender = LatestValueSender(batches.append, interval=0.2, name="test-sender")
    try:
        start = time.monotonic()
        for i in range(50):
            sender.put("a", i)
            sender.put("b", -i)
            time.sleep(0.004)
        wait_until(lambda: batches and batches[-1].get("a") == 49, what="the last value of a")
        elapsed = time.monotonic() - start
        sent_a = [batch["a"] for batch in batches if "a" in batch]
        assert len(sent_a) <= 2 + elapsed / 0.2  # at most one per interval per key (plus the first)
        assert sent_a == sorted(sent_a) and sent_a[0] == 0  # the first at once, then the newest each time
        wait_until(lambda: any(batch.get("b") == -49 for batch in batches), what="the last value of b")
    finally:
        sender.close()


def test_put_never_waits_on_a_slow_send():
    release = threading.Event()
    sender = LatestValueSender(lambda ready: release.wait(5), interval=0.0, name="slow-sender")
    try:
        sender.put("x", 1)
        t = time.monotonic()
        for i in range(1000):
            sender.put("x", i)
        assert time.monotonic() - t < 1.0  # the talker never waits for the port
    finally:
        release.set()
        sender.close()


def test_a_failing_send_is_logged_and_the_sender_goes_on(caplog):
    got = []

    def send(ready):
        if "boom" in ready:
            raise ValueError("boom")
        got.append(ready)

    sender = LatestValueSender(send, interval=0.0, name="flaky-sender")
    try:
        with caplog.at_level(logging.ERROR, logger="ffvj.control.service"):
            sender.put("boom", 1)
            wait_until(lambda: "sending failed" in caplog.text, what="the failure to be logged")
        sender.put("fine", 2)
        wait_until(lambda: {"fine": 2} in got, what="the next batch")
    finally:
        sender.close()
    sender.put("late", 3)  # after close: dropped, no error


def test_counts_are_exact_under_threads():
    counts = Counts("hits")

    def hammer():
        for _ in range(20000):
            counts.add("hits")

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counts["hits"] == 160000 and counts.snapshot() == {"hits": 160000}
    with pytest.raises(KeyError):
        counts.add("typo")


def test_a_failed_start_reports_its_own_error_even_when_closing_fails_too(caplog):
    class Fragile(Recorder):
        def _close(self):
            raise RuntimeError("cannot close either")

    with caplog.at_level(logging.ERROR, logger="ffvj.control.service"):
        with pytest.raises(OSError, match="port in use"):
            Fragile(fail=True).start()
    assert "closing after a failed start failed too" in caplog.text


def test_a_connection_whose_thread_cannot_start_gives_its_slot_back(monkeypatch):
    import socket
    import socketserver
    import threading

    from ffvj.control.service import LimitedConnections

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            self.request.recv(1)

    class Server(LimitedConnections, socketserver.ThreadingTCPServer):
        daemon_threads = True
        max_connections = 1

    srv = Server(("127.0.0.1", 0), Handler)
    try:
        real_start = threading.Thread.start

        def failing_start(self):
            raise RuntimeError("can't start new thread")

        monkeypatch.setattr(threading.Thread, "start", failing_start)
        with socket.create_connection(srv.server_address, timeout=5):
            srv.handle_request()  # accepted, verified, its thread fails to start
        assert srv.connections == 0  # the slot is free again
        monkeypatch.setattr(threading.Thread, "start", real_start)
    finally:
        srv.server_close()


def test_the_browser_rule_refuses_other_sites_and_admits_this_machine():
    names = local_names("127.0.0.1")
    assert "localhost" in names
    ok = [("127.0.0.1:9020", None), ("127.0.0.1:9020", "http://127.0.0.1:9020"), ("[::1]:9020", "http://[::1]:9020"),
          ("LOCALHOST:9020", "http://localhost:9020"), ("192.168.1.5:9020", None), (None, None)]
    for host, origin in ok:
        assert browser_refusal(host, origin, names) is None, (host, origin)
    refused = [("127.0.0.1:9020", "null"), ("127.0.0.1:9020", " NULL "), ("127.0.0.1:9020", "https://evil.example"),
               ("127.0.0.1:9020", "http://127.0.0.1:9021"), ("127.0.0.1:9020", "file://"),
               ("evil.example:9020", None), ("evil.example:9020", "http://evil.example:9020"), (None, "http://x")]
    for host, origin in refused:
        assert browser_refusal(host, origin, names), (host, origin)
    assert browser_refusal("evil.example:9020", None, None) is None  # a server with a token skips the Host rule
    assert browser_refusal("evil.example:9020", "null", None)  # but never admits an opaque origin
    assert host_name("[::1]:9020") == "::1" and host_name("Studio.Local.:80") == "studio.local"
