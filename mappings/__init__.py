"""The controller mapping files bundled with ffvj (installed as ``ffvj.mappings``)."""
