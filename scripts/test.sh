#!/usr/bin/env bash
# Everything CI checks, from a fresh machine: install, lint, type-check, the whole test suite.
# Tests that need ../shared, cross compilers, qemu or awsiotsdk fail (not skip) when
# CI=true or EDGEBOOST_REQUIRE_TOOLS=1.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh test
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# Cross-target drivers and the Debian arm64/armhf Python userlands (bookworm, bullseye's
# Python 3.9 on armv7 for tests/test_device_e2e.py, and trixie's Python 3.13 on arm64 for the
# Lambda zip in tests/test_lambda_package.py), cached outside the checkout
# (~/.cache/edgeboost/emulation) so later runs on this machine skip the download.
.venv/bin/python -m edgeboost.compile.emulation prepare --target all
.venv/bin/python -m edgeboost.compile.emulation prepare --target armv7-linux-gnueabihf --suite bullseye
.venv/bin/python -m edgeboost.compile.emulation prepare --target aarch64-linux-gnu --suite trixie
# The quick benchmark report, kept in bench-results/ (no timing is asserted; parity is).
.venv/bin/edgeboost bench --quick -o bench-results > bench-results.log 2>&1 \
  || { tail -50 bench-results.log; exit 1; }
echo "benchmark report: bench-results/REPORT.md"
.venv/bin/python -m pytest "$@"
