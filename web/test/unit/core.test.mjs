// Unit tests for the client's pure logic (web/ringcast-core.js) with Node's built-in test runner:
// backoff bounds and jitter, dedupe by seq, cursor keeping across resets, the transport fallback order and the
// retry of the better transport, URL building, and parsing of WebSocket frames and long-poll bodies.
import test from 'node:test';
import assert from 'node:assert/strict';
import {
  DEFAULT_BACKOFF,
  TRANSPORTS,
  TopicCursor,
  TransportPlanner,
  backoffDelay,
  endpoints,
  parseServerFrame,
  parseTransports,
  pollEvents,
} from '../../ringcast-core.js';

test('backoff grows exponentially and is capped', () => {
  const top = () => 0.999999999;
  const expected = [250, 500, 1000, 2000, 4000, 8000, 10000, 10000];
  expected.forEach((cap, attempt) => {
    assert.ok(Math.abs(backoffDelay(attempt, {}, top) - cap) < 1e-3, `attempt ${attempt}`);
    assert.equal(backoffDelay(attempt, {}, () => 0), cap / 2, `attempt ${attempt} lower bound`);
  });
  // Huge attempts don't overflow to Infinity or NaN.
  for (const a of [60, 1000, 1e9, Infinity, NaN, -5]) {
    const d = backoffDelay(a);
    assert.ok(Number.isFinite(d) && d >= 0 && d <= DEFAULT_BACKOFF.max, `${a} -> ${d}`);
  }
});

test('backoff jitter stays within [cap*(1-jitter), cap] and actually varies', () => {
  const opts = { base: 100, max: 5000, factor: 3, jitter: 0.3 };
  for (let attempt = 0; attempt < 10; attempt++) {
    const cap = Math.min(opts.max, opts.base * 3 ** attempt);
    const seen = new Set();
    for (let i = 0; i < 200; i++) {
      const d = backoffDelay(attempt, opts);
      assert.ok(d >= cap * 0.7 - 1e-9 && d <= cap + 1e-9, `attempt ${attempt}: ${d} outside [${cap * 0.7}, ${cap}]`);
      seen.add(Math.round(d));
    }
    assert.ok(seen.size > 20, 'jitter spreads the delays');
  }
  // No jitter: deterministic; full jitter: down to zero.
  assert.equal(backoffDelay(3, { jitter: 0 }, () => 0.42), 2000);
  assert.equal(backoffDelay(3, { jitter: 1 }, () => 0), 0);
  // Out-of-range random values are clamped.
  assert.equal(backoffDelay(0, {}, () => 7), 250);
  assert.equal(backoffDelay(0, {}, () => -1), 125);
});

test('cursor dedupes by seq and keeps the resume point', () => {
  const c = new TopicCursor();
  assert.equal(c.since(), undefined, 'a live subscription has no resume point yet');
  const delivered = [1, 2, 2, 3, 1, 5, 4, 5, 6].filter((s) => c.accept(s));
  assert.deepEqual(delivered, [1, 2, 3, 5, 6]);
  assert.equal(c.since(), 6);
  assert.equal(c.duplicates, 4);
  assert.equal(c.delivered, 5);
  for (const bad of [-1, 1.5, NaN, '7', 2 ** 60]) assert.equal(c.accept(/** @type {any} */ (bad)), false);
  assert.equal(c.since(), 6);
});

test('cursor given since replays only later messages', () => {
  const c = new TopicCursor(41);
  assert.equal(c.since(), 41);
  assert.deepEqual([40, 41, 42, 43].filter((s) => c.accept(s)), [42, 43]);
  const zero = new TopicCursor(0);
  assert.equal(zero.since(), 0, 'since 0 is a resume point (replay everything retained)');
  assert.equal(zero.accept(0), false);
  assert.equal(zero.accept(1), true);
});

test('a reset clears the dedupe state: a restarted server numbering from 1 again is accepted', () => {
  const c = new TopicCursor();
  for (let s = 1; s <= 500; s++) assert.ok(c.accept(s));
  // The server restarted: the client resumes with since=500, the topic is at 20, the server resets to 20.
  c.reset(20);
  assert.equal(c.epoch, 1);
  assert.equal(c.since(), 20, 'the next resume point is the reset seq, not the old cursor');
  assert.deepEqual([19, 20, 21, 22, 22, 23].filter((s) => c.accept(s)), [21, 22, 23]);
  // A reset forward (history no longer reaches back) skips ahead.
  c.reset(100);
  assert.equal(c.epoch, 2);
  assert.deepEqual([23, 100, 101].filter((s) => c.accept(s)), [101]);
  c.reset(/** @type {any} */ (undefined));
  assert.equal(c.since(), undefined, 'a malformed reset falls back to live');
});

test('planner: fallback order ws -> sse -> poll after repeated failures while the server is reachable', () => {
  const p = new TransportPlanner(TRANSPORTS, { failuresBeforeFallback: 2 });
  assert.equal(p.current, 'ws');
  assert.equal(p.closed(0), false, 'one failure is not enough');
  assert.equal(p.current, 'ws');
  assert.equal(p.closed(10), true);
  assert.equal(p.current, 'sse');
  p.closed(20);
  assert.equal(p.closed(30), true);
  assert.equal(p.current, 'poll');
  // The last transport is kept however often it fails (the client keeps backing off).
  for (let i = 0; i < 10; i++) assert.equal(p.closed(40 + i), false);
  assert.equal(p.current, 'poll');
});

test('planner: failures while the server is down do not count against the transport', () => {
  const p = new TransportPlanner();
  for (let i = 0; i < 20; i++) assert.equal(p.closed(i, { serverReachable: false }), false);
  assert.equal(p.current, 'ws');
});

test('planner: a long-lived connection resets the count, repeated short-lived ones fall back', () => {
  const p = new TransportPlanner(TRANSPORTS, { shortLivedMs: 1000, failuresBeforeFallback: 3 });
  // Opened and cut after 100 ms, twice: counted.
  p.opened(0);
  p.closed(100);
  p.opened(200);
  p.closed(300);
  assert.equal(p.failures, 2);
  // Then a connection that lived 10 s: the transport works, the count starts over.
  p.opened(400);
  assert.equal(p.closed(10_400), false);
  assert.equal(p.failures, 0);
  // A long-lived connection cut while the server went away: still not a failure.
  p.opened(20_000);
  assert.equal(p.closed(40_000, { serverReachable: false }), false);
  // Cut repeatedly right after opening (a proxy that kills upgraded connections): falls back.
  for (let i = 0; i < 3; i++) {
    p.opened(50_000 + i * 100);
    p.closed(50_000 + i * 100 + 50);
  }
  assert.equal(p.current, 'sse');
});

test('planner: retries the better transport later, and falls back at once if it still fails', () => {
  const p = new TransportPlanner(TRANSPORTS, { retryBetterMs: 30_000 });
  p.closed(0);
  p.closed(1);
  assert.equal(p.current, 'sse');
  assert.equal(p.shouldRetryBetter(20_000), false);
  assert.equal(p.shouldRetryBetter(30_001), true);
  assert.equal(p.retryBetter(), 'ws');
  assert.equal(p.shouldRetryBetter(60_000), false, 'on the best transport there is nothing better');
  assert.equal(p.closed(30_100), true, 'the probe gets one chance');
  assert.equal(p.current, 'sse');
  // The probe works this time: it stays.
  assert.ok(p.shouldRetryBetter(60_200));
  p.retryBetter();
  p.opened(60_300);
  assert.equal(p.closed(200_000), false);
  assert.equal(p.current, 'ws');
});

test('planner: a forced single transport never moves', () => {
  const p = new TransportPlanner(['sse']);
  for (let i = 0; i < 5; i++) assert.equal(p.closed(i), false);
  assert.equal(p.current, 'sse');
  assert.equal(p.shouldRetryBetter(1e12), false);
  assert.throws(() => new TransportPlanner([]));
});

test('transports option is normalised', () => {
  assert.deepEqual(parseTransports(undefined), ['ws', 'sse', 'poll']);
  assert.deepEqual(parseTransports('SSE, poll'), ['sse', 'poll']);
  assert.deepEqual(parseTransports(['poll', 'ws', 'poll', 'carrier-pigeon']), ['poll', 'ws']);
  assert.throws(() => parseTransports(['smoke-signals']));
});

test('endpoints: ws/wss and http/https from either scheme, encoded topics, since, token', () => {
  const e = endpoints('http://127.0.0.1:8080/');
  assert.equal(e.ws(), 'ws://127.0.0.1:8080/ws');
  assert.equal(e.sse('a:b', undefined), 'http://127.0.0.1:8080/sse/a%3Ab');
  assert.equal(e.sse('t', 0), 'http://127.0.0.1:8080/sse/t?since=0');
  assert.equal(e.poll('t', 7, 25), 'http://127.0.0.1:8080/poll/t?since=7&timeout=25');
  assert.equal(e.poll('t', undefined, 25), 'http://127.0.0.1:8080/poll/t?timeout=25');
  assert.equal(e.messages('t', 3), 'http://127.0.0.1:8080/messages/t?since=3');
  assert.equal(e.publish('chat'), 'http://127.0.0.1:8080/publish/chat');
  assert.equal(e.health(), 'http://127.0.0.1:8080/healthz');
  const s = endpoints('wss://push.example.com/rc', 'a b&c');
  assert.equal(s.ws(), 'wss://push.example.com/rc/ws?token=a%20b%26c');
  assert.equal(s.sse('t', 5), 'https://push.example.com/rc/sse/t?since=5&token=a%20b%26c');
});

test('server frames: msg, reset, ack, error parsed; anything else ignored', () => {
  assert.deepEqual(parseServerFrame('{"type":"msg","topic":"t","seq":4,"data":{"x":1}}'), {
    type: 'msg', topic: 't', seq: 4, data: { x: 1 },
  });
  assert.deepEqual(parseServerFrame('{"type":"reset","topic":"t","seq":0}'), { type: 'reset', topic: 't', seq: 0 });
  assert.equal(parseServerFrame('{"type":"ack","id":3,"seq":9}')?.type, 'ack');
  assert.equal(parseServerFrame('{"type":"error","code":"bad_json","message":"m"}')?.type, 'error');
  for (const junk of ['', 'nope', '[]', 'null', '{"type":"msg","topic":"t"}', '{"type":"msg","topic":"t","seq":1.5}',
    '{"type":"reset","seq":1}', '{"type":"wat"}']) {
    assert.equal(parseServerFrame(junk), null, junk);
  }
});

test('long-poll bodies: messages in order, reset first with the seq before them (or next)', () => {
  assert.deepEqual(pollEvents({ topic: 't', messages: [{ seq: 1, data: 'a' }, { seq: 2, data: 'b' }], next: 2, reset: false }), {
    events: [{ kind: 'msg', seq: 1, data: 'a' }, { kind: 'msg', seq: 2, data: 'b' }],
    next: 2,
  });
  // History gap: the messages start at the oldest retained one.
  assert.deepEqual(pollEvents({ messages: [{ seq: 90, data: 1 }], next: 90, reset: true }).events, [
    { kind: 'reset', seq: 89 },
    { kind: 'msg', seq: 90, data: 1 },
  ]);
  // Cursor ahead of the topic (server restarted): no messages, reset to next.
  assert.deepEqual(pollEvents({ messages: [], next: 3, reset: true }), { events: [{ kind: 'reset', seq: 3 }], next: 3 });
  assert.deepEqual(pollEvents(null), { events: [], next: undefined });
  assert.deepEqual(pollEvents({ messages: [{ seq: 'x' }, { seq: 5, data: null }] }).events, [{ kind: 'msg', seq: 5, data: null }]);
});
