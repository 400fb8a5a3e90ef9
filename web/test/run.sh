#!/usr/bin/env bash
# The browser side's tests: unit tests of the client's pure logic (Node's test runner), then end-to-end tests of
# ringcast.js and the demo page in headless Chromium against target/release/ringcast. Installs what is missing:
# Debian's chromium (apt) and web/node_modules (npm ci, playwright-core pinned in package-lock.json).
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "node and npm are needed (apt-get install -y nodejs npm)" >&2
  exit 1
fi
if [ ! -x /usr/bin/chromium ]; then
  echo "installing chromium (apt)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
pinned=$(node -p "require('./web/package.json').devDependencies['playwright-core']")
installed=$(node -p "try { require('./web/node_modules/playwright-core/package.json').version } catch { '' }")
if [ "$pinned" != "$installed" ]; then
  (cd web && npm ci --no-audit --no-fund --loglevel=error)
fi

echo "web: unit tests (node --test web/test/unit/)"
node --test web/test/unit/

echo "web: building target/release/ringcast"
cargo build --release -p ringcast --quiet

echo "web: end-to-end tests in headless Chromium"
node --test --test-concurrency=1 web/test/e2e/browser.e2e.mjs
