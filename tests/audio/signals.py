"""Test music with known answers: a click track (its beats) and a drum clip (its hits), synthesised so
every onset and beat time is exact, and written to real files through PyAV for the inputs' tests."""

from __future__ import annotations

import numpy as np

RATE = 48000


def click_track(bpm: float = 120.0, seconds: float = 10.0, start: float = 0.3, amplitude: float = 0.5,
                rate: int = RATE) -> tuple[np.ndarray, np.ndarray]:
    """Short 1 kHz clicks on every beat from ``start``: the samples and the clicks' times."""
    x = np.zeros(int(seconds * rate), np.float32)
    n = int(0.02 * rate)
    click = amplitude * np.exp(-np.arange(n) / (0.003 * rate)) * np.sin(2 * np.pi * 1000 * np.arange(n) / rate)
    times = np.arange(start, seconds - 0.05, 60.0 / bpm)
    for t in times:
        i = int(round(t * rate))
        x[i:i + n] += click[:len(x) - i]
    return x, times


def drum_clip(seconds: float = 20.0, bpm: float = 120.0, seed: int = 0, rate: int = RATE) -> tuple[np.ndarray, np.ndarray]:
    """A kick on every beat, a snare on 2 and 4, hi-hats on random sixteenths, every hit at its own
    velocity, over a wobbling bass drone and a little noise: the samples and every onset's time."""
    rng = np.random.default_rng(seed)
    x = np.zeros(int(seconds * rate), np.float32)
    t = np.arange(len(x)) / rate
    x += 0.05 * np.sin(2 * np.pi * 55 * t) * (1 + 0.3 * np.sin(2 * np.pi * 0.5 * t))
    x += 0.003 * rng.standard_normal(len(x)).astype(np.float32)
    hits, step, k, when = [], 60.0 / bpm / 4, 0, 0.1
    while when < seconds - 0.3:
        kind = "snare" if k % 8 == 4 else "kick" if k % 4 == 0 else "hat" if rng.random() < 0.5 else None
        if kind is not None:
            velocity = rng.uniform(0.4, 1.0)
            if kind == "kick":
                n = int(0.25 * rate)
                phase = np.cumsum(2 * np.pi * (50 + 100 * np.exp(-np.arange(n) / (0.03 * rate))) / rate)
                sound = 0.8 * np.sin(phase) * np.exp(-np.arange(n) / (0.08 * rate))
            elif kind == "snare":
                n = int(0.2 * rate)
                sound = 0.5 * (0.5 * rng.standard_normal(n) + np.sin(2 * np.pi * 190 * np.arange(n) / rate)) \
                    * np.exp(-np.arange(n) / (0.05 * rate))
            else:
                n = int(0.06 * rate)
                sound = 0.15 * np.diff(rng.standard_normal(n + 1)) * np.exp(-np.arange(n) / (0.01 * rate))
            i = int(round(when * rate))
            x[i:i + n] += velocity * sound[:len(x) - i]
            hits.append(when)
        when += step
        k += 1
    return np.clip(x, -1, 1).astype(np.float32), np.array([0.0] + hits)  # (the drone begins at 0: an onset too)


def write_wav(path, samples: np.ndarray, rate: int = RATE) -> None:
    """Mono 16-bit WAV through PyAV (FFmpeg), as any sound file a performer brings."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray((np.clip(samples, -1, 1) * 32767).astype(np.int16)[None], format="s16",
                                           layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def match_onsets(found, truth, tolerance: float = 0.05) -> tuple[float, float]:
    """(recall, share of false detections): each true hit matched to at most one found onset within
    ``tolerance`` seconds (MIREX's 50 ms)."""
    found, used, matched = np.asarray(found), set(), 0
    for t in truth:
        if len(found) == 0:
            break
        j = int(np.argmin(np.abs(found - t)))
        if abs(found[j] - t) <= tolerance and j not in used:
            used.add(j)
            matched += 1
    return matched / len(truth), (len(found) - matched) / max(len(found), 1)


def music(seconds: float = 24.0, rate: int = RATE) -> np.ndarray:
    """A short piece at 120 BPM for the demo (docs/MUSIC.md): the drum clip, a sawtooth bassline in eighths
    from 4 s (F F A♭ E♭, a bar each) and a minor pad swelling in from 8 s."""
    drums, _ = drum_clip(seconds, bpm=120, seed=21, rate=rate)
    t = np.arange(len(drums)) / rate
    notes = (41, 41, 44, 39)  # MIDI note numbers
    bass = np.zeros_like(drums)
    for k in range(int(seconds * 4)):
        start = k * 0.25 + 0.1
        i, n = int(start * rate), int(0.22 * rate)
        f = 440 * 2 ** ((notes[int(start / 2) % 4] - 69) / 12)
        tt = np.arange(n) / rate
        bass[i:i + n] += ((2 * ((tt * f) % 1) - 1) * np.exp(-tt / 0.12) * 0.25)[:len(bass) - i]
    pad = np.zeros_like(drums)
    for bar in range(int(seconds / 2)):
        i, n = int((bar * 2 + 0.1) * rate), int(2 * rate)
        tt = np.arange(n) / rate
        for semitones in (0, 3, 7):
            f = 440 * 2 ** ((notes[bar % 4] + 12 + semitones - 69) / 12)
            pad[i:i + n] += (np.sin(2 * np.pi * f * tt) * np.sin(np.pi * tt / 2) ** 2 * 0.06)[:len(pad) - i]
    mix = drums + bass * np.clip((t - 4) / 0.1, 0, 1) + pad * np.clip((t - 8) / 8, 0, 1)
    return np.clip(mix * 0.8, -1, 1).astype(np.float32)


if __name__ == "__main__":  # python -m tests.audio.signals music OUT.wav  (the demo's track)
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "music":
        sys.exit("usage: python -m tests.audio.signals music OUT.wav")
    write_wav(sys.argv[2], music())
