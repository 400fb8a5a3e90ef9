// End-to-end tests of ringcast.js and the demo page in headless Chromium (Debian's chromium, driven by
// playwright-core), against real `target/release/ringcast serve` processes started on free ports and killed by PID:
// - the demo page loads and renders live prices (and a screenshot is saved to web/test/screenshots/demo.png);
// - for each forced transport (ws, sse, poll) subscribe/publish round-trips through the chat box;
// - with WebSocket disabled on the server the client falls back to SSE (and retries WebSocket later), with
//   WebSocket and SSE disabled to long polling;
// - the server killed and restarted mid-stream: on each transport the client resumes with no missing and no
//   duplicate seq within an epoch, and gets a reset between the two epochs.
import test from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../../..');
const BIN = process.env.RINGCAST_BIN ?? join(repo, 'target/release/ringcast');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const SCREENSHOT = join(repo, 'web/test/screenshots/demo.png');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A free TCP port on 127.0.0.1. */
function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {import('node:net').AddressInfo} */ (s.address());
      s.close(() => ok(port));
    });
  });
}

/** Starts `ringcast serve` on `port` with extra flags; resolves once /healthz answers. */
async function startServer(port, flags = []) {
  const proc = spawn(BIN, ['serve', '--listen', `127.0.0.1:${port}`, ...flags], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, RUST_LOG: 'warn' },
  });
  let stderr = '';
  proc.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise((r) => proc.once('exit', r));
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 200; i++) {
    if (proc.exitCode !== null) throw new Error(`ringcast exited (${proc.exitCode}): ${stderr}`);
    try {
      const r = await fetch(`${base}/healthz`);
      if (r.ok) break;
    } catch {
      // not up yet
    }
    await sleep(50);
  }
  return {
    base,
    port,
    pid: proc.pid,
    /** Kills this server by its PID and waits for it to exit. */
    async kill(signal = 'SIGKILL') {
      if (proc.exitCode === null && proc.signalCode === null) process.kill(/** @type {number} */ (proc.pid), signal);
      await exited;
    },
  };
}

/** @type {import('playwright-core').BrowserContext} */
let browser;
let profile = '';
/** @type {Array<{ kill: () => Promise<void> }>} */
const servers = [];

async function server(flags = [], port = undefined) {
  const s = await startServer(port ?? (await freePort()), flags);
  servers.push(s);
  return s;
}

/** A new page on `url` that fails the test on any uncaught page error. */
async function open(t, url) {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  t.after(async () => {
    await page.close();
    assert.deepEqual(errors, [], 'uncaught errors in the page');
  });
  await page.goto(url);
  return page;
}

const state = (page) =>
  page.evaluate(() => ({ state: window.ringcastDemo.client.state, transport: window.ringcastDemo.client.transport }));

async function waitOpen(page, transport, timeout = 10_000) {
  await page.waitForFunction(
    (t) => window.ringcastDemo?.client?.state === 'open' && window.ringcastDemo.client.transport === t,
    transport,
    { timeout },
  );
}

/** Sends a chat line through the page's form and waits until the page shows it back. */
async function chatRoundTrip(page, text) {
  await page.fill('#chat-input', text);
  await page.click('button[type=submit]');
  await page.waitForFunction((x) => window.ringcastDemo.chat.some((m) => m.text === x), text, { timeout: 10_000 });
  await page.waitForFunction((x) => document.querySelector('#chat-log').textContent.includes(x), text);
}

test.before(async () => {
  assert.ok(existsSync(BIN), `${BIN} is missing: cargo build --release -p ringcast`);
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install -y chromium`);
  profile = mkdtempSync(join(tmpdir(), 'ringcast-chromium-'));
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 560 },
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
});

test.after(async () => {
  await browser?.close();
  for (const s of servers) await s.kill();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

test('the demo page loads and renders live prices over WebSocket', async (t) => {
  const s = await server(['--demo-feed', '10']);
  const page = await open(t, `${s.base}/`);
  await waitOpen(page, 'ws');
  await page.waitForFunction(() => window.ringcastDemo.symbols.size === 4 && window.ringcastDemo.rendered >= 40, null, {
    timeout: 10_000,
  });
  const prices = await page.$$eval('.card .price', (els) => els.map((e) => e.textContent));
  assert.equal(prices.length, 4);
  for (const p of prices) assert.match(p, /^[\d,]+\.\d{2,5}$/, `rendered price ${p}`);
  const symbols = await page.$$eval('.card .sym', (els) => els.map((e) => e.textContent));
  assert.deepEqual(symbols, ['ACME', 'BTC-USD', 'ETH-USD', 'EUR-USD']);
  assert.equal(await page.textContent('#transport'), 'ws');
  assert.equal(await page.textContent('#state'), 'open');
  // Let the rate and latency figures fill in (they refresh every 500 ms over a 2 s window).
  await sleep(2200);
  const rate = Number(await page.textContent('#rate'));
  assert.ok(rate > 20 && rate < 60, `4 symbols at 10/s: ${rate} msgs/s`);
  assert.match(await page.textContent('#p50'), /ms$/);
  await chatRoundTrip(page, 'hello from the screenshot');
  mkdirSync(dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT });
  // The ticker topic arrived contiguously: the client delivered every seq once.
  const c = await page.evaluate(() => window.ringcastDemo.client.cursor('demo.ticker'));
  assert.equal(c.duplicates, 0);
  assert.equal(c.epoch, 0);
});

for (const transport of ['ws', 'sse', 'poll']) {
  test(`forced ${transport}: live prices and a subscribe/publish round-trip`, async (t) => {
    const s = await server(['--demo-feed', '20']);
    const page = await open(t, `${s.base}/?transport=${transport}`);
    await waitOpen(page, transport);
    await page.waitForFunction(() => window.ringcastDemo.rendered >= 20, null, { timeout: 10_000 });
    const via = await page.$$eval('.card .via', (els) => els.map((e) => e.textContent));
    assert.ok(via.length > 0 && via.every((v) => v === transport), `rendered via ${via}`);
    await chatRoundTrip(page, `round trip over ${transport}`);
    // A publish from another client (plain HTTP) reaches this one too.
    const r = await fetch(`${s.base}/publish/demo.chat`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ from: 'node', text: `from outside over ${transport}` }),
    });
    assert.equal(r.status, 200);
    await page.waitForFunction((x) => window.ringcastDemo.chat.some((m) => m.text === x), `from outside over ${transport}`);
    assert.deepEqual(await state(page), { state: 'open', transport });
  });
}

test('WebSocket blocked: falls back to SSE, and tries WebSocket again later', async (t) => {
  const s = await server(['--demo-feed', '10', '--disable-transport', 'ws']);
  const page = await open(t, `${s.base}/?retryBetterMs=1500`);
  await waitOpen(page, 'sse');
  await page.waitForFunction(() => window.ringcastDemo.rendered >= 10, null, { timeout: 10_000 });
  await chatRoundTrip(page, 'over the fallback');
  // After retryBetterMs the client probes WebSocket again, is refused, and returns to SSE.
  await page.waitForFunction(
    () => window.ringcastDemo.events.filter((e) => e === 'open over sse').length >= 2,
    null,
    { timeout: 10_000 },
  );
  await waitOpen(page, 'sse');
  const c = await page.evaluate(() => window.ringcastDemo.client.cursor('demo.ticker'));
  assert.equal(c.epoch, 0, 'switching transports resumed without a reset');
});

test('WebSocket and SSE blocked: falls back to long polling', async (t) => {
  const s = await server(['--demo-feed', '10', '--disable-transport', 'ws', '--disable-transport', 'sse']);
  const page = await open(t, `${s.base}/`);
  await waitOpen(page, 'poll', 15_000);
  await page.waitForFunction(() => window.ringcastDemo.rendered >= 10, null, { timeout: 10_000 });
  await chatRoundTrip(page, 'over long polling');
});

for (const transport of ['ws', 'sse', 'poll']) {
  test(`server restarted mid-stream (${transport}): no missing and no duplicate seq within an epoch`, async (t) => {
    const port = await freePort();
    let s = await server(['--demo-feed', '0'], port);
    const page = await open(t, `${s.base}/?transport=${transport}`);
    await waitOpen(page, transport);
    const TOPIC = 'test.restart';
    await page.evaluate((topic) => {
      window.got = [];
      const c = window.ringcastDemo.client;
      c.on('reset', (r) => r.topic === topic && window.got.push(`reset:${r.seq}`));
      c.subscribe(topic, (d, m) => window.got.push(m.seq), { since: 0 });
    }, TOPIC);
    const publish = async (base, n) => {
      const r = await fetch(`${base}/publish/${TOPIC}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ n }),
      });
      if (!r.ok) throw new Error(`publish: ${r.status}`);
      return (await r.json()).seq;
    };
    // Epoch 1: 150 messages, all received.
    for (let n = 1; n <= 150; n++) assert.equal(await publish(s.base, n), n);
    await page.waitForFunction(() => window.got.length >= 150, null, { timeout: 10_000 });
    // Keep publishing while the server is killed and restarted on the same port.
    let running = true;
    let lastAcked = 0;
    let base = s.base;
    const loop = (async () => {
      let n = 1000;
      while (running) {
        try {
          lastAcked = await publish(base, n++);
        } catch {
          // server down
        }
        await sleep(20);
      }
    })();
    await sleep(200);
    await s.kill('SIGKILL');
    await sleep(300);
    s = await server(['--demo-feed', '0'], port);
    base = s.base;
    // Wait for the client to come back (it gets a reset: its cursor is ahead of the new server's topic).
    await page.waitForFunction(() => window.got.some((x) => typeof x === 'string'), null, { timeout: 15_000 });
    await sleep(500);
    running = false;
    await loop;
    const final = lastAcked;
    assert.ok(final > 0, 'publishes succeeded after the restart');
    await page.waitForFunction((f) => window.got.at(-1) === f, final, { timeout: 10_000 });
    const got = await page.evaluate(() => window.got);
    const cut = got.findIndex((x) => typeof x === 'string');
    const epoch1 = got.slice(0, cut);
    const resets = got.filter((x) => typeof x === 'string');
    const epoch2 = got.slice(cut + 1);
    assert.equal(resets.length, 1, `one reset: ${resets}`);
    const m = Number(resets[0].slice('reset:'.length));
    assert.deepEqual(epoch1, epoch1.map((_, i) => i + 1), 'epoch 1: 1..N contiguous, no duplicate');
    assert.ok(epoch1.length >= 150);
    assert.ok(m < epoch1.length, `reset seq ${m} is behind the old cursor ${epoch1.length}`);
    assert.deepEqual(epoch2, epoch2.map((_, i) => m + 1 + i), `epoch 2: contiguous from ${m + 1}, no duplicate`);
    assert.equal(epoch2.at(-1), final, 'every message acknowledged after the reset arrived');
    assert.ok(epoch2.length > 0);
    await waitOpen(page, transport);
    await s.kill();
  });
}
