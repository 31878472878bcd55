"""The models bundled with ffvj (installed as the data package ``ffvj.bundled_models``); see README.md here
for the model card."""
