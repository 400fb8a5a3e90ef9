//! Owns the client side of the network: connecting (optionally bound to a source address first), a buffered
//! connection with HTTP response and WebSocket helpers built on the protocol crate's client codec, the masking-key
//! PRNG, and the mapping of failures to reasons and limits (fds, ports, memory).

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bytes::BufMut;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use ringcast_protocol::ws::{
    Client, Decoder, DecoderConfig, MaskKeySource, OpCode, encode_client_frame,
};

/// A fast xorshift64* PRNG for masking keys (masking only needs unpredictability against the server's caches, not
/// cryptographic strength).
#[derive(Clone, Debug)]
pub struct MaskRng(u64);

impl MaskRng {
    /// Seeded from `seed` (any value; 0 is replaced).
    pub fn new(seed: u64) -> Self {
        MaskRng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

impl MaskKeySource for MaskRng {
    fn next_key(&mut self) -> [u8; 4] {
        (self.next_u64() as u32).to_ne_bytes()
    }
}

/// Where a connection comes from: the kernel's choice, or source address `base + (i mod n)`.
#[derive(Clone, Copy, Debug)]
pub struct Sources {
    /// First address.
    pub base: Ipv4Addr,
    /// Addresses to spread over (0: none, let the kernel choose).
    pub count: u32,
}

impl Sources {
    /// The source address for global connection index `i`, if spreading.
    pub fn for_index(&self, i: u64) -> Option<Ipv4Addr> {
        (self.count > 0).then(|| {
            let off = (i % u64::from(self.count)) as u32;
            Ipv4Addr::from(u32::from(self.base).wrapping_add(off))
        })
    }
}

/// Opens a TCP connection to `target`, first binding to `source` when given (with `IP_BIND_ADDRESS_NO_PORT`, so
/// the port is picked per destination at connect time). Sets `TCP_NODELAY`.
///
/// # Errors
/// The socket, bind or connect error.
pub async fn connect(target: SocketAddr, source: Option<Ipv4Addr>) -> io::Result<TcpStream> {
    connect_with(target, source, 0).await
}

/// [`connect`], with the socket's receive buffer (`SO_RCVBUF`) set to `recv_buffer` bytes before connecting when it
/// is not 0 (the kernel doubles the value and stops autotuning it; set before the handshake so the window scale
/// fits it). That bounds what the kernel holds for this connection, whatever the server pushes.
///
/// # Errors
/// The socket, option, bind or connect error.
pub async fn connect_with(
    target: SocketAddr,
    source: Option<Ipv4Addr>,
    recv_buffer: usize,
) -> io::Result<TcpStream> {
    let stream = match source {
        None if recv_buffer == 0 => TcpStream::connect_addr(target).await?,
        _ => {
            use socket2::{Domain, Socket, Type};
            let sock = Socket::new(Domain::for_address(target), Type::STREAM, None)?;
            if recv_buffer > 0 {
                sock.set_recv_buffer_size(recv_buffer)?;
            }
            if let Some(src) = source {
                bind_address_no_port(&sock);
                sock.bind(&SocketAddr::new(IpAddr::V4(src), 0).into())?;
            }
            sock.set_nonblocking(true)?;
            match sock.connect(&target.into()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                Err(e) => return Err(e),
            }
            let std: std::net::TcpStream = sock.into();
            let probe = std.try_clone()?;
            let s = TcpStream::from_std(std)?;
            s.writable(false).await?;
            if let Some(e) = probe.take_error()? {
                return Err(e);
            }
            probe.peer_addr()?;
            // The io_uring driver expects blocking-mode sockets (it polls itself); epoll needs non-blocking.
            if !is_legacy() {
                probe.set_nonblocking(false)?;
            }
            s
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Sets `IP_BIND_ADDRESS_NO_PORT` (best effort: without it each source address still gives its own port range).
fn bind_address_no_port(sock: &socket2::Socket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: a valid socket fd and a pointer to a live c_int with its exact size.
    let _ = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

thread_local! {
    static LEGACY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks this thread as running the epoll (legacy) driver.
pub fn set_legacy(v: bool) {
    LEGACY.with(|c| c.set(v));
}

fn is_legacy() -> bool {
    LEGACY.with(|c| c.get())
}

/// A failure reason for connection or I/O errors: `fd_limit`, `ports`, `memory` (the limits), or `refused`,
/// `reset`, `timeout`, `eof`, `io_<errno>`.
pub fn failure_reason(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EMFILE) | Some(libc::ENFILE) => "fd_limit".into(),
        Some(libc::EADDRNOTAVAIL) | Some(libc::EADDRINUSE) => "ports".into(),
        Some(libc::ENOMEM) | Some(libc::ENOBUFS) => "memory".into(),
        Some(libc::ECONNREFUSED) => "refused".into(),
        Some(libc::ECONNRESET) | Some(libc::EPIPE) => "reset".into(),
        Some(libc::ETIMEDOUT) => "timeout".into(),
        Some(n) => format!("io_{n}"),
        // Errors made by this crate carry their reason as the message.
        None => match (e.get_ref(), e.kind()) {
            (Some(m), io::ErrorKind::InvalidData | io::ErrorKind::TimedOut) => m.to_string(),
            (_, io::ErrorKind::UnexpectedEof) => "eof".into(),
            (_, io::ErrorKind::TimedOut) => "timeout".into(),
            (_, k) => format!("{k:?}").to_lowercase(),
        },
    }
}

/// An explanation when failures show that a machine limit stopped the run.
pub fn limit_message(failures: &BTreeMap<String, u64>) -> Option<String> {
    let mut out = Vec::new();
    if let Some(n) = failures.get("fd_limit") {
        out.push(format!(
            "{n} connections failed on the open-file limit (ulimit -n = {} per process): use more --procs or raise it",
            fd_limit().0
        ));
    }
    if let Some(n) = failures.get("ports") {
        out.push(format!(
            "{n} connections failed for lack of ephemeral ports: spread them with --source-addrs (about 28,000 per address)"
        ));
    }
    if let Some(n) = failures.get("memory") {
        out.push(format!(
            "{n} connections failed on memory (ENOMEM/ENOBUFS): the kernel's socket memory or RAM ran out"
        ));
    }
    (!out.is_empty()).then(|| out.join("; "))
}

/// The (soft, hard) open-file limits.
pub fn fd_limit() -> (u64, u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the valid, exclusively borrowed struct.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    if rc == 0 {
        (r.rlim_cur, r.rlim_max)
    } else {
        (0, 0)
    }
}

/// Raises the soft open-file limit to the hard one; returns the soft limit now in force.
pub fn raise_fd_limit() -> u64 {
    let (soft, hard) = fd_limit();
    if soft < hard {
        let r = libc::rlimit {
            rlim_cur: hard,
            rlim_max: hard,
        };
        // SAFETY: setrlimit only reads the valid struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } == 0 {
            return hard;
        }
    }
    soft
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// A parsed HTTP response head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Status code.
    pub status: u16,
    /// Content-Length, if present.
    pub content_length: Option<usize>,
    /// Length of the head in bytes.
    pub len: usize,
}

/// Parses a response head at the start of `buf`; `Ok(None)` when incomplete.
///
/// # Errors
/// `InvalidData` when the head is malformed.
pub fn parse_head(buf: &[u8]) -> io::Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let content_length = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .and_then(|v| v.trim().parse().ok());
            Ok(Some(Head {
                status: resp.code.unwrap_or(0),
                content_length,
                len,
            }))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(invalid("bad_http_head")),
    }
}

/// The WebSocket upgrade request for `path`.
pub fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: load\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// A connection with a read buffer (unconsumed bytes are `rbuf[rpos..]`) and a reusable write buffer.
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    rbuf: Vec<u8>,
    rpos: usize,
    /// Bytes to write with [`Conn::flush`].
    pub wbuf: Vec<u8>,
}

impl Conn {
    /// Wraps a connected stream with a read buffer of `cap` bytes.
    pub fn new(stream: TcpStream, cap: usize) -> Self {
        Conn {
            stream,
            rbuf: Vec::with_capacity(cap),
            rpos: 0,
            wbuf: Vec::with_capacity(1024),
        }
    }

    /// Writes every byte of the read buffer's capacity once, so its pages are mapped now rather than by the reads
    /// that first fill them (a page fault each, in the middle of a measurement).
    pub fn prefault(&mut self) {
        let (len, cap) = (self.rbuf.len(), self.rbuf.capacity());
        self.rbuf.resize(cap, 0);
        self.rbuf.truncate(len);
    }

    /// The unconsumed input.
    pub fn input(&mut self) -> &mut [u8] {
        self.rbuf.get_mut(self.rpos..).unwrap_or_default()
    }

    /// Marks `n` input bytes consumed.
    pub fn consume(&mut self, n: usize) {
        self.rpos = (self.rpos + n).min(self.rbuf.len());
        if self.rpos == self.rbuf.len() {
            self.rbuf.clear();
            self.rpos = 0;
        }
    }

    /// Reads more input (compacting and growing the buffer as needed); returns the bytes read.
    ///
    /// # Errors
    /// The read error, or `UnexpectedEof` when the peer closed.
    pub async fn fill(&mut self) -> io::Result<usize> {
        if self.rpos > 0 {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        if self.rbuf.capacity() - self.rbuf.len() < 1024 {
            self.rbuf.reserve(self.rbuf.capacity().max(4096));
        }
        let buf = std::mem::take(&mut self.rbuf);
        let len = buf.len();
        let cap = buf.capacity();
        let (res, slice) = self.stream.read(buf.slice_mut(len..cap)).await;
        self.rbuf = slice.into_inner();
        match res? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            n => Ok(n),
        }
    }

    /// Writes all of `wbuf` and clears it.
    ///
    /// # Errors
    /// The write error.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.wbuf);
        let (res, mut buf) = self.stream.write_all(buf).await;
        buf.clear();
        self.wbuf = buf;
        res.map(|_| ())
    }

    /// Writes `bytes` now.
    ///
    /// # Errors
    /// The write error.
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.wbuf.put_slice(bytes);
        self.flush().await
    }

    /// Reads a response head; returns it and leaves the body in the input.
    ///
    /// # Errors
    /// I/O errors, a malformed head, or a head over 64 KiB.
    pub async fn read_head(&mut self) -> io::Result<Head> {
        loop {
            if let Some(h) = parse_head(self.input())? {
                self.consume(h.len);
                return Ok(h);
            }
            if self.rbuf.len() - self.rpos > 65536 {
                return Err(invalid("http_head_too_large"));
            }
            self.fill().await?;
        }
    }

    /// Reads a whole response with a Content-Length body; returns the status and the body.
    ///
    /// # Errors
    /// I/O errors, a malformed head, or a missing Content-Length.
    pub async fn read_response(&mut self) -> io::Result<(u16, Vec<u8>)> {
        let h = self.read_head().await?;
        let n = h
            .content_length
            .ok_or_else(|| invalid("no_content_length"))?;
        while self.input().len() < n {
            self.fill().await?;
        }
        let body = self.input().get(..n).unwrap_or_default().to_vec();
        self.consume(n);
        Ok((h.status, body))
    }

    /// Performs the WebSocket upgrade on `path`; fails unless the server answers 101.
    ///
    /// # Errors
    /// I/O errors or `http_<status>` as `InvalidData`.
    pub async fn ws_upgrade(&mut self, path: &str) -> io::Result<()> {
        self.send(upgrade_request(path).as_bytes()).await?;
        let h = self.read_head().await?;
        if h.status != 101 {
            return Err(status_error(h.status));
        }
        Ok(())
    }

    /// Appends a masked frame to `wbuf`.
    pub fn push_frame(&mut self, opcode: OpCode, payload: &[u8], rng: &mut MaskRng) {
        encode_client_frame(&mut self.wbuf, true, opcode, payload, rng);
    }
}

/// An `InvalidData` error naming an unexpected HTTP status.
pub fn status_error(status: u16) -> io::Error {
    let msg: &'static str = match status {
        200 => "http_200",
        400 => "http_400",
        404 => "http_404",
        413 => "http_413",
        426 => "http_426",
        429 => "http_429",
        500 => "http_500",
        503 => "http_503",
        _ => "http_other",
    };
    invalid(msg)
}

/// A client-role WebSocket decoder with generous limits.
pub fn ws_decoder() -> Decoder<Client> {
    Decoder::new(DecoderConfig {
        max_message_size: 16 << 20,
        max_frame_size: 16 << 20,
    })
}

/// Wall-clock nanoseconds since the Unix epoch (shared by processes on one machine, so a publisher's stamp can be
/// compared with a subscriber's clock).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The socket's `SO_RCVBUF` as the kernel reports it.
    fn rcvbuf(s: &TcpStream) -> usize {
        use std::os::fd::AsRawFd;
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a valid socket fd, and a pointer to a live c_int with its exact size in `len`.
        let r = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&raw mut v).cast(),
                &raw mut len,
            )
        };
        assert_eq!(r, 0, "getsockopt: {}", io::Error::last_os_error());
        v as usize
    }

    #[test]
    fn a_receive_buffer_is_set_before_connecting_with_or_without_a_source_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime");
        let (plain, sized, sized_from) = rt.block_on(async {
            let plain = connect(addr, None).await.expect("connect");
            let sized = connect_with(addr, None, 32 << 10)
                .await
                .expect("connect sized");
            let from = Some(Ipv4Addr::new(127, 0, 0, 2));
            let sized_from = connect_with(addr, from, 32 << 10)
                .await
                .expect("connect from");
            (rcvbuf(&plain), rcvbuf(&sized), rcvbuf(&sized_from))
        });
        // Linux doubles the value it is given (bookkeeping overhead); the default is tcp_rmem's middle value.
        assert_eq!(sized, 64 << 10);
        assert_eq!(sized_from, 64 << 10);
        assert_ne!(plain, sized, "the default would pass the check above");
        for _ in 0..3 {
            let (_, peer) = listener.accept().expect("accepted");
            assert!(peer.ip().is_loopback());
        }
    }

    #[test]
    fn reasons_and_limits() {
        let e = io::Error::from_raw_os_error(libc::EMFILE);
        assert_eq!(failure_reason(&e), "fd_limit");
        let e = io::Error::from_raw_os_error(libc::EADDRNOTAVAIL);
        assert_eq!(failure_reason(&e), "ports");
        let e = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(failure_reason(&e), "refused");
        assert_eq!(failure_reason(&status_error(503)), "http_503");
        let mut m = BTreeMap::new();
        assert_eq!(limit_message(&m), None);
        m.insert("refused".to_owned(), 3);
        assert_eq!(limit_message(&m), None);
        m.insert("ports".to_owned(), 3);
        assert!(limit_message(&m).unwrap_or_default().contains("ephemeral"));
    }

    #[test]
    fn heads_and_sources() {
        assert_eq!(parse_head(b"HTTP/1.1 101 S").unwrap(), None);
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!((h.status, h.content_length, h.len), (200, Some(5), 38));
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
        let s = Sources {
            base: Ipv4Addr::new(127, 0, 0, 2),
            count: 3,
        };
        assert_eq!(s.for_index(4), Some(Ipv4Addr::new(127, 0, 0, 3)));
        let none = Sources {
            base: Ipv4Addr::new(127, 0, 0, 2),
            count: 0,
        };
        assert_eq!(none.for_index(4), None);
        let mut r = MaskRng::new(0);
        assert_ne!(r.next_key(), r.next_key());
    }
}
