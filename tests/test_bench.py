"""The benchmark's report (never timings: those are the bench's job)."""

import json

import pytest

from ffvj.cli import main

pytestmark = pytest.mark.slow  # (pytest -m "not slow": the quick subset; CI runs them all)

def test_bench_json_has_the_promised_keys(capsys):
    assert main(["bench", "--size", "64x48", "--frames", "4", "--no-end-to-end", "--json", "--device", "cpu"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert {"engine_fps", "reference_fps", "speedup", "size", "device"} <= set(r)
    assert r["size"] == "64x48" and r["device"] == "cpu" and r["engine_fps"] > 0 and r["reference_fps"] > 0
    assert [row["level"] for row in r["levels"]] == [0, 1, 2, 3]
    assert r["floor"]["floor_ms"] > 0 and r["floor"]["flops"] > 0 and r["peak_memory_mb"] > 0


def test_bench_runs_a_half_precision_engine_against_the_fp32_reference(capsys):
    assert main(["bench", "--size", "64x48", "--frames", "3", "--no-end-to-end", "--json", "--precision", "fp16"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["precision"] == "fp16" and r["engine_fps"] > 0 and r["reference_fps"] > 0
    assert main(["bench", "--size", "64x48", "--frames", "3", "--no-end-to-end", "--json"]) == 0
    fp32 = json.loads(capsys.readouterr().out)
    assert fp32["precision"] == "fp32"
    assert r["floor"]["bytes"] < fp32["floor"]["bytes"]  # half the bytes per state element


def test_the_report_times_the_engines_own_decoders_and_marks_the_top_level(capsys):
    assert main(["bench", "--size", "64x48", "--frames", "3", "--no-end-to-end", "--device", "cpu"]) == 0
    report = capsys.readouterr().out
    top = next(line for line in report.splitlines() if line.lstrip().startswith("3  "))
    assert "nan" not in report and "—" in top  # the top level has no encoder or decoder above it


def test_threads_sets_the_engines_cpu_threads_and_the_report_says_so(capsys):
    import torch

    before = torch.get_num_threads()
    try:
        assert main(["bench", "--size", "64x48", "--frames", "3", "--no-end-to-end", "--json", "--threads", "1"]) == 0
        assert json.loads(capsys.readouterr().out)["threads"] == 1
    finally:
        torch.set_num_threads(before)


def test_a_preset_is_timed_on_its_own_model_with_set_on_top(capsys):
    """``--preset lichen`` times the look a show recalling it runs: its values and its model (random)."""
    assert main(["bench", "--size", "64x48", "--frames", "3", "--no-end-to-end", "--json", "--device", "cpu",
                 "--preset", "lichen", "--set", "l1.turn=5"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["preset"] == "lichen" and r["model"] == "random"
    assert r["settings"]["l1.turn"] == 5.0 and r["settings"]["l1.noise"] == 0.03  # --set wins; the rest is the look
    assert main(["bench", "--size", "64x48", "--frames", "3", "--no-end-to-end", "--preset", "nope"]) == 2
    error = capsys.readouterr().err
    assert "no preset 'nope'" in error and "lichen" in error and "Traceback" not in error
