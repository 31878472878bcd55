"""Snapshots: the picture's memory. ``SnapshotBank`` clones every level's feedback state h^ℓ into a slot
and later jumps or crossfades back to it while the feedback keeps running. Render thread only.

The calls a show makes (``store``, ``recall``, ``update``) log problems rate-limited and carry on.
"""

from __future__ import annotations

import logging
import math

import torch

from ..tally import RateLimitedLog
from .presets import smoothstep

log = logging.getLogger(__name__)

SNAPSHOT_SLOTS = 8  # numbered 0..7: a row of eight pads on most controllers


class SnapshotBank:
    """``slots`` memories of the whole feedback state, numbered 0..slots-1. Render thread only.

    Crossfade scheme (``recall`` with seconds > 0): the feedback keeps running; each frame, *after*
    ``engine.step``, ``update(engine, dt)`` replaces every level's state by

        h^ℓ ← lerp(h^ℓ, s^ℓ, w),   w = smoothstep(t / seconds)

    where s^ℓ is the stored state and t the time since the recall. Each blend is in feature space, per
    level (as autoencoder embeddings interpolate), and acts on a state the loop has already evolved from
    the previous blend, so the pull compounds; at t = seconds (w = 1) the states are exactly the
    snapshot and the feedback runs on from there.
    """

    def __init__(self, slots: int = SNAPSHOT_SLOTS):
        if slots < 1:
            raise ValueError(f"a snapshot bank needs at least one slot, got {slots}")
        self.slots = slots
        self._states: list[list[torch.Tensor] | None] = [None] * slots
        self._fade: list[torch.Tensor] | None = None
        self._elapsed = 0.0
        self._duration = 0.0
        self._warn = RateLimitedLog(log)

    def occupied(self) -> list[int]:
        """The slots holding a snapshot (for LED echo, UI)."""
        return [i for i, s in enumerate(self._states) if s is not None]

    def get(self, slot: int) -> list[torch.Tensor] | None:
        """The stored states of ``slot`` (do not modify them), or None when it is empty."""
        return self._states[slot]

    @property
    def fading(self) -> bool:
        return self._fade is not None

    def _slot_ok(self, slot, what: str) -> bool:
        if isinstance(slot, bool) or not isinstance(slot, int) or not 0 <= slot < self.slots:
            self._warn.warning(f"slot:{what}", "snapshot %s ignored: slot %r is not in 0..%d", what, slot,
                               self.slots - 1)
            return False
        return True

    @torch.no_grad()
    def store(self, engine, slot: int) -> bool:
        """Clone every level's state into ``slot`` (on the engine's device), replacing what was there."""
        if not self._slot_ok(slot, "store"):
            return False
        self._states[slot] = [s.detach().clone() for s in engine.states]
        log.info("stored snapshot %d", slot)
        return True

    @staticmethod
    def _fits(states: list[torch.Tensor], engine) -> bool:
        return len(states) == len(engine.states) and all(a.shape == b.shape for a, b in zip(states, engine.states))

    @torch.no_grad()
    def recall(self, engine, slot: int, seconds: float = 0.0) -> bool:
        """Jump (seconds ≤ 0) or start a crossfade to ``slot``. An empty slot, a bad slot number or a
        snapshot of another size (the engine was resized, another model) is logged and ignored."""
        if not self._slot_ok(slot, "recall"):
            return False
        states = self._states[slot]
        if states is None:
            self._warn.warning(f"empty:{slot}", "snapshot recall ignored: slot %d is empty", slot)
            return False
        if not self._fits(states, engine):
            self._warn.warning(f"size:{slot}", "snapshot %d refused: its states %s do not fit the engine's %s",
                               slot, [tuple(s.shape) for s in states], [tuple(s.shape) for s in engine.states])
            return False
        target = [s.to(engine.device, live.dtype) for s, live in zip(states, engine.states)]
        if not (math.isfinite(seconds) and seconds > 0):
            self._fade = None
            engine.set_states([s.clone() for s in target])  # a copy: the loop must never alias the slot
            return True
        self._fade, self._elapsed, self._duration = target, 0.0, float(seconds)
        return True

    def cancel(self) -> None:
        """Stop a crossfade where it is (the panic button does)."""
        self._fade = None

    @torch.no_grad()
    def update(self, engine, dt: float) -> None:
        """One frame of the crossfade; call after ``engine.step``. Does nothing when not fading."""
        if self._fade is None:
            return
        if not self._fits(self._fade, engine):  # the engine changed under us: drop the fade
            self._warn.warning("fade-size", "snapshot crossfade dropped: the engine's states changed size")
            self._fade = None
            return
        self._elapsed += max(float(dt), 0.0)
        u = min(self._elapsed / self._duration, 1.0)
        if u >= 1.0:
            engine.set_states([s.clone() for s in self._fade])
            self._fade = None
            return
        w = smoothstep(u)
        engine.set_states([torch.lerp(live, snap, w) for live, snap in zip(engine.states, self._fade)])
