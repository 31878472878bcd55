"""A real JACK server for the tests (Debian's jackd2, dummy driver: no sound card), and peers: other
processes that speak MIDI over it through python-rtmidi's JACK API, as a controller's software would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import uuid

import pytest

from tests.helpers import poll_until

JACK_BACKEND = "mido.backends.rtmidi/UNIX_JACK"


def _jack_api_available() -> bool:
    try:
        import rtmidi
    except ImportError:
        return False
    return rtmidi.API_UNIX_JACK in rtmidi.get_compiled_api()


@pytest.fixture(scope="module")
def jack_server(tmp_path_factory):
    """A JACK server (dummy driver, no sound card needed) under a name unique to this run, for MIDI."""
    if not _jack_api_available():
        pytest.skip("python-rtmidi was built without JACK support")
    yield from _jack_server(tmp_path_factory)


@pytest.fixture(scope="module")
def jack_audio_server(tmp_path_factory):
    """The same, for audio: ffvj hears it through PortAudio's JACK host API, peers play through JACK-Client."""
    for module in ("jack", "sounddevice"):
        try:
            __import__(module)
        except (ImportError, OSError) as exc:  # sounddevice raises OSError without the PortAudio library
            pytest.skip(f"{module} is not usable here ({exc}): pip install -e '.[test]'; apt-get install libportaudio2")
    # In real-time mode where the machine allows it (jackd says so and goes on without where not): on a
    # loaded machine a non-real-time server drops cycles for a late client, and a dropped cycle is
    # audio ffvj never hears (the beat would come early).
    yield from _jack_server(tmp_path_factory, realtime=True)


def _jack_server(tmp_path_factory, realtime: bool = False):
    jackd = shutil.which("jackd")
    if jackd is None:
        pytest.skip("jackd not installed (Debian: apt-get install jackd2)")
    name = f"ffvj-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "JACK_DEFAULT_SERVER": name, "JACK_NO_START_SERVER": "1"}
    logfile = tmp_path_factory.mktemp("jack") / "jackd.log"
    with open(logfile, "w") as log_out:
        # -t: a generous client timeout, so a client starved of CPU on a busy machine is not dropped.
        proc = subprocess.Popen([jackd, "-n", name, *([] if realtime else ["--no-realtime"]), "-t", "10000", "-d",
                                 "dummy", "-r", "48000", "-p", "256"],
                                env=env, stdout=log_out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        up = False
        if shutil.which("jack_wait"):
            # jack_wait -w blocks until the server answers (-t: give up after that many seconds).
            r = subprocess.run(["jack_wait", "-s", name, "-w", "-t", "20"], env=env, capture_output=True, text=True,
                               timeout=30)
            up = r.returncode == 0 and "available" in r.stdout
        else:
            up = poll_until(lambda: proc.poll() is None and "JACK server starting" in logfile.read_text(), 20)
        if not up or proc.poll() is not None:
            pytest.skip(f"jackd did not come up: {logfile.read_text()[-500:]}")
        old = {k: os.environ.get(k) for k in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")}
        os.environ.update(JACK_DEFAULT_SERVER=name, JACK_NO_START_SERVER="1")
        yield env
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


PEER_PREAMBLE = """
import json, sys, time, mido
b = mido.Backend(%r, load=True)


def retry(fn, *args, **kwargs):
    # A JACK server starved of CPU by other tests can refuse a new client for a while.
    for attempt in range(10):
        try:
            return fn(*args, **kwargs)
        except OSError:
            if attempt == 9:
                raise
            time.sleep(0.5)
"""


def peer(env, script: str, *args) -> subprocess.Popen:
    """Another process speaking MIDI over the same JACK server."""
    code = PEER_PREAMBLE % JACK_BACKEND + textwrap.dedent(script)
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# The peer finds ffvj's port by its JACK client name and sends the messages again every 0.2 s until
# the test says "stop" on stdin: JACK delivers in a later cycle and a fresh connection may miss the
# first one on a loaded machine, so the messages are idempotent and the test waits for their effect.
FIND_AND_SEND = """
    import threading
    want, msgs = sys.argv[1], [mido.Message(**spec) for spec in json.loads(sys.argv[2])]
    deadline = time.monotonic() + (float(sys.argv[3]) if len(sys.argv) > 3 else 20)
    while True:
        names = [n for n in retry(b.get_output_names) if n.split(":")[0] == want]
        if names or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if not names:
        sys.exit("no port %r among %r" % (want, b.get_output_names()))
    print(names[0], flush=True)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    with retry(b.open_output, names[0]) as out:
        while not stop.is_set() and time.monotonic() < deadline:
            for msg in msgs:
                out.send(msg)
                time.sleep(0.01)
            stop.wait(0.2)
"""


def stop_peer(proc) -> tuple[str, str]:
    try:
        out, err = proc.communicate("stop\n", timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out, err
