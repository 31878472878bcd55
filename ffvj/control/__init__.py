"""The controls: what a performer plays, and every surface it is played from.

    params       the one registry of parameters: build_registry(levels) (φ, from ffvj.phi, and the slots), ParamStore
    actions      the one table of actions (reset, tap, bpm, learn, presets, snapshots, model): ACTIONS, Arg, Action
    controls     Controls: what surfaces share with the render loop; fire(action, ...), next_phi(engine, dt, now)
    presets      PresetBank: parameter targets in TOML files, morphed on recall
    snapshots    SnapshotBank: every level's feedback state, crossfaded on recall
    model_switch ModelSwitcher: a bundled model loaded off the render loop, switched to on it
    tempo        Tempo: BPM and beat from MIDI clock, tap or a set value
    modulation   Modulation: the LFO slots, applied once per frame
    service      Service (one lifecycle for every surface), LatestValueSender (rate-capped talk-back),
                 LimitedConnections (capped, timed-out socket servers), stop_server (a bounded stop),
                 browser_refusal (no script of another web site)
    http         HttpServer: the one HTTP and WebSocket stack (aiohttp, a thread of its own) for OSCQuery
                 and the web page, with one set of limits (Limits) and one rule for who may ask
    osc          OscServer: the OSC address space (every parameter and action, feedback, subscriptions,
                 timetagged messages); what a packet may make it do, bounded
    osc_transport
                 the listeners OscServer owns: UDP and TCP (SLIP) sockets, connection caps, a packet's wire
                 format (bundles checked whole); each packet goes to the owner's handler
    osc_pattern  OSC 1.0 address patterns matched in linear time
    oscquery     OscQueryServer: the OSC namespace over HTTP JSON (and LISTEN over its WebSocket), on http,
                 announced over mDNS
    touchosc     generate_layout / validate_layout: a TouchOSC layout from the registry and the actions
    midi/        mapping files, the mapper, ports and MIDI learn
(The web page, which shows pictures as well as controls, is a part of its own: ``ffvj.web``.)

Control threads only write the store, fire actions and move the tempo; the render loop reads one
snapshot of φ per frame (``Controls.next_phi``, typed: ``ffvj.phi``).
"""
