#!/usr/bin/env bash
# Installs what building kaudit needs on a fresh Debian machine, when missing: a C toolchain for
# librdkafka and SQLite (built from source), OpenSSL's headers (librdkafka's TLS and SASL, the Scylla
# driver's TLS) and cyrus-sasl's headers (librdkafka's SASL GSSAPI/Kerberos).
# Usage: bash scripts/setup.sh   (scripts/demo.sh, scripts/test.sh and CI call it first)
set -euo pipefail

missing=()
for cmd in cc make perl pkg-config; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$([ "$cmd" = cc ] && echo gcc || echo "$cmd")")
done
# Header packages, by name (no command tells whether they are there); the Kerberos plugin is what
# `sasl.mechanisms = "GSSAPI"` loads at run time.
for pkg in libssl-dev libsasl2-dev libsasl2-modules-gssapi-mit; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "kaudit needs these Debian packages: ${missing[*]} (run this script as root, or install them)" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
