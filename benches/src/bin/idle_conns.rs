//! `idle_conns`: opens N WebSocket connections (spread over source addresses 127.0.0.2.. so the ephemeral port
//! range is no limit), completes every handshake, then holds them idle and reports the server's memory growth.
//!
//! Usage: `idle_conns ADDR N SERVER_PID [hold_seconds=5]`. Prints RSS before/after, bytes per connection in user
//! space, and the kernel's TCP memory from /proc/net/sockstat.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use socket2::{Domain, Socket, Type};

const UPGRADE: &str = "GET /echo HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn tcp_mem_pages() -> u64 {
    let s = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| l.split_whitespace().skip_while(|w| *w != "mem").nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn connect(addr: SocketAddr, i: usize) -> std::io::Result<TcpStream> {
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    // 20,000 connections per source address keeps well inside the ephemeral port range.
    let src: SocketAddr = SocketAddr::from(([127, 0, 0, 2 + (i / 20_000) as u8], 0));
    sock.bind(&src.into())?;
    sock.connect(&addr.into())?;
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(UPGRADE.as_bytes())?;
    let mut head = [0u8; 1024];
    let mut got = 0;
    while got < 4 || &head[got - 4..got] != b"\r\n\r\n" {
        let n = s.read(&mut head[got..got + 1])?;
        if n == 0 || got + 1 >= head.len() {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        got += n;
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(std::io::ErrorKind::InvalidData.into());
    }
    Ok(s)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: idle_conns ADDR N SERVER_PID [hold_seconds=5]");
        std::process::exit(2);
    }
    let addr: SocketAddr = args[1].parse().expect("ADDR");
    let n: usize = args[2].parse().expect("N");
    let pid: u32 = args[3].parse().expect("SERVER_PID");
    let hold: u64 = args.get(4).and_then(|v| v.parse().ok()).unwrap_or(5);
    // Warm the server up with a few connections so its one-time allocations are not counted.
    let warm: Vec<_> = (0..64).filter_map(|i| connect(addr, i).ok()).collect();
    drop(warm);
    std::thread::sleep(Duration::from_millis(500));
    let rss0 = rss_kib(pid);
    let mem0 = tcp_mem_pages();
    let mut conns = Vec::with_capacity(n);
    let mut failures = 0;
    for i in 0..n {
        match connect(addr, i) {
            Ok(s) => conns.push(s),
            Err(_) => failures += 1,
        }
    }
    std::thread::sleep(Duration::from_secs(hold));
    let rss1 = rss_kib(pid);
    let mem1 = tcp_mem_pages();
    let held = conns.len();
    let per_conn = (rss1.saturating_sub(rss0) * 1024) as f64 / held.max(1) as f64;
    println!(
        "idle_conns: {held} connections held ({failures} failed); server RSS {rss0} KiB -> {rss1} KiB: {per_conn:.0} B per idle connection in user space; kernel TCP memory {mem0} -> {mem1} pages"
    );
    drop(conns);
}
