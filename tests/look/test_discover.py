"""``ffvj discover``: the search space and objective on their own; a real search on a real two-worker Dask
cluster (tiny candidates), resumed after it was stopped, and after ``kill -9``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import numpy as np
import pytest

from ffvj.control.params import build_registry
from ffvj.look.discover import PASSING, SPACE, DiscoverConfig, _default_point, objective, settings_of
from tests.helpers import wait_until

pytestmark = pytest.mark.slow  # (pytest -m "not slow": the quick subset; CI runs them all)

pytest.importorskip("ribs")
distributed = pytest.importorskip("distributed")

TINY = ["--size", "96x64", "--seconds", "2", "--batch", "2"]


def test_a_point_of_the_space_is_settings_within_each_range_and_a_model():
    models = ("default", "crisp", "random")
    registry = build_registry(3)
    for corner in (0.0, 1.0):
        settings, model = settings_of([corner] * (len(SPACE) + 1), models)
        for name, lo, hi in SPACE:
            assert min(lo, hi) - 1e-6 <= settings[name] <= max(lo, hi) + 1e-6
            assert registry[name].min <= settings[name] <= registry[name].max
        assert model == (models[0] if corner == 0.0 else models[-1])
    settings, model = settings_of(_default_point(models), models)  # the default look is a point of the space
    assert model == "default"
    for name, lo, hi in SPACE:
        default = min(max(registry[name].default, lo), hi)
        assert settings[name] == pytest.approx(default, abs=1e-3 * (hi - lo)), name


def test_the_objective_rewards_passing_checks_first_then_a_visible_hierarchy_detail_and_life():
    failing = {"lattice": True, "detail": False}
    assert objective(failing, 20, 1, 3) == pytest.approx(5.0)  # half the checks: 5 of the first 10
    passing = {"lattice": True, "detail": True}
    assert objective(passing, 0, 1, 3) == pytest.approx(10.0)
    assert objective(passing, 5, 0.8, 1.5) < objective(passing, 10, 0.8, 1.5) == pytest.approx(100.0)
    assert objective(passing, 10, 0.4, 1.5) < objective(passing, 10, 0.8, 1.5)


def _ffvj(*args, **kw):
    return subprocess.run([sys.executable, "-m", "ffvj.cli", "discover", *args], capture_output=True, text=True,
                          timeout=600, **kw)


def test_a_search_on_a_two_worker_cluster_writes_its_archive_and_resumes(tmp_path):
    """The cluster stands for many machines: the search reaches it through its scheduler's address."""
    out = tmp_path / "found"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        first = _ffvj("--iterations", "1", "--out", str(out), "--scheduler", cluster.scheduler_address, *TINY)
        assert first.returncode == 0, first.stderr[-3000:]
        state = json.loads((out / "state.json").read_text())
        assert state["iterations"] == 1 and state["evaluations"] == 4
        with np.load(out / "archive.npz", allow_pickle=False) as archive:
            elites = len(archive["solution"])
        assert (out / "elites.json").is_file() and (out / "evaluations.jsonl").is_file()
        _only_passing_looks_are_kept(out, elites)
        again = _ffvj("--iterations", "1", "--out", str(out), "--scheduler", cluster.scheduler_address, *TINY)
        assert again.returncode == 0, again.stderr[-3000:]
    state = json.loads((out / "state.json").read_text())
    assert state["iterations"] == 2 and state["evaluations"] == 8  # resumed, not restarted
    with np.load(out / "archive.npz", allow_pickle=False) as archive:
        assert len(archive["solution"]) >= elites  # an elite is only ever replaced by a better one
        _only_passing_looks_are_kept(out, len(archive["solution"]))
    assert len((out / "evaluations.jsonl").read_text().splitlines()) == 8
    lines = [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]
    assert all({"objective", "descriptors", "checks", "settings", "model"} <= set(line) for line in lines)
    for preset in (out / "presets").glob("*.toml"):  # every preset written is a whole look ffvj run can load
        assert 'base = "default"' in preset.read_text()
    other = _ffvj("--iterations", "1", "--out", str(out), "--size", "128x72", "--seconds", "2", "--batch", "2")
    assert other.returncode == 2 and "--fresh" in other.stderr  # another space or size: said, not mixed in


def _only_passing_looks_are_kept(out, elites: int) -> None:
    """A cell holds a look that passes every check, or nothing (a failing elite would be a parent)."""
    kept = json.loads((out / "elites.json").read_text())
    assert len(kept) == elites and all(all(r["checks"].values()) for r in kept.values())
    evaluated = [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]
    passed = [r for r in evaluated if all(r["checks"].values())]
    assert elites <= len(passed) and (elites >= 1) == bool(passed)
    assert all(r["objective"] < PASSING for r in evaluated if r not in passed)
    for r in evaluated:  # the hierarchy-cut twin is rendered for a look that passed the rest, and only then
        rest = {k: v for k, v in r["checks"].items() if k != "hierarchy"}
        assert ("hierarchy" in r["checks"]) == all(rest.values()), r["checks"]


def test_a_search_killed_with_sigkill_resumes_from_its_last_iteration(tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "ffvj.cli", "discover", "--iterations", "50", "--out", str(out),
                             "--workers", "2", *TINY], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: (out / "state.json").exists() and
                   json.loads((out / "state.json").read_text())["iterations"] >= 1, 300, "a first iteration")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = json.loads((out / "state.json").read_text())["iterations"]
    resumed = _ffvj("--iterations", "1", "--out", str(out), "--workers", "2", *TINY)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((out / "state.json").read_text())["iterations"] == done + 1
    assert "resuming" in resumed.stderr


def test_bad_settings_are_one_line():
    assert "--workers" in _ffvj("--workers", "0").stderr
    result = _ffvj("--model", "nothere", "--iterations", "1", "--out", "/tmp/ffvj-discover-nothere")
    assert result.returncode == 2 and "no bundled model nothere" in result.stderr and "Traceback" not in result.stderr
    assert DiscoverConfig().shape()["space"] == [name for name, *_ in SPACE]
