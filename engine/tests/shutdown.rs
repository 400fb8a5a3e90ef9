//! Graceful shutdown of the real server: every WebSocket gets close 1001, `join` returns within the drain
//! timeout (also when a client never answers), and the port refuses connections afterwards.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use ringcast_engine::{Config, CoreSet};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn config() -> Config {
    Config {
        cores: CoreSet::Count(2),
        close_timeout: Duration::from_millis(500),
        drain_timeout: Duration::from_secs(2),
        ..common::config()
    }
}

#[test]
fn clients_get_close_1001_and_join_returns_within_drain_timeout() {
    let server = common::start(config());
    let addr = server.local_addr();
    let mut clients: Vec<TcpStream> = (0..3).map(|_| common::raw_ws(&server)).collect();
    // A plain keep-alive HTTP connection is closed too.
    let mut http = common::raw(&server);
    assert_eq!(
        common::request_head(&mut http, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .split(' ')
            .nth(1),
        Some("200")
    );
    common::wait_open(&server, 4);
    let started = Instant::now();
    server.shutdown();
    for (i, c) in clients.iter_mut().enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        assert_eq!(common::read_close_code(c), Some(1001), "client {i}");
    }
    // Two clients complete the close handshake; the third never answers and is cut at the close deadline.
    for c in &mut clients[..2] {
        c.write_all(&common::close_frame(1001, "")).unwrap();
        assert!(
            common::closed_by_server(c),
            "server keeps the connection after both closes"
        );
    }
    let mut body = [0u8; 3];
    std::io::Read::read_exact(&mut http, &mut body).unwrap();
    assert!(
        common::closed_by_server(&mut http),
        "plain HTTP connection not closed on shutdown"
    );
    let joined = std::thread::spawn(move || server.join());
    let result = joined.join().unwrap();
    let took = started.elapsed();
    assert!(result.is_ok(), "{result:?}");
    assert!(
        took < Duration::from_millis(2000 + 1500),
        "join took {took:?} with a 2 s drain timeout"
    );
    assert!(
        common::closed_by_server(&mut clients[2]),
        "silent client not cut"
    );
    // Nobody listens any more.
    let refused = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
    assert!(refused.is_err(), "connect after shutdown succeeded");
}

#[test]
fn join_is_quick_when_every_client_answers() {
    let server = common::start(config());
    let mut clients: Vec<TcpStream> = (0..3).map(|_| common::raw_ws(&server)).collect();
    let started = Instant::now();
    server.shutdown();
    for c in &mut clients {
        assert_eq!(common::read_close_code(c), Some(1001));
        c.write_all(&common::close_frame(1001, "")).unwrap();
    }
    server.join().unwrap();
    // Far below the 500 ms close timeout: the drain ends as soon as the last close handshake completes.
    assert!(
        started.elapsed() < Duration::from_millis(450),
        "join took {:?}",
        started.elapsed()
    );
    for c in &mut clients {
        assert!(common::closed_by_server(c));
    }
}

#[test]
fn idle_server_shuts_down_at_once_and_frees_the_port() {
    let server = common::start(config());
    let addr = server.local_addr();
    assert_eq!(
        common::http(
            &server,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .status,
        200
    );
    let started = Instant::now();
    common::stop(server);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "took {:?}",
        started.elapsed()
    );
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
}

#[tokio::test]
async fn tungstenite_clients_see_a_going_away_close() {
    let server = common::start(config());
    let mut clients = Vec::new();
    for _ in 0..3 {
        let (ws, _) = tokio_tungstenite::connect_async(common::ws_url(&server, "/echo"))
            .await
            .unwrap();
        clients.push(ws);
    }
    common::wait_open(&server, 3);
    let trigger = server.shutdown_trigger();
    let joiner = tokio::task::spawn_blocking(move || server.join());
    trigger.shutdown();
    for ws in &mut clients {
        match tokio::time::timeout(Duration::from_secs(3), ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => assert_eq!(frame.code, CloseCode::Away),
            other => panic!("expected close 1001, got {other:?}"),
        }
        // tungstenite answers the close while the stream is polled to its end.
        while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(3), ws.next()).await {}
    }
    let result = tokio::time::timeout(Duration::from_secs(4), joiner)
        .await
        .expect("join within the drain timeout");
    assert!(result.unwrap().is_ok());
}
