"""Reading a performer's TOML file (a preset, a MIDI mapping) so that no file can hang or crash the show.

    read_toml(path, what="preset file")   → the parsed table; TomlFileError (one line) for anything wrong

- **Regular files only, opened without blocking.** A FIFO named ``x.toml`` in the presets folder made
  ``open()`` wait for a writer for ever, and with it every later preset save, recall and model switch.
  The file is opened with ``O_NONBLOCK`` and checked with ``fstat`` on the open descriptor (no window
  between a check and the open); a FIFO, a device or a socket is refused at once.
- **Bounded**: at most ``MAX_BYTES`` read (a preset is a few KB); a bigger file is refused.
- **One line for every problem**: not UTF-8, TOML syntax (line and column), nesting so deep that the
  parser recurses out (a 10,000-deep array raised ``RecursionError`` with a 3,000-line traceback).

Why hand-written: ``tomllib`` takes text or a binary file object and leaves opening to its caller.
"""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

MAX_BYTES = 1 << 20  # 1 MiB: a preset or a mapping is a few KB


class TomlFileError(ValueError):
    """A TOML file that cannot be read; the message names the file and the problem."""


def read_bytes(path: str | Path, what: str = "file", limit: int = MAX_BYTES) -> bytes:
    """A regular file's bytes, at most ``limit``: never blocks on a FIFO or a device (see the module)."""
    path = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise TomlFileError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "a directory" if stat.S_ISDIR(mode) else \
                "a device or other special file"
            raise TomlFileError(f"{what} {path} is {kind}, not a regular file: remove or rename it")
        data = b""
        while len(data) <= limit:
            chunk = os.read(fd, limit + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        raise TomlFileError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise TomlFileError(f"{what} {path} is over {limit // 1024} KiB: not a file ffvj wrote (check its name)")
    return data


def read_toml(path: str | Path, what: str = "file", limit: int = MAX_BYTES) -> dict:
    """``path`` parsed as TOML (see the module docstring). Raises TomlFileError, one line."""
    data = read_bytes(path, what, limit)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TomlFileError(f"{what} {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                            f"{exc.start}); save it as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TomlFileError(f"{what} {path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise TomlFileError(f"{what} {path} is not valid TOML: arrays or tables nested too deep") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts (int_max_str_digits)
        raise TomlFileError(f"{what} {path} is not valid TOML: {str(exc)[:200]}") from None
