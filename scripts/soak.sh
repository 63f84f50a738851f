#!/usr/bin/env bash
# A soak run of the whole pipeline, every part its own process on loopback: librdkafka's mock
# cluster, a tap (tier broker), members of consumer group billing joining and leaving (three
# rebalances), a producer restarted twice (once cleanly, once killed with SIGKILL), all audited and
# flushing to one SQLite file, and `kaudit verifier` judging 10-s buckets with zero-tolerance
# thresholds. Optionally injects loss between producer and broker (`--lose`), logged per message.
# At the end it prints every alert raised, and for each bucket whether the broker-vs-producer
# verdict carries exactly the injected loss.
#
# Usage: bash scripts/soak.sh [minutes=10] [loss=0.0001]    (RATE=2000 msg/s by default)
# Not part of the test suite: it runs for as long as it is told. Needs python3 and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-10}
loss=${2:-0.0001}
rate=${RATE:-2000}
total=$((minutes * 60))

cargo build --release --locked --bins -q
bin=$PWD/target/release
dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  exec 3>&- 2>/dev/null || true
}
trap cleanup EXIT
echo "soak: ${minutes} min, ${rate} msg/s, loss ${loss}; state in $dir" >&2

mkfifo "$dir/cluster.in"
"$bin/kaudit-mock-cluster" --topic orders:6 <"$dir/cluster.in" >"$dir/cluster.out" &
pids+=($!)
exec 3>"$dir/cluster.in"
for _ in $(seq 100); do grep -q BOOTSTRAP "$dir/cluster.out" 2>/dev/null && break; sleep 0.1; done
bootstrap=$(sed -n 's/^BOOTSTRAP=//p' "$dir/cluster.out")

port=19700
# config NAME [EXTRA TOML]: a kaudit configuration for one process.
config() {
  port=$((port + 1))
  cat >"$dir/$1.toml" <<EOF
store = "sqlite://$dir/audit.db"
data_dir = "$dir/$1"
agent_listen = "127.0.0.1:$port"
[agent]
name = "$1"
flush_interval_ms = 1000
bucket_width_ms = 10000
[[agent.topics]]
pattern = "*"
event_time = "header:event-time"
[kafka]
bootstrap_servers = "$bootstrap"
[kafka.options]
"session.timeout.ms" = 10000
"heartbeat.interval.ms" = 1000
"auto.commit.interval.ms" = 1000
# librdkafka's mock broker walks message sets one by one to find a fetch offset; bigger producer
# batches keep that walk short over a long run (consumers ignore this producer property)
"linger.ms" = 50
${2:-}
EOF
  echo "$dir/$1.toml"
}
start() { # start NAME COMMAND...: run in the background, stderr to NAME.log
  local name=$1
  shift
  "$@" 2>"$dir/$name.log" &
  pids+=($!)
  eval "pid_${name//-/_}=$!"
}
consumer() { start "$1" "$bin/kaudit-sample-app" consume --config "$(config "$1")" --topic orders --tier consumer/billing --group billing; }
producer() { # producer NAME SECONDS FIRST
  start "$1" "$bin/kaudit-sample-app" produce --config "$(config "$1")" --topic orders --tier producer \
    --rate "$rate" --duration "${2}s" --first "$3" --lose "$loss" --lost-log "$dir/lost.log"
}

verifier_port=19699
config verifier "
[verifier]
listen = \"127.0.0.1:$verifier_port\"
evaluate_interval_ms = 5000
[verifier.thresholds]
loss_ratio = 0.0
duplicate_ratio = 0.0
[[verifier.pipelines]]
topics = [\"orders\"]
tiers = [\"producer\", \"broker\"]
consumers = [\"consumer/billing\"]" >/dev/null
"$bin/kaudit" migrate --store "sqlite://$dir/audit.db" >/dev/null
start verifier "$bin/kaudit" verifier --config "$dir/verifier.toml"
start tap "$bin/kaudit" agent --config "$(config tap "[tap]
tier = \"broker\"
topics = [\"orders\"]")"
consumer billing-1
consumer billing-2
sleep 5
started=$(date +%s)
at() { while (($(date +%s) - started < $1)); do sleep 1; done; echo "soak: t+$1 s: $2" >&2; }

producer checkout-1 "$total" 0
at $((total * 2 / 10)) "rebalance 1: billing-3 joins"
consumer billing-3
at $((total * 3 / 10)) "producer restart 1: checkout-1 stops cleanly, checkout-2 starts"
kill -TERM "$pid_checkout_1"
wait "$pid_checkout_1" || true
producer checkout-2 $((total * 7 / 10)) 10000000
at $((total * 45 / 100)) "rebalance 2: billing-1 leaves"
kill -TERM "$pid_billing_1"
at $((total * 55 / 100)) "producer restart 2: checkout-2 killed (SIGKILL), checkout-3 starts"
kill -KILL "$pid_checkout_2"
producer checkout-3 $((total * 45 / 100)) 20000000
at $((total * 7 / 10)) "rebalance 3: billing-4 joins"
consumer billing-4
at "$total" "producing ends; waiting for the last buckets to be judged (grace 32 s)"
sleep 60

curl -s "http://127.0.0.1:$verifier_port/api/v1/alerts" >"$dir/alerts.json"
python3 - "$dir" "$started" <<'EOF'
import json, sqlite3, sys, collections
d, started = sys.argv[1], int(sys.argv[2]) * 1000
W = 10_000
alerts = json.load(open(f"{d}/alerts.json"))["alerts"]
lost = collections.Counter()
first_lost = None
for line in open(f"{d}/lost.log") if __import__("os").path.exists(f"{d}/lost.log") else []:
    t, _ = line.split()
    lost[int(t) // W * W] += 1
    first_lost = int(t) if first_lost is None else min(first_lost, int(t))
db = sqlite3.connect(f"{d}/audit.db")
rows = db.execute("select bucket_start_ms, tier, kind, upstream_count, count from verdicts where topic='orders' and bucket_start_ms >= ?", (started - W,)).fetchall()
kinds = collections.Counter((tier, kind) for _, tier, kind, _, _ in rows)
print("verdicts by tier and kind:")
for (tier, kind), n in sorted(kinds.items()):
    print(f"  {tier:<18} {kind:<16} {n}")
exact = wrong = indeterminate = 0
for bucket, tier, kind, up, count in rows:
    if tier != "broker":
        continue
    if kind.startswith("indeterminate"):
        indeterminate += 1
    elif up - count == lost.get(bucket, 0) and (kind.startswith("loss") or lost.get(bucket, 0) == 0):
        exact += 1
    else:
        wrong += 1
        print(f"  MISMATCH bucket {bucket}: {kind} upstream {up} count {count}, injected {lost.get(bucket, 0)}")
print(f"broker vs producer: {exact} buckets exact, {indeterminate} indeterminate (a crashed producer's), {wrong} wrong; "
      f"{sum(lost.values())} messages lost in {len(lost)} buckets")
false_alerts = [a for a in alerts if a["kind"] != "loss" or a["tier"] != "broker"]
print(f"alerts: {len(alerts)} ({len(false_alerts)} not about the injected loss)")
for a in alerts:
    late = (a["starts_at_ms"] - first_lost) / 1000 if first_lost and a["kind"] == "loss" else None
    n = a.get("numbers", {})
    what = f"missing {n.get('missing')} extra {n.get('extra')} lag {n.get('lag_ms')}"
    print(f"  {a['dedup_key']:<40} {a['state']:<9} {what}" + (f"; fired {late:.1f} s after the first lost message" if late else ""))
EOF
