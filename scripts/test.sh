#!/usr/bin/env bash
# Runs kaudit's whole test suite on a fresh machine: installs what the tests need, then tests.
# Usage: bash scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

# What the build needs (C toolchain, OpenSSL and cyrus-sasl headers).
bash scripts/setup.sh

# Debian packages the tests use, by the command that tells whether each is there. The ops
# artefacts test (tests/ops_artefacts.rs) runs amtool, systemd-analyze and systemd-sysusers (both
# work without a running systemd) and docker-compose (v1: validates compose.yaml, no engine needed).
declare -A needs=([kcat]=kcat [promtool]=prometheus [prometheus-alertmanager]=prometheus-alertmanager
  [amtool]=prometheus-alertmanager [systemd-analyze]=systemd [systemd-sysusers]=systemd
  [docker-compose]=docker-compose)
missing=()
for cmd in "${!needs[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${needs[$cmd]}")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${missing[@]}" | sort -u)
fi

# kubernetes-validate (PyPI) checks deploy/kubernetes offline against the schemas it bundles; its
# dependencies PyYAML and jsonschema also read YAML and check the ServiceMonitor in that test.
if ! command -v kubernetes-validate >/dev/null 2>&1 || ! python3 -c 'import yaml, jsonschema' 2>/dev/null; then
  echo "installing: kubernetes-validate (pip)"
  python3 -m pip install -q kubernetes-validate 2>/dev/null \
    || python3 -m pip install -q --break-system-packages kubernetes-validate
fi

# The shared test vectors live beside the repository (../shared); tests read them from there.
if [ ! -f ../shared/vectors/fingerprint.tsv ] && [ -z "${KAUDIT_VECTORS:-}" ]; then
  echo "missing ../shared/vectors/fingerprint.tsv (set KAUDIT_VECTORS to its path)" >&2
  exit 1
fi

# Run everything, then close with one summary line over every test binary and doc-test run.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# The output goes to a file followed by tail, not through a pipe: a child process a failing test
# left behind would hold a pipe open and hang the run; it cannot hold tail up.
set +e
cargo test --workspace --locked "$@" >"$log" 2>&1 &
cargo_pid=$!
tail -n +1 --pid="$cargo_pid" -f "$log"
wait "$cargo_pid"
status=$?
set -e
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
