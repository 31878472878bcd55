"""The feedback engine: Δ_φ applied to every level of the hierarchy, once per frame.

    delta     the pieces of Δ as plain functions (bound, colour, warp, inject, maps) and reference_step,
              the formula computed plainly: the oracle
    amplify   layer amplification: the Δ term that grows what the features above a level respond to
    engine    FeedbackEngine (step, readback, reset, set_states, switch_model) and its StabilityGuard
    kernels   the engine's own hot loops (banded grid sampling, cached constants)
    grade     the output's colour grade (a gradient map), never fed back
    flashes   FlashLimiter: what the sinks get, within 3 flashes a second
    pixfmt    picture formats: RGB, I420, NV12 made on the engine's device; from_rgb24 for sources
    device    resolve_device("auto" | "cpu" | "cuda" | "mps"), keep_freed_host_memory(), use_cpu_threads(n),
              ThreadTuner (a live show's CPU thread count, measured as it runs)
"""
