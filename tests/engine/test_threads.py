"""The thread tuner on a scripted machine: which thread count is faster changes mid-show."""

from __future__ import annotations

from ffvj.engine.device import ThreadTuner


class Machine:
    """Step times per thread count, switchable (a competing encoder starts and stops), on a fake clock."""

    def __init__(self):
        self.now = 0.0
        self.threads = None
        self.cost = {2: 10.0, 1: 17.0}  # alone: 2 threads are faster
        self.sets = []

    def set_threads(self, n):
        self.threads = n
        self.sets.append(n)

    def run(self, tuner, seconds, fps=30):
        for _ in range(int(seconds * fps)):
            self.now += 1 / fps
            tuner.record(self.cost[self.threads])


def test_the_tuner_follows_the_faster_thread_count_as_the_machine_changes():
    m = Machine()
    tuner = ThreadTuner((2, 1), clock=lambda: m.now, set_threads=m.set_threads)
    assert m.threads == 2
    m.run(tuner, 60)
    assert tuner.threads == 2 and m.threads == 2  # alone, 2 stays, and probes of 1 keep losing
    probes_alone = m.sets.count(1)
    assert 1 <= probes_alone <= 4  # backed off: 10, 20, 40 s
    m.cost = {2: 23.5, 1: 17.4}  # OBS starts encoding on one core
    m.run(tuner, 90)
    assert tuner.threads == 1 and m.threads == 1 and tuner.switches == 1
    m.cost = {2: 10.0, 1: 17.0}  # OBS stops
    m.run(tuner, 100)
    assert tuner.threads == 2 and m.threads == 2 and tuner.switches == 2


def test_a_clearly_worse_probe_ends_at_once():
    m = Machine()
    m.cost = {2: 20.0, 1: 190.0}
    tuner = ThreadTuner((2, 1), clock=lambda: m.now, set_threads=m.set_threads)
    m.run(tuner, 10.5)  # the first probe starts at 10 s
    assert m.threads == 2 and m.sets == [2, 1, 2]
    assert tuner.threads == 2


def test_a_single_candidate_never_probes():
    m = Machine()
    tuner = ThreadTuner((1,), clock=lambda: m.now, set_threads=m.set_threads)
    m.run(tuner, 60)
    assert m.sets == [1]
