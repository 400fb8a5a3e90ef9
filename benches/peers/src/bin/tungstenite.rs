//! tokio-tungstenite peer: echo and broadcast (see the crate docs). Configured fairly: an 8 KiB read buffer per
//! connection (tungstenite's default is 128 KiB), a 64 KiB write buffer, no Nagle; echo and broadcast both queue
//! every ready message with `feed` and write them with one `flush` (batching, like ringcast's one write per
//! wakeup).

use futures_util::{FutureExt, SinkExt, StreamExt};
use ringcast_peers::{Action, Hub, Opts, drain, on_text};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

fn main() {
    let opts = Opts::parse();
    let hub = Hub::new(opts.clone());
    opts.run(async move {
        let l = TcpListener::bind(opts.listen).await.expect("bind");
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let _ = s.set_nodelay(true);
            tokio::spawn(conn(s, hub.clone()));
        }
    });
}

async fn conn(s: TcpStream, hub: Hub) {
    let cfg = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(64 * 1024);
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(s, Some(cfg)).await else {
        return;
    };
    loop {
        let Some(Ok(mut msg)) = ws.next().await else {
            return;
        };
        loop {
            let reply = match msg {
                Message::Binary(_) => Some(msg),
                Message::Text(ref t) => match on_text(&hub, t.as_bytes()) {
                    Action::Echo => Some(msg),
                    Action::Ack(a) => Some(Message::text(String::from_utf8(a).unwrap_or_default())),
                    Action::Sub(topic, ack) => {
                        let ack = Message::text(String::from_utf8(ack).unwrap_or_default());
                        if ws.send(ack).await.is_err() {
                            return;
                        }
                        return subscriber(ws, hub, topic).await;
                    }
                },
                Message::Close(_) => {
                    // tungstenite queued the close reply on reading the close: send it (RFC 6455 §5.5.1), as
                    // ringcast, fastwebsockets (auto-close) and Bun do, rather than drop the connection without it.
                    let _ = ws.flush().await;
                    return;
                }
                _ => None, // pings are answered by tungstenite on the next flush
            };
            if let Some(r) = reply
                && ws.feed(r).await.is_err()
            {
                return;
            }
            match ws.next().now_or_never() {
                Some(Some(Ok(m))) => msg = m,
                Some(_) => return,
                None => break,
            }
        }
        if ws.flush().await.is_err() {
            return;
        }
    }
}

async fn subscriber(
    mut ws: tokio_tungstenite::WebSocketStream<TcpStream>,
    hub: Hub,
    topic: String,
) {
    let mut rx = hub.subscribe(&topic);
    let mut batch = Vec::new();
    loop {
        let first = match rx.recv().await {
            Ok(m) => m,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(_) => return,
        };
        drain(&mut rx, first, &mut batch);
        for m in batch.drain(..) {
            // The hub builds valid UTF-8 JSON; the conversion checks it again.
            let Ok(t) = tokio_tungstenite::tungstenite::Utf8Bytes::try_from(m) else {
                continue;
            };
            if ws.feed(Message::Text(t)).await.is_err() {
                return;
            }
        }
        if ws.flush().await.is_err() {
            return;
        }
    }
}
