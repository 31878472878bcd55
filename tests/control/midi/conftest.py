"""The MIDI tests' fixtures (their helpers are in ``rig``)."""

from .rig import rig  # noqa: F401 (a fixture: pytest finds it here)
