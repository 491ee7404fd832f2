#!/usr/bin/env bash
# Every GPU figure in one short run (environment, generation, filtering, training): see
# benchmarks/gpu_check.py for what each part measures and writes.
#
#   make venv                                          # once, with network: the project's .venv
#   benchmarks/gpu_check.sh --out gpu-results          # on the GPU machine: ~9 minutes at most, offline
#   benchmarks/gpu_check.sh --dry-run --out /tmp/dry   # the same plumbing on a CPU (--smoke modes; CI)
#   benchmarks/gpu_check.sh --out gpu-results --only filtering --budget-s 900   # rerun one part
#
# The interpreter is .venv/bin/python of this repository; PYTHON=/path/to/python overrides it.
# Every output (JSON, logs, summary.md/json, caches, temporary files) goes under --out.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"
if [ ! -x "$python" ]; then
    echo "gpu_check.sh: no Python at $python; run 'make venv' in $repo first, or set PYTHON=/path/to/python" >&2
    exit 2
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
exec "$python" "$repo/benchmarks/gpu_check.py" "$@"
