"""Files written whole or not at all: written beside the target, then renamed over it, so a crash or a full
disk mid-write leaves the old file (or none), never half of one. Presets, snapshot slots, a show file's
headers and the discovery's archive are all written this way."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomically(path: str | Path, data: bytes | str | None = None, *,
                     write: Callable[[str], None] | None = None) -> None:
    """``data`` (text as UTF-8), or what ``write(temporary_path)`` writes (a library that wants a path:
    safetensors), to ``path`` atomically; the folder is made if it is missing."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if write is None:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
                f.flush()
                os.fsync(f.fileno())
        if write is not None:
            write(tmp)
        os.chmod(tmp, 0o644)  # (mkstemp's own mode is the owner's alone)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
