#!/usr/bin/env bash
# The main job on the shipped model: install, compile for this machine, serve it over a local
# Greengrass IPC broker and answer the sample requests of the example consumer component.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh main
.venv/bin/edgeboost compile models/wine-quality/model.json -o build/wine-quality --name wine-quality
# A local Greengrass IPC broker, the inference component and the example consumer component.
.venv/bin/edgeboost demo build/wine-quality --requests models/wine-quality/requests.json
