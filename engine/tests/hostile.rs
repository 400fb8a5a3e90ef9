//! Hostile-input battery: malformed handshakes and malformed frames on many raw connections, interleaved with
//! traffic on healthy connections. Afterwards the healthy connections still echo, the server still answers and
//! every hostile connection is gone.
// Helper functions outside #[test] unwrap like the tests themselves: a failed socket call fails the test.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use ringcast_engine::ServerHandle;
use tokio_tungstenite::tungstenite::Message;

/// What the server must do with a hostile connection.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Answer with this HTTP status, then close.
    Status(u16),
    /// Answer with some 4xx status, then close.
    AnyClientError,
    /// After a good handshake: send a close frame with this code, then close.
    Close(u16),
    /// After a good handshake: echo one text message of this many bytes (the input was hostile but legal).
    Echo(usize),
    /// Only that the connection ends once the client stops sending (no answer is promised).
    Ends,
}

struct Case {
    name: &'static str,
    /// Whether to do a valid upgrade first.
    upgrade: bool,
    bytes: Vec<u8>,
    /// Half-close our side after sending (the server must then see EOF).
    half_close: bool,
    expect: Expect,
}

fn xorshift(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    let mut add = |name, upgrade, bytes: Vec<u8>, half_close, expect| {
        v.push(Case {
            name,
            upgrade,
            bytes,
            half_close,
            expect,
        })
    };
    // Malformed handshakes.
    add(
        "garbage bytes",
        false,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n".to_vec(),
        false,
        Expect::Status(400),
    );
    add(
        "NUL bytes",
        false,
        vec![0u8; 64],
        false,
        Expect::Status(400),
    );
    add(
        "NUL in a header",
        false,
        b"GET /echo HTTP/1.1\r\nHost: x\0y\r\n\r\n".to_vec(),
        false,
        Expect::Status(400),
    );
    add(
        "huge header line",
        false,
        format!(
            "GET /echo HTTP/1.1\r\nHost: x\r\nX-Huge: {}\r\n\r\n",
            "h".repeat(16 * 1024)
        )
        .into_bytes(),
        false,
        Expect::Status(431),
    );
    add(
        "bad method token",
        false,
        b"G(T /echo HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        false,
        Expect::Status(400),
    );
    add(
        "unknown method on ws route",
        false,
        b"BREW /echo HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        false,
        Expect::Status(405),
    );
    add(
        "HTTP/0.9 request line",
        false,
        b"GET /echo\r\n\r\n".to_vec(),
        false,
        Expect::AnyClientError,
    );
    add(
        "HTTP/1.0 upgrade",
        false,
        common::UPGRADE.replace("HTTP/1.1", "HTTP/1.0").into_bytes(),
        false,
        Expect::Status(400),
    );
    add(
        "two keys",
        false,
        common::UPGRADE
            .replace(
                "\r\n\r\n",
                "\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n\r\n",
            )
            .into_bytes(),
        false,
        Expect::Status(400),
    );
    add(
        "bare LF soup",
        false,
        b"\n\n\n\n\n\n\n\n".to_vec(),
        true,
        Expect::Ends,
    );
    add(
        "truncated head then closed",
        false,
        b"GET /echo HTTP/1.1\r\nHost: x\r\nUpg".to_vec(),
        true,
        Expect::Ends,
    );
    add("nothing then closed", false, Vec::new(), true, Expect::Ends);
    // Malformed frames after a good handshake.
    add(
        "64-bit length 2^63",
        true,
        common::frame_with(0x82, true, Some(1 << 63), b""),
        false,
        Expect::Close(1002),
    );
    add(
        "64-bit length 2^64-1",
        true,
        common::frame_with(0x82, true, Some(u64::MAX), b""),
        false,
        Expect::Close(1002),
    );
    add(
        "64-bit length 2^40",
        true,
        common::frame_with(0x82, true, Some(1 << 40), b""),
        false,
        Expect::Close(1009),
    );
    for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
        add(
            "reserved opcode",
            true,
            common::client_frame(true, op, b"x"),
            false,
            Expect::Close(1002),
        );
    }
    add(
        "ping with 126-byte length",
        true,
        common::client_frame(true, 9, &[1u8; 126]),
        false,
        Expect::Close(1002),
    );
    add(
        "close with 127-byte length header",
        true,
        common::frame_with(0x88, true, Some(70_000), b""),
        false,
        Expect::Close(1002),
    );
    add(
        "close with 1-byte payload",
        true,
        common::client_frame(true, 8, &[0x03]),
        false,
        Expect::Close(1002),
    );
    add(
        "10,000 continuation frames without a start",
        true,
        {
            (0..10_000)
                .flat_map(|_| common::client_frame(false, 0, b"c"))
                .collect()
        },
        false,
        Expect::Close(1002),
    );
    add(
        "10,000 tiny fragments of one message",
        true,
        {
            let mut b = Vec::new();
            for i in 0..10_000 {
                b.extend(common::client_frame(
                    i == 9_999,
                    if i == 0 { 1 } else { 0 },
                    b"f",
                ));
            }
            b
        },
        false,
        Expect::Echo(10_000),
    );
    add(
        "unmasked then valid",
        true,
        {
            let mut b = common::frame_with(0x81, false, None, b"x");
            b.extend(common::client_frame(true, 1, b"y"));
            b
        },
        false,
        Expect::Close(1002),
    );
    add(
        "truncated frame then closed",
        true,
        common::client_frame(true, 2, &[9u8; 300])[..100].to_vec(),
        true,
        Expect::Ends,
    );
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..6 {
        let len = 64 + (xorshift(&mut seed) % 4000) as usize;
        let bytes = (0..len).map(|_| xorshift(&mut seed) as u8).collect();
        add(
            "random bytes after handshake",
            true,
            bytes,
            true,
            Expect::Ends,
        );
    }
    for _ in 0..4 {
        let len = 16 + (xorshift(&mut seed) % 512) as usize;
        let bytes = (0..len).map(|_| xorshift(&mut seed) as u8).collect();
        add(
            "random bytes instead of a handshake",
            false,
            bytes,
            true,
            Expect::Ends,
        );
    }
    v
}

/// Runs one hostile case on its own connection and checks the server's reaction.
fn run_case(server_addr: std::net::SocketAddr, case: &Case) {
    let mut s = TcpStream::connect(server_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    if case.upgrade {
        let head = common::request_head(&mut s, common::UPGRADE.as_bytes());
        assert!(head.starts_with("HTTP/1.1 101"), "{}: {head}", case.name);
    }
    // The server may close before everything is written (it stops reading after an error): that is fine.
    let _ = s.write_all(&case.bytes);
    if case.half_close {
        let _ = s.shutdown(Shutdown::Write);
    }
    match case.expect {
        Expect::Status(code) => {
            let r = common::read_response(&mut s);
            assert_eq!(r.status, code, "{}: {}", case.name, r.head);
        }
        Expect::AnyClientError => {
            let r = common::read_response(&mut s);
            assert!((400..500).contains(&r.status), "{}: {}", case.name, r.head);
        }
        Expect::Close(code) => {
            assert_eq!(common::read_close_code(&mut s), Some(code), "{}", case.name);
        }
        Expect::Echo(len) => {
            let f =
                common::read_data_frame(&mut s).unwrap_or_else(|| panic!("{}: no echo", case.name));
            assert_eq!((f.0, f.1, f.2.len()), (true, 1, len), "{}", case.name);
            let _ = s.shutdown(Shutdown::Write);
        }
        Expect::Ends => {}
    }
    // Whatever else was sent, the server ends the connection (it reads our EOF, or closes on its own).
    let mut sink = [0u8; 4096];
    loop {
        match s.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("{}: connection not ended by the server: {e}", case.name),
        }
    }
}

async fn echo_all(
    clients: &mut [tokio_tungstenite::WebSocketStream<
        impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    >],
    round: usize,
) {
    for (i, ws) in clients.iter_mut().enumerate() {
        let text = format!("healthy {i} round {round}");
        ws.send(Message::text(text.clone())).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(text));
    }
}

fn open(server: &ServerHandle) -> u64 {
    common::open_connections(server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_battery_leaves_healthy_connections_working() {
    let server = common::start(common::config());
    let addr = server.local_addr();
    let mut healthy = Vec::new();
    for _ in 0..5 {
        let (ws, _) = tokio_tungstenite::connect_async(common::ws_url(&server, "/echo"))
            .await
            .unwrap();
        healthy.push(ws);
    }
    common::wait_open(&server, 5);
    let cases = cases();
    assert!(cases.len() >= 40);
    // Every case twice (so 80+ hostile connections), spread over 4 threads, interleaved with healthy echoes.
    let all: Vec<usize> = (0..cases.len()).chain(0..cases.len()).collect();
    let cases = std::sync::Arc::new(cases);
    let mut threads = Vec::new();
    for t in 0..4 {
        let cases = cases.clone();
        let mine: Vec<usize> = all.iter().copied().skip(t).step_by(4).collect();
        threads.push(std::thread::spawn(move || {
            for i in mine {
                run_case(addr, &cases[i]);
            }
        }));
    }
    let mut round = 0;
    while threads.iter().any(|t| !t.is_finished()) {
        echo_all(&mut healthy, round).await;
        round += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for t in threads {
        t.join().expect("a hostile case failed");
    }
    assert!(round > 0);
    // Afterwards: every healthy connection still echoes, the server answers HTTP, and only the 5 remain.
    echo_all(&mut healthy, round).await;
    let ok = tokio::task::spawn_blocking(move || {
        let ok = common::wait_until(Duration::from_secs(5), || open(&server) == 5);
        let health = common::http(
            &server,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        (ok, open(&server), health.status, server)
    })
    .await
    .unwrap();
    assert!(
        ok.0,
        "{} connections open, expected the 5 healthy ones",
        ok.1
    );
    assert_eq!(ok.2, 200);
    echo_all(&mut healthy, round + 1).await;
    drop(healthy);
    let server = ok.3;
    tokio::task::spawn_blocking(move || {
        common::wait_open(&server, 0);
        common::stop(server)
    })
    .await
    .unwrap();
}
