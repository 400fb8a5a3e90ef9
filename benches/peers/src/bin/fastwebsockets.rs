//! fastwebsockets peer: echo and broadcast (see the crate docs). The upgrade is parsed with httparse (no hyper, so
//! the handshake is as cheap as ours). Echo writes each frame as it is read, fastwebsockets' own idiom (its API
//! cannot tell whether another frame is already buffered, so there is no safe point to batch); broadcast writes
//! through a 64 KiB `BufWriter` and flushes once per batch of ready messages. Auto-pong and auto-close are on.

use base64::Engine;
use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocket};
use ringcast_peers::{Action, Hub, Opts, drain, on_text};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};

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

/// Reads the upgrade request and answers 101; None if it is not one.
async fn handshake(s: &mut TcpStream) -> Option<()> {
    let mut buf = Vec::with_capacity(1024);
    let key = loop {
        if s.read_buf(&mut buf).await.ok()? == 0 || buf.len() > 8192 {
            return None;
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        if let httparse::Status::Complete(_) = req.parse(&buf).ok()? {
            let k = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-key"))?;
            break k.value.to_vec();
        }
    };
    let mut h = Sha1::new();
    h.update(&key);
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64::engine::general_purpose::STANDARD.encode(h.finalize());
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    s.write_all(resp.as_bytes()).await.ok()
}

async fn conn(mut s: TcpStream, hub: Hub) {
    if handshake(&mut s).await.is_none() {
        return;
    }
    let mut ws = WebSocket::after_handshake(s, Role::Server);
    ws.set_auto_pong(true);
    ws.set_auto_close(true);
    ws.set_writev(true);
    loop {
        let Ok(frame) = ws.read_frame().await else {
            return;
        };
        match frame.opcode {
            OpCode::Binary => {
                let f = Frame::binary(Payload::Owned(frame.payload.to_vec()));
                if ws.write_frame(f).await.is_err() {
                    return;
                }
            }
            OpCode::Text => {
                let payload = frame.payload.to_vec();
                let reply = match on_text(&hub, &payload) {
                    Action::Echo => payload,
                    Action::Ack(a) => a,
                    Action::Sub(topic, ack) => {
                        if ws
                            .write_frame(Frame::text(Payload::Owned(ack)))
                            .await
                            .is_err()
                        {
                            return;
                        }
                        return subscriber(ws.into_inner(), hub, topic).await;
                    }
                };
                if ws
                    .write_frame(Frame::text(Payload::Owned(reply)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            OpCode::Close => return,
            _ => {}
        }
    }
}

async fn subscriber(s: TcpStream, hub: Hub, topic: String) {
    let mut ws = WebSocket::after_handshake(BufWriter::with_capacity(64 * 1024, s), Role::Server);
    ws.set_writev(false);
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
            if ws
                .write_frame(Frame::text(Payload::Borrowed(&m)))
                .await
                .is_err()
            {
                return;
            }
        }
        if ws.flush().await.is_err() {
            return;
        }
    }
}
