"""The music: audio inputs (a file in step with the frames, or a PortAudio device) and their analysis.

``inputs.open_audio(spec)`` opens one; ``analysis.Analyser`` turns samples into ``AudioFeatures`` (levels,
bands, onsets, tempo and beat), which the modulation (``control.modulation``) and the tempo clock read.
"""
