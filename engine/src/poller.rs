//! The core's readiness set: one epoll instance per core where every connection is parked while it waits for
//! bytes, plus an eventfd through which other threads wake the core.
//!
//! This is what lets an idle connection cost a slab entry and no task, no future and no buffer: the only thing the
//! kernel keeps for it besides the socket is one epoll registration. A connection with unsent output is also in a
//! second set, the core's write set, which is itself registered in the first: see [`WRITE`]. The epoll descriptor itself is awaited through
//! the core's monoio runtime (an io_uring poll request, or the legacy driver's epoll), so the reactor sleeps in one
//! place for accepts, timers and connection readiness alike.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Readable, or the peer shut its side down.
pub(crate) const READ: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
/// Writable: the interest of a connection in the write set. The write set is separate so that a turn serves what
/// arrived (requests, new connections, publishes) before it writes backlogs: with one level-triggered set, ten
/// thousand subscribers draining a backlog sit in the ready list ahead of a new request, which then waits for all
/// of their writes.
pub(crate) const WRITE: u32 = libc::EPOLLOUT as u32;

/// Thin safe wrapper over an epoll instance.
pub(crate) struct Epoll {
    fd: OwnedFd,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl Epoll {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 takes no pointers; a non-negative result is a fresh descriptor we now own.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `fd` was just returned by epoll_create1 and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll { fd })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call; bad descriptors are reported as errors.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) })?;
        Ok(())
    }

    pub(crate) fn add(&self, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, token)
    }

    #[cfg(test)]
    pub(crate) fn modify(&self, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, events, token)
    }

    pub(crate) fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Takes ready events without blocking; returns how many were written to the front of `events`.
    pub(crate) fn poll_now(&self, events: &mut [libc::epoll_event]) -> io::Result<usize> {
        let max = events.len().min(i32::MAX as usize) as libc::c_int;
        loop {
            // SAFETY: `events` is a valid, writable array of `max` epoll_event; timeout 0 never blocks.
            let r = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), max, 0) };
            if r >= 0 {
                return Ok(r as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A cross-thread wake-up: an eventfd registered in a core's epoll set.
#[derive(Debug)]
pub(crate) struct Waker {
    fd: OwnedFd,
}

impl Waker {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a fresh descriptor we now own.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Waker { fd })
    }

    /// Wakes the core that owns this waker. Callable from any thread.
    pub(crate) fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd; failure (counter saturated) still leaves it readable.
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Clears pending wake-ups (called by the owning core).
    pub(crate) fn clear(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a valid u64; a non-blocking eventfd returns EAGAIN when not signalled.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waker_makes_epoll_ready_and_clear_resets_it() {
        let ep = Epoll::new().unwrap();
        let w = Waker::new().unwrap();
        ep.add(w.raw_fd(), READ, 7).unwrap();
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 4];
        assert_eq!(ep.poll_now(&mut evs).unwrap(), 0);
        w.wake();
        w.wake();
        assert_eq!(ep.poll_now(&mut evs).unwrap(), 1);
        let token = evs[0].u64;
        assert_eq!(token, 7);
        w.clear();
        assert_eq!(ep.poll_now(&mut evs).unwrap(), 0);
        ep.modify(w.raw_fd(), READ | WRITE, 9).unwrap();
        assert_eq!(
            ep.poll_now(&mut evs).unwrap(),
            1,
            "an eventfd is always writable"
        );
    }

    #[test]
    fn a_nested_write_set_makes_the_outer_set_ready_until_deleted_from() {
        let outer = Epoll::new().unwrap();
        let writes = Epoll::new().unwrap();
        outer.add(writes.raw_fd(), READ, 1).unwrap();
        let w = Waker::new().unwrap();
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 4];
        assert_eq!(outer.poll_now(&mut evs).unwrap(), 0);
        writes.add(w.raw_fd(), WRITE, 5).unwrap();
        // Level-triggered: reported on every poll while the inner set has a ready member.
        for _ in 0..2 {
            assert_eq!(outer.poll_now(&mut evs).unwrap(), 1);
            let token = evs[0].u64;
            assert_eq!(token, 1);
            assert_eq!(writes.poll_now(&mut evs).unwrap(), 1);
            let token = evs[0].u64;
            assert_eq!(token, 5);
        }
        writes.delete(w.raw_fd()).unwrap();
        assert_eq!(outer.poll_now(&mut evs).unwrap(), 0);
        assert!(writes.delete(w.raw_fd()).is_err(), "not a member any more");
    }
}
