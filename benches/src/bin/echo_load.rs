//! `echo_load`: a minimal WebSocket echo load client for the engine's throughput figure (the full load generator,
//! `ringcast-load`, has its own issue). N connections each keep a window of W masked messages of S bytes in flight
//! for T seconds; prints messages/s echoed.
//!
//! Usage: `echo_load ADDR [connections=100] [size=32] [window=16] [seconds=10]`

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const UPGRADE: &str = "GET /echo HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

fn masked_frame(size: usize) -> Vec<u8> {
    let mask = [7u8, 1, 9, 3];
    let mut f = vec![0x82];
    if size < 126 {
        f.push(0x80 | size as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(size as u16).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend((0..size).map(|i| (i as u8) ^ mask[i % 4]));
    f
}

async fn connection(
    addr: SocketAddr,
    size: usize,
    window: usize,
    stop: Instant,
    done: Arc<AtomicU64>,
) -> std::io::Result<()> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(UPGRADE.as_bytes()).await?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(b[0]);
    }
    let frame = masked_frame(size);
    let batch: Vec<u8> = frame
        .iter()
        .copied()
        .cycle()
        .take(frame.len() * window)
        .collect();
    let reply_len = size + if size < 126 { 2 } else { 4 };
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending = 0usize;
    while Instant::now() < stop {
        s.write_all(&batch).await?;
        pending += window * reply_len;
        while pending > 0 {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            pending = pending.saturating_sub(n);
        }
        done.fetch_add(window as u64, Ordering::Relaxed);
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(addr) = args.get(1).and_then(|a| a.parse::<SocketAddr>().ok()) else {
        eprintln!("usage: echo_load ADDR [connections=100] [size=32] [window=16] [seconds=10]");
        std::process::exit(2);
    };
    let arg = |i: usize, d: usize| args.get(i).and_then(|v| v.parse().ok()).unwrap_or(d);
    let (conns, size, window, secs) = (arg(2, 100), arg(3, 32), arg(4, 16), arg(5, 10));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let done = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let stop = start + Duration::from_secs(secs as u64);
        let mut tasks = Vec::new();
        for _ in 0..conns {
            tasks.push(tokio::spawn(connection(addr, size, window, stop, done.clone())));
        }
        let mut errors = 0;
        for t in tasks {
            if !matches!(t.await, Ok(Ok(()))) {
                errors += 1;
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        let n = done.load(Ordering::Relaxed);
        println!(
            "echo_load: {conns} connections, {size} B messages, window {window}: {n} messages in {elapsed:.2} s = {:.0} msg/s ({:.1} MB/s payload each way), {errors} connection errors",
            n as f64 / elapsed,
            n as f64 * size as f64 / elapsed / 1e6
        );
    });
}
