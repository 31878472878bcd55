#!/usr/bin/env bash
# The music demo of docs/MUSIC.md, from the repository's root: a synthesised track (drums, bass and a pad
# at 120 BPM) and the kick look on a slowly panned photo, rendered offline with the sound muxed in (AAC).
set -euo pipefail
out=${1:-kick-demo.mp4}
tmp=$(mktemp -d)
python3 -m tests.audio.signals music "$tmp/music.wav"
python3 -c "import cv2, skimage.data; cv2.imwrite('$tmp/coffee.png', cv2.cvtColor(skimage.data.coffee(), cv2.COLOR_RGB2BGR))"
ffvj run --source "image:$tmp/coffee.png" --source-option pan=16 --source-option zoom=1.3 --size 480x270 --fps 30 \
    --frames 480 --pace offline --audio "file:$tmp/music.wav" --preset kick --sink "file:$out" \
    --no-osc --no-midi --no-web
