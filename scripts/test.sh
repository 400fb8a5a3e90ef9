#!/usr/bin/env bash
# The one command that runs every check ringcast has: formatting, lints, docs, unit/property/integration tests on
# both reactor drivers, the fuzz targets' build, and the Autobahn|Testsuite conformance run.
# It installs what it needs when it is missing (Debian packages, a Python 2.7 virtualenv for Autobahn).
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*"; }

step "redis-server (the multi-node tests start their own)"
command -v redis-server >/dev/null || (apt-get update && apt-get install -y redis-server)

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo doc (every public item documented)"
RUSTDOCFLAGS="-D warnings -D missing_docs" cargo doc --workspace --no-deps --quiet

step "protocol/ depends on no runtime and no networking crate"
if cargo tree -p ringcast-protocol -e normal --prefix none | grep -E '^(tokio|monoio|mio|glommio|async-std|socket2|libc) ' ; then
  echo "protocol/ must not depend on a runtime or on networking" >&2; exit 1
fi

if ! command -v cargo-nextest >/dev/null 2>&1; then
  step "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

for driver in uring epoll; do
  step "tests, driver=$driver"
  RINGCAST_TEST_DRIVER=$driver cargo nextest run --workspace --no-fail-fast
done

step "density run: 20,000 subscribers on 2 server processes joined by Redis (benches/density.sh)"
IDLE=5 bash benches/density.sh 20000

step "doc tests"
cargo test --workspace --doc --quiet

step "fuzz targets compile"
cargo check --manifest-path fuzz/Cargo.toml --bins --quiet

step "browser client and demo page: unit tests and headless Chromium end-to-end (web/test/run.sh)"
bash web/test/run.sh

if [ -x scripts/autobahn.sh ]; then
  step "Autobahn|Testsuite"
  bash scripts/autobahn.sh
fi
echo
echo "all checks passed"
