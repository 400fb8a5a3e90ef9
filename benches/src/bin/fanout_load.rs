//! `fanout_load`: N WebSocket subscribers on one topic, one publisher over a keep-alive HTTP connection at a fixed
//! rate; reports deliveries per second, publish-to-receive latency (hdrhistogram: p50, p90, p99, p99.9, max) and
//! checks that every subscriber got every seq in order.
//!
//! Usage: `fanout_load ADDR [subscribers=10000] [rate_per_sec=100] [seconds=10] [topic=bench.fanout]`
//! Subscribers connect from 127.0.0.2.. (20,000 per source address). The process needs `ulimit -n` above the
//! subscriber count.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn masked_text(payload: &[u8]) -> Vec<u8> {
    let mask = [3u8, 5, 7, 11];
    let mut f = vec![0x81, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

fn field(json: &[u8], name: &[u8]) -> Option<u64> {
    let pos = json.windows(name.len()).position(|w| w == name)? + name.len();
    let digits = json[pos..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&json[pos..pos + digits])
        .ok()?
        .parse()
        .ok()
}

#[derive(Default)]
struct Tally {
    delivered: u64,
    lost: u64,
    dup_or_reordered: u64,
    failed: u64,
}

async fn read_head(s: &mut TcpStream) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(b[0]);
    }
    Ok(())
}

async fn subscriber(
    addr: SocketAddr,
    i: usize,
    topic: String,
    hist: Rc<RefCell<Histogram<u64>>>,
    tally: Rc<RefCell<Tally>>,
    ready: Rc<RefCell<usize>>,
    stop: Instant,
) -> std::io::Result<()> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::from(([127, 0, 0, 2 + (i / 20_000) as u8], 0)))?;
    let mut s = sock.connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(UPGRADE.as_bytes()).await?;
    read_head(&mut s).await?;
    let sub = format!(r#"{{"op":"sub","topic":"{topic}","id":1}}"#);
    s.write_all(&masked_text(sub.as_bytes())).await?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut have = 0usize;
    let mut last_seq = 0u64;
    let mut acked = false;
    loop {
        let n = match tokio::time::timeout_at(stop.into(), s.read(&mut buf[have..])).await {
            Ok(r) => r?,
            Err(_) => return Ok(()),
        };
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        have += n;
        let mut pos = 0;
        loop {
            if have - pos < 2 {
                break;
            }
            let len7 = (buf[pos + 1] & 0x7f) as usize;
            let (hl, len) = match len7 {
                126 if have - pos >= 4 => {
                    (4, u16::from_be_bytes([buf[pos + 2], buf[pos + 3]]) as usize)
                }
                126 => break,
                127 => return Err(std::io::ErrorKind::InvalidData.into()),
                l => (2, l),
            };
            if have - pos < hl + len {
                break;
            }
            let payload = &buf[pos + hl..pos + hl + len];
            if let (Some(seq), Some(t)) = (field(payload, b"\"seq\":"), field(payload, b"\"t\":")) {
                let lat = now_ns().saturating_sub(t);
                let _ = hist.borrow_mut().record(lat / 1000);
                let mut tl = tally.borrow_mut();
                tl.delivered += 1;
                if last_seq != 0 && seq > last_seq + 1 {
                    tl.lost += seq - last_seq - 1;
                } else if last_seq != 0 && seq <= last_seq {
                    tl.dup_or_reordered += 1;
                }
                last_seq = seq;
            } else if !acked {
                acked = true;
                *ready.borrow_mut() += 1;
            }
            pos += hl + len;
        }
        buf.copy_within(pos..have, 0);
        have -= pos;
        if have == buf.len() {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    }
}

async fn publisher(
    addr: SocketAddr,
    topic: String,
    rate: u64,
    seconds: u64,
) -> std::io::Result<u64> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let mut next = Instant::now();
    let end = next + Duration::from_secs(seconds);
    let mut sent = 0u64;
    let mut buf = vec![0u8; 4096];
    while Instant::now() < end {
        let body = format!(r#"{{"t":{},"i":{sent}}}"#, now_ns());
        let req = format!(
            "POST /publish/{topic} HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await?;
        // Read the 200 answer (head + small JSON body) before the next publish.
        let mut got = Vec::new();
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            got.extend_from_slice(&buf[..n]);
            if got.ends_with(b"}") && got.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        sent += 1;
        next += interval;
        let now = Instant::now();
        if next > now {
            tokio::time::sleep(next - now).await;
        }
    }
    Ok(sent)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(addr) = args.get(1).and_then(|a| a.parse::<SocketAddr>().ok()) else {
        eprintln!(
            "usage: fanout_load ADDR [subscribers=10000] [rate_per_sec=100] [seconds=10] [topic=bench.fanout]"
        );
        std::process::exit(2);
    };
    let arg = |i: usize, d: u64| args.get(i).and_then(|v| v.parse().ok()).unwrap_or(d);
    let (subs, rate, secs) = (arg(2, 10_000) as usize, arg(3, 100), arg(4, 10));
    let topic = args
        .get(5)
        .cloned()
        .unwrap_or_else(|| "bench.fanout".into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let hist = Rc::new(RefCell::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram")));
        let tally = Rc::new(RefCell::new(Tally::default()));
        let ready = Rc::new(RefCell::new(0usize));
        let stop = Instant::now() + Duration::from_secs(secs + 60);
        let mut tasks = Vec::new();
        for i in 0..subs {
            let (h, t, r, tp) = (hist.clone(), tally.clone(), ready.clone(), topic.clone());
            let tally2 = tally.clone();
            tasks.push(tokio::task::spawn_local(async move {
                if subscriber(addr, i, tp, h, t, r, stop).await.is_err() {
                    tally2.borrow_mut().failed += 1;
                }
            }));
            if i % 500 == 499 {
                tokio::task::yield_now().await;
            }
        }
        let wait_start = Instant::now();
        while *ready.borrow() + tally.borrow().failed as usize <= subs.saturating_sub(1) {
            if wait_start.elapsed() > Duration::from_secs(60) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let subscribed = *ready.borrow();
        eprintln!("fanout_load: {subscribed} subscribers ready in {:.1} s", wait_start.elapsed().as_secs_f64());
        let start = Instant::now();
        let sent = publisher(addr, topic.clone(), rate, secs).await.unwrap_or(0);
        // Let the last deliveries arrive.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let elapsed = start.elapsed().as_secs_f64();
        let h = hist.borrow();
        let t = tally.borrow();
        println!(
            "fanout_load: {subscribed} subscribers, {sent} messages published at {rate}/s for {secs} s: {} deliveries ({:.0}/s of {} expected), latency us p50 {} p90 {} p99 {} p99.9 {} max {}; lost {} dup/reordered {} failed connections {}",
            t.delivered,
            t.delivered as f64 / elapsed,
            sent * subscribed as u64,
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.9),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
            t.lost,
            t.dup_or_reordered,
            t.failed
        );
        std::process::exit(0);
    });
}
