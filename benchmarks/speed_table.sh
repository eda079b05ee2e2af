#!/usr/bin/env bash
# docs/speed.md's table, every row, on this machine (run it on a quiet one: ~15 minutes on 2 cores).
# Needs the full install (torch for the torch column): see the README's second command.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
seconds() { local TIMEFORMAT=%R; { time "$@" >/dev/null 2>&1; } 2>&1; }  # wall seconds of one command
echo "== avemo --help, avemo --version (5 each)"
for _ in 1 2 3 4 5; do echo "help $(seconds avemo --help) version $(seconds avemo --version)"; done
echo "== cold start on the sample, ONNX Runtime and torch interleaved (5 each)"
for _ in 1 2 3 4 5; do
    echo "onnx $(seconds avemo predict examples/sample.mp4) torch $(seconds avemo predict examples/sample.mp4 --runtime torch)"
done
echo "== 5-minute loop"; python benchmarks/speed.py --repeat 7
python benchmarks/speed.py --repeat 5 --no-stages --runtime torch
echo "== 5-minute talking loop"; python benchmarks/speed.py --source examples/sample.mp4 --repeat 3
python benchmarks/speed.py --source examples/sample.mp4 --repeat 3 --no-stages --runtime torch
echo "== one-hour loop"; python benchmarks/speed.py --minutes 60 --repeat 2 --no-stages
python benchmarks/speed.py --minutes 60 --repeat 2 --no-stages --runtime torch
