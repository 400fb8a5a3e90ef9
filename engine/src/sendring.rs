//! Batched fan-out sends: a core's own small io_uring through which one `io_uring_enter` carries a non-blocking
//! send to each of many subscribers, instead of one `write(2)` per subscriber.
//!
//! On loopback a send of a small frame costs the kernel ≈ 8.6 µs as a syscall and ≈ 7.3 µs as one operation of an
//! io_uring batch (`loopback_floor`, benches/src/floor.rs); a fan-out to N subscribers is N sends, so the batch is
//! what io_uring can save there. The batch is synchronous: every send carries `MSG_DONTWAIT`, which makes io_uring
//! fail a send the socket cannot take at once with `EAGAIN` (as `write(2)` on a non-blocking socket does) instead
//! of parking it until the socket drains, so each operation completes inside the `io_uring_enter` that submits it
//! and [`SendRing::submit`] returns with every result. The caller then handles a result exactly as it would a
//! `write(2)` return: short or `EAGAIN` means the socket is full and the rest is queued.
//!
//! What it owns: the ring, the buffers of the sends in flight (a `Bytes` each, so they outlive the operation by
//! construction) and the results. A kernel that would park a `MSG_DONTWAIT` send is detected by [`SendRing::new`]
//! (a probe on a full socket pair), and the core then keeps plain syscalls.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use bytes::Bytes;
use io_uring::{IoUring, opcode, types};

/// Sends per `io_uring_enter`; a larger batch is submitted in several.
pub(crate) const ENTRIES: u32 = 256;

/// [`SendOp::result`] of a send whose completion has not been reaped.
const PENDING: i32 = i32::MIN;

/// One send: what to send, where, and the caller's tag; `result` is `write(2)`'s return after [`SendRing::submit`].
pub(crate) struct SendOp<T> {
    /// The caller's tag (which connection, which kind of write).
    pub(crate) tag: T,
    fd: RawFd,
    /// The bytes to send; kept alive here until the kernel is done with them.
    pub(crate) buf: Bytes,
    /// Bytes the kernel took, or the negated `errno` (as `write(2)` would report it); [`PENDING`] before
    /// submission.
    pub(crate) result: i32,
}

/// A core's batch of pending sends and the ring that runs them.
pub(crate) struct SendRing<T> {
    ring: IoUring,
    pending: Vec<SendOp<T>>,
    /// The ring failed in a way that left operations unaccounted for: nothing more goes through it.
    broken: bool,
}

impl<T> SendRing<T> {
    /// A ring for batched sends, or `None` when io_uring is unavailable or this kernel would park a
    /// `MSG_DONTWAIT` send on a full socket instead of failing it (the batch would then block the core).
    pub(crate) fn new() -> Option<SendRing<T>> {
        let ring = IoUring::builder()
            .setup_submit_all()
            .setup_coop_taskrun()
            .build(ENTRIES)
            .ok()?;
        let mut r = SendRing {
            ring,
            pending: Vec::new(),
            broken: false,
        };
        match r.probe() {
            Ok(true) => Some(r),
            Ok(false) => {
                tracing::warn!(
                    "io_uring parks non-blocking sends on this kernel: fan-out uses write(2)"
                );
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "io_uring send probe failed: fan-out uses write(2)");
                None
            }
        }
    }

    /// Whether a send to a full socket comes back at once with `EAGAIN`. The probe fills a socket pair, sends
    /// once more through the ring and waits up to a second for the completion; if there is none the send was
    /// parked, and reading the peer lets it finish before the buffer goes away.
    fn probe(&mut self) -> io::Result<bool> {
        let (a, b) = std::os::unix::net::UnixStream::pair()?;
        a.set_nonblocking(true)?;
        b.set_nonblocking(true)?;
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match io::Write::write(&mut &a, &chunk) {
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        let buf = Bytes::from_static(b"probe");
        let e = send_entry(std::os::fd::AsRawFd::as_raw_fd(&a), &buf).user_data(0);
        // SAFETY: `buf` is static and `a` lives until the completion has been reaped below (on every path).
        unsafe { self.ring.submission().push(&e) }
            .map_err(|_| io::Error::other("submission queue full"))?;
        let ts = types::Timespec::from(Duration::from_secs(1));
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
            Err(e) => return Err(e),
        }
        if let Some(c) = self.ring.completion().next() {
            return Ok(c.result() == -libc::EAGAIN);
        }
        // Parked: drain the peer so it completes, then reap it.
        let mut sink = vec![0u8; 64 * 1024];
        while io::Read::read(&mut &b, &mut sink).is_ok() {}
        self.ring.submit_and_wait(1)?;
        let _ = self.ring.completion().next();
        Ok(false)
    }

    /// Sends waiting for [`SendRing::submit`].
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    /// Queues a send of `buf` to `fd` (of at most `u32::MAX` bytes; a longer buffer is sent in part, like a short
    /// `write(2)`).
    pub(crate) fn push(&mut self, tag: T, fd: RawFd, buf: Bytes) {
        self.pending.push(SendOp {
            tag,
            fd,
            buf,
            result: PENDING,
        });
    }

    /// Runs every queued send, `ENTRIES` per `io_uring_enter`, and moves them with their results into `done`
    /// (cleared first), in the order they were queued. When the ring fails, the sends it never submitted report
    /// `EAGAIN` (the caller queues their bytes, which go out as the socket's backlog), and those submitted whose
    /// completion never came report `EIO`: they may or may not have sent, so their connection's stream is
    /// unknown and the caller closes it.
    pub(crate) fn submit(&mut self, done: &mut Vec<SendOp<T>>) {
        done.clear();
        std::mem::swap(&mut self.pending, done);
        let mut i = 0;
        while i < done.len() && !self.broken {
            let end = (i + ENTRIES as usize).min(done.len());
            let mut pushed = 0;
            {
                let mut sq = self.ring.submission();
                for (j, s) in done.iter().enumerate().take(end).skip(i) {
                    let e = send_entry(s.fd, &s.buf).user_data(j as u64);
                    // SAFETY: the buffer is `done[j].buf`, which stays in `done` (not moved, not dropped) until
                    // this loop has reaped the completion of every operation it pushed; the descriptor is the
                    // caller's open socket. At most ENTRIES operations are pushed between submissions and all
                    // of them are reaped before the next round, so the queue never overflows.
                    if unsafe { sq.push(&e) }.is_err() {
                        break;
                    }
                    pushed += 1;
                }
            }
            let mut reaped = 0;
            while reaped < pushed {
                match self.ring.submit_and_wait(pushed - reaped) {
                    Ok(_) => {}
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
                    Err(e) => {
                        // Operations may still be in the kernel: their buffers must never be freed.
                        tracing::error!(error = %e, "io_uring send batch failed: fan-out falls back to write(2)");
                        self.broken = true;
                        for s in done.iter_mut().skip(i).take(pushed) {
                            if s.result == PENDING {
                                std::mem::forget(s.buf.clone());
                                s.result = -libc::EIO;
                            }
                        }
                        break;
                    }
                }
                for c in self.ring.completion() {
                    if let Some(s) = done.get_mut(c.user_data() as usize) {
                        s.result = c.result();
                    }
                    reaped += 1;
                }
            }
            if pushed == 0 {
                break;
            }
            i += pushed;
        }
        for s in &mut done[i..] {
            if s.result == PENDING {
                s.result = -libc::EAGAIN;
            }
        }
    }

    /// Whether the ring still works (it stops after an `io_uring_enter` failure it cannot account for).
    pub(crate) fn usable(&self) -> bool {
        !self.broken
    }
}

/// The send operation for `buf` on `fd`: non-blocking (see the module docs), no `SIGPIPE`.
fn send_entry(fd: RawFd, buf: &Bytes) -> io_uring::squeue::Entry {
    let len = buf.len().min(u32::MAX as usize) as u32;
    opcode::Send::new(types::Fd(fd), buf.as_ptr(), len)
        .flags(libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        s.set_nonblocking(true).unwrap();
        (s, c)
    }

    fn ring() -> SendRing<usize> {
        SendRing::new().expect("io_uring with non-blocking sends (kernel 6.x)")
    }

    // Every send of a batch larger than one submission arrives whole, in order, on its own socket.
    #[test]
    fn a_batch_larger_than_the_ring_sends_everything_in_order() {
        let mut r = ring();
        let n = ENTRIES as usize * 2 + 17;
        let pairs: Vec<_> = (0..n).map(|_| pair()).collect();
        let mut done = Vec::new();
        for round in 0..3u8 {
            for (i, (s, _)) in pairs.iter().enumerate() {
                let msg = Bytes::from(format!("{round}:{i};"));
                r.push(i, s.as_raw_fd(), msg);
            }
            assert_eq!(r.len(), n);
            r.submit(&mut done);
            assert_eq!(r.len(), 0);
            assert_eq!(done.len(), n);
            for (i, s) in done.iter().enumerate() {
                assert_eq!(s.tag, i);
                assert_eq!(s.result as usize, s.buf.len(), "send {i}");
            }
        }
        for (i, (_, c)) in pairs.iter().enumerate() {
            let want = format!("0:{i};1:{i};2:{i};");
            let mut got = vec![0u8; want.len()];
            (&*c).read_exact(&mut got).unwrap();
            assert_eq!(got, want.as_bytes());
        }
        assert!(r.usable());
    }

    // A socket that cannot take everything reports a short send, then EAGAIN, at once (never blocks); a closed
    // peer reports an error; the other sends of the same batch are unaffected.
    #[test]
    fn full_and_closed_sockets_report_like_a_nonblocking_write() {
        let mut r = ring();
        let (full, full_peer) = pair();
        let (ok, mut ok_peer) = pair();
        let (gone, gone_peer) = pair();
        drop(gone_peer);
        std::thread::sleep(Duration::from_millis(20));
        let big = Bytes::from(vec![7u8; 64 << 20]);
        let mut done = Vec::new();
        r.push(0, full.as_raw_fd(), big.clone());
        r.push(1, ok.as_raw_fd(), Bytes::from_static(b"hello"));
        r.push(2, gone.as_raw_fd(), Bytes::from_static(b"x"));
        r.submit(&mut done);
        let took = done[0].result;
        assert!(
            took > 0 && (took as usize) < big.len(),
            "short send: {took}"
        );
        assert_eq!(done[1].result, 5);
        // The first write to a socket whose peer is gone may still be accepted (the RST comes back with it).
        r.push(2, gone.as_raw_fd(), Bytes::from_static(b"x"));
        r.push(0, full.as_raw_fd(), big.clone());
        r.submit(&mut done);
        assert!(done[0].result < 0, "closed peer: {}", done[0].result);
        assert_eq!(done[1].result, -libc::EAGAIN, "full socket");
        let mut got = [0u8; 5];
        ok_peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        drop(full_peer);
        ok_peer.write_all(b"ok").unwrap();
        assert!(r.usable());
    }
}
