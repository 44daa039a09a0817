#!/usr/bin/env bash
# The main job on the shipped model: install, compile for this machine, answer sample requests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh main
.venv/bin/edgeboost compile models/wine-quality/model.json -o build/wine-quality
echo "predictions for models/wine-quality/requests.json:"
.venv/bin/edgeboost predict build/wine-quality models/wine-quality/requests.json
