"""MIDI ports: the inputs of a show (a virtual ``ffvj`` port, named controllers, controllers a mapping
matches), wired to mappers through mido callbacks (no polling loop), and hot-plugged.

``MidiInput(controls, mappings, ports=[...])`` is a ``Service``. No usable MIDI API (no ALSA
sequencer, no JACK server, python-rtmidi missing): one warning, and the show runs on without MIDI.
``midi_ports()`` lists ports for ``ffvj devices``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import mido

from ...options import check_choices, option
from ...reporting import RateLimitedLog
from ..service import Service
from .mapper import MidiMapper
from .mapping import Mapping

log = logging.getLogger(__name__)

# The rtmidi APIs by the names users know them by (``--midi-backend``).
MIDI_BACKENDS = {"alsa": "mido.backends.rtmidi/LINUX_ALSA", "jack": "mido.backends.rtmidi/UNIX_JACK",
                 "coremidi": "mido.backends.rtmidi/MACOSX_CORE", "winmm": "mido.backends.rtmidi/WINDOWS_MM"}


class MidiError(RuntimeError):
    """MIDI setup failed in a way the user asked for explicitly (an unknown ``--midi`` port)."""


@dataclass(frozen=True)
class MidiConfig:
    """A show's MIDI surface (the CLI's ``--midi*`` options). ``mappings``: files or bundled names
    (empty: every bundled mapping); ``backend``: a name of ``MIDI_BACKENDS`` (None: mido's default,
    or ``MIDO_BACKEND``); ``learn_file``: where controls learned during the show are saved (None:
    ``~/.config/ffvj/mappings/learned-DATE.toml``)."""

    ports: tuple[str, ...] = option((), "connect to the input port whose name contains NAME (repeatable; see 'ffvj "
                                        "devices')", flag="--midi", metavar="NAME", repeat=True)
    mappings: tuple[str, ...] = option((), "mapping file or bundled name (repeatable; default: every bundled "
                                           "mapping)", flag="--midi-mapping", metavar="PATH|NAME", repeat=True)
    virtual_name: str = option("ffvj", "virtual input port name ('' for none)")
    backend: str | None = option(None, "rtmidi API (default: mido's default, or MIDO_BACKEND)",
                                 choices=tuple(sorted(MIDI_BACKENDS)))
    learn_file: str | None = option(None, "where controls learned during the show are saved (default: "
                                          "~/.config/ffvj/mappings/learned-DATE.toml); the learn action binds the "
                                          "next moved control to the parameter last touched over OSC",
                                    metavar="PATH")

    def __post_init__(self) -> None:
        check_choices(self)


def backend_errors() -> tuple[type[BaseException], ...]:
    """What opening a MIDI backend or port raises when the platform cannot do it."""
    errors: tuple = (ImportError, OSError, RuntimeError, ValueError)
    try:
        import rtmidi  # python-rtmidi's errors: SystemError (an OSError), InvalidUseError, ...
        errors += (rtmidi.RtMidiError,)
    except ImportError:
        pass
    return errors


def load_backend(backend=None):
    """A ``mido.Backend``: None → mido's default (``MIDO_BACKEND`` or rtmidi); a module string such
    as ``"mido.backends.rtmidi/UNIX_JACK"``; or a Backend object."""
    if backend is None or isinstance(backend, str):
        return mido.Backend(backend, load=True)
    return backend


def _never_supported(exc: BaseException) -> bool:
    """A backend saying it cannot do this at all (no virtual ports), not that it is busy: rtmidi on
    Windows raises NotImplementedError, mido's portmidi and pygame backends a ValueError saying so."""
    return isinstance(exc, NotImplementedError) or (isinstance(exc, ValueError) and "not supported" in str(exc))


def retrying(errors: tuple, fn, *args, attempts: int = 3, **kwargs):
    """List or open ports, retrying briefly on ``errors``: a JACK server busy with other clients,
    or a device that has just been plugged in, can refuse the first try."""
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except errors as exc:  # NotImplementedError is a RuntimeError
            if attempt == attempts - 1 or _never_supported(exc):
                raise
            time.sleep(0.25 * (attempt + 1))


def _input_lister(backend):
    """``(list_inputs, close)`` for hot-plug rescans. mido's rtmidi backend opens two new MIDI clients
    for every listing; on JACK each is a server round trip made with the GIL held, and while it waits
    JACK's process cycle waits on an open port's Python callback, which waits for the GIL: the whole
    JACK graph stalls for its 5 s timeout. One persistent rtmidi client lists from JACK's shared
    memory instead. Only where the MIDI API is named (``mido.backends.rtmidi/UNIX_JACK``): with
    none, rtmidi picks the first API that has ports when the client is made, so one made at start
    with nothing plugged in could settle on the wrong API for good; mido's fresh clients choose
    again each time. Other backends list through mido."""
    if getattr(backend, "name", None) == "mido.backends.rtmidi" and getattr(backend, "api", None):
        try:
            import rtmidi

            probe = rtmidi.MidiIn(backend.module._get_api_id(backend.api), name="ffvj-hotplug")
            return probe.get_ports, probe.delete
        except (ImportError, AttributeError, ValueError, RuntimeError, OSError) as exc:
            log.debug("MIDI: persistent port lister unavailable (%s); listing through mido", exc)
    return backend.get_input_names, lambda: None


def midi_ports(backend=None) -> dict[str, list[str]]:
    """``{"inputs": [...], "outputs": [...]}`` for ``ffvj devices``; raises when MIDI is unusable."""
    b = load_backend(backend)
    return {"inputs": list(b.get_input_names()), "outputs": list(b.get_output_names())}


class MidiInput(Service):
    """Every MIDI input of a show, wired to mappers through mido callbacks (no polling loop).

    ``start()`` opens, in order: the virtual input ``virtual_name`` (other software on this machine
    sends to it; not on backends without virtual ports such as Windows MME), each port named in
    ``ports`` (case-insensitive substring; one not there yet is waited for, with a warning listing
    the available ports; without hot-plug, ``rescan_s=None``, it raises MidiError), and every port matching a mapping's ``[device] match``. A port uses the mappings whose
    ``match`` fits its name; any other port (the virtual one included) uses the mappings without a
    ``match`` (such as generic.toml), or all mappings when every one has a ``match``. LED echo goes
    to the output port matching the mapping's ``[device] output``.

    Hot-plug: every ``rescan_s`` seconds a watcher thread lists the inputs again. A controller
    unplugged mid-show is closed and reconnected when it comes back (under a new ALSA number too); a
    controller plugged in late is connected if it matches a mapping or a ``ports`` name; a virtual
    port the MIDI server refused at start (a busy JACK server does) is tried again.

    No usable MIDI API (no ALSA sequencer, no JACK server, python-rtmidi missing): one warning, and
    the show runs on without MIDI — unless ``ports`` named a port explicitly, which raises MidiError.
    ``close()`` is idempotent; use it as a context manager.
    """

    def __init__(self, controls, mappings: Sequence[Mapping] = (), ports: Sequence[str] = (),
                 virtual_name: str | None = "ffvj", backend=None, *, auto_connect: bool = True, echo: bool = True,
                 rescan_s: float | None = 2.0):
        super().__init__()
        self.controls = controls
        self.mappings, self.port_names = list(mappings), list(ports)
        self.virtual_name, self.backend = virtual_name, MIDI_BACKENDS.get(backend, backend)
        self.auto_connect, self.echo, self.rescan_s = auto_connect, echo, rescan_s
        self.available = False
        self.mappers: list[MidiMapper] = []
        # One link per open input: its port, its mapper and its LED echo output (or None).
        self._links: dict[str, tuple] = {}
        self._retired_stats: dict[str, int] = {}  # counts of mappers whose port went away
        self._virtual_state = "closed"  # "open", "closed" (retry on rescan) or "unsupported"
        self._lock = threading.Lock()  # guards the link table, never held while talking to the server
        self._rescan_lock = threading.Lock()  # one rescan at a time
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._warn = RateLimitedLog(log, interval=30.0)

    @property
    def connected(self) -> list[str]:
        with self._lock:
            return [link[0].name for link in self._links.values()]

    @property
    def inputs(self) -> list:
        with self._lock:
            return [link[0] for link in self._links.values()]

    @property
    def outputs(self) -> list:
        with self._lock:
            return [link[2] for link in self._links.values() if link[2] is not None]

    def _start(self) -> None:
        self._errors = backend_errors()
        try:
            self._backend = load_backend(self.backend)
            inputs = list(retrying((OSError, RuntimeError), self._backend.get_input_names))
        except self._errors as exc:
            if self.port_names:
                raise MidiError(f"cannot open MIDI port(s) {', '.join(map(repr, self.port_names))}: no usable "
                                f"MIDI API here ({exc})") from exc
            log.warning("MIDI disabled: no usable MIDI API (%s). The show runs on without MIDI.", exc)
            return
        self.available = True
        self._open_all(inputs)  # on failure Service.start closes what it opened
        if self.rescan_s:
            self._list_inputs, self._close_lister = _input_lister(self._backend)
            self._watcher = threading.Thread(target=self._watch, name="ffvj-midi-hotplug", daemon=True)
            self._watcher.start()

    # -- which ports -------------------------------------------------------------------------------

    def _named(self, port: str) -> bool:
        return any(name.lower() in port.lower() for name in self.port_names)

    def _wanted(self, inputs: list[str]) -> list[str]:
        """The inputs to listen to: those named in ``ports``, then those a mapping matches."""
        wanted = [p for p in inputs if self._named(p) and not self._is_own(p)]
        if self.auto_connect:
            wanted += [p for p in inputs if p not in wanted and not self._is_own(p)
                       and any(m.device.matches(p) for m in self.mappings)]
        return wanted

    def _is_own(self, port_name: str) -> bool:
        return bool(self.virtual_name) and port_name.split(":")[0] == self.virtual_name

    def _unmatched(self) -> list[Mapping]:
        return [m for m in self.mappings if not m.device.match] or self.mappings

    # -- opening and closing -----------------------------------------------------------------------

    def _open_all(self, inputs: list[str]) -> None:
        for name in self.port_names:
            if not any(name.lower() in p.lower() for p in inputs):
                available = ", ".join(inputs) if inputs else "none"
                if not self.rescan_s:
                    raise MidiError(f"unknown MIDI port {name!r}; available inputs: {available}")
                # A controller switched on after the show started is normal: wait for it, as for one
                # a mapping matches (a typo shows here, next to what is there).
                log.warning("MIDI port %r is not there yet (available inputs: %s): it is connected when it "
                            "is plugged in", name, available)
        self._open_virtual(attempts=3)
        for name in self._wanted(inputs):
            try:
                self._connect(name)
            except self._errors as exc:
                if self._named(name):
                    raise MidiError(f"cannot open MIDI port {name!r}: {exc}") from exc
                log.warning("MIDI: cannot open %r (%s); will try again", name, exc)

    def _open_virtual(self, attempts: int) -> None:
        if not self.virtual_name or self._virtual_state != "closed":
            return
        mapper = MidiMapper(self._unmatched(), self.controls)
        try:
            port = retrying(self._errors, self._backend.open_input, self.virtual_name, virtual=True,
                             client_name=self.virtual_name, callback=mapper.handle, attempts=attempts)
        except self._errors as exc:
            mapper.close()
            if _never_supported(exc):  # say it once, and never try again
                self._virtual_state = "unsupported"
                log.warning("MIDI: no virtual input port on this backend (%s); connect a controller with "
                            "--midi NAME", exc)
            else:
                self._warn.warning("virtual", "MIDI: the MIDI server refused the virtual input %r (%s); trying "
                                              "again every %.0f s", self.virtual_name, exc, self.rescan_s or 0)
            return
        self._virtual_state = "open"
        self._add_link(self.virtual_name, port, mapper, None)
        log.info("MIDI: virtual input %r open (send to it from other software)", port.name)

    def _connect(self, name: str) -> None:
        own = [m for m in self.mappings if m.device.matches(name)]
        wants_echo = self.echo and any(m.device.output for m in own)
        out = self._open_echo(own, name) if wants_echo else None
        mapper = MidiMapper(own or self._unmatched(), self.controls, output=out)
        try:
            port = retrying(self._errors, self._backend.open_input, name, callback=mapper.handle)
        except BaseException:
            mapper.close()
            if out is not None:
                out.close()
            raise
        if not self._add_link(name, port, mapper, out):
            return
        log.info("MIDI: listening to %r with %s", name,
                 ", ".join(m.device.name for m in (own or self._unmatched())) or "no mapping")
        mapper.refresh_leds()

    def _add_link(self, name: str, port, mapper: MidiMapper, out) -> bool:
        with self._lock:
            if not self._closed:
                self._links[name] = (port, mapper, out)
                self.mappers.append(mapper)
                return True
        # close() ran while this port was opening (a watcher stuck on a slow server): undo it
        self._close_link(port, mapper, out)
        return False

    def _disconnect(self, name: str) -> None:
        with self._lock:
            link = self._links.pop(name, None)
            if link is None:
                return
            mapper = link[1]
            if mapper in self.mappers:
                self.mappers.remove(mapper)
            for k, v in mapper.stats().items():
                self._retired_stats[k] = self._retired_stats.get(k, 0) + v
        self._close_link(*link)

    @staticmethod
    def _close_link(port, mapper: MidiMapper, out) -> None:
        port.close()  # the input first, so no callback runs into a closed mapper or output
        mapper.close()
        if out is not None:
            out.close()

    def _open_echo(self, mappings: list[Mapping], input_name: str):
        """The output port for LED echo to the controller behind ``input_name``, or None."""
        try:
            # Listed only when needed: on JACK every listing is a short-lived client of the server.
            outputs = list(retrying(self._errors, self._backend.get_output_names))
        except self._errors as exc:
            log.warning("MIDI: LED echo unavailable, cannot list output ports (%s)", exc)
            return None
        candidates = [o for o in outputs if any(m.device.matches_output(o) for m in mappings)]
        if not candidates:
            log.info("MIDI: no output port for LED echo to %r", input_name)
            return None
        # Two identical controllers: ALSA and CoreMIDI give a device's input and output the same
        # name, so prefer that one over the first match.
        name = input_name if input_name in candidates else candidates[0]
        try:
            return retrying(self._errors, self._backend.open_output, name)
        except self._errors as exc:
            log.warning("MIDI: LED echo to %r unavailable (%s)", name, exc)
            return None

    # -- hot-plug ----------------------------------------------------------------------------------

    def _watch(self) -> None:
        try:
            while not self._stop.wait(self.rescan_s):
                try:
                    self.rescan(self._list_inputs)
                except self._errors as exc:  # a busy or restarting MIDI server: next time
                    self._warn.warning("rescan", "MIDI: cannot list ports (%s); trying again", exc)
                except Exception:  # never let hot-plug take MIDI down; say what broke
                    log.exception("MIDI: hot-plug rescan failed")
        finally:
            self._close_lister()

    def rescan(self, list_inputs=None) -> None:
        """Close inputs that vanished, open wanted inputs that appeared, retry a refused virtual port.
        The watcher thread calls this every ``rescan_s``; tests and tools may call it directly.

        Only the watcher (or, before it starts, ``start``) opens and closes ports; ``_lock`` guards
        the link table alone, so the status line never waits on a slow MIDI server."""
        with self._rescan_lock:  # the watcher and a direct call must not open the same port twice
            self._rescan(list_inputs)

    def _rescan(self, list_inputs) -> None:
        if self._closed or not self.available:
            return
        self._open_virtual(attempts=1)
        inputs = list((list_inputs or self._backend.get_input_names)())
        for name in [n for n in self.connected_names() if n != self.virtual_name and n not in inputs]:
            self._disconnect(name)
            log.warning("MIDI: %r went away; it reconnects when it comes back", name)
        for name in self._wanted(inputs):
            if name not in self._links and not self._closed:
                try:
                    self._connect(name)
                except self._errors as exc:
                    self._warn.warning("open " + name, "MIDI: cannot open %r (%s); trying again", name, exc)

    def connected_names(self) -> list[str]:
        """The names this input was opened under (the link keys; a port's own ``name`` may differ)."""
        with self._lock:
            return list(self._links)

    # -- reporting ---------------------------------------------------------------------------------

    def figures(self) -> dict[str, float]:
        if not self.available:
            return {}
        st = self.stats()
        return {"midi_inputs": len(self._links), "midi_messages": st.get("messages", 0),
                "midi_bad": st.get("unmapped", 0) + st.get("malformed", 0)}

    def status(self) -> str:
        """One short part of the show's status line."""
        if not self.available:
            return "midi off"
        f = self.figures()
        return f"midi {f['midi_inputs']} in, {f['midi_messages']} msgs, {f['midi_bad']} unmapped/bad"

    def stats(self) -> dict:
        with self._lock:
            total, mappers = dict(self._retired_stats), list(self.mappers)
        for m in mappers:
            for k, v in m.stats().items():
                total[k] = total.get(k, 0) + v
        return total

    def _close(self) -> None:
        self._stop.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=10)  # a watcher stuck on a dead server is a daemon: go on
        for name in self.connected_names():
            self._disconnect(name)


