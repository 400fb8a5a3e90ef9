//! Helpers shared by the pub/sub integration tests (`pubsub_*.rs`): a two-core server, topics picked by owner
//! core, which core a new connection landed on, a keep-alive HTTP client, a raw WebSocket client, an SSE client
//! over `ringcast_protocol::sse::EventParser`, and a small JSON reader (the engine has no JSON dev-dependency).
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ringcast_engine::{Config, CoreSet, Driver, HistoryLimits, ServerHandle};
use ringcast_protocol::sse::{EventParser, ParsedEvent, SseItem};
use ringcast_protocol::topic::topic_hash;
use socket2::{Domain, Protocol, Socket, Type};

pub const CORES: usize = 2;

pub fn driver() -> Driver {
    match std::env::var("RINGCAST_TEST_DRIVER").as_deref() {
        Ok("uring") => Driver::Uring,
        Ok("epoll") => Driver::Epoll,
        _ => Driver::Auto,
    }
}

/// Two cores, a free port, the driver from `RINGCAST_TEST_DRIVER`, history large enough that nothing resets, and
/// fan-outs written 3 subscribers per turn, so every test with more subscribers than that per core runs its
/// deliveries over several turns (joins, gaps and unsubscribes while a fan-out is half written included).
pub fn config() -> Config {
    Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        cores: CoreSet::Count(CORES),
        pin_threads: false,
        driver: driver(),
        fanout_slice: 3,
        // Small enough that a fan-out or a backlog regularly stops mid-way and goes on in a later turn.
        turn_write_budget: 2048,
        history: HistoryLimits {
            max_messages: 20_000,
            max_bytes: 64 << 20,
            max_age: None,
        },
        ..Config::default()
    }
}

pub fn start(config: Config) -> ServerHandle {
    ringcast_engine::start(config).expect("server starts")
}

pub fn stop(handle: ServerHandle) {
    handle.shutdown();
    handle.join().expect("server stops cleanly");
}

/// The core owning `topic`.
pub fn owner(topic: &str) -> usize {
    (topic_hash(topic) % CORES as u64) as usize
}

/// `per_owner` topic names `{prefix}.{n}` for each core, ordered owner 0, owner 1, owner 0, ...
pub fn topics_by_owner(prefix: &str, per_owner: usize) -> Vec<String> {
    let mut by: Vec<Vec<String>> = vec![Vec::new(); CORES];
    let mut n = 0;
    while by.iter().any(|v| v.len() < per_owner) {
        let t = format!("{prefix}.{n}");
        n += 1;
        let o = owner(&t);
        if by[o].len() < per_owner {
            by[o].push(t);
        }
    }
    let mut out = Vec::new();
    for i in 0..per_owner {
        for v in &by {
            out.push(v[i].clone());
        }
    }
    out
}

/// A topic owned by core `core`.
pub fn topic_owned_by(prefix: &str, core: usize) -> String {
    (0..)
        .map(|n| format!("{prefix}.{n}"))
        .find(|t| owner(t) == core)
        .unwrap()
}

pub fn accepted(server: &ServerHandle) -> Vec<u64> {
    server
        .stats()
        .iter()
        .map(|s| s.connections_accepted())
        .collect()
}

/// The core that accepted one connection since `before` was taken (waits up to 5 s for the count to move).
pub fn core_of_new_conn(server: &ServerHandle, before: &[u64]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = accepted(server);
        let moved: Vec<usize> = (0..now.len()).filter(|&i| now[i] != before[i]).collect();
        if moved.len() == 1 && now[moved[0]] == before[moved[0]] + 1 {
            return moved[0];
        }
        assert!(moved.len() <= 1, "several connections accepted meanwhile");
        assert!(Instant::now() < deadline, "no core accepted the connection");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Opens connections with `open` until there is at least one on every core (and at least `min` in all); returns
/// them with the core each sits on. Connections must be opened one at a time with nothing else connecting.
pub fn on_every_core<C>(
    server: &ServerHandle,
    min: usize,
    mut open: impl FnMut() -> C,
) -> Vec<(usize, C)> {
    let mut out: Vec<(usize, C)> = Vec::new();
    for _ in 0..64 {
        let before = accepted(server);
        let c = open();
        let core = core_of_new_conn(server, &before);
        out.push((core, c));
        if out.len() >= min && (0..CORES).all(|k| out.iter().any(|(c, _)| *c == k)) {
            return out;
        }
    }
    panic!("64 connections all landed on the same core");
}

/// Polls `cond` every 5 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// A small JSON reader: enough to split objects and arrays into raw member texts.

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\r' | b'\n') {
        i += 1;
    }
    i
}

/// The end (exclusive) of the JSON value starting at `i`.
fn value_end(s: &[u8], i: usize) -> usize {
    let i = skip_ws(s, i);
    match s[i] {
        b'"' => {
            let mut j = i + 1;
            loop {
                match s[j] {
                    b'\\' => j += 2,
                    b'"' => return j + 1,
                    _ => j += 1,
                }
            }
        }
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match s[j] {
                    b'"' => {
                        j = value_end(s, j);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return j + 1;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while j < s.len() && !matches!(s[j], b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t')
            {
                j += 1;
            }
            j
        }
    }
}

/// The members of a JSON object, as (unescaped key, raw value text), in order. Panics on anything else.
pub fn object(text: &str) -> Vec<(String, &str)> {
    let s = text.as_bytes();
    let mut i = skip_ws(s, 0);
    assert_eq!(s[i], b'{', "not an object: {text}");
    i += 1;
    let mut out = Vec::new();
    loop {
        i = skip_ws(s, i);
        if s[i] == b'}' {
            break;
        }
        let kend = value_end(s, i);
        let key = string(&text[i..kend]);
        i = skip_ws(s, kend);
        assert_eq!(s[i], b':', "bad object: {text}");
        let vstart = skip_ws(s, i + 1);
        let vend = value_end(s, vstart);
        out.push((key, &text[vstart..vend]));
        i = skip_ws(s, vend);
        match s[i] {
            b',' => i += 1,
            b'}' => break,
            _ => panic!("bad object: {text}"),
        }
    }
    assert_eq!(skip_ws(s, i + 1), s.len(), "trailing bytes: {text}");
    out
}

/// The raw texts of a JSON array's items.
pub fn array(text: &str) -> Vec<&str> {
    let s = text.as_bytes();
    let mut i = skip_ws(s, 0);
    assert_eq!(s[i], b'[', "not an array: {text}");
    i = skip_ws(s, i + 1);
    let mut out = Vec::new();
    if s[i] == b']' {
        return out;
    }
    loop {
        let start = skip_ws(s, i);
        let end = value_end(s, start);
        out.push(&text[start..end]);
        i = skip_ws(s, end);
        match s[i] {
            b',' => i += 1,
            b']' => break,
            _ => panic!("bad array: {text}"),
        }
    }
    out
}

/// The raw value of member `key` (panics when missing).
pub fn field<'a>(obj: &[(String, &'a str)], key: &str) -> &'a str {
    obj.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no field {key:?} in {obj:?}"))
}

pub fn num(raw: &str) -> u64 {
    raw.parse()
        .unwrap_or_else(|_| panic!("not an unsigned integer: {raw}"))
}

/// Unescapes a JSON string literal (the escapes the server writes: \" \\ \/ \b \f \n \r \t \uXXXX).
pub fn string(raw: &str) -> String {
    assert!(
        raw.len() >= 2 && raw.starts_with('"') && raw.ends_with('"'),
        "not a string: {raw}"
    );
    let inner = &raw[1..raw.len() - 1];
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next().unwrap() {
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'u' => {
                let hex: String = chars.by_ref().take(4).collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
            }
            other => out.push(other),
        }
    }
    out
}

/// A server → client WebSocket JSON message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsMsg {
    pub kind: String,
    pub topic: Option<String>,
    pub seq: Option<u64>,
    pub id: Option<String>,
    pub code: Option<String>,
    /// Raw JSON text of `data`.
    pub data: Option<String>,
}

pub fn ws_msg(text: &str) -> WsMsg {
    let o = object(text);
    let get = |k: &str| o.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
    WsMsg {
        kind: string(field(&o, "type")),
        topic: get("topic").map(string),
        seq: get("seq").map(num),
        id: get("id").map(str::to_string),
        code: get("code").map(string),
        data: get("data").map(str::to_string),
    }
}

/// A poll answer: `{"topic":..,"messages":[{"seq":..,"data":..}],"next":..,"reset":..}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollBody {
    pub topic: String,
    pub messages: Vec<(u64, String)>,
    pub next: u64,
    pub reset: bool,
}

pub fn poll_body(text: &str) -> PollBody {
    let o = object(text);
    let messages = array(field(&o, "messages"))
        .into_iter()
        .map(|m| {
            let mo = object(m);
            (num(field(&mo, "seq")), field(&mo, "data").to_string())
        })
        .collect();
    let reset = match field(&o, "reset") {
        "true" => true,
        "false" => false,
        other => panic!("reset is {other}"),
    };
    PollBody {
        topic: string(field(&o, "topic")),
        messages,
        next: num(field(&o, "next")),
        reset,
    }
}

// ---------------------------------------------------------------------------------------------------------------
// HTTP.

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
}

fn read_some(s: &mut TcpStream, b: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match s.read(b) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

pub fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match read_some(s, &mut b) {
            Ok(0) => panic!("EOF in response head: {:?}", String::from_utf8_lossy(&head)),
            Ok(_) => head.push(b[0]),
            Err(e) => panic!(
                "reading response head: {e}; got {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    String::from_utf8(head).unwrap()
}

pub fn read_response(s: &mut TcpStream) -> Response {
    let head = read_head(s);
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
    let mut got = 0;
    while got < len {
        let n = read_some(s, &mut r.body[got..]).unwrap();
        assert!(n > 0, "EOF in response body");
        got += n;
    }
    r
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// A keep-alive HTTP/1.1 connection.
pub struct Http {
    pub stream: TcpStream,
}

impl Http {
    pub fn new(addr: SocketAddr) -> Self {
        Http {
            stream: connect(addr),
        }
    }

    /// Sends one request (`extra` are full header lines without CRLF) and reads the answer.
    pub fn request(&mut self, method: &str, path: &str, extra: &[&str], body: &[u8]) -> Response {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n");
        for h in extra {
            req.push_str(h);
            req.push_str("\r\n");
        }
        if !body.is_empty() || method == "POST" {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.write_all(&bytes).unwrap();
        read_response(&mut self.stream)
    }

    pub fn get(&mut self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
    }

    /// `POST /publish/{topic}` with a JSON body; returns the seq the server answered.
    pub fn publish(&mut self, topic: &str, json: &str) -> u64 {
        let r = self.request(
            "POST",
            &format!("/publish/{topic}"),
            &["Content-Type: application/json"],
            json.as_bytes(),
        );
        assert_eq!(r.status, 200, "{}{}", r.head, r.text());
        let o = object(r.text());
        assert_eq!(string(field(&o, "topic")), topic);
        num(field(&o, "seq"))
    }
}

/// One request on a fresh connection.
pub fn http_once(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra: &[&str],
    body: &[u8],
) -> Response {
    Http::new(addr).request(method, path, extra, body)
}

/// The sum of a Prometheus family's samples (every label set) in the server's `/metrics`.
pub fn metric_sum(addr: SocketAddr, name: &str) -> u64 {
    let r = http_once(addr, "GET", "/metrics", &[], b"");
    r.text()
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

// ---------------------------------------------------------------------------------------------------------------
// A raw WebSocket client.

pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
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

pub struct RawWs {
    pub stream: TcpStream,
}

/// What reading a frame found.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Text(String),
    /// A close frame and its code.
    Close(Option<u16>),
    /// EOF or reset.
    Eof,
    /// The read timed out.
    Timeout,
}

impl RawWs {
    /// Connects to `/ws`, optionally with a small receive buffer set before connecting.
    pub fn connect(addr: SocketAddr, rcvbuf: Option<usize>) -> Self {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        if let Some(n) = rcvbuf {
            socket.set_recv_buffer_size(n).unwrap();
        }
        socket.connect(&addr.into()).unwrap();
        let mut stream: TcpStream = socket.into();
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        stream.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
        let head = read_head(&mut stream);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        RawWs { stream }
    }

    pub fn send(&mut self, text: &str) {
        self.stream
            .write_all(&client_frame(1, text.as_bytes()))
            .unwrap();
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), Frame> {
        let mut got = 0;
        while got < buf.len() {
            match self.stream.read(&mut buf[got..]) {
                Ok(0) => return Err(Frame::Eof),
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                    if got == 0 {
                        return Err(Frame::Timeout);
                    }
                    // Mid-frame: the rest is on its way.
                }
                Err(_) => return Err(Frame::Eof),
            }
        }
        Ok(())
    }

    /// The next text or close frame (pings are skipped).
    pub fn next(&mut self) -> Frame {
        loop {
            let mut h = [0u8; 2];
            if let Err(f) = self.read_exact(&mut h) {
                return f;
            }
            assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
            let mut len = u64::from(h[1] & 0x7f);
            if len == 126 {
                let mut b = [0u8; 2];
                if let Err(f) = self.read_exact(&mut b) {
                    return f;
                }
                len = u64::from(u16::from_be_bytes(b));
            } else if len == 127 {
                let mut b = [0u8; 8];
                if let Err(f) = self.read_exact(&mut b) {
                    return f;
                }
                len = u64::from_be_bytes(b);
            }
            let mut payload = vec![0u8; len as usize];
            if let Err(f) = self.read_exact(&mut payload) {
                return if f == Frame::Timeout { Frame::Eof } else { f };
            }
            assert!(h[0] & 0x80 != 0, "fragmented server message");
            match h[0] & 0x0f {
                1 => return Frame::Text(String::from_utf8(payload).unwrap()),
                8 => {
                    return Frame::Close(
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]])),
                    );
                }
                9 | 10 => continue,
                op => panic!("unexpected opcode {op}"),
            }
        }
    }

    /// The next JSON message; panics on anything else.
    pub fn msg(&mut self) -> WsMsg {
        match self.next() {
            Frame::Text(t) => ws_msg(&t),
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Subscribes and waits for the ack (which the server sends once the owner registered the subscription).
    pub fn sub(&mut self, topic: &str, since: Option<u64>, id: u64) {
        let since = since.map_or(String::new(), |s| format!(",\"since\":{s}"));
        self.send(&format!(
            r#"{{"op":"sub","topic":"{topic}"{since},"id":{id}}}"#
        ));
        let ack = self.msg();
        assert_eq!(
            (ack.kind.as_str(), ack.id.as_deref()),
            ("ack", Some(&*id.to_string())),
            "{ack:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// SSE.

pub struct Sse {
    pub stream: TcpStream,
    pub head: String,
    parser: EventParser,
    ready: std::collections::VecDeque<SseItem>,
}

impl Sse {
    /// Opens `GET {path}` with extra header lines and reads the response head.
    pub fn open(addr: SocketAddr, path: &str, extra: &[&str]) -> Self {
        let mut stream = connect(addr);
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n");
        for h in extra {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).unwrap();
        let head = read_head(&mut stream);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/event-stream"),
            "{head}"
        );
        Sse {
            stream,
            head,
            parser: EventParser::new(),
            ready: Default::default(),
        }
    }

    pub fn last_event_id(&self) -> String {
        self.parser.last_event_id().to_string()
    }

    pub fn retry(&self) -> Option<u64> {
        self.parser.reconnection_time()
    }

    /// The next event (comments skipped); None on EOF or timeout.
    pub fn event(&mut self) -> Option<ParsedEvent> {
        loop {
            while let Some(item) = self.ready.pop_front() {
                if let SseItem::Event(e) = item {
                    return Some(e);
                }
            }
            let mut b = [0u8; 16 * 1024];
            let n = read_some(&mut self.stream, &mut b).ok()?;
            if n == 0 {
                return None;
            }
            let mut out = Vec::new();
            self.parser.feed(&b[..n], &mut out);
            self.ready.extend(out);
        }
    }

    /// The next event as (seq, raw data) for a message event; panics on anything else.
    pub fn message(&mut self) -> (u64, String) {
        let e = self.event().expect("an SSE event");
        assert_eq!(e.event_type_or_message(), "message", "{e:?}");
        let id = e.id.as_deref().expect("message events carry an id");
        (num(id), e.data.clone())
    }
}
