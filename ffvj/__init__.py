"""ffvj — hierarchical neural video feedback for live visual performance.

Cheat sheet
-----------
Command line::

    ffvj run [--source SPEC] [--sink SPEC ...] [--size 640x360] [--fps 30] [--frames N]
             [--model NAME|PATH] [--device auto|cpu|cuda|mps] [--set NAME=VALUE ...] [--preset NAME]
             [--osc-port 9000 --osc-host H --osc-feedback HOST:PORT] [--midi NAME --midi-mapping M]
             [--compile] [--precision fp32|fp16|bf16] [--device-formats on|off]
    ffvj devices                     cameras, MIDI ports, torch devices, outputs usable here
    ffvj params [--json]             every parameter: name, OSC address, range, default
    ffvj touchosc OUT.tosc           TouchOSC layout for every parameter
    ffvj learn PARAM... --out M.toml MIDI learn into a mapping file
    ffvj bench [--size WxH] [--device D] [--compile] [--precision P] [--json]
    ffvj train --out models/NAME     train a feature hierarchy (pip install 'ffvj[train]')
    ffvj model eval --images DIR     per-level PSNR/SSIM next to bicubic  [--json]
    ffvj model show | photos | list

Sources: ``generator[:NAME]``, ``video:PATH``, ``image:PATH``, ``camera[:INDEX]``.
Sinks: ``file:PATH.mp4``, ``virtualcam``, ``ndi[:NAME]``, ``window``, ``syphon``, ``spout``, ``null``.

Python::

    from ffvj import checkpoint, FeedbackEngine, ParamStore, build_registry
    model, card = checkpoint.load("default")            # or a path to NAME.json / NAME.safetensors
    h1 = model.encode(0, picture)                        # γ_0: picture (N,3,H,W) in [-1,1] → level 1
    back = model.decode(0, h1, size=picture.shape[-2:])  # γ_0⁻¹: level 1 → picture
    engine = FeedbackEngine(model, 640, 360)
    store = ParamStore(build_registry(model.levels))     # thread-safe; OSC/MIDI write, the loop reads
    store.set("l0.zoom", 1.03)
    h0 = engine.step(store.frame(1 / 30), source=None)   # one frame of Δ_φ on every level
    rgb = engine.readback()                              # (H, W, 3) uint8, the one copy to the host
    i420 = engine.readback("i420:bt709")                 # (H·3/2, W) 4:2:0, converted on the device

    from ffvj.runtime import RunConfig, run             # source → engine → sinks, paced
    run(RunConfig(source="generator", sinks=["file:out.mp4"], frames=300))

Controls (control threads only write the store, post actions or tap the tempo)::

    from ffvj.runtime import Controls                   # store + actions + tempo + presets + LFOs + snapshots
    from ffvj.osc import OscServer                      # OscServer(store, actions, tempo, port=9000).start()
    from ffvj.midi import MidiInput, load_mapping       # MidiInput(store, actions, tempo, [mapping]).start()
    controls.actions.post("snapshot.recall", slot=2, seconds=4.0)   # drained once per frame

Modules: ``model`` (pure nn), ``checkpoint`` (safetensors + JSON card), ``train``, ``evaluate``,
``data``, ``params`` (the one parameter registry), ``engine`` (Δ_φ and its reference), ``kernels``
(fused hot loops), ``pixfmt`` (RGB / I420 / NV12 frames), ``sources`` / ``sinks`` (registries of
small backends), ``mailbox``, ``runtime``
(the wiring), ``osc`` / ``oscquery`` / ``touchosc`` / ``midi`` (surfaces), ``tempo``, ``modulation``
(LFOs), ``presets`` (presets, snapshots, actions), ``bench``, ``cli``.
"""

from .checkpoint import CheckpointError, load as load_model
from .engine import FeedbackEngine
from .model import FeatureAutoencoder, ModelConfig
from .params import Param, ParamStore, build_registry

__all__ = ["CheckpointError", "FeatureAutoencoder", "FeedbackEngine", "ModelConfig", "Param", "ParamStore",
           "build_registry", "load_model"]
__version__ = "0.1.0"
