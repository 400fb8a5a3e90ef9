#!/usr/bin/env bash
# Autobahn|Testsuite conformance run for ringcast's WebSocket echo endpoint.
#
#   scripts/autobahn.sh                    # build, run all cases (groups 1-13) on each driver, check results
#   scripts/autobahn.sh --update-expected  # same, then rewrite autobahn/expected-results.json from this run
#   scripts/autobahn.sh --setup-only       # only create/verify the Python 2.7 virtualenv
#
# Environment:
#   RINGCAST_AUTOBAHN_DRIVERS     drivers to test, default "uring epoll"
#   RINGCAST_AUTOBAHN_CASES       comma-separated case patterns, default "*" (e.g. "1.*,2.*,9.1.1")
#   RINGCAST_AUTOBAHN_EXCLUDE     comma-separated case patterns to exclude, default none
#   RINGCAST_AUTOBAHN_SERVER_CMD  server command instead of ringcast (no cargo build); placeholders {port} and
#                                 {driver}; run with `bash -c "exec CMD"`, so it must be one foreground process
#   RINGCAST_AUTOBAHN_PATH        WebSocket path of the echo endpoint, default /echo
#   RINGCAST_AUTOBAHN_TIMEOUT     seconds allowed for one driver's wstest run, default 1200
#   RINGCAST_AUTOBAHN_PYTHON2     the Python 2.7 interpreter (default: pyenv's 2.7.x, else python2.7 on PATH)
#   RINGCAST_AUTOBAHN_VENV        virtualenv dir, default .venv-autobahn in the repo root
# See autobahn/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

say() { printf '[autobahn] %s\n' "$*"; }
die() { printf '[autobahn] error: %s\n' "$*" >&2; exit 1; }

UPDATE_EXPECTED=0
SETUP_ONLY=0
for arg in "$@"; do
  case $arg in
    --update-expected) UPDATE_EXPECTED=1 ;;
    --setup-only) SETUP_ONLY=1 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $arg" ;;
  esac
done

DRIVERS=${RINGCAST_AUTOBAHN_DRIVERS:-uring epoll}
CASES=${RINGCAST_AUTOBAHN_CASES:-*}
EXCLUDE=${RINGCAST_AUTOBAHN_EXCLUDE:-}
WS_PATH=${RINGCAST_AUTOBAHN_PATH:-/echo}
RUN_TIMEOUT=${RINGCAST_AUTOBAHN_TIMEOUT:-1200}
VENV=${RINGCAST_AUTOBAHN_VENV:-$ROOT/.venv-autobahn}
REQS=$ROOT/autobahn/requirements-py27.txt
SHARED_REQS=$ROOT/../shared/autobahn/requirements-py27.txt
VIRTUALENV_PIN='virtualenv==20.15.1' # the last virtualenv that runs on Python 2.7
REPORTS=$ROOT/autobahn/reports
command -v python3 >/dev/null || die "python3 is needed (free port, spec generation, result checker)"
[[ $WS_PATH == /* ]] || WS_PATH=/$WS_PATH

# ---------------------------------------------------------------------------------------------------------------
# 1. The Python 2.7 virtualenv with wstest, from the pinned requirements.
# ---------------------------------------------------------------------------------------------------------------
find_python2() {
  if [[ -n ${RINGCAST_AUTOBAHN_PYTHON2:-} ]]; then echo "$RINGCAST_AUTOBAHN_PYTHON2"; return; fi
  local root
  root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
  local c
  for c in "$root"/versions/2.7.*/bin/python2.7; do
    [[ -x $c ]] && { echo "$c"; return; }
  done
  for c in python2.7 python2; do
    if command -v "$c" >/dev/null && "$c" -c 'import sys; assert sys.version_info[:2] == (2, 7)' 2>/dev/null; then
      command -v "$c"; return
    fi
  done
  return 1
}

# Requirements without comments/blank lines, sorted case-insensitively: used to compare the two copies.
normalized_reqs() { sed -e 's/#.*//' -e 's/[[:space:]]*$//' -e '/^$/d' "$1" | sort -f; }

ensure_venv() {
  [[ -f $REQS ]] || die "$REQS is missing"
  if [[ -f $SHARED_REQS ]]; then
    # The repo's copy adds setuptools==44.0.0 (autobahntestsuite's own pin); anything else differing is drift.
    if ! diff -q <(normalized_reqs "$SHARED_REQS") <(normalized_reqs "$REQS" | grep -vi '^setuptools==') >/dev/null; then
      say "warning: $REQS differs from ../shared/autobahn/requirements-py27.txt; using the repo's copy:"
      diff <(normalized_reqs "$SHARED_REQS") <(normalized_reqs "$REQS" | grep -vi '^setuptools==') | sed 's/^/    /' || true
    fi
  fi
  local stamp=$VENV/.ringcast-requirements
  if [[ -x $VENV/bin/wstest && -f $stamp ]] && cmp -s "$stamp" <(normalized_reqs "$REQS"); then
    say "virtualenv $VENV is complete (pins unchanged), reusing it"
    return
  fi
  local py2 t0
  t0=$(date +%s)
  py2=$(find_python2) || die "no Python 2.7 interpreter found (pyenv 2.7.x or python2.7 on PATH; or set RINGCAST_AUTOBAHN_PYTHON2)"
  say "setting up $VENV with $py2 ($("$py2" -V 2>&1))"
  if ! "$py2" -m virtualenv --version >/dev/null 2>&1; then
    say "+ $py2 -m pip install '$VIRTUALENV_PIN'"
    "$py2" -m pip install --disable-pip-version-check "$VIRTUALENV_PIN"
  fi
  if [[ -e $VENV ]]; then
    say "+ rm -rf $VENV   (incomplete or made from other pins)"
    rm -rf "$VENV"
  fi
  say "+ $py2 -m virtualenv -p $py2 $VENV"
  "$py2" -m virtualenv -q -p "$py2" "$VENV"
  say "+ $VENV/bin/pip install -r autobahn/requirements-py27.txt"
  "$VENV/bin/pip" install --disable-pip-version-check -q -r "$REQS"
  say "+ $VENV/bin/wstest --autobahnversion"
  "$VENV/bin/wstest" --autobahnversion
  normalized_reqs "$REQS" >"$stamp"
  say "virtualenv ready in $(($(date +%s) - t0)) s"
}

say "+ python3 autobahn/check.py --self-test"
if ! selftest=$(python3 "$ROOT/autobahn/check.py" --self-test 2>&1); then
  printf '%s\n' "$selftest"
  die "the result checker's self-test failed: python3 autobahn/check.py --self-test"
fi
say "checker self-test: $(printf '%s\n' "$selftest" | tail -n 1)"

ensure_venv
[[ $SETUP_ONLY == 1 ]] && exit 0
WSTEST=$VENV/bin/wstest

# ---------------------------------------------------------------------------------------------------------------
# 2. The server binary.
# ---------------------------------------------------------------------------------------------------------------
if [[ -n ${RINGCAST_AUTOBAHN_SERVER_CMD:-} ]]; then
  SERVER_CMD=$RINGCAST_AUTOBAHN_SERVER_CMD
  say "server command from RINGCAST_AUTOBAHN_SERVER_CMD (no cargo build): $SERVER_CMD"
else
  say "+ cargo build --release -p ringcast"
  cargo build --release -p ringcast
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/ringcast
  [[ -x $BIN ]] || die "$BIN was not built"
  SERVER_CMD="$BIN serve --listen 127.0.0.1:{port} --cores 1 --driver {driver} --max-message-size 64MiB --max-frame-size 64MiB --write-high-water 256MiB"
fi

# ---------------------------------------------------------------------------------------------------------------
# 3. One wstest fuzzingclient run per driver.
# ---------------------------------------------------------------------------------------------------------------
SERVER_PID=
WSTEST_PID=
cleanup() {
  # Only the processes this script started, by PID.
  if [[ -n $WSTEST_PID ]] && kill -0 "$WSTEST_PID" 2>/dev/null; then kill "$WSTEST_PID" 2>/dev/null || true; fi
  stop_server
}
stop_server() {
  if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$SERVER_PID" 2>/dev/null && kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Write the fuzzingclient spec and the list of case ids it selects (for the completeness check).
write_spec() { # driver port outdir spec cases_json
  python3 - "$@" "$CASES" "$EXCLUDE" "$WS_PATH" <<'EOF'
import json, sys
driver, port, outdir, spec, _, cases, exclude, path = sys.argv[1:9]
pats = lambda s: [p.strip() for p in s.split(",") if p.strip()]
json.dump({
    "outdir": outdir,
    # No "options": wstest's own spec-conformance defaults apply (it fails connections with a closing handshake,
    # failByDrop=False, and checks everything strictly).
    "servers": [{"agent": "ringcast-" + driver, "url": "ws://127.0.0.1:%s%s" % (port, path)}],
    "cases": pats(cases) or ["*"],
    "exclude-cases": pats(exclude),
    "exclude-agent-cases": {},
}, open(spec, "w"), indent=2)
EOF
  # The exact case ids the spec selects, resolved by the test suite itself.
  "$VENV/bin/python" - "$4" "$5" <<'EOF'
import json, sys
from autobahntestsuite import fuzzing as f
spec = json.load(open(sys.argv[1]))
cs = f.CaseSet(f.CaseSetname, f.CaseBasename, f.Cases, f.CaseCategories, f.CaseSubCategories)
cases = cs.parseSpecCases(spec)
if not cases:
    sys.exit("no Autobahn case matches %s" % spec["cases"])
json.dump(cases, open(sys.argv[2], "w"))
EOF
}

wait_for_port() { # port pid log
  local deadline=$((SECONDS + 30))
  while ((SECONDS < deadline)); do
    kill -0 "$2" 2>/dev/null || { say "server exited before listening; its log:"; tail -n 50 "$3" | sed 's/^/    /'; return 1; }
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  say "server did not accept connections on 127.0.0.1:$1 within 30 s; its log:"
  tail -n 50 "$3" | sed 's/^/    /'
  return 1
}

STATUS=0
REPORT_DIRS=()
for driver in $DRIVERS; do
  outdir=$REPORTS/$driver
  rm -rf "$outdir"
  mkdir -p "$outdir"
  port=$(free_port)
  cmd=${SERVER_CMD//\{port\}/$port}
  cmd=${cmd//\{driver\}/$driver}
  say "=== driver $driver: starting server: $cmd"
  bash -c "exec $cmd" >"$outdir/server.log" 2>&1 &
  SERVER_PID=$!
  say "server PID $SERVER_PID, log $outdir/server.log"
  if ! wait_for_port "$port" "$SERVER_PID" "$outdir/server.log"; then
    stop_server; STATUS=1; continue
  fi
  spec=$outdir/spec.json
  cases_json=$outdir/cases.json
  write_spec "$driver" "$port" "$outdir" "$spec" "$cases_json"
  ncases=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$cases_json")
  say "+ wstest -m fuzzingclient -s $spec   ($ncases cases, url ws://127.0.0.1:$port$WS_PATH, timeout ${RUN_TIMEOUT}s)"
  t0=$SECONDS
  # wstest writes its reports into the spec's outdir; run it from there so stray files land there too.
  (cd "$outdir" && exec timeout "$RUN_TIMEOUT" "$WSTEST" -m fuzzingclient -s "$spec") >"$outdir/wstest.log" 2>&1 &
  WSTEST_PID=$!
  rc=0
  wait "$WSTEST_PID" || rc=$?
  WSTEST_PID=
  say "wstest finished in $((SECONDS - t0)) s (exit $rc), log $outdir/wstest.log"
  if ((rc != 0)); then
    ((rc == 124)) && say "wstest timed out after ${RUN_TIMEOUT}s"
    tail -n 30 "$outdir/wstest.log" | sed 's/^/    /'
    STATUS=1
  fi
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    say "FAIL: the server (PID $SERVER_PID) died during the run; its log:"
    tail -n 50 "$outdir/server.log" | sed 's/^/    /'
    STATUS=1
  fi
  stop_server
  if [[ -f $outdir/index.json ]]; then
    # When updating, judge this run by the FAILED and completeness rules only, not against the old expectations.
    expected_args=()
    [[ $UPDATE_EXPECTED == 1 ]] && expected_args=(--expected "")
    python3 "$ROOT/autobahn/check.py" "${expected_args[@]}" --cases-file "$cases_json" "$outdir" || STATUS=1
    REPORT_DIRS+=("$outdir")
  else
    say "FAIL: wstest wrote no $outdir/index.json"
    STATUS=1
  fi
  say "HTML report: $outdir/index.html"
done

# ---------------------------------------------------------------------------------------------------------------
# 4. Optionally record this run as the expected results.
# ---------------------------------------------------------------------------------------------------------------
if [[ $UPDATE_EXPECTED == 1 ]]; then
  if ((${#REPORT_DIRS[@]} == 0)); then
    die "no report to update autobahn/expected-results.json from"
  fi
  say "+ python3 autobahn/check.py --update-expected ${REPORT_DIRS[*]#$ROOT/}"
  if python3 "$ROOT/autobahn/check.py" --update-expected "${REPORT_DIRS[@]}" >"$REPORTS/update-expected.log" 2>&1; then
    grep -E '^(updated|\(not a pass)' "$REPORTS/update-expected.log" | sed 's/^/    /' || true
  else
    sed -n '/^FAIL: report dirs disagree/,$p' "$REPORTS/update-expected.log" | sed 's/^/    /'
    STATUS=1
  fi
fi

if ((STATUS == 0)); then
  say "PASS: Autobahn|Testsuite, drivers: $DRIVERS, cases: $CASES"
else
  say "FAIL: Autobahn|Testsuite (see above)"
fi
exit "$STATUS"
