"""``ffvj look`` on a tiny run: the real show renders, every measure is in the report, the sheets are written."""

import json

from ffvj.cli import main


def test_look_json_on_a_tiny_run(tmp_path, capsys, caplog):
    import logging

    out = tmp_path / "look"
    with caplog.at_level(logging.INFO, logger="ffvj"):
        assert main(["look", "--input", "generator", "--preset", "default", "--preset", "melt", "--size", "96x64",
                     "--seconds", "2", "--fps", "10", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # Its plan first, then the time left after each run (the defaults once ran an hour, saying nothing).
    assert "2 runs (1 input(s) × 2 look(s)), 20 frames each at 96x64, each rendered twice" in caplog.text
    assert "look 1/2: generator through default" in caplog.text and "left" in caplog.text
    assert json.loads((out / "look.json").read_text()) == report
    assert [(r["input"], r["preset"]) for r in report["runs"]] == [("generator", "default"), ("generator", "melt")]
    assert set(report["distinct"]) == {"generator"} and 0 <= report["distinct"]["generator"]["max_ssim"] <= 1
    for run in report["runs"]:
        assert run["frames"] == 20  # levels: 48×32 and 24×16 (8×6 is too small for the lattice)
        assert run["lattice"]["picture"] >= 0 and run["lattice"]["source"] >= 0 and len(run["lattice"]["levels"]) == 2
        assert 0 <= run["input_ssim"]["early"] <= 1 and run["change"]["mean"] > 0
        assert set(run["flashes"]) == {"general", "red"} and 0 <= run["hue_share"]["picture"] <= 1
        assert set(run["checks"]) >= {"lattice", "flashes", "colour"} and all(isinstance(v, bool) for v in run["checks"].values())
        assert (out / f"generator-{run['preset']}.png").is_file()
        # Issue 22's measures, on the loop's own picture and the output, against the source's.
        texture = run["texture"]
        assert texture["detail"]["raw"] > 0 and 0 <= texture["dead_area"]["raw"] <= 1
        assert texture["complexity"]["output"] > 0 and texture["grid"]["source"] >= 0
        assert texture["motion"] > 0 and texture["flicker"] >= 0
        assert texture["hierarchy"]["raw"]["ratio"] >= 0 and texture["hierarchy"]["output"]["floor"] >= 0
        assert {"detail", "dead", "grid", "hierarchy"} <= set(run["checks"])


def test_look_on_a_source_of_ones_own_and_a_bad_one(tmp_path, capsys):
    assert main(["look", "--input", "generator:bars", "--preset", "default", "--size", "96x64", "--seconds", "0.5",
                 "--fps", "10", "--out", str(tmp_path)]) == 0
    assert "generator:bars" in capsys.readouterr().out
    assert main(["look", "--input", "video:/nonexistent.mp4", "--size", "96x64", "--seconds", "0.5",
                 "--out", str(tmp_path)]) == 2
    assert "nonexistent.mp4" in capsys.readouterr().err


def test_a_look_that_plays_to_music_is_judged_hearing_it(tmp_path, capsys):
    """With --audio every run hears the track: kick's picture moves with it, the default look's (which plays
    to nothing) is the same run as in silence, and the report says what it heard."""
    from tests.audio.signals import drum_clip, write_wav

    write_wav(tmp_path / "drums.wav", drum_clip(seconds=4, seed=3)[0])
    args = ["look", "--input", "generator", "--preset", "default", "--preset", "kick", "--size", "96x64",
            "--seconds", "2", "--fps", "15", "--no-hierarchy", "--json"]
    assert main([*args, "--out", str(tmp_path / "silent")]) == 0
    report = json.loads(capsys.readouterr().out)
    silent = {r["preset"]: r for r in report["runs"]}
    assert report["audio"] is None
    assert main([*args, "--out", str(tmp_path / "heard"), "--audio", f"file:{tmp_path / 'drums.wav'}"]) == 0
    report = json.loads(capsys.readouterr().out)
    heard = {r["preset"]: r for r in report["runs"]}
    assert report["audio"].endswith("drums.wav")
    assert heard["default"]["change"] == silent["default"]["change"]  # frame for frame the same run
    assert heard["default"]["texture"] == silent["default"]["texture"]
    # The hits ripple kick's picture (onset → warp, bass → zoom): it changes more from frame to frame.
    assert heard["kick"]["change"]["mean"] > 1.02 * silent["kick"]["change"]["mean"], (
        heard["kick"]["change"], silent["kick"]["change"])
