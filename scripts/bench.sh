#!/usr/bin/env bash
# Runs the agent's overhead benches (tally hot path, audited producer, tap; criterion, about 3
# minutes on two cores) and writes their ratio table, with the date and the machine, into the
# README's Benchmarks section (between <!-- bench-table --> and <!-- /bench-table -->).
# Usage: bash scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo bench --locked -p kaudit-agent --bench tally --bench producer --bench tap
cargo run --release --locked -p kaudit-agent --example bench_table -- --date "$(date -u +%F)" --readme README.md
