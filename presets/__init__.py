"""Factory presets shipped with ffvj (installed as the data package ``ffvj.factory_presets``).

Each ``NAME.toml`` is an ordinary preset (see ``ffvj.control.presets``); a user preset of the same name in
the presets directory shadows it. They may be partial: parameters a preset leaves out keep their value.
"""
