"""Snapshots: the picture's memory. ``SnapshotBank`` clones every level's feedback state h^ℓ into a slot
and later jumps or crossfades back to it while the feedback keeps running. Render thread only.

The calls a show makes (``store``, ``recall``, ``update``) log problems rate-limited and carry on.

The slots outlive the show (``ffvj run --snapshots FILE``): ``save`` writes them as safetensors (plain
tensors, never a pickle), atomically (a temporary file renamed over the old one: a crash mid-write keeps
the last whole file), and ``load`` reads them back at the start. The show saves after every store (the
file written on its file worker, off the render loop) and when it ends.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from ..files import write_atomically
from ..reporting import RateLimitedLog

log = logging.getLogger(__name__)

SNAPSHOT_SLOTS = 8  # numbered 0..7: a row of eight pads on most controllers


class SnapshotBank:
    """``slots`` memories of the whole feedback state, numbered 0..slots-1. Render thread only.

    ``recall(engine, slot, seconds)`` jumps there, or crossfades over ``seconds`` while the feedback keeps
    running: the engine does the crossfade (``FeedbackEngine.crossfade_to``), in feature space, per level.
    """

    def __init__(self, slots: int = SNAPSHOT_SLOTS):
        if slots < 1:
            raise ValueError(f"a snapshot bank needs at least one slot, got {slots}")
        self.slots = slots
        self._states: list[list[torch.Tensor] | None] = [None] * slots
        self._warn = RateLimitedLog(log)

    def occupied(self) -> list[int]:
        """The slots holding a snapshot (for LED echo, UI)."""
        return [i for i, s in enumerate(self._states) if s is not None]

    def get(self, slot: int) -> list[torch.Tensor] | None:
        """The stored states of ``slot`` (do not modify them), or None when it is empty."""
        return self._states[slot]

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
        if len(states) != len(engine.states) or any(a.shape != b.shape for a, b in zip(states, engine.states)):
            self._warn.warning(f"size:{slot}", "snapshot %d refused: its states %s do not fit the engine's %s",
                               slot, [tuple(s.shape) for s in states], [tuple(s.shape) for s in engine.states])
            return False
        engine.crossfade_to(states, seconds if math.isfinite(seconds) else 0.0)
        return True

    # -- the slots on disk --

    def snapshot_for_saving(self) -> dict[str, torch.Tensor]:
        """The occupied slots as CPU tensors, ``slot<N>.level<L>`` (called on the render loop: the copies
        are what the file worker then writes, whatever the loop stores meanwhile)."""
        return {f"slot{n}.level{lvl}": state.detach().float().cpu().contiguous()
                for n, states in enumerate(self._states) if states is not None for lvl, state in enumerate(states)}

    @staticmethod
    def write(path: str | Path, tensors: dict[str, torch.Tensor]) -> None:
        """Write ``tensors`` (``snapshot_for_saving``'s) to ``path`` atomically."""
        from safetensors.torch import save_file

        write_atomically(path, write=lambda tmp: save_file(tensors, tmp, metadata={"format": "ffvj snapshots",
                                                                                    "version": "1"}))

    def save(self, path: str | Path) -> None:
        self.write(path, self.snapshot_for_saving())

    def load(self, path: str | Path, engine) -> list[int]:
        """Fill the slots from ``path`` (every slot it holds; slots it lacks are left as they are). Raises
        ValueError naming the file for one that is not a snapshot file; a slot made for another model or
        size is skipped, said. Returns the slots filled."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path).expanduser()
        try:
            tensors = load_file(str(path), device=str(engine.states[0].device))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ValueError(f"--snapshots {path}: not a snapshot file ffvj can read ({exc}); move it away or "
                             "name another file") from None
        filled = []
        for n in range(self.slots):
            states = [tensors.get(f"slot{n}.level{lvl}") for lvl in range(len(engine.states))]
            if all(s is None for s in states):
                continue
            if any(s is None or s.shape != e.shape for s, e in zip(states, engine.states)):
                log.warning("snapshot %d in %s is for another model or size: skipped", n, path)
                continue
            self._states[n] = [s.to(e.dtype) for s, e in zip(states, engine.states)]
            filled.append(n)
        log.info("snapshots %s loaded from %s", filled, path)
        return filled
