//! The kernel's floor for fan-out over loopback TCP: what one small delivery costs in the kernel alone, with no
//! server or client logic around it.
//!
//! A fan-out of one message to N idle subscribers is, at the very least, one `send` on each server-side socket and
//! one `recv` on each client-side socket. [`measure`] opens N loopback pairs in one process, leaves them idle, then
//! times exactly that, round after round: a send of `size` bytes on every server end, then a receive on every
//! client end. It does so with one syscall per socket ([`Mode::Syscalls`]) and with io_uring, a batch of up to
//! 4,096 sends or receives per `io_uring_enter` ([`Mode::Uring`]), which is the best a reactor can do about
//! syscall overhead. On loopback the kernel runs the receiver's TCP input inside the sender's `send`, so the send
//! figure carries most of the cost. Dividing `N × (send + recv)` by the cores available gives the shortest time in
//! which any server plus client on this machine could deliver one message to N subscribers.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use io_uring::{IoUring, opcode, types};

/// How the sends and receives are issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One `send(2)` / `recv(2)` per socket.
    Syscalls,
    /// io_uring `Send` / `Recv` operations, up to [`RING`] per submission.
    Uring,
}

/// Submission queue size used by [`Mode::Uring`].
pub const RING: u32 = 4096;

/// One round: every server end sent once, then every client end received once.
#[derive(Clone, Copy, Debug)]
pub struct Round {
    /// Time spent sending one message on each of the N server ends.
    pub send: Duration,
    /// Time spent receiving it on each of the N client ends.
    pub recv: Duration,
}

/// N connected loopback TCP pairs held by this process (2 N descriptors).
pub struct Pairs {
    server: Vec<TcpStream>,
    client: Vec<TcpStream>,
}

impl Pairs {
    /// Opens `n` pairs through one listener on 127.0.0.1. `TCP_NODELAY` on the server ends, as ringcast sets it.
    pub fn open(n: usize) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let mut pairs = Pairs {
            server: Vec::with_capacity(n),
            client: Vec::with_capacity(n),
        };
        for _ in 0..n {
            let c = TcpStream::connect(addr)?;
            let (s, _) = listener.accept()?;
            s.set_nodelay(true)?;
            pairs.server.push(s);
            pairs.client.push(c);
        }
        Ok(pairs)
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.server.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.server.is_empty()
    }
}

/// Runs `rounds` rounds of one `size`-byte message to every pair (1 ≤ size ≤ 1024), checking that each receive
/// got exactly the message sent.
pub fn measure(
    pairs: &mut Pairs,
    mode: Mode,
    size: usize,
    rounds: usize,
) -> io::Result<Vec<Round>> {
    let size = size.clamp(1, 1024);
    let n = pairs.len();
    let mut ring = match mode {
        Mode::Uring => Some(IoUring::new(RING)?),
        Mode::Syscalls => None,
    };
    let mut out = Vec::with_capacity(rounds);
    let mut bufs = vec![0u8; n * 1024];
    for round in 0..rounds {
        let msg = vec![b'a' + (round % 26) as u8; size];
        let t = Instant::now();
        match ring.as_mut() {
            None => {
                for s in &mut pairs.server {
                    s.write_all(&msg)?;
                }
            }
            Some(ring) => {
                let fds: Vec<i32> = pairs.server.iter().map(|s| s.as_raw_fd()).collect();
                uring_batch(ring, &fds, |_| (msg.as_ptr() as *mut u8, size), true)?;
            }
        }
        let send = t.elapsed();
        let t = Instant::now();
        match ring.as_mut() {
            None => {
                for (c, buf) in pairs.client.iter_mut().zip(bufs.chunks_mut(1024)) {
                    let mut got = 0;
                    while got < size {
                        let k = c.read(&mut buf[got..size])?;
                        if k == 0 {
                            return Err(io::ErrorKind::UnexpectedEof.into());
                        }
                        got += k;
                    }
                }
            }
            Some(ring) => {
                let fds: Vec<i32> = pairs.client.iter().map(|c| c.as_raw_fd()).collect();
                let base = bufs.as_mut_ptr();
                // Each pair's message is small enough to arrive in one segment, so one receive takes all of it
                // (checked below).
                uring_batch(ring, &fds, |i| (base.wrapping_add(i * 1024), size), false)?;
            }
        }
        let recv = t.elapsed();
        if bufs.chunks(1024).any(|b| b[..size] != msg[..]) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a pair received something else",
            ));
        }
        out.push(Round { send, recv });
    }
    Ok(out)
}

/// Issues one operation per fd (`send` or `recv` of `len` bytes at the pointer `at(i)` gives for fd i), up to
/// [`RING`] per `io_uring_enter`, and waits for all of them; every one must move exactly `len` bytes.
fn uring_batch(
    ring: &mut IoUring,
    fds: &[i32],
    at: impl Fn(usize) -> (*mut u8, usize),
    send: bool,
) -> io::Result<()> {
    let mut i = 0;
    while i < fds.len() {
        let end = (i + RING as usize).min(fds.len());
        {
            let mut sq = ring.submission();
            for (j, &fd) in fds.iter().enumerate().take(end).skip(i) {
                let (ptr, len) = at(j);
                let e = if send {
                    opcode::Send::new(types::Fd(fd), ptr, len as u32).build()
                } else {
                    opcode::Recv::new(types::Fd(fd), ptr, len as u32).build()
                };
                // SAFETY: the buffer behind `ptr` (the message, or pair j's slot in `bufs`) and the fd outlive
                // the operation: this function waits below for every completion it submitted before returning,
                // and its callers keep both alive across the call. At most RING entries are pushed between
                // submissions, so the queue cannot overflow (push would return an error, not overwrite).
                unsafe { sq.push(&e.user_data(j as u64)) }
                    .map_err(|_| io::Error::other("submission queue full"))?;
            }
        }
        let want = end - i;
        let mut done = 0;
        ring.submit_and_wait(want)?;
        while done < want {
            for c in ring.completion() {
                let (_, len) = at(c.user_data() as usize);
                if c.result() < 0 {
                    return Err(io::Error::from_raw_os_error(-c.result()));
                }
                if c.result() as usize != len {
                    return Err(io::Error::other("short send or receive"));
                }
                done += 1;
            }
            if done < want {
                ring.submit_and_wait(1)?;
            }
        }
        i = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Exercises both modes, including the io_uring batches (the unsafe push): every pair must receive exactly
    // the bytes sent in every round, over more pairs than one submission holds so batching is crossed.
    #[test]
    fn both_modes_deliver_every_message_to_every_pair() {
        let mut pairs = Pairs::open(RING as usize + 100).expect("open pairs");
        for mode in [Mode::Syscalls, Mode::Uring] {
            let rounds = measure(&mut pairs, mode, 100, 3).expect("measure");
            assert_eq!(rounds.len(), 3);
        }
    }
}
