"""Switching the show's model mid-show: ``/ffvj/model s f`` (the ``model`` action), a MIDI or preset target.

The bundled models only (``ffvj model list``): a name from a network client never becomes a path. The
card and weights are read on the file worker (a slow disk never stalls a frame); the render loop then
hands the loaded model to ``FeedbackEngine.switch_model``, which keeps the picture, re-encodes the deeper
levels and crossfades. A model with another number of levels is refused (the show's parameters are per
level): it takes a restart with ``--model``.
"""

from __future__ import annotations

import functools
import logging
import threading

from ..reporting import RateLimitedLog

log = logging.getLogger(__name__)
_warn = RateLimitedLog(log)


@functools.cache
def bundled_names() -> tuple[str, ...]:
    """The bundled models' names."""
    # Read once: the bundled models are installed with ffvj and do not change while it runs, and the
    # check runs on the OSC or MIDI thread as an action is fired (no directory listing there).
    from ..model.checkpoint import bundled_models

    return tuple(bundled_models())


def check_model_name(name: str) -> str:
    """A bundled model's name, or ValueError listing them."""
    known = bundled_names()
    if name not in known:
        raise ValueError(f"no bundled model {name!r}; bundled: {', '.join(known)}")
    return name


class ModelSwitcher:
    """Loads a bundled model off the render loop (``load``, the file worker) and switches the engine to it
    on the render loop (``apply``, once per frame). The latest request wins."""

    def __init__(self, levels: int, device: str = "cpu"):
        self.levels, self.device = levels, device
        self._lock = threading.Lock()
        self._pending: tuple | None = None
        self.current: str | None = None
        self.switched: tuple[str, float] | None = None  # the last switch: (model, crossfade seconds)

    def load(self, name: str, seconds: float) -> bool:
        from ..model import checkpoint

        check_model_name(name)
        model, card = checkpoint.load(name, self.device)
        if model.levels != self.levels:
            _warn.warning(f"levels:{name}", "model %s has %d levels; this show's controls are for %d: restart "
                          "with --model %s", name, model.levels, self.levels, name)
            return False
        with self._lock:
            self._pending = (name, model, checkpoint.scales(card), checkpoint.views(card), seconds)
        return True

    def apply(self, engine) -> bool:
        """Switch ``engine`` to the model loaded last, if any (the render loop's)."""
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return False
        name, model, scales, views, seconds = pending
        engine.switch_model(model, scales, seconds, views)
        self.current, self.switched = name, (name, seconds)
        log.info("model %s (crossfading over %.1f s)", name, seconds)
        return True
