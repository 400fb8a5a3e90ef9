// ringcast.js: the browser client for a ringcast server (wire protocol v1). An ES module with no dependencies and
// no build step, served by the server at /ringcast.js (it imports ./ringcast-core.js, served beside it).
//
//   import { connect } from '/ringcast.js';
//   const rc = connect('http://127.0.0.1:8080');            // or connect() on a page the server serves
//   const stop = rc.subscribe('prices', (data, m) => console.log(m.seq, data));
//   await rc.publish('chat', { text: 'hi' });                 // resolves to { topic, seq }
//   rc.on('state', (s) => console.log(s.state, s.transport));
//   rc.on('reset', (r) => console.log('resync', r.topic, 'from', r.seq));
//
// Transports, best first: WebSocket (one connection for every topic), Server-Sent Events (one stream per topic)
// and long polling (one request per topic in flight). The client falls back to the next one when the current one
// fails to open, or is cut soon after opening, twice in a row while the server is reachable (a proxy that blocks
// WebSocket, say), and tries the best one again later. It reconnects with capped exponential backoff and jitter,
// resubscribes every topic from the last seq it delivered on whatever transport it lands on, drops duplicates by
// seq, and surfaces a server reset (history no longer covers the resume point, or the server restarted and the
// topic is behind the cursor) to the application as a `reset` event, after which the topic continues from the
// server's seq.

import {
  TopicCursor,
  TransportPlanner,
  backoffDelay,
  endpoints,
  parseServerFrame,
  parseTransports,
  pollEvents,
} from './ringcast-core.js';

export { TopicCursor, TransportPlanner, backoffDelay, parseTransports } from './ringcast-core.js';

/** @typedef {import('./ringcast-core.js').TransportName} TransportName */
/** @typedef {import('./ringcast-core.js').BackoffOptions} BackoffOptions */

/**
 * @typedef {object} ConnectOptions
 * @property {string} [token]  credential: sent as `Authorization: Bearer` on HTTP requests and as `?token=` on
 *   WebSocket and SSE URLs (where browsers can't set headers)
 * @property {readonly TransportName[] | string} [transports]  allowed transports in order of preference
 *   (default `['ws', 'sse', 'poll']`; one name forces that transport)
 * @property {BackoffOptions} [backoff]  reconnection backoff
 * @property {number} [failuresBeforeFallback]  see TransportPlanner (default 2)
 * @property {number} [shortLivedMs]  see TransportPlanner (default 5000)
 * @property {number} [retryBetterMs]  see TransportPlanner (default 30000)
 * @property {number} [pollTimeout]  long-poll wait in seconds (default 25)
 */

/**
 * @typedef {object} MessageMeta
 * @property {string} topic
 * @property {number} seq
 * @property {TransportName} transport  the transport it arrived on
 */

/** @typedef {'connecting' | 'open' | 'reconnecting' | 'closed'} ConnectionState */

/**
 * @typedef {object} StateEvent
 * @property {ConnectionState} state
 * @property {TransportName | null} transport
 * @property {number} [retryInMs]  when reconnecting: the wait before the next attempt
 * @property {boolean} [fellBack]  when reconnecting: the client moved to a worse transport
 */

/**
 * @typedef {object} ResetEvent
 * @property {string} topic
 * @property {number} seq  the server's seq for the topic: later messages continue from seq + 1
 * @property {number} epoch  resets seen on this topic so far
 */

/**
 * Connects to a ringcast server.
 * @param {string} [url]  the server's base URL (http(s):// or ws(s)://); default: the page's origin
 * @param {ConnectOptions} [options]
 * @returns {RingcastClient}
 */
export function connect(url, options = {}) {
  return new RingcastClient(url, options);
}

/** A ringcast connection that survives transport failures and server restarts. */
export class RingcastClient {
  /**
   * @param {string} [url]
   * @param {ConnectOptions} [options]
   */
  constructor(url, options = {}) {
    const base = url ?? globalThis.location?.origin;
    if (!base) throw new Error('ringcast: connect() needs a URL outside a page');
    this.options = options;
    this.endpoints = endpoints(base, options.token);
    /** @type {Map<string, { cursor: TopicCursor, handlers: Set<(data: unknown, meta: MessageMeta) => void> }>} */
    this.topics = new Map();
    /** @type {Map<string, Set<(ev: any) => void>>} */
    this.listeners = new Map();
    this.planner = new TransportPlanner(parseTransports(options.transports), options);
    /** @type {ConnectionState} */
    this.state = 'connecting';
    /** @type {WsTransport | SseTransport | PollTransport | null} */
    this.active = null;
    this.attempt = 0;
    this.closedByUser = false;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.retryTimer = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.betterTimer = null;
    this.open();
  }

  /** The transport in use (or being opened), null when none. @returns {TransportName | null} */
  get transport() {
    return this.active ? this.active.name : null;
  }

  /**
   * Listens to `state` ({@link StateEvent}), `reset` ({@link ResetEvent}) or `error` ({ message, code? }) events.
   * @param {'state' | 'reset' | 'error'} event
   * @param {(ev: any) => void} fn
   * @returns {() => void} removes the listener
   */
  on(event, fn) {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }

  /**
   * Subscribes to `topic`. `onMessage(data, {topic, seq, transport})` gets every message once, in seq order.
   * With `since`, messages after that seq are replayed first (as far as the server's history reaches).
   * @param {string} topic
   * @param {(data: unknown, meta: MessageMeta) => void} onMessage
   * @param {{ since?: number }} [options]
   * @returns {() => void} unsubscribes this handler (the topic is left when it was the last one)
   */
  subscribe(topic, onMessage, options = {}) {
    let entry = this.topics.get(topic);
    if (!entry) {
      entry = { cursor: new TopicCursor(options.since ?? null), handlers: new Set() };
      this.topics.set(topic, entry);
      entry.handlers.add(onMessage);
      this.active?.subscribe(topic);
    } else {
      entry.handlers.add(onMessage);
    }
    const e = entry;
    return () => {
      e.handlers.delete(onMessage);
      if (e.handlers.size === 0 && this.topics.get(topic) === e) {
        this.topics.delete(topic);
        this.active?.unsubscribe(topic);
      }
    };
  }

  /**
   * Publishes `data` (any JSON value) on `topic`: over the WebSocket when that is the open transport, else with
   * `POST /publish/{topic}`.
   * @param {string} topic
   * @param {unknown} data
   * @returns {Promise<{ topic: string, seq: number }>}
   */
  async publish(topic, data) {
    const viaWs = this.active instanceof WsTransport ? this.active.publish(topic, data) : null;
    if (viaWs) return viaWs;
    const res = await fetch(this.endpoints.publish(topic), {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...this.authHeaders() },
      body: JSON.stringify(data ?? null),
    });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(`ringcast: publish failed (${res.status}): ${body.message ?? res.statusText}`);
    return { topic: body.topic ?? topic, seq: body.seq };
  }

  /**
   * The client's view of a topic: last seq delivered, resets seen, duplicates dropped, messages delivered.
   * @param {string} topic
   */
  cursor(topic) {
    const c = this.topics.get(topic)?.cursor;
    return c ? { seq: c.seq, epoch: c.epoch, duplicates: c.duplicates, delivered: c.delivered } : null;
  }

  /** Closes the connection for good. */
  close() {
    this.closedByUser = true;
    this.clearTimers();
    const t = this.active;
    this.active = null;
    t?.close();
    this.setState('closed');
  }

  // ---- internals ---------------------------------------------------------------------------------------------

  /** @returns {Record<string, string>} */
  authHeaders() {
    return this.options.token ? { authorization: `Bearer ${this.options.token}` } : {};
  }

  /** @param {string} event @param {any} payload */
  emit(event, payload) {
    for (const fn of this.listeners.get(event) ?? []) {
      try {
        fn(payload);
      } catch (e) {
        if (event !== 'error') this.emit('error', { message: String(e) });
      }
    }
  }

  /** @param {ConnectionState} state @param {Partial<StateEvent>} [extra] */
  setState(state, extra = {}) {
    this.state = state;
    this.emit('state', { state, transport: this.transport, ...extra });
  }

  clearTimers() {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.betterTimer) clearTimeout(this.betterTimer);
    this.retryTimer = this.betterTimer = null;
  }

  open() {
    if (this.closedByUser) return;
    this.retryTimer = null;
    const name = this.planner.current;
    const T = name === 'ws' ? WsTransport : name === 'sse' ? SseTransport : PollTransport;
    this.active = new T(this);
    this.setState(this.state === 'reconnecting' ? 'reconnecting' : 'connecting');
    this.active.open();
  }

  /** A transport reports it is open. @param {object} t */
  opened(t) {
    if (t !== this.active) return;
    this.planner.opened(Date.now());
    this.attempt = 0;
    this.setState('open');
    if (this.planner.index > 0) {
      // On a fallback: try the best transport again later.
      this.betterTimer = setTimeout(() => {
        this.betterTimer = null;
        if (t !== this.active || !this.planner.shouldRetryBetter(Date.now())) return;
        this.planner.retryBetter();
        this.active = null;
        t.close();
        this.open();
      }, this.planner.retryBetterMs);
    }
  }

  /**
   * A transport closed or failed to open.
   * @param {object} t
   */
  async failed(t) {
    if (t !== this.active) return;
    this.active = null;
    /** @type {any} */ (t).close();
    this.clearTimers();
    if (this.closedByUser) return;
    const now = Date.now();
    const p = this.planner;
    const counts = p.openedAt === null || now - p.openedAt < p.shortLivedMs;
    // Only a failure while the server answers says something about the transport.
    const serverReachable = counts ? await this.probe() : true;
    if (this.closedByUser || this.active) return;
    const fellBack = p.closed(now, { serverReachable });
    const delay = backoffDelay(fellBack ? 0 : this.attempt++, this.options.backoff);
    this.setState('reconnecting', { retryInMs: Math.round(delay), fellBack });
    this.retryTimer = setTimeout(() => this.open(), delay);
  }

  /** Does the server answer plain HTTP? @returns {Promise<boolean>} */
  async probe() {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), 2000);
    try {
      await fetch(this.endpoints.health(), { mode: 'no-cors', cache: 'no-store', signal: ctl.signal });
      return true;
    } catch {
      return false;
    } finally {
      clearTimeout(timer);
    }
  }

  /** @param {object} t @param {string} topic @param {number} seq @param {unknown} data */
  deliver(t, topic, seq, data) {
    if (t !== this.active) return;
    const entry = this.topics.get(topic);
    if (!entry || !entry.cursor.accept(seq)) return;
    const meta = { topic, seq, transport: /** @type {any} */ (t).name };
    for (const h of [...entry.handlers]) {
      try {
        h(data, meta);
      } catch (e) {
        this.emit('error', { message: `ringcast: a message handler threw: ${e}` });
      }
    }
  }

  /** @param {object} t @param {string} topic @param {number} seq */
  reset(t, topic, seq) {
    if (t !== this.active) return;
    const entry = this.topics.get(topic);
    if (!entry) return;
    entry.cursor.reset(seq);
    this.emit('reset', { topic, seq, epoch: entry.cursor.epoch });
  }

  /** A subscription made without `since` learns where the topic is. @param {string} topic @param {number} seq */
  learn(topic, seq) {
    const c = this.topics.get(topic)?.cursor;
    if (c && c.seq === null && Number.isSafeInteger(seq)) c.seq = seq;
  }
}

/** WebSocket: one connection, every topic multiplexed with sub/unsub/pub ops. */
class WsTransport {
  /** @param {RingcastClient} client */
  constructor(client) {
    this.client = client;
    /** @type {TransportName} */
    this.name = 'ws';
    /** @type {WebSocket | null} */
    this.ws = null;
    this.isOpen = false;
    this.nextId = 1;
    /** @type {Map<number, { resolve: (v: any) => void, reject: (e: Error) => void, topic: string }>} */
    this.pending = new Map();
  }

  open() {
    const ws = new WebSocket(this.client.endpoints.ws());
    this.ws = ws;
    ws.onopen = () => {
      this.isOpen = true;
      this.client.opened(this);
      for (const topic of this.client.topics.keys()) this.subscribe(topic);
    };
    ws.onmessage = (ev) => this.onFrame(typeof ev.data === 'string' ? ev.data : '');
    ws.onclose = () => this.client.failed(this);
  }

  /** @param {string} text */
  onFrame(text) {
    const f = parseServerFrame(text);
    if (!f) return;
    if (f.type === 'msg') this.client.deliver(this, f.topic, f.seq, f.data);
    else if (f.type === 'reset') this.client.reset(this, f.topic, f.seq);
    else if (f.type === 'ack' || f.type === 'error') {
      const p = f.id !== undefined ? this.pending.get(f.id) : undefined;
      if (p && f.id !== undefined) {
        this.pending.delete(f.id);
        if (f.type === 'ack') p.resolve({ topic: p.topic, seq: f.seq });
        else p.reject(new Error(`ringcast: ${f.code}: ${f.message}`));
      } else if (f.type === 'error') {
        this.client.emit('error', { code: f.code, message: f.message });
      }
    }
  }

  /** @param {object} op */
  send(op) {
    if (!this.isOpen || !this.ws || this.ws.readyState !== 1) return false;
    this.ws.send(JSON.stringify(op));
    return true;
  }

  /** @param {string} topic */
  subscribe(topic) {
    const since = this.client.topics.get(topic)?.cursor.since();
    this.send({ op: 'sub', topic, since, id: this.nextId++ });
  }

  /** @param {string} topic */
  unsubscribe(topic) {
    this.send({ op: 'unsub', topic, id: this.nextId++ });
  }

  /**
   * @param {string} topic @param {unknown} data
   * @returns {Promise<{ topic: string, seq: number }> | null} null when not open (publish over HTTP instead)
   */
  publish(topic, data) {
    if (!this.isOpen) return null;
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, topic });
      if (!this.send({ op: 'pub', topic, data: data ?? null, id })) {
        this.pending.delete(id);
        reject(new Error('ringcast: not connected'));
      }
    });
  }

  close() {
    this.isOpen = false;
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      try {
        ws.close(1000);
      } catch {
        // already closed
      }
    }
    for (const p of this.pending.values()) p.reject(new Error('ringcast: connection lost before the ack'));
    this.pending.clear();
  }
}

/** Server-Sent Events: one EventSource per topic, resumed with `?since=`; the client handles reconnection. */
class SseTransport {
  /** @param {RingcastClient} client */
  constructor(client) {
    this.client = client;
    /** @type {TransportName} */
    this.name = 'sse';
    /** @type {Map<string, EventSource>} */
    this.streams = new Map();
    this.isOpen = false;
    this.closed = false;
  }

  open() {
    for (const topic of this.client.topics.keys()) this.subscribe(topic);
    if (this.streams.size === 0) this.markOpen();
  }

  markOpen() {
    if (this.isOpen || this.closed) return;
    this.isOpen = true;
    this.client.opened(this);
  }

  /** @param {string} topic */
  subscribe(topic) {
    if (this.closed || this.streams.has(topic)) return;
    const since = this.client.topics.get(topic)?.cursor.since();
    const es = new EventSource(this.client.endpoints.sse(topic, since));
    this.streams.set(topic, es);
    es.onopen = () => this.markOpen();
    es.onmessage = (ev) => {
      let data;
      try {
        data = JSON.parse(ev.data);
      } catch {
        data = ev.data;
      }
      this.client.deliver(this, topic, Number(ev.lastEventId), data);
    };
    es.addEventListener('reset', (ev) => {
      let seq;
      try {
        seq = JSON.parse(/** @type {MessageEvent} */ (ev).data).seq;
      } catch {
        seq = Number(/** @type {MessageEvent} */ (ev).lastEventId);
      }
      this.client.reset(this, topic, seq);
    });
    // Any error (refused, cut, server gone): the whole transport reconnects under the client's control, resuming
    // each topic from its cursor; EventSource's own retry would keep a stale Last-Event-ID across a reset.
    es.onerror = () => this.client.failed(this);
  }

  /** @param {string} topic */
  unsubscribe(topic) {
    this.streams.get(topic)?.close();
    this.streams.delete(topic);
  }

  close() {
    this.closed = true;
    for (const es of this.streams.values()) {
      es.onopen = es.onmessage = es.onerror = null;
      es.close();
    }
    this.streams.clear();
  }
}

/** Long polling: per topic, a short poll to resume at once, then long polls; one request in flight per topic. */
class PollTransport {
  /** @param {RingcastClient} client */
  constructor(client) {
    this.client = client;
    /** @type {TransportName} */
    this.name = 'poll';
    /** @type {Map<string, AbortController>} */
    this.loops = new Map();
    this.isOpen = false;
    this.closed = false;
  }

  open() {
    for (const topic of this.client.topics.keys()) this.subscribe(topic);
    if (this.loops.size === 0) this.markOpen();
  }

  markOpen() {
    if (this.isOpen || this.closed) return;
    this.isOpen = true;
    this.client.opened(this);
  }

  /** @param {string} topic */
  subscribe(topic) {
    if (this.closed || this.loops.has(topic)) return;
    const ctl = new AbortController();
    this.loops.set(topic, ctl);
    this.loop(topic, ctl).catch(() => {
      if (!ctl.signal.aborted) this.client.failed(this);
    });
  }

  /** @param {string} topic @param {AbortController} ctl */
  async loop(topic, ctl) {
    const c = this.client;
    const timeout = c.options.pollTimeout ?? 25;
    let first = true;
    while (!ctl.signal.aborted) {
      const since = c.topics.get(topic)?.cursor.since();
      const url = first ? c.endpoints.messages(topic, since) : c.endpoints.poll(topic, since, timeout);
      const res = await fetch(url, { headers: c.authHeaders(), cache: 'no-store', signal: ctl.signal });
      if (!res.ok) throw new Error(`poll answered ${res.status}`);
      const body = await res.json();
      if (ctl.signal.aborted) return;
      first = false;
      this.markOpen();
      const { events, next } = pollEvents(body);
      for (const ev of events) {
        if (ev.kind === 'reset') c.reset(this, topic, ev.seq);
        else c.deliver(this, topic, ev.seq, ev.data);
      }
      if (next !== undefined && c.active === this) c.learn(topic, next);
    }
  }

  /** @param {string} topic */
  unsubscribe(topic) {
    this.loops.get(topic)?.abort();
    this.loops.delete(topic);
  }

  close() {
    this.closed = true;
    for (const ctl of this.loops.values()) ctl.abort();
    this.loops.clear();
  }
}
