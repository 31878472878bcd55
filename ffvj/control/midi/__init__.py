"""MIDI control, in four rooms that each work alone::

    mapping   the TOML mapping schema: load_mapping(path, registry) -> Mapping, MappingError, dump_mapping,
              bundled_mappings(), resolve_mapping(name_or_path), default_mappings()
    mapper    MidiMapper(mapping, controls, output=port): mido messages → parameters, actions and tempo,
              and LED echo back to the controller
    ports     MidiInput(controls, mappings, ports=[...]): a show's inputs, hot-plugged (a Service);
              MidiConfig, MIDI_BACKENDS, midi_ports(), MidiError
    learn     Learner (bind the next control moved) and learn_session (``ffvj learn``)
"""
