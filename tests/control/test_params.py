"""The one parameter registry and its store."""

import math
import threading

import pytest

from ffvj.control.modulation import Modulation
from ffvj.control.params import LFO_SLOTS, ParamStore, build_registry, lfo_slots


def test_the_registry_declares_levels_and_lfo_slots_once():
    reg = build_registry(3)
    assert "l0.gain_up" not in reg and "l3.gain_down" not in reg  # no level below 0, none above the top
    assert reg["l2.period"].default == 4 and reg["l2.period"].level == 2
    assert lfo_slots(reg) == list(range(1, LFO_SLOTS + 1))
    six = build_registry(2, lfo_slots=6)
    assert lfo_slots(six) == [1, 2, 3, 4, 5, 6] and Modulation(six).slots == [1, 2, 3, 4, 5, 6]
    assert "l3.zoom" not in six["lfo6.target"].choices and "l2.zoom" in six["lfo6.target"].choices


def test_bad_values_are_refused_or_clamped_and_counted():
    store = ParamStore(build_registry(3))
    assert store.set("l0.zoom", 9.0) and store.get("l0.zoom") == store.registry["l0.zoom"].max
    assert not store.set("nope", 1.0) and not store.set("drive", "fast") and not store.set("drive", math.nan)
    assert store.set("bound", "sine") and store.get("bound") == 2.0
    assert (store.rejected, store.clamped) == (3, 1)


def test_counters_are_exact_when_many_threads_set_at_once():
    store = ParamStore(build_registry(3))

    def flood():
        for i in range(4000):
            store.set("no.such", i)
            store.set("input.mix", 2.0)

    threads = [threading.Thread(target=flood) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.rejected == 24000 and store.clamped == 24000


@pytest.mark.parametrize("levels", [1, 3, 5])
def test_every_address_is_distinct(levels):
    reg = build_registry(levels)
    assert len({p.address for p in reg.values()}) == len(reg)
