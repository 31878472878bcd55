"""ffvj — hierarchical neural video feedback for live visual performance.

Cheat sheet
-----------
Command line::

    ffvj run [--source SPEC] [--sink SPEC ...] [--size 640x360] [--fps 30] [--frames N]
             [--model NAME|PATH] [--device auto|cpu|cuda|mps] [--set NAME=VALUE ...] [--preset NAME]
             [--osc-port 9000 --osc-host H --osc-feedback HOST:PORT] [--midi NAME --midi-mapping M]
             [--web-port 9020 --web-host H --web-token T | --no-web]
             [--compile] [--precision fp32|fp16|bf16] [--device-formats on|off] [--threads N]
             [--audio file:PATH|DEVICE|jack:[PORT,...] [--audio-bands N]] [--link]
             [--record-show PATH] [--snapshots FILE] [--status-format text|json]
    ffvj render SHOW [--size WxH] [--fps N] [--from S --to S] [--set N=V] [--timeline PATH]   a show recorded with
                                     run --record-show PATH, rendered again offline at any size (docs/SHOWFILE.md)
    ffvj devices                     cameras, audio inputs, MIDI ports, torch devices, outputs usable here
    ffvj params [--json]             every parameter: name, OSC address, range, default
    ffvj actions [--json]            every action: OSC address and arguments, MIDI target
    ffvj touchosc OUT.tosc           TouchOSC layout for every parameter and action
    ffvj learn PARAM... --out M.toml MIDI learn into a mapping file
    ffvj bench [--size WxH] [--device D] [--compile] [--precision P] [--no-contended] [--preset P] [--set N=V]
               [--web-pages N --web-stalled M] [--json]
    ffvj look [--input NAME|SPEC] [--preset NAME] [--json]   the picture measured beside its hierarchy-cut
                                     twin, with contact sheets
    ffvj discover [--minutes N] [--out DIR] [--workers N | --scheduler ADDR]   new looks found by MAP-Elites
                                     (pip install 'ffvj[discover]')
    ffvj train --out runs/NAME       train a feature hierarchy (pip install 'ffvj[train]'; --random-encoders)
    ffvj model eval --images DIR     per-level PSNR/SSIM next to bicubic  [--json]
    ffvj model show | photos | list | views

Sources: ``auto``, ``generator[:NAME]``, ``video:PATH``, ``image:PATH``, ``camera[:INDEX]``.
Sinks: ``file:PATH.mp4``, ``virtualcam``, ``ndi[:NAME]``, ``window``, ``syphon``, ``spout``, ``null``;
``lN:SPEC`` sends feature level N as a picture (its principal components) through any of them.
The picture the sinks get: ``grade.*`` (the output's colour grade), then the flash limiter.
Layer amplification (DeepDream in the loop): ``lN.amplify`` > 0, shared ``amplify.*`` knobs.
Mid-show model switch: ``/ffvj/model s f [f quantum]`` (bundled names, ``ffvj model list``), crossfaded.
Music (docs/MUSIC.md): ``audio<k>.target/feature/depth/curve/smooth`` move any parameter with a feature
(level, bass, mid, high, onset, beat, bandN); ``audio.on_onset``/``on_beat`` fire actions; readings
``/ffvj/audio/*``, ``/ffvj/tempo/bar`` are read-only. Tempo precedence: Link, MIDI clock, audio beat, tap.
Quantised changes: a last ``quantum`` argument (beats) or ``tempo.quantum``; ``tempo.lookahead`` seconds.
The web page: http://127.0.0.1:9020/ (every parameter and action, the live picture, the status);
OSCQuery's WebSocket LISTENs: ``{"COMMAND": "LISTEN", "DATA": "/ffvj/l0/zoom"}``.
Bounds on everything a client sends (OSC, OSCQuery, MIDI, the page): docs/RELIABILITY.md.

Python::

    from ffvj import FeedbackEngine, ParamStore, Phi, build_registry, load_model
    model, card = load_model("default")                  # or a path to NAME.json / NAME.safetensors
    h1 = model.encode(0, picture)                        # γ_0: picture (N,3,H,W) in [-1,1] → level 1
    back = model.decode(0, h1, size=picture.shape[-2:])  # γ_0⁻¹: level 1 → picture
    engine = FeedbackEngine(model, 640, 360)
    store = ParamStore(build_registry(model.levels))     # thread-safe; OSC/MIDI write, the loop reads
    store.set("l0.zoom", 1.03)
    phi = Phi.of(store.advance(1 / 30))                  # this frame's φ, typed: phi.level[0].zoom == 1.03
    h0 = engine.step(phi, source=None)                   # one frame of Δ_φ on every level
    rgb = engine.readback()                              # (H, W, 3) uint8, the one copy to the host
    i420 = engine.readback("i420:bt709")                 # (H·3/2, W) 4:2:0, converted on the device

    from ffvj.show import RunConfig, run                 # the show: source → engine → sinks, paced
    from ffvj.control.osc import OscConfig
    run(RunConfig(source="generator", sinks=["file:out.mp4"], frames=300, osc=OscConfig()))

    from ffvj import Controls                            # store, actions, tempo, presets, LFOs, snapshots
    controls = Controls.for_levels(model.levels)
    controls.fire("snapshot.recall", slot=2, seconds=4.0) # any thread; the render loop carries it out

The parts (each a folder; its ``__init__`` lists its rooms):

    model/     the learned hierarchy: net (config, modules, fast path), checkpoint, data, train, evaluate
    engine/    Δ_φ: delta (the formula and its reference), amplify, engine, kernels, grade, flashes, pixfmt,
               device
    media/     pictures in and out: base (the contract), sources, generators, sinks, mailbox
    audio/     the music: inputs (a file in step with the frames, PortAudio, JACK; a tap for recordings),
               analysis (levels, onsets, tempo and beat)
    phi.py     φ's vocabulary, declared once (Param, Phi: phi.level[1].zoom, phi.color.bound), the floor the
               engine and the controls stand on
    control/   params (the one registry), actions (the one table), readings (the read-only figures),
               controls, presets, snapshots, tempo, link (Ableton Link), modulation (LFOs, audio slots),
               model_switch (the mid-show switch), service, http (aiohttp: OSCQuery's and the page's one
               HTTP stack), osc, osc_transport, osc_pattern, oscquery, touchosc, midi/
    web/       the web page: server (on control.http, one WebSocket a page), layout (from the registry and the
               actions), preview (JPEG off the render loop), page/ (HTML, CSS, JavaScript)
    look/      the picture measured: measures (lattice, fidelity, freezes, flashes, colour, texture, grid),
               report (``ffvj look``), discover (``ffvj discover``: pyribs on Dask)
    show.py    the one place where a show is wired;  cli.py the command line;  bench.py ``ffvj bench``;
    options.py every command's options, declared once on the config fields they fill
    showfile.py the show file (ShowRecorder, ShowFile);  render.py ``ffvj render``
    reporting.py  thread-safe counts and a rate-limited log: how every part reports during a show
    files.py   write_atomically: a file written whole or not at all
"""

import importlib.metadata

try:
    __version__ = importlib.metadata.version(__name__)  # pyproject.toml's: the one place it is written
except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

# The model, the engine and the controls; the show (``ffvj.show``) and the surfaces are imported where
# used, so that ``import ffvj`` does not open MIDI, OSC or video libraries.
from .control.controls import Controls
from .control.params import ParamStore, build_registry
from .engine.engine import FeedbackEngine
from .model.checkpoint import CheckpointError
from .model.checkpoint import load as load_model
from .model.net import FeatureAutoencoder, ModelConfig
from .phi import Param, Phi

__all__ = ["CheckpointError", "Controls", "FeatureAutoencoder", "FeedbackEngine", "ModelConfig", "Param", "ParamStore",
           "Phi", "build_registry", "load_model"]
