#!/usr/bin/env bash
# What the production image installs (`pip install ".[all]"`, no dev extras) runs every user-facing
# command: generate -> filter calibrate -> train -> eval on fixture data, in a venv of its own.
# pip's cache (and the machine's local torch wheels) keep the second install cheap.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
VENV="${PROD_VENV:-.venv-prod}"
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c requirements/constraints.txt ".[all]"
export HF_HUB_OFFLINE=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
# A loaded machine starts the temporary Prefect server slowly (default limit: 20 s).
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120
cgaug="$(pwd)/$VENV/bin/cgaug"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
set -x
"$cgaug" fixtures DATA --images 4 --height 128 --width 256
"$cgaug" fixtures DATA --images 2 --height 128 --width 256 --split val --seed 1
"$cgaug" generate --source DATA --out OUT --generator tiny --filters tiny --variants 2 --shard-size 4 --no-progress
"$cgaug" shards verify OUT
"$cgaug" filter calibrate OUT --target-accept 0.7
"$cgaug" train --source DATA --shards OUT --out RUN --preset tiny --max-steps 2
"$cgaug" eval --checkpoint RUN/model.pt --dataset cityscapes=DATA --out REPORT --limit 2
set +x
echo "production extras: generate -> calibrate -> train -> eval passed"
