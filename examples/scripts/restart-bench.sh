#!/usr/bin/env bash
# A replica holding 1M keys restarts 10,000 writes behind: bytes it receives
# and time until it serves, with catch-up (the default) and without
# (--catch-up-writes 0: the whole state, as before catch-ups existed).
#
# Two 3-replica vsync-kv clusters run side by side on 127.0.0.1, one per
# setting, each loaded with 1M keys of 100 bytes. Each round, on one cluster
# then the other: SAVE on replica 3, SIGTERM it, write 10,000 keys through
# replica 1, start replica 3 again with its original command line, and time
# it from the start until INFO says it serves in a view of three.
#
#   apt-get install -y redis-tools
#   cargo build --release -p vsync-examples --bin vsync-kv
#   examples/scripts/restart-bench.sh        # ROUNDS=3 by default, ~3 min
#
# Every process it starts is killed on exit; its directories are removed.
set -euo pipefail
KV=${KV:-target/release/vsync-kv}
ROUNDS=${ROUNDS:-3}; KEYS=${KEYS:-1000000}; BEHIND=${BEHIND:-10000}
DIR=$(mktemp -d /tmp/restart-bench.XXXXXX)
declare -A PID
cleanup() { for p in "${PID[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$DIR"; }
trap cleanup EXIT

# cluster name -> base port and extra flags
declare -A BASE=([catchup]=0 [full]=100)
declare -A EXTRA=([catchup]="" [full]="--catch-up-writes 0")

start() { # cluster node
  local c=$1 i=$2 b=${BASE[$1]} seed=""
  [ "$i" -gt 1 ] && seed="--seed 127.0.0.1:$((17100 + b + 1))"
  # shellcheck disable=SC2086
  "$KV" node --insecure --id "$i" --listen "127.0.0.1:$((17100 + b + i))" \
    --resp "127.0.0.1:$((16400 + b + i))" --data "$DIR/$c-$i" $seed ${EXTRA[$c]} \
    > "$DIR/$c-$i.out" 2>> "$DIR/$c-$i.log" &
  PID[$c-$i]=$!
}
port() { echo $((16400 + BASE[$1] + $2)); }
info() { redis-cli -p "$(port "$1" "$2")" INFO vsync 2>/dev/null | tr -d '\r' | sed -n "s/^vsync_$3://p"; }
serving() { # cluster node: a member (any serving role) of a view of 3
  local role; role=$(info "$1" "$2" role)
  [ "$(info "$1" "$2" member_count)" = 3 ] && case "$role" in member|coordinator|donor) true;; *) false;; esac
}
wait_serving() { for _ in $(seq 1 1200); do serving "$1" "$2" && return 0; sleep 0.05; done; echo "timeout: $1-$2" >&2; exit 1; }
load() { # cluster node first count
  awk -v f="$3" -v n="$4" 'BEGIN { v = sprintf("%0100d", 7);
    for (i = f; i < f + n; i++) { k = "key:" i;
      printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$100\r\n%s\r\n", length(k), k, v } }' |
    redis-cli -p "$(port "$1" "$2")" --pipe > /dev/null
}

for c in catchup full; do
  start "$c" 1; wait_serving_1() { for _ in $(seq 1 200); do [ "$(info "$c" 1 member_count)" = 1 ] && return; sleep 0.05; done; }; wait_serving_1
  start "$c" 2; start "$c" 3
  wait_serving "$c" 2; wait_serving "$c" 3
  t=$(date +%s.%N); load "$c" 1 0 "$KEYS"
  echo "$c: loaded $KEYS keys in $(echo "$(date +%s.%N) - $t" | bc) s (dbsize $(redis-cli -p "$(port "$c" 3)" DBSIZE))"
done

RAW="$DIR/raw"; : > "$RAW"
next=$KEYS
for r in $(seq 1 "$ROUNDS"); do
  for c in catchup full; do
    redis-cli -p "$(port "$c" 3)" SAVE > /dev/null
    kill -TERM "${PID[$c-3]}"; wait "${PID[$c-3]}" 2>/dev/null || true
    load "$c" 1 "$next" "$BEHIND"; next=$((next + BEHIND))
    t0=$(date +%s.%N); start "$c" 3; wait_serving "$c" 3; t1=$(date +%s.%N)
    bytes=$(info "$c" 3 state_transfer_received_bytes); cu=$(info "$c" 3 catch_ups_received)
    ms=$(echo "($t1 - $t0) * 1000" | bc | cut -d. -f1)
    echo "round $r $c: serving after $ms ms, received $bytes bytes, catch-ups $cu" | tee -a "$RAW"
    [ "$(redis-cli -p "$(port "$c" 3)" DBSIZE)" = "$(redis-cli -p "$(port "$c" 1)" DBSIZE)" ] || echo "  (dbsize differs right after: catching the last writes)"
  done
done
python3 - "$RAW" <<'EOF'
import re, statistics, sys
rows = [re.match(r"round (\d+) (\w+): serving after (\d+) ms, received (\d+) bytes", l).groups() for l in open(sys.argv[1])]
by = {}
for r, c, ms, b in rows: by.setdefault(c, []).append((int(r), int(ms), int(b)))
for c, v in by.items():
    print(f"{c:8} median {statistics.median(x[1] for x in v):7.0f} ms to serve, median {statistics.median(x[2] for x in v):12.0f} bytes received")
rounds = sorted({x[0] for x in by['full']} & {x[0] for x in by['catchup']})
ratio = [dict((x[0], x[1]) for x in by['full'])[r] / max(1, dict((x[0], x[1]) for x in by['catchup'])[r]) for r in rounds]
print("per-round time ratio full/catchup:", " ".join(f"{x:.1f}" for x in ratio), f"(median {statistics.median(ratio):.1f})")
EOF
