"""The thread tuner on a scripted machine: which thread count is faster changes mid-show, and a probe
never costs a visible hitch. The core meter on a scripted /proc/stat."""

from __future__ import annotations

from ffvj.engine.device import CoreMeter, ThreadTuner


class Machine:
    """Step times per thread count, switchable (a competing encoder starts and stops), on a fake clock,
    with the cores the encoder leaves free."""

    def __init__(self):
        self.now = 0.0
        self.threads = None
        self.cost = {2: 10.0, 1: 17.0}  # alone: 2 threads are faster
        self.free = 2.0
        self.sets = []
        self.steps = []

    def set_threads(self, n):
        self.threads = n
        self.sets.append(n)

    def tuner(self, candidates=(2, 1), **kw) -> ThreadTuner:
        return ThreadTuner(candidates, clock=lambda: self.now, set_threads=self.set_threads,
                           free_cores=lambda threads: self.free, **kw)

    def run(self, tuner, seconds, fps=30):
        for _ in range(int(seconds * fps)):
            self.now += 1 / fps
            self.steps.append(self.cost[self.threads])
            tuner.record(self.cost[self.threads])


def test_the_tuner_follows_the_faster_thread_count_as_the_machine_changes():
    m = Machine()
    tuner = m.tuner()
    assert m.threads == 2
    m.run(tuner, 60)
    assert tuner.threads == 2 and m.threads == 2  # alone, 2 stays, and probes of 1 keep losing
    probes_alone = m.sets.count(1)
    assert 1 <= probes_alone <= 4  # backed off: 10, 20, 40 s
    m.cost, m.free = {2: 23.5, 1: 17.4}, 1.0  # OBS starts encoding on one core
    m.run(tuner, 90)
    assert tuner.threads == 1 and m.threads == 1 and tuner.switches == 1
    m.cost, m.free = {2: 10.0, 1: 17.0}, 2.0  # OBS stops
    m.run(tuner, 30)  # back on 2 threads within a probe interval or two
    assert tuner.threads == 2 and m.threads == 2 and tuner.switches == 2


def test_beside_a_busy_core_more_threads_are_never_tried():
    """The issue's hitches: settled on 1 thread beside an encoder, each probe of 2 threads took 250–680 ms
    steps. With one core busy the tuner never tries 2 (the meter says so), so no step is slow."""
    m = Machine()
    m.cost, m.free = {2: 500.0, 1: 17.0}, 1.0
    tuner = m.tuner()
    m.run(tuner, 15)  # the first probe (of 1) wins
    assert tuner.threads == 1
    m.steps.clear()
    sets = len(m.sets)
    m.run(tuner, 300)  # five minutes
    assert len(m.sets) == sets and max(m.steps) == 17.0  # no probe of 2, not one slow step
    assert tuner.postponed >= 20


def test_a_probe_ends_on_its_first_slow_step():
    m = Machine()
    m.cost = {2: 20.0, 1: 190.0}
    tuner = m.tuner()
    m.run(tuner, 10.5)  # the first probe starts at 10 s
    assert m.threads == 2 and m.sets == [2, 1, 2] and tuner.abandoned == 1
    assert m.steps.count(190.0) == 1  # one step at the worse count, not four
    assert tuner.threads == 2


def test_where_the_cores_cannot_be_read_the_probe_still_ends_on_its_first_slow_step():
    m = Machine()
    m.cost = {2: 500.0, 1: 17.0}
    tuner = ThreadTuner((2, 1), clock=lambda: m.now, set_threads=m.set_threads, free_cores=lambda threads: None)
    m.run(tuner, 15)
    assert tuner.threads == 1
    m.steps.clear()
    m.run(tuner, 20)  # the probe of 2, 10 s after the switch: one slow step, then back (next one 20 s later)
    assert m.steps.count(500.0) == 1 and tuner.threads == 1


def test_a_single_candidate_never_probes():
    m = Machine()
    tuner = m.tuner((1,))
    m.run(tuner, 60)
    assert m.sets == [1]


def test_the_core_meter_reads_what_else_keeps_the_cores_busy(tmp_path):
    """Two cores: an encoder keeps one busy, the engine's one thread the other; then the encoder stops."""
    stat = tmp_path / "stat"
    clock = {"now": 0.0}
    meter = CoreMeter(str(stat), clock=lambda: clock["now"])
    meter.cpus, meter.cores, meter._tick = {"cpu0", "cpu1"}, 2, 100

    def at(seconds: float, busy0: int, busy1: int, engine_cpu: float):
        # user nice system idle iowait irq softirq steal: busy is counted in user, the rest idle
        stat.write_text(f"cpu  {busy0 + busy1} 0 0 0 0 0 0 0\ncpu0 {busy0} 0 0 {int(100 * seconds) - busy0} 0 0 0 0\n"
                        f"cpu1 {busy1} 0 0 {int(100 * seconds) - busy1} 0 0 0 0\ncpu7 999999 0 0 0 0 0 0 0\n"
                        "intr 5 5 5\n")
        clock["now"] = seconds
        meter.sample(engine_cpu)

    at(0, 0, 0, 0.0)
    assert meter.free(1) is None  # one sample: nothing to tell yet
    at(1, 100, 100, 1.0)  # both cores busy all second, the engine's thread for one of them
    assert abs(meter.free(1) - 1.0) < 1e-6
    at(2, 200, 200, 2.0)
    at(3, 200, 300, 3.0)  # the encoder stopped: only the engine is busy
    assert abs(meter.free(1) - (2 - 2 / 3)) < 1e-6  # over the last four samples (3 s): 2 s of encoder
    at(4, 200, 400, 4.0)
    at(5, 200, 500, 5.0)
    assert abs(meter.free(1) - 2.0) < 1e-6
    assert CoreMeter("/nonexistent/stat").free(1) is None
