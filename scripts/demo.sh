#!/usr/bin/env bash
# Runs the demo on embedded defaults (README, "Two commands"): installs the build's Debian packages
# when missing, then `cargo run --release -- demo` with any extra arguments.
# Usage: bash scripts/demo.sh [demo flags, e.g. --duration 30s]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec cargo run --release --locked -- demo "$@"
