"""The models bundled with ffvj (installed as ``ffvj.models``); see README.md here for the model card."""
