#!/usr/bin/env bash
# The density run (issue 9): SCALE WebSocket subscribers (plus a share over SSE) held idle on a ringcast server made
# of several processes sharing one port (SO_REUSEPORT) and joined by a Redis bridge, then one publish per topic
# that must reach every subscriber.
#
#   bash benches/density.sh 20000            # what the test command runs (2 server processes)
#   bash benches/density.sh 1000000          # the million-connection run (≈ 67 server processes)
#
# Why several processes: one process here may hold at most 20,000 files. The engine has no such limit; on bare
# metal one process per machine holds millions (see tuning/C10M.md). The load generator (ringcast-load) likewise
# runs as several processes over several source addresses (127.0.0.2, …) so neither its open-file limit nor one
# address's ephemeral ports is a ceiling.
#
# Reports: connect rate; server user-space bytes per connection (RSS growth summed over the server processes /
# connections); kernel bytes per connection (slab and sockstat growth, both ends of each loopback pair plus the
# load generator's side); the idle server's CPU with heartbeats on; publish to last delivery, beside the kernel's own
# floor for that many deliveries here (benches/src/floor.rs). Exits non-zero when a
# connection failed or was lost, or a subscriber missed its message.
#
# Environment knobs: PER_SERVER (connections per server process, default 15000), PER_CLIENT (per load process,
# default 15000), TOPICS (4), SSE_PERCENT (5), IDLE (seconds held idle before publishing, 10), OUT (also write
# the report to this file), PORT (default: a free one), NO_BUILD=1 (use the built binaries), KEEP=1 (keep the
# server and Redis logs).
set -euo pipefail
cd "$(dirname "$0")/.."

SCALE=${1:?usage: benches/density.sh SCALE}
PER_SERVER=${PER_SERVER:-15000}
PER_CLIENT=${PER_CLIENT:-15000}
TOPICS=${TOPICS:-4}
SSE_PERCENT=${SSE_PERCENT:-5}
IDLE=${IDLE:-10}
OUT=${OUT:-}
TARGET_DIR=${CARGO_TARGET_DIR:-target}

if [ -z "${NO_BUILD:-}" ]; then
  cargo build --release -q -p ringcast -p ringcast-load
  cargo build --release -q -p ringcast-bench --bin loopback_floor
fi
RINGCAST=$TARGET_DIR/release/ringcast
LOAD=$TARGET_DIR/release/ringcast-load

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=${PORT:-$(free_port)}
SERVERS=$(( (SCALE + PER_SERVER - 1) / PER_SERVER ))
CLIENTS=$(( (SCALE + PER_CLIENT - 1) / PER_CLIENT ))
# Few connections per source address: the kernel's search for a free source port (__inet_hash_connect) walks the
# ports in use, so at 20,000 per address it costs more CPU than everything else (measured with perf: 52 % of all
# cycles); at 2,500 per address it disappears from the profile.
SOURCES=$(( (SCALE + 2499) / 2500 ))
WORK=$(mktemp -d /tmp/ringcast-density.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "${KEEP:-}" ]; then echo "density: logs kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

REDIS_ARGS=()
if [ "$SERVERS" -gt 1 ]; then
  command -v redis-server >/dev/null || { echo "density: redis-server is needed for $SERVERS server processes" >&2; exit 2; }
  RPORT=$(free_port)
  redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" \
    --maxclients 10000 --loglevel warning >"$WORK/redis.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
  REDIS_ARGS=(--redis "redis://127.0.0.1:$RPORT/")
fi

echo "density: $SCALE subscribers ($SSE_PERCENT% SSE) on $TOPICS topics; $SERVERS server process(es) on 127.0.0.1:$PORT," \
  "$CLIENTS load process(es), $SOURCES source address(es)"
SERVER_PIDS=()
for i in $(seq 0 $((SERVERS - 1))); do
  node=()
  [ "$SERVERS" -gt 1 ] && node=(--node-id "density-$i")
  "$RINGCAST" serve --listen "127.0.0.1:$PORT" --cores 1 --no-pin --no-demo --share-port "${REDIS_ARGS[@]}" "${node[@]}" \
    >"$WORK/server-$i.log" 2>&1 &
  PIDS+=($!)
  SERVER_PIDS+=($!)
done
# Every process listening (and, with Redis, connected to it).
want="ringcast listening"
[ "$SERVERS" -gt 1 ] && want="redis connected"
for i in $(seq 0 $((SERVERS - 1))); do
  for _ in $(seq 400); do grep -q "$want" "$WORK/server-$i.log" && break; sleep 0.05; done
  grep -q "$want" "$WORK/server-$i.log" || { echo "density: server $i did not start:" >&2; cat "$WORK/server-$i.log" >&2; exit 2; }
done

pid_args=()
for p in "${SERVER_PIDS[@]}"; do pid_args+=(--server-pid "$p"); done
start=$(date +%s.%N)
set +e
"$LOAD" fanout --target "127.0.0.1:$PORT" --procs "$CLIENTS" --source-addrs "$SOURCES" --no-pin --json \
  -n "$SCALE" -k "$TOPICS" --sse-percent "$SSE_PERCENT" --messages "$TOPICS" --rate 0 --duration 60 \
  --connect-concurrency 128 --ready-timeout 600 --read-buffer 1024 --idle "$IDLE" --grace-ms 60000 \
  "${pid_args[@]}" >"$WORK/report.json"
rc=$?
set -e
end=$(date +%s.%N)
for i in $(seq 0 $((SERVERS - 1))); do
  kill -0 "${SERVER_PIDS[$i]}" 2>/dev/null || { echo "density: server process $i died:" >&2; tail -5 "$WORK/server-$i.log" >&2; rc=4; }
done

# What the kernel alone charges on this machine for SCALE small deliveries (one send + one receive each), so the
# publish-to-last-delivery figure can be read against it. Measured once the servers are gone: while they still
# close their side of SCALE connections the machine is anything but quiet (at 1M that made the figure 40x).
for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
FLOOR=""
if [ -x "$TARGET_DIR/release/loopback_floor" ]; then
  FLOOR=$("$TARGET_DIR/release/loopback_floor" 5000 100 3 "$SCALE" 2>&1 | tr '\n' '|' || true)
fi

python3 - "$WORK/report.json" "$SCALE" "$SERVERS" "$CLIENTS" "$SOURCES" "$TOPICS" "$SSE_PERCENT" "$start" "$end" "$rc" "$OUT" "$FLOOR" <<'EOF'
import json, sys
path, scale, servers, clients, sources, topics, sse, start, end, rc, out, floor = sys.argv[1:13]
scale = int(scale)
try:
    r = json.load(open(path))
except Exception as e:
    print(f"density: no report from ringcast-load (exit {rc}): {e}", file=sys.stderr)
    sys.exit(2)
m = r.get("server_memory") or {}
lat = r.get("latency_us") or {}
n = max(r["established"], 1)
lines = [
    f"density run: {scale:,} subscribers ({sse}% SSE) on {topics} topics, {servers} server process(es) joined by "
    f"{'Redis' if int(servers) > 1 else 'nothing (one process)'}, {clients} load process(es), {sources} source address(es)",
    f"  connected: {r['established']:,} of {r['attempted']:,} (failures: {r['failures'] or 'none'}), "
    f"connect rate {r['connect_rate']:,.0f}/s",
    f"  server user space: RSS {m.get('rss_before',0)/1e6:,.1f} MB -> {m.get('rss_after',0)/1e6:,.1f} MB = "
    f"{m.get('rss_per_conn',0):,.0f} B per connection",
    f"  kernel: slab {m.get('slab_before',0)/1e6:,.1f} MB -> {m.get('slab_after',0)/1e6:,.1f} MB = "
    f"{m.get('slab_per_conn',0):,.0f} B per connection (both ends of each loopback pair); "
    f"TCP buffers (sockstat mem) {m.get('tcp_mem_per_conn',0):,.0f} B per connection",
    f"  idle server CPU (heartbeats on): {m.get('idle_cpu_cores') or 0:.3f} cores over {m.get('idle_secs',0):.0f} s",
    f"  publish: {r['published']} message(s), one per topic; deliveries {r['received']:,} of {r['expected']:,} "
    f"expected; lost {r['lost']}, duplicated {r['duplicated']}, out of order {r['out_of_order']}",
    f"  publish to last delivery: {lat.get('max',0)/1e3:,.1f} ms (p50 {lat.get('p50',0)/1e3:,.1f} ms, "
    f"p99 {lat.get('p99',0)/1e3:,.1f} ms)",
    f"  errors after connecting: {r['errors'] or 'none'}; load generator CPU {r['cpu_secs']:.1f} s; "
    f"wall {float(end)-float(start):.1f} s",
]
for f in floor.split("|"):
    if f.strip():
        lines.append("  kernel floor: " + f.strip().removeprefix("loopback floor "))
text = "\n".join(lines)
print(text)
if out:
    with open(out, "w") as f:
        f.write(text + "\n")
ok = (r["established"] == scale and not r["failures"] and not r["errors"] and r["lost"] == 0
      and r["duplicated"] == 0 and r["out_of_order"] == 0 and r["expected"] == scale
      and r["received"] >= scale and int(rc) == 0)
if not ok:
    print("density: FAILED (a connection failed or was lost, or a subscriber missed its message)", file=sys.stderr)
    sys.exit(1)
EOF
