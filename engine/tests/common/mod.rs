//! Helpers shared by the engine's integration tests: start a real server on a free port with the driver named by
//! `RINGCAST_TEST_DRIVER` (uring, epoll; default auto), small raw-socket utilities, and the healthy-client latency
//! probe ([`latency`]).
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ringcast_engine::{Config, CoreSet, Driver, ServerHandle};

#[path = "../latency_common/mod.rs"]
pub mod latency;

pub fn driver() -> Driver {
    match std::env::var("RINGCAST_TEST_DRIVER").as_deref() {
        Ok("uring") => Driver::Uring,
        Ok("epoll") => Driver::Epoll,
        _ => Driver::Auto,
    }
}

pub fn config() -> Config {
    Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        cores: CoreSet::Count(1),
        pin_threads: false,
        driver: driver(),
        ..Config::default()
    }
}

pub fn start(config: Config) -> ServerHandle {
    ringcast_engine::start(config).expect("server starts")
}

/// Stops the server and checks that it drained cleanly.
pub fn stop(handle: ServerHandle) {
    handle.shutdown();
    handle.join().expect("server stops cleanly");
}

pub fn ws_url(handle: &ServerHandle, path: &str) -> String {
    format!("ws://{}{}", handle.local_addr(), path)
}

/// A raw TCP connection with a read timeout.
pub fn raw(handle: &ServerHandle) -> TcpStream {
    let s = TcpStream::connect(handle.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

pub const UPGRADE: &str = "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Sends `request` and reads until the end of the response head; returns the head.
pub fn request_head(s: &mut TcpStream, request: &[u8]) -> String {
    s.write_all(request).unwrap();
    read_head(s)
}

pub fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(_) => head.push(b[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!(
                "reading response head: {e}; got {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    String::from_utf8(head).unwrap()
}

/// A raw upgraded connection.
pub fn raw_ws(handle: &ServerHandle) -> TcpStream {
    let mut s = raw(handle);
    let head = request_head(&mut s, UPGRADE.as_bytes());
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

/// A masked client frame.
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
    let mask = [0x11u8, 0x22, 0x33, 0x44];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n < 65536 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Reads one unmasked server frame: (fin, opcode, payload). None on EOF.
pub fn read_frame(s: &mut TcpStream) -> Option<(bool, u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).ok()?;
    let mut len = (h[1] & 0x7f) as u64;
    assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
    if len == 126 {
        let mut b = [0u8; 2];
        s.read_exact(&mut b).ok()?;
        len = u16::from_be_bytes(b) as u64;
    } else if len == 127 {
        let mut b = [0u8; 8];
        s.read_exact(&mut b).ok()?;
        len = u64::from_be_bytes(b);
    }
    let mut payload = vec![0u8; len as usize];
    s.read_exact(&mut payload).ok()?;
    Some((h[0] & 0x80 != 0, h[0] & 0x0f, payload))
}

/// Reads frames until a close frame; returns its code (None for an empty close, or EOF without a close).
pub fn read_close_code(s: &mut TcpStream) -> Option<u16> {
    while let Some((_, op, payload)) = read_frame(s) {
        if op == 8 {
            return (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
        }
    }
    None
}

/// True when the server closed the connection (EOF or reset) within the socket's read timeout.
pub fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1024];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            // The server's reactor threads share this process; a signal may interrupt a blocking read.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}

/// A client frame with every header bit chosen by the caller: `b0` is the first byte (FIN, RSV, opcode), `masked`
/// says whether to set the mask bit and apply a mask, `len` overrides the announced payload length (the payload
/// itself is appended as given, so a header announcing more than is sent can be built).
pub fn frame_with(b0: u8, masked: bool, len: Option<u64>, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![b0];
    let mask_bit = if masked { 0x80 } else { 0 };
    match len.unwrap_or(payload.len() as u64) {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n < 65536 => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
    let mask = [0x5au8, 0xa5, 0x0f, 0xf0];
    if masked {
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A masked close frame with the given code and reason.
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    client_frame(true, 8, &p)
}

/// Reads frames until the first one that is neither a ping nor a pong and returns it.
pub fn read_data_frame(s: &mut TcpStream) -> Option<(bool, u8, Vec<u8>)> {
    loop {
        let f = read_frame(s)?;
        if f.1 != 9 && f.1 != 10 {
            return Some(f);
        }
    }
}

/// Sends one masked text message and checks it comes back unchanged.
pub fn assert_raw_echo(s: &mut TcpStream, text: &str) {
    s.write_all(&client_frame(true, 1, text.as_bytes()))
        .unwrap();
    let (fin, op, payload) = read_data_frame(s).expect("echo arrives");
    assert!(fin);
    assert_eq!(op, 1);
    assert_eq!(payload, text.as_bytes());
}

/// An HTTP response: status, head (with the status line) and body (by Content-Length).
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Reads one HTTP response (head, then a Content-Length body). Panics on EOF before a complete head.
pub fn read_response(s: &mut TcpStream) -> Response {
    let head = read_head(s);
    assert!(
        head.ends_with("\r\n\r\n"),
        "incomplete response head: {head:?}"
    );
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let mut r = Response {
        status,
        head,
        body: Vec::new(),
    };
    let len: usize = r.header("content-length").map_or(0, |v| v.parse().unwrap());
    r.body = vec![0u8; len];
    s.read_exact(&mut r.body).unwrap();
    r
}

/// Opens a connection, sends `request` and reads one response.
pub fn http(handle: &ServerHandle, request: &[u8]) -> Response {
    let mut s = raw(handle);
    s.write_all(request).unwrap();
    read_response(&mut s)
}

/// The Prometheus exposition served at `/metrics`.
pub fn metrics(handle: &ServerHandle) -> String {
    let r = http(
        handle,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.head);
    String::from_utf8(r.body).unwrap()
}

/// Sum over every core of the samples of metric `name` whose labels contain `label` (e.g. `code="1002"`).
pub fn metric(text: &str, name: &str, label: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| l.contains(label))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum()
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Connections open on every core together.
pub fn open_connections(handle: &ServerHandle) -> u64 {
    handle.stats().iter().map(|s| s.connections_open()).sum()
}

/// Waits (up to 5 s) until exactly `n` connections are open; panics with the last count otherwise.
pub fn wait_open(handle: &ServerHandle, n: u64) {
    let ok = wait_until(Duration::from_secs(5), || open_connections(handle) == n);
    assert!(
        ok,
        "expected {n} open connections, have {}",
        open_connections(handle)
    );
}
