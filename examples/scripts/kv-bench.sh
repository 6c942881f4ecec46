#!/usr/bin/env bash
# redis-benchmark (Debian redis-tools) against a 3-replica vsync-kv cluster in
# both durability modes, side by side with one unreplicated redis-server
# (the ceiling), in the same run. Everything on 127.0.0.1; every process this
# script starts is killed on exit.
#
#   apt-get install -y redis-tools redis-server
#   cargo build --release -p vsync-examples --bin vsync-kv
#   examples/scripts/kv-bench.sh            # ~3 min with RUNS=1
#
# Settings: -t set,get,incr -d 64 -c 64 -r 100000, -P 1 and -P 16.
# The replicas run --insecure, as when the figures in docs/BENCHMARKS.md were
# first measured; vsync-net's bench (--secure both) measures the cluster key.
# Redis primary + WAIT and etcd: /work/shared/peers (redis/wait.sh, etcd/run.sh).
set -euo pipefail
KV=${KV:-target/release/vsync-kv}
RUNS=${RUNS:-1}; MODES=${MODES:-"memory logged"}; PIPES=${PIPES:-"1 16"}
RAW=${RAW:-/tmp/kv-bench-raw.txt}; : > "$RAW"
DIR=$(mktemp -d /tmp/kv-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$DIR"; }
trap cleanup EXIT

bench() { # label port
  for P in $PIPES; do
    n=$(( P == 1 ? 200000 : 500000 ))
    for r in $(seq 1 "$RUNS"); do
      redis-cli -h 127.0.0.1 -p "$2" flushdb >/dev/null
      timeout 120 redis-benchmark -h 127.0.0.1 -p "$2" -t set,get,incr -d 64 -c 64 -P "$P" \
          -r 100000 -n "$n" --csv 2>/dev/null | tail -n +2 | tr -d '"' |
        while IFS=, read -r test rps avg min p50 p95 p99 max; do
          echo "setup=$1 test=$test pipeline=$P rps=$rps p50_ms=$p50 p99_ms=$p99"
        done | tee -a "$RAW"
    done
  done
}

# One redis-server, persistence off.
redis-server --port 16390 --bind 127.0.0.1 --save "" --appendonly no --daemonize no >"$DIR/redis.log" 2>&1 &
PIDS+=($!)
until redis-cli -p 16390 ping >/dev/null 2>&1; do sleep 0.1; done
bench redis-single 16390
kill "${PIDS[-1]}"

for mode in $MODES; do
  for i in 1 2 3; do
    seed=(); [ "$i" = 1 ] || seed=(--seed 127.0.0.1:17001)
    "$KV" node --id "$i" --listen "127.0.0.1:1700$i" --resp "127.0.0.1:1638$i" --data "$DIR/$mode-$i" \
      --durability "$mode" "${seed[@]}" --insecure --threads "${THREADS:-1}" >"$DIR/$mode-$i.log" 2>&1 &
    PIDS+=($!)
    [ "$i" = 1 ] && sleep 1
  done
  for i in 1 2 3; do
    for _ in $(seq 1 200); do
      redis-cli -p "1638$i" info vsync 2>/dev/null | grep -q "vsync_member_count:3" && break; sleep 0.1
    done
  done
  bench "vsync-kv-$mode" 16381
  for i in 1 2 3; do kill "${PIDS[-$i]}" 2>/dev/null || true; done
  sleep 1
done
echo
echo "medians (rps) by setup, test, pipeline:"
python3 - "$RAW" <<'PY'
import sys, statistics, collections
g = collections.defaultdict(list)
for line in open(sys.argv[1]):
    kv = dict(x.split("=", 1) for x in line.split())
    g[(kv["setup"], kv["test"], kv["pipeline"])].append(float(kv["rps"]))
for k in sorted(g):
    print(*k, f"{statistics.median(g[k]):,.0f}", sep="\t")
PY
