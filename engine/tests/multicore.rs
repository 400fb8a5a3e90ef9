//! Two reactors sharing one port through SO_REUSEPORT: connections spread over both cores and every one echoes.

mod common;

use futures_util::{SinkExt, StreamExt};
use ringcast_engine::{Config, CoreSet};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn two_cores_both_accept_and_every_connection_echoes() {
    let server = common::start(Config {
        cores: CoreSet::Count(2),
        ..common::config()
    });
    assert_eq!(server.cores(), 2);
    let url = common::ws_url(&server, "/echo");
    let mut clients = Vec::new();
    // Each client gets its own ephemeral source port, so the kernel's reuseport hash spreads them.
    for _ in 0..64 {
        let (ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        clients.push(ws);
    }
    common::wait_open(&server, 64);
    let accepted: Vec<u64> = server
        .stats()
        .iter()
        .map(|s| s.connections_accepted())
        .collect();
    assert_eq!(accepted.iter().sum::<u64>(), 64);
    assert!(
        accepted.iter().all(|&n| n > 0),
        "one core got nothing: {accepted:?}"
    );
    for (i, ws) in clients.iter_mut().enumerate() {
        ws.send(Message::text(format!("client {i}"))).await.unwrap();
    }
    for (i, ws) in clients.iter_mut().enumerate() {
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text(format!("client {i}"))
        );
    }
    // `/metrics` on either core reports both cores.
    let m = common::metrics(&server);
    assert_eq!(
        common::metric(&m, "ringcast_ws_handshakes_total", ""),
        64,
        "{m}"
    );
    assert!(m.contains("core=\"1\""), "{m}");
    drop(clients);
    common::wait_open(&server, 0);
    common::stop(server);
}

/// A second server on a port another one already listens on is refused (it would silently take a share of the
/// first one's new connections), unless sharing is asked for; a port whose earlier server stopped is free again.
#[test]
fn a_second_server_on_a_busy_port_is_refused_unless_sharing_is_asked_for() {
    let first = common::start(common::config());
    let addr = first.local_addr();
    let again = ringcast_engine::start(Config {
        listen: addr,
        ..common::config()
    });
    match again {
        Err(ringcast_engine::EngineError::PortInUse(a)) => assert_eq!(a, addr),
        Err(e) => panic!("expected PortInUse, got {e}"),
        Ok(_) => panic!("a second server started silently on {addr}"),
    }
    // The refused start left the first server alone.
    let mut s = common::raw_ws(&first);
    common::assert_raw_echo(&mut s, "still served");
    drop(s);

    let shared = common::start(Config {
        listen: addr,
        share_port: true,
        ..common::config()
    });
    assert_eq!(shared.local_addr(), addr);
    common::stop(shared);
    common::stop(first);

    // Nothing listens any more (connections of the first server may linger in TIME_WAIT): a plain start works.
    let next = common::start(Config {
        listen: addr,
        ..common::config()
    });
    let mut s = common::raw_ws(&next);
    common::assert_raw_echo(&mut s, "new server");
    drop(s);
    common::stop(next);
}
