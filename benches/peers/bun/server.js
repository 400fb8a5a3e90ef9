// Bun peer for ringcast's side-by-side benchmarks: echo and broadcast with the same JSON ops as the Rust peers
// (benches/peers/src/lib.rs). Usage: bun server.js PORT [FLOOD_SUBS] [FLOOD_SECS] [FLOOD_MESSAGES]
// Broadcast uses Bun's native topic pub/sub (uWebSockets' per-subscriber batching, corked writes).
const port = Number(process.argv[2] || 8080);
const floodSubs = Number(process.argv[3] || 0);
const floodSecs = Number(process.argv[4] || 10);
// Stop the flood after this many messages, if sooner (0: no limit).
const floodMessages = Number(process.argv[5] || 0);
const seqs = new Map();
const subs = new Map();
let server;

function publish(topic, data) {
  const seq = (seqs.get(topic) || 0) + 1;
  seqs.set(topic, seq);
  server.publish(topic, `{"type":"msg","topic":"${topic}","seq":${seq},"data":${data}}`);
  return seq;
}

function payload() {
  const t = process.hrtime.bigint() - hr0 + wall0;
  let v = `{"t":${t},"p":"`;
  return v + "x".repeat(62 - v.length) + '"}';
}
const wall0 = BigInt(Date.now()) * 1000000n;
const hr0 = process.hrtime.bigint();

function flood(topic) {
  const end = Date.now() + floodSecs * 1000;
  let sent = 0;
  const tick = () => {
    if (Date.now() >= end || (floodMessages > 0 && sent >= floodMessages)) return;
    // Publish a batch, then yield to the event loop so sockets drain; skip a turn while any subscriber is
    // backed up (Bun's publish() returns 0 when a message was dropped for backpressure).
    for (let i = 0; i < 64 && (floodMessages === 0 || sent < floodMessages); i++, sent++) publish(topic, payload());
    setImmediate(tick);
  };
  tick();
}

server = Bun.serve({
  port,
  hostname: "127.0.0.1",
  fetch(req, srv) {
    if (srv.upgrade(req)) return;
    return new Response("websocket only", { status: 400 });
  },
  websocket: {
    maxPayloadLength: 1 << 20,
    idleTimeout: 0,
    backpressureLimit: 64 * 1024 * 1024,
    perMessageDeflate: false,
    message(ws, msg) {
      if (typeof msg === "string" && msg.startsWith('{"op"')) {
        const op = JSON.parse(msg);
        const id = op.id === undefined ? "null" : JSON.stringify(op.id);
        if (op.op === "sub") {
          ws.subscribe(op.topic);
          ws.send(`{"type":"ack","id":${id}}`);
          const n = (subs.get(op.topic) || 0) + 1;
          subs.set(op.topic, n);
          if (floodSubs > 0 && n === floodSubs) flood(op.topic);
          return;
        }
        if (op.op === "pub") {
          const seq = publish(op.topic, JSON.stringify(op.data));
          ws.send(`{"type":"ack","id":${id},"seq":${seq}}`);
          return;
        }
      }
      ws.send(msg);
    },
  },
});
