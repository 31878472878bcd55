"""The picture, bit for bit: the default look and every factory preset, 300 frames each through the whole
show (controls, LFOs, audio slots, engine, grade, flash limiter), hashed and held against hashes recorded
before a change that must not move a pixel (a refactor).

Floating point is only repeatable on the same arithmetic: the same torch build, CPU kernels (ISA) and
thread count. The recorded hashes say what they were made on, and on another machine the test says so
and skips rather than pretend. Record them (only when the picture is meant to change) with::

    python3 -m tests.test_pictures_unchanged --write
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
from pathlib import Path

import numpy as np
import pytest
import torch

from ffvj.control.controls import Controls
from ffvj.control.presets import factory_presets_dir
from ffvj.show import RunConfig, run

from .audio.signals import drum_clip, write_wav

RECORD = Path(__file__).with_name("pictures_unchanged.json")
FRAMES, WIDTH, HEIGHT = 300, 128, 72
LOOKS = ["default"] + sorted(p.stem for p in factory_presets_dir().glob("*.toml"))


def arithmetic() -> dict:
    """What decides the floating-point results, besides the code."""
    return {"torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "machine": platform.machine()}


def picture_hash(look: str, music: Path) -> str:
    """One digest of every frame's picture (what the sinks get) and every level's state, in order."""
    digest = hashlib.sha256()

    def on_frame(slot, picture, source, engine):
        digest.update(np.ascontiguousarray(picture).tobytes())
        for state in engine.states:
            digest.update(state.float().contiguous().numpy().tobytes())

    run(RunConfig(source="generator", sinks=["null"], width=WIDTH, height=HEIGHT, fps=30, frames=FRAMES,
                  pace="offline", preset=None if look == "default" else look, audio=f"file:{music}",
                  status_interval=1e9),
        controls=Controls.for_levels(3), on_frame=on_frame)
    return digest.hexdigest()


def _music(folder: Path) -> Path:
    path = folder / "drums.wav"
    write_wav(path, drum_clip(seconds=FRAMES / 30 + 1, seed=3)[0])
    return path


@pytest.fixture(scope="module")
def music(tmp_path_factory):
    return _music(tmp_path_factory.mktemp("music"))


@pytest.fixture(scope="module")
def record():
    recorded = json.loads(RECORD.read_text())
    if recorded["arithmetic"] != arithmetic():
        pytest.skip(f"the hashes were recorded on {recorded['arithmetic']}, this is {arithmetic()}: bit-identity "
                    "holds only on the same arithmetic")
    return recorded["looks"]


@pytest.mark.slow
@pytest.mark.parametrize("look", LOOKS)
def test_the_picture_is_bit_identical_to_the_recorded_one(look, music, record):
    assert picture_hash(look, music) == record[look], f"{look}: the picture changed"


def main() -> None:
    parser = argparse.ArgumentParser(description="record the picture hashes (only when the picture is meant "
                                                 "to change)")
    parser.add_argument("--write", action="store_true", help="write them to " + RECORD.name)
    args = parser.parse_args()
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        music = _music(Path(folder))
        looks = {look: picture_hash(look, music) for look in LOOKS}
    for look, digest in looks.items():
        print(f"{look:10s} {digest}")
    if args.write:
        RECORD.write_text(json.dumps({"arithmetic": arithmetic(), "frames": FRAMES, "size": [WIDTH, HEIGHT],
                                      "looks": looks}, indent=1) + "\n")


if __name__ == "__main__":
    main()
