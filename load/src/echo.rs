//! Owns the `echo` and `churn` workloads: WebSocket connections keeping a window of masked messages in flight (or
//! sending at a fixed rate) and timing each round trip; and connect-exchange-close cycles.
//!
//! The echo client is built to cost as little per message as possible, so that one core of it can drive a server
//! harder than the server's own core can answer:
//! - each connection encodes its window of masked frames **once** (every frame with its own masking key) and sends
//!   the first `k` of them with one write whenever `k` echoes came back. The same frames, masking keys included,
//!   are therefore sent again and again. RFC 6455 asks a client for a fresh unpredictable key per frame to protect
//!   intermediaries' caches from crafted payloads; a load generator talking to a server under test has no such
//!   intermediary, and the server's work (unmasking every byte) is the same for a reused key;
//! - echoes are counted from frame headers only: data payloads are skipped where they lie in the read buffer, never
//!   copied, unmasked or validated (a wrong echo is the server's business; its size is still counted);
//! - round trips are timed per send batch: a FIFO of `(written at, messages)`, one clock read per read or write
//!   and one histogram update per batch, not per message.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use monoio::buf::IoBuf;
use monoio::io::AsyncWriteRentExt;
use ringcast_protocol::ws::{MAX_CONTROL_PAYLOAD, Message, OpCode, encode_client_frame};

use crate::cli::{ChurnArgs, EchoArgs};
use crate::net::{Conn, MaskRng, Sources, connect, failure_reason, ws_decoder};
use crate::run::ThreadCtx;
use crate::stats::Tally;

/// How long to wait for outstanding echoes after the run.
const DRAIN: Duration = Duration::from_secs(2);

/// The latency histogram's upper bound in µs (as in `stats`); larger round trips are clamped to it.
const MAX_US: u64 = 60_000_000;

fn sources(ctx: &ThreadCtx) -> Sources {
    Sources {
        base: ctx.common.source_base,
        count: ctx.common.source_addrs,
    }
}

/// Connects and upgrades connection `i` on `path`.
async fn open_ws(ctx: &ThreadCtx, i: usize, path: &str) -> io::Result<Conn> {
    let s = connect(ctx.common.target, sources(ctx).for_index(i as u64)).await?;
    let mut c = Conn::new(s, 16 * 1024);
    c.ws_upgrade(path).await?;
    Ok(c)
}

/// Decodes every whole message in the connection's input: counts data messages, answers pings, fails on close.
fn decode_all(
    conn: &mut Conn,
    dec: &mut ringcast_protocol::ws::Decoder<ringcast_protocol::ws::Client>,
    pongs: &mut Vec<Vec<u8>>,
) -> io::Result<usize> {
    let mut got = 0;
    let mut closed = false;
    let input = conn.input();
    let len = input.len();
    let mut pos = 0;
    loop {
        let rest = input.get_mut(pos..).unwrap_or_default();
        let (n, msg) = dec
            .decode(rest)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.as_str()))?;
        pos += n;
        match msg {
            Some(Message::Binary(_) | Message::Text(_)) => got += 1,
            Some(Message::Ping(p)) => pongs.push(p.to_vec()),
            Some(Message::Pong(_)) => {}
            Some(Message::Close(_)) => closed = true,
            None => break,
        }
    }
    conn.consume(len);
    if closed {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "closed_by_server",
        ));
    }
    Ok(got)
}

/// A connection's window of masked frames, encoded once (see the module docs on reusing masking keys).
struct Window {
    /// `frames` whole client frames of identical length back to back, so any prefix of whole frames is valid.
    bytes: Vec<u8>,
    /// Length of one frame (header + masking key + payload).
    frame: usize,
}

impl Window {
    /// Encodes `count` frames of `opcode` carrying `payload`, each with its own masking key from `rng`.
    fn new(opcode: OpCode, payload: &[u8], count: usize, rng: &mut MaskRng) -> Window {
        let mut bytes = Vec::new();
        for _ in 0..count {
            encode_client_frame(&mut bytes, true, opcode, payload, rng);
        }
        let frame = bytes.len() / count.max(1);
        Window { bytes, frame }
    }
}

/// What [`EchoScan::scan`] found in a batch of input.
#[derive(Debug, Default, PartialEq, Eq)]
struct Scanned {
    /// Input bytes consumed (the rest is an incomplete header or control frame, to be read again with more input).
    consumed: usize,
    /// Whole data messages that ended in this batch.
    messages: usize,
    /// Data payload bytes in this batch.
    payload: u64,
}

/// Counts echoed messages by reading frame headers only: data payloads are skipped in place (never copied or
/// decoded, and one may span reads), pings are answered, a close or a malformed header fails the connection.
#[derive(Debug, Default)]
struct EchoScan {
    /// Payload bytes of the current data frame not yet seen.
    skip: u64,
    /// The current data frame is the last of its message.
    fin: bool,
    /// A fragmented data message is open.
    open: bool,
}

fn bad(reason: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason)
}

impl EchoScan {
    /// Scans `input`; appends the payload of every ping (to be answered with a pong) to `pings`.
    ///
    /// # Errors
    /// `closed_by_server` on a close frame, `protocol_error` on a header a server must not send.
    fn scan(&mut self, input: &[u8], pings: &mut Vec<Vec<u8>>) -> io::Result<Scanned> {
        let mut out = Scanned::default();
        let mut pos = 0usize;
        loop {
            if self.skip > 0 {
                let avail = (input.len() - pos) as u64;
                let n = self.skip.min(avail);
                self.skip -= n;
                out.payload += n;
                pos += n as usize;
                if self.skip > 0 {
                    break;
                }
                if self.fin {
                    out.messages += 1;
                    self.fin = false;
                }
            }
            let rest = input.get(pos..).unwrap_or_default();
            let (&b0, &b1) = match (rest.first(), rest.get(1)) {
                (Some(a), Some(b)) => (a, b),
                _ => break,
            };
            if b0 & 0x70 != 0 || b1 & 0x80 != 0 {
                return Err(bad("protocol_error"));
            }
            let fin = b0 & 0x80 != 0;
            let (len, hlen) = match b1 & 0x7f {
                126 => match rest.get(2..4) {
                    Some(&[a, b]) => (u64::from(u16::from_be_bytes([a, b])), 4),
                    _ => break,
                },
                127 => match rest.get(2..10).and_then(|s| <[u8; 8]>::try_from(s).ok()) {
                    Some(b) => (u64::from_be_bytes(b), 10),
                    None => break,
                },
                n => (u64::from(n), 2),
            };
            match OpCode::from_u8(b0 & 0x0f) {
                Some(OpCode::Binary | OpCode::Text) if !self.open => {
                    self.open = !fin;
                }
                Some(OpCode::Continuation) if self.open => {
                    self.open = !fin;
                }
                Some(OpCode::Ping) if fin && len <= MAX_CONTROL_PAYLOAD as u64 => {
                    let end = hlen + len as usize;
                    let Some(p) = rest.get(hlen..end) else { break };
                    pings.push(p.to_vec());
                    pos += end;
                    continue;
                }
                Some(OpCode::Pong) if fin && len <= MAX_CONTROL_PAYLOAD as u64 => {
                    let end = hlen + len as usize;
                    if rest.len() < end {
                        break;
                    }
                    pos += end;
                    continue;
                }
                Some(OpCode::Close) => return Err(bad("closed_by_server")),
                _ => return Err(bad("protocol_error")),
            }
            pos += hlen;
            self.fin = fin;
            self.skip = len;
            if len == 0 && fin {
                out.messages += 1;
                self.fin = false;
            }
        }
        out.consumed = pos;
        Ok(out)
    }
}

/// One echo connection's run: window (or rate) sends of pre-encoded frames, round trips timed per send batch
/// (a FIFO of `(sent at, messages)`), echoes counted from frame headers, drain at the end.
#[allow(clippy::too_many_arguments)]
async fn echo_conn(
    mut conn: Conn,
    args: Rc<EchoArgs>,
    per_conn_rate: f64,
    start: Instant,
    deadline: Instant,
    tally: Rc<RefCell<Tally>>,
    ctx: Rc<ThreadCtx>,
    seed: u64,
) -> io::Result<()> {
    let op = if args.text {
        OpCode::Text
    } else {
        OpCode::Binary
    };
    let window = args.window.max(1);
    let mut rng = MaskRng::new(seed);
    let mut frames = Window::new(op, &vec![b'x'; args.size], window, &mut rng);
    let mut scan = EchoScan::default();
    // Send batches not yet fully echoed: when each was written and how many of its messages are still out.
    let mut batches: VecDeque<(Instant, usize)> = VecDeque::with_capacity(window);
    let mut in_flight = 0usize;
    let mut pings: Vec<Vec<u8>> = Vec::new();
    let interval = (per_conn_rate > 0.0).then(|| Duration::from_secs_f64(1.0 / per_conn_rate));
    // Stagger fixed-rate connections over one interval.
    let mut next_send =
        start + interval.map_or(Duration::ZERO, |iv| iv.mul_f64((seed % 997) as f64 / 997.0));
    let mut to_send = if interval.is_none() { window } else { 0 };
    loop {
        let now = Instant::now();
        if now < deadline {
            if let Some(iv) = interval {
                if in_flight == 0 && next_send > now {
                    monoio::time::sleep(next_send - now).await;
                }
                let now = Instant::now();
                while next_send <= now && in_flight + to_send < window {
                    to_send += 1;
                    next_send += iv;
                }
            }
        } else {
            to_send = 0;
            if in_flight == 0 {
                break;
            }
        }
        for p in pings.drain(..) {
            conn.push_frame(OpCode::Pong, &p, &mut rng);
        }
        conn.flush().await?;
        if to_send > 0 {
            let len = to_send * frames.frame;
            let (res, slice) = conn.stream.write_all(frames.bytes.slice(0..len)).await;
            frames.bytes = slice.into_inner();
            res?;
            batches.push_back((Instant::now(), to_send));
            in_flight += to_send;
            ctx.control
                .sent
                .fetch_add(to_send as u64, Ordering::Relaxed);
            tally.borrow_mut().sent += to_send as u64;
            to_send = 0;
        }
        if in_flight == 0 {
            continue;
        }
        if now >= deadline {
            let left = (deadline + DRAIN).saturating_duration_since(now);
            match monoio::time::timeout(left, conn.fill()).await {
                Ok(r) => r?,
                Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "drain_timeout")),
            };
        } else {
            conn.fill().await?;
        }
        let s = scan.scan(conn.input(), &mut pings)?;
        conn.consume(s.consumed);
        let got = s.messages;
        if got > in_flight {
            return Err(bad("unsolicited_message"));
        }
        in_flight -= got;
        let now = Instant::now();
        let mut t = tally.borrow_mut();
        let mut left = got;
        while left > 0 {
            let Some(front) = batches.front_mut() else {
                break;
            };
            let n = left.min(front.1);
            let us = (now.duration_since(front.0).as_micros() as u64).clamp(1, MAX_US);
            let _ = t.latency.0.record_n(us, n as u64);
            left -= n;
            front.1 -= n;
            if front.1 == 0 {
                batches.pop_front();
            }
        }
        t.received += got as u64;
        t.bytes += s.payload;
        drop(t);
        ctx.control
            .received
            .fetch_add(got as u64, Ordering::Relaxed);
        if interval.is_none() && now < deadline {
            to_send = got;
        }
    }
    conn.push_frame(OpCode::Close, &1000u16.to_be_bytes(), &mut rng);
    let _ = conn.flush().await;
    Ok(())
}

/// One reactor thread of `echo`: connect its share, report ready, run until the deadline after the go signal.
pub async fn echo_thread(ctx: ThreadCtx, args: EchoArgs) -> Tally {
    let ctx = Rc::new(ctx);
    let args = Rc::new(args);
    let tally = Rc::new(RefCell::new(Tally::default()));
    let mine: Vec<usize> = ctx.share(args.connections).collect();
    let t0 = Instant::now();
    let mut pending = Vec::new();
    for &i in &mine {
        let (ctx2, path) = (ctx.clone(), args.path.clone());
        pending.push((
            i,
            monoio::spawn(async move { open_ws(&ctx2, i, &path).await }),
        ));
    }
    let mut conns = Vec::new();
    for (i, h) in pending {
        let r = h.await;
        let mut t = tally.borrow_mut();
        t.attempted += 1;
        match r {
            Ok(c) => {
                t.established += 1;
                ctx.control.established.fetch_add(1, Ordering::Relaxed);
                conns.push((i, c));
            }
            Err(e) => {
                t.fail(&failure_reason(&e));
                ctx.control.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    tally.borrow_mut().connect_secs = t0.elapsed().as_secs_f64();
    ctx.control.set_ready();
    ctx.control.wait_go().await;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.duration);
    let per_conn_rate = if args.rate > 0 && !conns.is_empty() {
        ctx.rate_share(args.rate) / conns.len() as f64
    } else {
        0.0
    };
    let done = Rc::new(RefCell::new(0usize));
    let n = conns.len();
    for (i, c) in conns {
        let (a, t, cx, d) = (args.clone(), tally.clone(), ctx.clone(), done.clone());
        monoio::spawn(async move {
            let r = echo_conn(
                c,
                a,
                per_conn_rate,
                start,
                deadline,
                t.clone(),
                cx,
                i as u64 + 1,
            )
            .await;
            if let Err(e) = r {
                t.borrow_mut().error(&failure_reason(&e));
            }
            *d.borrow_mut() += 1;
        });
    }
    while *done.borrow() < n {
        if Instant::now() > deadline + DRAIN + Duration::from_secs(1) {
            let stalled = n - *done.borrow();
            let mut t = tally.borrow_mut();
            for _ in 0..stalled {
                t.error("stalled");
            }
            break;
        }
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    tally.borrow().clone()
}

/// One connect-exchange-close cycle; returns its duration.
async fn churn_once(
    ctx: &ThreadCtx,
    i: usize,
    path: &str,
    rng: &mut MaskRng,
) -> io::Result<Duration> {
    let t0 = Instant::now();
    let mut c = open_ws(ctx, i, path).await?;
    let mut dec = ws_decoder();
    let mut pongs: Vec<Vec<u8>> = Vec::new();
    c.push_frame(OpCode::Binary, &[b'c'; 32], rng);
    c.flush().await?;
    let mut got = 0;
    while got == 0 {
        c.fill().await?;
        got = decode_all(&mut c, &mut dec, &mut pongs)?;
    }
    c.push_frame(OpCode::Close, &1000u16.to_be_bytes(), rng);
    c.flush().await?;
    // Wait for the server's close frame and its FIN, so the server closes first (its side keeps TIME_WAIT).
    while c.fill().await.is_ok() {
        if decode_all(&mut c, &mut dec, &mut pongs).is_err() {
            break;
        }
    }
    Ok(t0.elapsed())
}

/// One reactor thread of `churn`.
pub async fn churn_thread(ctx: ThreadCtx, args: ChurnArgs) -> Tally {
    let ctx = Rc::new(ctx);
    let tally = Rc::new(RefCell::new(Tally::default()));
    ctx.control.set_ready();
    ctx.control.wait_go().await;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.duration);
    let rate = ctx.rate_share(args.rate);
    let interval = (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate));
    let next_slot = Rc::new(RefCell::new(start));
    let counter = Rc::new(RefCell::new(0usize));
    let done = Rc::new(RefCell::new(0usize));
    let workers = args.concurrency.max(1);
    for w in 0..workers {
        let (cx, t, slot, cnt, d, path) = (
            ctx.clone(),
            tally.clone(),
            next_slot.clone(),
            counter.clone(),
            done.clone(),
            args.path.clone(),
        );
        monoio::spawn(async move {
            let mut rng = MaskRng::new(w as u64 + 7);
            loop {
                if let Some(iv) = interval {
                    let at = {
                        let mut s = slot.borrow_mut();
                        let at = *s;
                        *s += iv;
                        at
                    };
                    let now = Instant::now();
                    if at > now {
                        monoio::time::sleep(at - now).await;
                    }
                }
                if Instant::now() >= deadline {
                    break;
                }
                let i = {
                    let mut c = cnt.borrow_mut();
                    *c += 1;
                    cx.global + (*c - 1) * cx.total
                };
                let r = churn_once(&cx, i, &path, &mut rng).await;
                let mut t = t.borrow_mut();
                t.attempted += 1;
                match r {
                    Ok(d) => {
                        t.established += 1;
                        t.handshakes += 1;
                        t.latency.record_us(d.as_micros() as u64);
                        cx.control.established.fetch_add(1, Ordering::Relaxed);
                        cx.control.received.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        t.fail(&failure_reason(&e));
                        cx.control.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            *d.borrow_mut() += 1;
        });
    }
    while *done.borrow() < workers && Instant::now() < deadline + Duration::from_secs(5) {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    tally.borrow().clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringcast_protocol::ws::encode_server_frame;

    fn frame(op: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_server_frame(&mut v, fin, op, payload);
        v
    }

    /// Feeds `stream` to a scanner in chunks of `step` bytes (keeping what it did not consume, as the connection
    /// does); returns messages, payload bytes and pings.
    fn scan_in_chunks(stream: &[u8], step: usize) -> io::Result<(usize, u64, Vec<Vec<u8>>)> {
        let mut scan = EchoScan::default();
        let mut pings = Vec::new();
        let (mut msgs, mut bytes) = (0, 0);
        let mut buf: Vec<u8> = Vec::new();
        for chunk in stream.chunks(step) {
            buf.extend_from_slice(chunk);
            let s = scan.scan(&buf, &mut pings)?;
            buf.drain(..s.consumed);
            msgs += s.messages;
            bytes += s.payload;
        }
        assert!(buf.is_empty(), "{} bytes left unconsumed", buf.len());
        Ok((msgs, bytes, pings))
    }

    #[test]
    fn counts_messages_across_any_split() {
        let mut stream = Vec::new();
        stream.extend(frame(OpCode::Binary, true, &[7; 32]));
        stream.extend(frame(OpCode::Ping, true, b"hi"));
        stream.extend(frame(OpCode::Binary, true, &[1; 300])); // 16-bit length
        stream.extend(frame(OpCode::Text, false, b"ab")); // fragmented: counted once, at its end
        stream.extend(frame(OpCode::Pong, true, b""));
        stream.extend(frame(OpCode::Continuation, true, b"cd"));
        stream.extend(frame(OpCode::Binary, true, &[2; 70_000])); // 64-bit length
        stream.extend(frame(OpCode::Binary, true, b"")); // empty message
        for step in [1, 2, 3, 7, 64, 4096, stream.len()] {
            let (msgs, bytes, pings) = scan_in_chunks(&stream, step).unwrap();
            assert_eq!(msgs, 5, "step {step}");
            assert_eq!(bytes, 32 + 300 + 4 + 70_000, "step {step}");
            assert_eq!(pings, vec![b"hi".to_vec()], "step {step}");
        }
    }

    #[test]
    fn close_and_bad_headers_fail() {
        let close = frame(OpCode::Close, true, &1000u16.to_be_bytes());
        let e = scan_in_chunks(&close, 5).unwrap_err();
        assert_eq!(failure_reason(&e), "closed_by_server");
        let mut masked = frame(OpCode::Binary, true, b"x");
        masked[1] |= 0x80;
        assert_eq!(
            failure_reason(&scan_in_chunks(&masked, 9).unwrap_err()),
            "protocol_error"
        );
        let stray = frame(OpCode::Continuation, true, b"x");
        assert!(scan_in_chunks(&stray, 9).is_err());
    }

    #[test]
    fn window_frames_are_whole_masked_client_frames() {
        let mut rng = MaskRng::new(3);
        let w = Window::new(OpCode::Binary, &[b'x'; 32], 4, &mut rng);
        assert_eq!((w.frame, w.bytes.len()), (38, 4 * 38));
        let mut dec = ringcast_protocol::ws::Decoder::<ringcast_protocol::ws::Server>::new(
            Default::default(),
        );
        let mut buf = w.bytes.clone();
        let mut pos = 0;
        let mut n = 0;
        while let (used, Some(m)) = dec.decode(&mut buf[pos..]).unwrap() {
            pos += used;
            assert_eq!(m, Message::Binary(&[b'x'; 32][..]));
            n += 1;
        }
        assert_eq!(n, 4);
    }
}
