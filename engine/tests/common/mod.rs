//! Helpers shared by the engine's integration tests: start a real server on a free port with the driver named by
//! `RINGCAST_TEST_DRIVER` (uring, epoll; default auto), and small raw-socket utilities.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ringcast_engine::{Config, CoreSet, Driver, ServerHandle};

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
            Err(e) => panic!("reading response head: {e}; got {:?}", String::from_utf8_lossy(&head)),
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
            Err(_) => return false,
        }
    }
}
