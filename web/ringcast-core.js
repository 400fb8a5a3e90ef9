// ringcast-core.js: the pure logic of the ringcast browser client, with no I/O, no timers and no globals, so that
// Node's test runner can check it directly: reconnection backoff, per-topic cursors (resume point and dedupe by
// seq, reset handling), the transport planner (WebSocket -> SSE -> long polling, falling back and retrying the
// better one later), URL building and message parsing for the wire protocol v1.

/** @typedef {'ws' | 'sse' | 'poll'} TransportName */

/** The transports in order of preference. @type {readonly TransportName[]} */
export const TRANSPORTS = Object.freeze(['ws', 'sse', 'poll']);

/**
 * @typedef {object} BackoffOptions
 * @property {number} [base]   first delay in ms (default 250)
 * @property {number} [max]    cap in ms (default 10000)
 * @property {number} [factor] growth per attempt (default 2)
 * @property {number} [jitter] fraction of the delay that is random, 0..1 (default 0.5)
 */

/** @type {Required<BackoffOptions>} */
export const DEFAULT_BACKOFF = Object.freeze({ base: 250, max: 10000, factor: 2, jitter: 0.5 });

/**
 * The delay before reconnection attempt `attempt` (0 for the first retry): exponential, capped, with jitter.
 * The result lies in [cap * (1 - jitter), cap] where cap = min(max, base * factor^attempt), so clients that lost
 * the server together don't come back in lockstep, and the wait never exceeds `max`.
 *
 * @param {number} attempt  how many attempts failed in a row before this one (>= 0)
 * @param {BackoffOptions} [options]
 * @param {() => number} [random]  uniform in [0, 1) (Math.random by default; injectable for tests)
 * @returns {number} milliseconds
 */
export function backoffDelay(attempt, options = {}, random = Math.random) {
  const o = { ...DEFAULT_BACKOFF, ...options };
  const n = Math.max(0, Math.floor(Number.isFinite(attempt) ? attempt : 0));
  // Cap the exponent first: factor^n overflows to Infinity long before n is large.
  const cap = Math.min(o.max, o.base * Math.pow(o.factor, Math.min(n, 64)));
  const jitter = Math.min(1, Math.max(0, o.jitter));
  const r = Math.min(Math.max(random(), 0), 1);
  return cap * (1 - jitter) + cap * jitter * r;
}

/**
 * What the client knows about one subscribed topic: the last seq it delivered (its resume point and dedupe
 * mark) and how many resets it has seen (each starts a new epoch of sequence numbers).
 *
 * Sequence numbers within a topic only grow, so dedupe is "deliver only seq > last": a message replayed after a
 * reconnect, or delivered twice across a transport switch, is dropped. A reset from the server (history no longer
 * reaches back to the cursor, or the cursor is ahead of the topic because the server restarted) moves the cursor
 * to the server's seq, forgetting the old one, and later messages are accepted from there.
 */
export class TopicCursor {
  /** @param {number | null} [since]  resume point given by the application (messages after it are wanted) */
  constructor(since = null) {
    /** @type {number | null} last seq delivered (or the requested resume point); null: none yet */
    this.seq = since ?? null;
    /** @type {number} resets seen */
    this.epoch = 0;
    /** @type {number} messages dropped as duplicates */
    this.duplicates = 0;
    /** @type {number} messages delivered */
    this.delivered = 0;
  }

  /**
   * Should a message with this seq be delivered? Advances the cursor when it is.
   * @param {number} seq
   * @returns {boolean}
   */
  accept(seq) {
    if (!Number.isSafeInteger(seq) || seq < 0) return false;
    if (this.seq !== null && seq <= this.seq) {
      this.duplicates++;
      return false;
    }
    this.seq = seq;
    this.delivered++;
    return true;
  }

  /**
   * The server reset this topic to `seq`: forget the dedupe state and continue after `seq`.
   * @param {number} seq
   */
  reset(seq) {
    this.seq = Number.isSafeInteger(seq) && seq >= 0 ? seq : null;
    this.epoch++;
  }

  /** The `since` to resume from on (re)subscribe, or undefined to start live. @returns {number | undefined} */
  since() {
    return this.seq === null ? undefined : this.seq;
  }
}

/**
 * @typedef {object} PlannerOptions
 * @property {number} [failuresBeforeFallback] failed or short-lived connections in a row before moving to the
 *   next transport (default 2)
 * @property {number} [shortLivedMs]  a connection that closes sooner than this after opening counts as a failure
 *   ("cut repeatedly"); a longer one resets the count (default 5000)
 * @property {number} [retryBetterMs] after falling back, how long to stay before trying the best transport
 *   again (default 30000)
 */

/**
 * Picks the transport to connect with. Starts with the first of `order`; moves to the next one when the current
 * one fails to open, or is cut soon after opening, `failuresBeforeFallback` times in a row while the server is
 * reachable (a failure while the server is down says nothing about the transport and is not counted). After a
 * fallback it asks, `retryBetterMs` later, to try the first transport again: one failure there falls straight back.
 */
export class TransportPlanner {
  /**
   * @param {readonly TransportName[]} [order]
   * @param {PlannerOptions} [options]
   */
  constructor(order = TRANSPORTS, options = {}) {
    if (order.length === 0) throw new Error('ringcast: at least one transport is needed');
    /** @type {readonly TransportName[]} */
    this.order = order;
    this.failuresBeforeFallback = Math.max(1, options.failuresBeforeFallback ?? 2);
    this.shortLivedMs = options.shortLivedMs ?? 5000;
    this.retryBetterMs = options.retryBetterMs ?? 30000;
    this.index = 0;
    /** consecutive failures on the current transport */
    this.failures = 0;
    /** @type {number | null} when we last fell back (ms), null when on the best transport */
    this.fellBackAt = null;
    /** @type {number | null} when the current connection opened */
    this.openedAt = null;
  }

  /** The transport to use now. @returns {TransportName} */
  get current() {
    return this.order[this.index];
  }

  /** Is it time to try a better transport than the current one? @param {number} now */
  shouldRetryBetter(now) {
    return this.index > 0 && this.fellBackAt !== null && now - this.fellBackAt >= this.retryBetterMs;
  }

  /**
   * Go back to the best transport (call when {@link shouldRetryBetter} says so). The probe gets one chance.
   * @returns {TransportName}
   */
  retryBetter() {
    this.index = 0;
    this.failures = this.failuresBeforeFallback - 1;
    this.fellBackAt = null;
    this.openedAt = null;
    return this.current;
  }

  /** The current transport opened. @param {number} now */
  opened(now) {
    this.openedAt = now;
  }

  /**
   * The current transport closed or failed to open.
   * @param {number} now
   * @param {{ serverReachable?: boolean }} [info]  false when the server itself is down (not the transport's fault)
   * @returns {boolean} whether the planner moved to another transport
   */
  closed(now, info = {}) {
    const openedAt = this.openedAt;
    this.openedAt = null;
    const wasLongLived = openedAt !== null && now - openedAt >= this.shortLivedMs;
    if (wasLongLived) {
      this.failures = 0;
      return false;
    }
    if (info.serverReachable === false) return false;
    this.failures++;
    if (this.failures >= this.failuresBeforeFallback && this.index < this.order.length - 1) {
      this.index++;
      this.failures = 0;
      this.fellBackAt = now;
      return true;
    }
    return false;
  }
}

/**
 * Normalises the transports option: known names, in the given order, without duplicates.
 * @param {readonly string[] | string | undefined} transports
 * @returns {TransportName[]}
 */
export function parseTransports(transports) {
  const list = typeof transports === 'string' ? transports.split(',') : transports ?? TRANSPORTS;
  /** @type {TransportName[]} */
  const out = [];
  for (const raw of list) {
    const t = String(raw).trim().toLowerCase();
    if ((t === 'ws' || t === 'sse' || t === 'poll') && !out.includes(t)) out.push(t);
  }
  if (out.length === 0) throw new Error(`ringcast: no known transport in ${JSON.stringify(transports)}`);
  return out;
}

/**
 * The endpoint URLs for a server base URL (http(s) or ws(s), with or without a trailing slash).
 * @param {string} base
 * @param {string} [token]  passed as `?token=` where headers can't be set (WebSocket, EventSource)
 */
export function endpoints(base, token) {
  const u = new URL(base);
  const secure = u.protocol === 'https:' || u.protocol === 'wss:';
  const http = `${secure ? 'https' : 'http'}://${u.host}${u.pathname.replace(/\/+$/, '')}`;
  const ws = `${secure ? 'wss' : 'ws'}://${u.host}${u.pathname.replace(/\/+$/, '')}`;
  const tok = token ? `token=${encodeURIComponent(token)}` : '';
  /** @param {Record<string, string | number | undefined>} q */
  const query = (q) => {
    const parts = Object.entries(q)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `${k}=${encodeURIComponent(String(v))}`);
    if (tok) parts.push(tok);
    return parts.length ? `?${parts.join('&')}` : '';
  };
  return {
    ws: () => `${ws}/ws${query({})}`,
    /** @param {string} topic @param {number | undefined} since */
    sse: (topic, since) => `${http}/sse/${encodeURIComponent(topic)}${query({ since })}`,
    /** @param {string} topic @param {number | undefined} since @param {number} timeoutS */
    poll: (topic, since, timeoutS) => `${http}/poll/${encodeURIComponent(topic)}${query({ since, timeout: timeoutS })}`,
    /** @param {string} topic @param {number | undefined} since */
    messages: (topic, since) => `${http}/messages/${encodeURIComponent(topic)}${query({ since })}`,
    /** @param {string} topic */
    publish: (topic) => `${http}/publish/${encodeURIComponent(topic)}`,
    health: () => `${http}/healthz`,
  };
}

/**
 * @typedef {{ type: 'msg', topic: string, seq: number, data: unknown }
 *   | { type: 'reset', topic: string, seq: number }
 *   | { type: 'ack', id?: number, seq?: number }
 *   | { type: 'error', id?: number, code: string, message: string }} ServerFrame
 */

/**
 * Parses one WebSocket text frame from the server; null when it isn't a protocol v1 object.
 * @param {string} text
 * @returns {ServerFrame | null}
 */
export function parseServerFrame(text) {
  let v;
  try {
    v = JSON.parse(text);
  } catch {
    return null;
  }
  if (!v || typeof v !== 'object' || typeof v.type !== 'string') return null;
  switch (v.type) {
    case 'msg':
      return typeof v.topic === 'string' && Number.isSafeInteger(v.seq) ? v : null;
    case 'reset':
      return typeof v.topic === 'string' && Number.isSafeInteger(v.seq) ? v : null;
    case 'ack':
    case 'error':
      return v;
    default:
      return null;
  }
}

/**
 * Turns one long-poll answer (`{"topic","messages":[{seq,data}],"next","reset"}`) into events in order: a reset
 * first when the server flagged one (its seq is the one just before the first message returned, or `next` when
 * none was), then the messages.
 * @param {any} body
 * @returns {{ events: Array<{ kind: 'reset', seq: number } | { kind: 'msg', seq: number, data: unknown }>, next: number | undefined }}
 */
export function pollEvents(body) {
  /** @type {Array<{ kind: 'reset', seq: number } | { kind: 'msg', seq: number, data: unknown }>} */
  const events = [];
  const messages = Array.isArray(body?.messages) ? body.messages.filter((m) => Number.isSafeInteger(m?.seq)) : [];
  const next = Number.isSafeInteger(body?.next) ? body.next : undefined;
  if (body?.reset === true) {
    const seq = messages.length ? messages[0].seq - 1 : next;
    if (seq !== undefined) events.push({ kind: 'reset', seq });
  }
  for (const m of messages) events.push({ kind: 'msg', seq: m.seq, data: m.data });
  return { events, next };
}
