//! Owns the `echo` and `churn` workloads: WebSocket connections keeping a window of masked messages in flight (or
//! sending at a fixed rate) and timing each round trip; and connect-exchange-close cycles.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ringcast_protocol::ws::{Message, OpCode};

use crate::cli::{ChurnArgs, EchoArgs};
use crate::net::{Conn, MaskRng, Sources, connect, failure_reason, ws_decoder};
use crate::run::ThreadCtx;
use crate::stats::Tally;

/// How long to wait for outstanding echoes after the run.
const DRAIN: Duration = Duration::from_secs(2);

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

/// One echo connection's run: window (or rate) sends, FIFO round-trip timing, drain at the end.
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
    let payload = vec![b'x'; args.size];
    let window = args.window.max(1);
    let mut rng = MaskRng::new(seed);
    let mut dec = ws_decoder();
    let mut times: VecDeque<Instant> = VecDeque::with_capacity(window);
    let mut pongs: Vec<Vec<u8>> = Vec::new();
    let interval = (per_conn_rate > 0.0).then(|| Duration::from_secs_f64(1.0 / per_conn_rate));
    // Stagger fixed-rate connections over one interval.
    let mut next_send =
        start + interval.map_or(Duration::ZERO, |iv| iv.mul_f64((seed % 997) as f64 / 997.0));
    let mut to_send = if interval.is_none() { window } else { 0 };
    loop {
        let now = Instant::now();
        if now < deadline {
            if let Some(iv) = interval {
                if times.is_empty() && next_send > now {
                    monoio::time::sleep(next_send - now).await;
                }
                let now = Instant::now();
                while next_send <= now && times.len() + to_send < window {
                    to_send += 1;
                    next_send += iv;
                }
            }
            if to_send > 0 {
                let now = Instant::now();
                for _ in 0..to_send {
                    conn.push_frame(op, &payload, &mut rng);
                    times.push_back(now);
                }
                ctx.control
                    .sent
                    .fetch_add(to_send as u64, Ordering::Relaxed);
                tally.borrow_mut().sent += to_send as u64;
                to_send = 0;
            }
        } else if times.is_empty() {
            break;
        }
        for p in pongs.drain(..) {
            conn.push_frame(OpCode::Pong, &p, &mut rng);
        }
        conn.flush().await?;
        if times.is_empty() {
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
        let got = decode_all(&mut conn, &mut dec, &mut pongs)?;
        if got > times.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "unsolicited_message",
            ));
        }
        let now = Instant::now();
        let mut t = tally.borrow_mut();
        for _ in 0..got {
            if let Some(sent_at) = times.pop_front() {
                t.latency
                    .record_us(now.duration_since(sent_at).as_micros() as u64);
            }
        }
        t.received += got as u64;
        t.bytes += (got * args.size) as u64;
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
