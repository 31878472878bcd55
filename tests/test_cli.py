"""The command line: every subcommand's help, errors of the setup as one line, the rest as what they are."""

import signal

import pytest

from ffvj.cli import build_parser, main

RUN = ["run", "--source", "generator", "--sink", "null", "--size", "32x32", "--no-osc", "--no-midi", "--no-web"]


@pytest.fixture(autouse=True)
def keep_signal_handlers():
    """``ffvj run`` installs SIGINT/SIGTERM handlers: give pytest its own back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_every_subcommand_has_help(capsys):
    commands = build_parser()._subparsers._group_actions[0].choices
    assert {"run", "devices", "params", "actions", "bench", "touchosc", "learn", "train", "model"} <= set(commands)
    for name in commands:
        with pytest.raises(SystemExit) as done:
            main([name, "--help"])
        assert done.value.code == 0
        assert "usage: ffvj " + name in capsys.readouterr().out


def test_a_setup_problem_is_one_line_naming_what_to_change(capsys):
    assert main(RUN + ["--source-option", "colour=1", "--frames", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not take the option(s) colour" in err and "seed, speed" in err
    assert main(RUN + ["--set", "l9.zoom=1", "--frames", "1"]) == 2
    assert "l9.zoom" in capsys.readouterr().err


def test_a_failure_during_the_show_says_what_it_is(monkeypatch):
    """Not a 'start-up' one-liner: a bug mid-show keeps its type and traceback (and the outputs close)."""
    from ffvj.engine.engine import FeedbackEngine

    steps = []

    def failing_step(self, phi, source=None, dt=1 / 30):
        steps.append(1)
        if len(steps) == 3:
            raise ValueError("a bug in the middle of the show")
        return self.states[0]

    monkeypatch.setattr(FeedbackEngine, "step", failing_step)
    with pytest.raises(ValueError, match="a bug in the middle of the show"):
        main(RUN + ["--frames", "5"])


def test_only_the_commands_that_render_keep_freed_memory(monkeypatch, capsys):
    from ffvj.engine import device

    calls = []
    monkeypatch.setattr(device, "keep_freed_host_memory", lambda: calls.append(1) or True)
    assert main(["params"]) == 0 and main(["actions"]) == 0
    assert calls == []
    assert main(RUN + ["--frames", "2"]) == 0
    assert calls == [1]


def test_actions_lists_the_table(capsys):
    import json

    from ffvj.control.actions import ACTIONS

    assert main(["actions", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(ACTIONS)
    assert next(r for r in rows if r["name"] == "snapshot.recall")["type_tags"] == "iff"


def test_model_list_gives_a_line_per_bundled_model(capsys):
    assert main(["model", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["default", "crisp", "random", "smooth"]  # the default first
    assert all("3 levels" in line and " decoders;" in line and "over bicubic" in line for line in lines)
    assert "interp decoders" in lines[0] and "smooth decoders" in lines[3]
    assert "max pooling" in lines[1] and "avg pooling" in lines[2]


@pytest.mark.slow
def test_listings_piped_into_head_end_quietly_and_say_enum_defaults_by_name(capsys):
    """`ffvj params | head` ended in a BrokenPipeError traceback; enum defaults printed as indexes."""
    import os
    import subprocess
    import sys

    for command in ("params", "actions"):
        read, write = os.pipe()
        os.close(read)  # the reader (head) has gone before the first line is written
        try:
            result = subprocess.run([sys.executable, "-m", "ffvj.cli", command], stdout=write, stderr=subprocess.PIPE,
                                    text=True, timeout=60)
        finally:
            os.close(write)
        assert result.returncode == 0 and result.stderr == "", result.stderr
    assert main(["params"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "default tanh " in lines["/ffvj/bound"] and "default luma " in lines["/ffvj/color/bound"]
    assert "default on " in lines["/ffvj/output/flash_limit"]


def test_a_misspelled_parameter_is_answered_with_what_was_meant(capsys):
    assert main(RUN + ["--set", "l0.zom=1.02", "--frames", "1"]) == 2
    assert "did you mean l0.zoom" in capsys.readouterr().err


@pytest.mark.parametrize("command,config,prefix", [
    ("run", "ffvj.show:RunConfig", ""), ("run", "ffvj.control.midi.ports:MidiConfig", "midi"),
    ("run", "ffvj.control.osc:OscConfig", "osc"), ("run", "ffvj.web:WebConfig", "web"),
    ("look", "ffvj.look.report:LookConfig", ""), ("bench", "ffvj.bench:BenchConfig", ""),
    ("discover", "ffvj.look.discover:DiscoverConfig", ""), ("train", "ffvj.model.train:TrainConfig", ""),
    ("train", "ffvj.model.net:ModelConfig", "")])
def test_a_command_with_no_options_makes_its_config_s_defaults(command, config, prefix):
    """The flags are generated from the config's fields (``ffvj.options``): parsing nothing gives the
    dataclass's own defaults, so the two cannot drift apart."""
    import importlib

    from ffvj.cli import build_parser
    from ffvj.options import from_args

    module, name = config.split(":")
    cls = getattr(importlib.import_module(module), name)
    args = build_parser().parse_args([command] + (["--out", "x"] if command == "train" else []))
    made, default = from_args(cls, args, prefix), cls()
    if command == "train" and name == "TrainConfig":
        default = cls(device=made.device)  # the command line resolves auto to this machine's device
    assert made == default


def test_options_reach_their_fields_and_a_mode_is_checked_when_the_config_is_made():
    from ffvj.cli import build_parser
    from ffvj.options import from_args
    from ffvj.show import Pace, RunConfig

    args = build_parser().parse_args(["run", "--size", "320x180", "--set", "l0.zoom=1.02", "--set", "bound=sine",
                                      "--sink", "null", "--sink", "l1:null", "--pace", "offline", "--link"])
    cfg = from_args(RunConfig, args)
    assert (cfg.width, cfg.height, cfg.sinks, cfg.pace, cfg.link) == (320, 180, ["null", "l1:null"], Pace.OFFLINE, True)
    assert cfg.settings == {"l0.zoom": 1.02, "bound": "sine"}
    assert RunConfig(pace="realtime").pace is Pace.REALTIME
    with pytest.raises(ValueError, match="pace must be one of auto, realtime, offline, not 'Realtime'"):
        RunConfig(pace="Realtime")  # once accepted, and paced in real time without a live show's threads
    with pytest.raises(ValueError, match="device_formats"):
        RunConfig(device_formats="yes")
