"""Pictures in and out: sources and sinks, small backends behind one contract.

    base         Endpoint, Source, Sink (the contract), BackendRegistry, split_spec, build_and_open, errors
    sources      open_source(spec): auto, video:PATH, image:PATH, camera[:INDEX]; register_source
    generators   generator[:PATTERN]: plasma, bars, rings, noise, gradient, shapes
    sinks        open_sink(spec): file, virtualcam, ndi, syphon, spout, window, null; register_sink
    outputs      Outputs: a show's sinks fed their formats, each on its own thread live (SinkWorker); split_level
    mailbox      Mailbox: a one-slot, newest-wins handoff between threads
"""
