#!/usr/bin/env bash
# Buckets evaluated per second by 1, 2 and 3 sharded verifier instances over one SQLite store: the
# scale tool fills a store once, then each instance count evaluates a fresh copy of it, the N
# instances side by side (each owning the shards I mod N of 64), and the aggregate is printed.
# Usage: TOPICS=1000 bash scripts/verifier-instances.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p kaudit-verifier --example scale
scale=target/release/examples/scale
topics=${TOPICS:-1000}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
wall=$(date +%s%3N)
"$scale" --fill-only --store "sqlite:$dir/fill.db" --wall-ms "$wall" --topics "$topics" >/dev/null
for n in 1 2 3; do
  rm -f "$dir"/run.db*
  for f in "$dir"/fill.db*; do cp "$f" "$dir/run.db${f#"$dir"/fill.db}"; done
  start=$(date +%s%3N)
  for ((i = 0; i < n; i++)); do
    "$scale" --topics "$topics" --store "sqlite:$dir/run.db" --wall-ms "$wall" --no-fill --shards 64 \
      --own "$i/$n" --passes 1 >"$dir/out.$n.$i" 2>&1 &
  done
  wait
  end=$(date +%s%3N)
  buckets=$(grep -h '^first' "$dir"/out."$n".* | sed 's/.*first_evaluations=\([0-9]*\).*/\1/' | awk '{ s += $1 } END { print s }')
  echo "instances=$n wall_ms=$((end - start)) buckets=$buckets buckets_per_s=$((buckets * 1000 / (end - start)))"
  grep -h '^first' "$dir"/out."$n".* | sed 's/^/  /'
done
