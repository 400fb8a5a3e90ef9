#!/usr/bin/env bash
# Soak: churning subscribers. Starts `ringcast serve`, then `ringcast-load churn --subscribe` (IN_FLIGHT cycles of
# connect, subscribe, receive, close at all times, against the load generator's own HTTP publisher), and samples
# the server's RSS (/proc/PID/status VmRSS), open descriptors (/proc/PID/fd) and a few counters from /metrics every
# 10 s until the load ends, then twice more, then stops the server. Everything it starts it stops, by PID; every
# step is bounded in time.
#
# Usage (from the repository root, after `cargo build --release -p ringcast -p ringcast-load`), under the machine's
# exclusive lock:   flock -x /work/notes/machine.lock bash benches/soak.sh
# Settings (environment): PORT, DURATION (s), IN_FLIGHT, PROCS, TOPICS, PUBLISH_RATE (msg/s), CYCLE_RATE (cap on
# new cycles/s, smooths the start), HISTORY (messages retained per topic), OUT (directory for the logs).
set -euo pipefail

PORT=${PORT:-18731}
DURATION=${DURATION:-600}
IN_FLIGHT=${IN_FLIGHT:-15000}
PROCS=${PROCS:-2}
TOPICS=${TOPICS:-3000}
PUBLISH_RATE=${PUBLISH_RATE:-100}
CYCLE_RATE=${CYCLE_RATE:-2000}
HISTORY=${HISTORY:-2}
OUT=${OUT:-target/soak}
BIN=${BIN:-target/release}

mkdir -p "$OUT"
if ss -ltn "sport = :$PORT" | grep -q LISTEN; then
    echo "port $PORT is taken" >&2
    exit 1
fi

server_cmd=("$BIN/ringcast" serve --listen "127.0.0.1:$PORT" --cores 2 --no-demo --history-messages "$HISTORY")
per_proc=$(( (IN_FLIGHT + PROCS - 1) / PROCS ))
load_cmd=("$BIN/ringcast-load" --target "127.0.0.1:$PORT" --procs "$PROCS" --threads 1 --source-addrs 4
    --source-base 127.0.0.10 --json churn --subscribe --topics "$TOPICS" --publish-rate "$PUBLISH_RATE"
    --concurrency "$per_proc" --rate "$CYCLE_RATE" --duration "$DURATION")
echo "server: ${server_cmd[*]}" | tee "$OUT/commands.txt"
echo "load:   ${load_cmd[*]}" | tee -a "$OUT/commands.txt"

"${server_cmd[@]}" >"$OUT/server.log" 2>&1 &
server=$!
load=
cleanup() {
    [ -n "$load" ] && kill "$load" 2>/dev/null || true
    kill "$server" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 50); do
    curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break
    sleep 0.1
done

metric() { # sum of a metric's samples over the cores
    awk -v m="$1" 'index($0, m"{") == 1 { s += $NF } END { printf "%d", s }' <<<"$2"
}
sample() {
    local rss fds m
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$server/status")
    fds=$(ls "/proc/$server/fd" | wc -l)
    m=$(curl -s --max-time 5 "http://127.0.0.1:$PORT/metrics" || true)
    printf '%s rss_kib=%s fds=%s open=%s subscribers=%s accepted=%s published=%s deliveries=%s\n' \
        "$(date -u +%H:%M:%S)" "$rss" "$fds" "$(metric ringcast_connections_open "$m")" \
        "$(metric ringcast_subscribers "$m")" "$(metric ringcast_connections_accepted_total "$m")" \
        "$(metric ringcast_messages_published_total "$m")" "$(metric ringcast_deliveries_total "$m")"
}

sample | tee "$OUT/samples.txt"
timeout $((DURATION + 120)) "${load_cmd[@]}" >"$OUT/churn.json" 2>"$OUT/churn.err" &
load=$!
while kill -0 "$load" 2>/dev/null; do
    sleep 10
    sample | tee -a "$OUT/samples.txt"
done
status=0
wait "$load" || status=$?
load=
for _ in 1 2; do
    sleep 10
    sample | tee -a "$OUT/samples.txt"
done
echo "load generator exit status: $status" | tee -a "$OUT/commands.txt"
cat "$OUT/churn.json"
