//! Owns the `connect` workload (open N connections at a rate and hold them idle, answering pings and re-polling)
//! and the server memory samples (`/proc/PID/status` RSS, `/proc/net/sockstat` TCP memory).

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ringcast_protocol::ws::{Message, OpCode};

use crate::cli::{ConnectArgs, Transport};
use crate::net::{Conn, MaskRng, Sources, connect, failure_reason, ws_decoder};
use crate::run::ThreadCtx;
use crate::stats::Tally;

/// A server's RSS in bytes, from `/proc/PID/status`.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The kernel's TCP socket memory in bytes (`TCP: ... mem N` pages in `/proc/net/sockstat`).
pub fn tcp_mem_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    parse_sockstat_mem(&s).map(|pages| pages * page_size())
}

/// The `mem` field of the `TCP:` line of a sockstat file, in pages.
pub fn parse_sockstat_mem(s: &str) -> Option<u64> {
    let line = s.lines().find(|l| l.starts_with("TCP:"))?;
    let mut it = line.split_whitespace();
    while let Some(w) = it.next() {
        if w == "mem" {
            return it.next()?.parse().ok();
        }
    }
    None
}

/// The kernel's slab memory in bytes (`Slab:` in `/proc/meminfo`): socket, file and epoll objects live there.
pub fn slab_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo_kb(&s, "Slab:").map(|kb| kb * 1024)
}

/// The value in kB of the `key` line of a meminfo file.
pub fn parse_meminfo_kb(s: &str, key: &str) -> Option<u64> {
    let line = s.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU seconds (user + system, all threads) a process has used, from `/proc/PID/stat`.
pub fn cpu_secs_of(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = parse_stat_ticks(&s)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(ticks as f64 / (hz.max(1) as f64))
}

/// utime + stime (clock ticks) of a `/proc/PID/stat` line; the command name may hold spaces and parentheses, so
/// fields are counted after its last `)`.
pub fn parse_stat_ticks(s: &str) -> Option<u64> {
    let rest = s.get(s.rfind(')')? + 1..)?;
    let mut it = rest.split_whitespace();
    // After the name: state is field 3, utime field 14 and stime field 15 of the whole line.
    let utime: u64 = it.nth(11)?.parse().ok()?;
    let stime: u64 = it.next()?.parse().ok()?;
    Some(utime + stime)
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p).unwrap_or(4096).max(1)
}

#[cfg(test)]
mod proc_tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let stat = "1234 (ring cast) S 1 1234 1234 0 -1 4194560 500 0 0 0 70 30 0 0 20 0 3 0";
        assert_eq!(parse_stat_ticks(stat), Some(100));
        assert_eq!(parse_stat_ticks("garbage"), None);
        let mi = "MemTotal:       24000000 kB\nSlab:             123456 kB\nSReclaimable:  1 kB\n";
        assert_eq!(parse_meminfo_kb(mi, "Slab:"), Some(123_456));
        assert_eq!(parse_meminfo_kb(mi, "Nope:"), None);
        let sock = "sockets: used 20\nTCP: inuse 5 orphan 0 tw 0 alloc 7 mem 42\n";
        assert_eq!(parse_sockstat_mem(sock), Some(42));
        assert!(cpu_secs_of(std::process::id()).is_some());
    }
}

/// Opens one connection of `transport` and completes its handshake (WebSocket 101, SSE head, or a long poll
/// sent).
async fn open(ctx: &ThreadCtx, i: usize, transport: Transport, topic: &str) -> io::Result<Conn> {
    let src = Sources {
        base: ctx.common.source_base,
        count: ctx.common.source_addrs,
    };
    let s = connect(ctx.common.target, src.for_index(i as u64)).await?;
    let mut c = Conn::new(s, 512);
    match transport {
        Transport::Sse => {
            let req = format!("GET /sse/{topic} HTTP/1.1\r\nHost: load\r\n\r\n");
            c.send(req.as_bytes()).await?;
            let h = c.read_head().await?;
            if h.status != 200 {
                return Err(crate::net::status_error(h.status));
            }
        }
        Transport::Poll => {
            let req = format!("GET /poll/{topic}?timeout=60 HTTP/1.1\r\nHost: load\r\n\r\n");
            c.send(req.as_bytes()).await?;
        }
        _ => c.ws_upgrade("/ws").await?,
    }
    Ok(c)
}

/// Holds an open connection: answers pings (WebSocket), discards keep-alives (SSE), re-polls (long poll).
async fn hold(mut c: Conn, transport: Transport, topic: String, seed: u64) -> io::Result<()> {
    let mut rng = MaskRng::new(seed);
    let mut dec = ws_decoder();
    loop {
        c.fill().await?;
        match transport {
            Transport::Sse => {
                let n = c.input().len();
                c.consume(n);
            }
            Transport::Poll => {
                while c.input().windows(4).any(|w| w == b"\r\n\r\n") {
                    let (_, _) = c.read_response().await?;
                    let req =
                        format!("GET /poll/{topic}?timeout=60 HTTP/1.1\r\nHost: load\r\n\r\n");
                    c.send(req.as_bytes()).await?;
                }
            }
            _ => {
                let input = c.input();
                let len = input.len();
                let mut pos = 0;
                let mut pongs = Vec::new();
                loop {
                    let (n, m) = dec
                        .decode(input.get_mut(pos..).unwrap_or_default())
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.as_str()))?;
                    pos += n;
                    match m {
                        Some(Message::Ping(p)) => pongs.push(p.to_vec()),
                        Some(Message::Close(_)) => {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                "closed_by_server",
                            ));
                        }
                        Some(_) => {}
                        None => break,
                    }
                }
                c.consume(len);
                for p in pongs {
                    c.push_frame(OpCode::Pong, &p, &mut rng);
                }
                c.flush().await?;
            }
        }
    }
}

/// One reactor thread of `connect`: open its share at its part of the rate with at most `concurrency`
/// handshakes in flight, report ready, hold until the go signal.
pub async fn connect_thread(ctx: ThreadCtx, args: ConnectArgs) -> Tally {
    let ctx = Rc::new(ctx);
    let tally = Rc::new(RefCell::new(Tally::default()));
    let rate = ctx.rate_share(args.rate);
    let interval = (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate));
    let in_flight = Rc::new(RefCell::new(0usize));
    let t0 = Instant::now();
    let mut next = t0;
    let last_ok = Rc::new(RefCell::new(t0));
    for (k, i) in ctx.share(args.connections).enumerate() {
        if let Some(iv) = interval {
            let now = Instant::now();
            if next > now {
                monoio::time::sleep(next - now).await;
            }
            next += iv;
        }
        while *in_flight.borrow() >= args.concurrency.max(1) {
            monoio::time::sleep(Duration::from_micros(200)).await;
        }
        *in_flight.borrow_mut() += 1;
        let (cx, t, fl, lo) = (
            ctx.clone(),
            tally.clone(),
            in_flight.clone(),
            last_ok.clone(),
        );
        let transport = args.transport.nth(i);
        let topic = args.topic.clone();
        monoio::spawn(async move {
            t.borrow_mut().attempted += 1;
            let r = open(&cx, i, transport, &topic).await;
            *fl.borrow_mut() -= 1;
            match r {
                Ok(c) => {
                    t.borrow_mut().established += 1;
                    *lo.borrow_mut() = Instant::now();
                    cx.control.established.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = hold(c, transport, topic, k as u64 + 1).await {
                        t.borrow_mut().error(&failure_reason(&e));
                    }
                }
                Err(e) => {
                    t.borrow_mut().fail(&failure_reason(&e));
                    cx.control.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while *in_flight.borrow() > 0 {
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
    let connected_at = *last_ok.borrow();
    tally.borrow_mut().connect_secs = connected_at.duration_since(t0).as_secs_f64();
    ctx.control.set_ready();
    ctx.control.wait_go().await;
    tally.borrow().clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockstat_and_status() {
        let s =
            "sockets: used 300\nTCP: inuse 5 orphan 0 tw 2 alloc 9 mem 17\nUDP: inuse 1 mem 2\n";
        assert_eq!(parse_sockstat_mem(s), Some(17));
        assert_eq!(parse_sockstat_mem("UDP: inuse 1 mem 2\n"), None);
        assert!(rss_bytes(std::process::id()).unwrap_or(0) > 0);
        assert!(tcp_mem_bytes().is_some());
    }
}
