#!/usr/bin/env bash
# Runs kaudit's whole test suite on a fresh machine: installs what the tests need, then tests.
# Usage: bash scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use, by the command that tells whether each is there.
declare -A needs=([promtool]=prometheus [cc]=gcc [make]=make [perl]=perl)
missing=()
for cmd in "${!needs[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${needs[$cmd]}")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The shared test vectors live beside the repository (../shared); tests read them from there.
if [ ! -f ../shared/vectors/fingerprint.tsv ] && [ -z "${KAUDIT_VECTORS:-}" ]; then
  echo "missing ../shared/vectors/fingerprint.tsv (set KAUDIT_VECTORS to its path)" >&2
  exit 1
fi

cargo test --workspace --locked "$@"
