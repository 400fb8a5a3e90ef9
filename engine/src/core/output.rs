//! Output on a core: staged replies handed to the kernel with one write per connection per turn, what the kernel
//! refuses kept in the connection's bounded queue (shared `Bytes`, no copy for fan-out) and drained on EPOLLOUT, the
//! slow-consumer policy and conflation (over a high-water mark that counts the kernel's send buffer too), and
//! finishing a close once the queue is empty.

use super::*;
use std::mem::MaybeUninit;

/// The most bytes of a fan-out pass's joined frames one queue entry holds (see [`Core::queue_joined`]).
pub(super) const JOINED_ENTRY_MAX: usize = 64 * 1024;

/// One queue entry of a joined buffer (`ends`: each frame's end offset) starting at frame `first`, which starts at
/// offset `start`: the frames `first..` the returned index, as many as fit in `max` bytes and at least one.
fn entry_end(ends: &[usize], first: usize, start: usize, max: usize) -> usize {
    ends.partition_point(|&e| e <= start.saturating_add(max))
        .max(first + 1)
}

/// Flags for writing a connection's output: `MSG_MORE` when the connection ends once it is written (closed, or
/// shut down after an error close), so the kernel holds a last short segment back and [`Core::drained`]'s
/// shutdown sends it with the FIN: two segments fewer per connection on the wire (the FIN's own and the peer's
/// acknowledgement of the data), and a closing client is woken once. Full segments still leave at once, and
/// any later write without the flag pushes what is held.
fn send_flags(conn: &Conn) -> libc::c_int {
    let ends = conn.has(CLOSE_ON_FLUSH)
        || (conn.state == State::Closing && conn.has(ERRORED) && !conn.has(SHUT_WRITE));
    libc::MSG_NOSIGNAL | if ends { libc::MSG_MORE } else { 0 }
}

impl Core {
    /// Counts `n` frames of shared output handed to connection `key` (written at once or queued behind its
    /// backlog) in `frames_out`, when it is a WebSocket: SSE events and HTTP responses take the same path.
    pub(super) fn count_frames_out(&mut self, key: usize, n: usize) {
        if matches!(self.conns[key].state, State::Ws | State::Closing) {
            add(&self.stats.frames_out, n as u64);
        }
    }

    /// The output queue just became empty: finish a close that was waiting for it.
    pub(super) fn drained(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if conn.has(CLOSE_ON_FLUSH) {
            // The last bytes were written with `MSG_MORE` (see [`send_flags`]): the shutdown sends them and the FIN
            // in one segment. Not `close` alone: with unread input `close` resets the connection and discards what
            // is still queued, the last reply included.
            // SAFETY: shutdown takes no pointers; `fd` is owned by this connection.
            unsafe { libc::shutdown(conn.fd, libc::SHUT_WR) };
            self.close(key);
        } else if conn.state == State::Closing && conn.has(ERRORED) && !conn.has(SHUT_WRITE) {
            // After an error close the server ends the TCP stream first (FIN, not RST: unread bytes are still
            // drained) and waits for the peer's EOF until the close deadline.
            conn.flags |= SHUT_WRITE;
            // SAFETY: shutdown takes no pointers; `fd` is owned by this connection.
            unsafe { libc::shutdown(conn.fd, libc::SHUT_WR) };
        }
    }

    /// Hands the staged bytes for `key` to the kernel; queues what it refuses.
    pub(super) fn finish_output(&mut self, key: usize) {
        if self.wbuf.is_empty() {
            self.marks.clear();
            if self.conns[key].out.is_none() {
                self.drained(key);
            }
            return;
        }
        let conn = &mut self.conns[key];
        let mut written = 0;
        if conn.out.is_none() {
            let flags = send_flags(conn);
            // SAFETY: `wbuf` is a valid readable buffer of `wbuf.len()` bytes for the duration of the call.
            let r =
                unsafe { libc::send(conn.fd, self.wbuf.as_ptr().cast(), self.wbuf.len(), flags) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if !is_would_block(&e) && e.kind() != io::ErrorKind::Interrupted {
                    self.wbuf.clear();
                    self.marks.clear();
                    self.close(key);
                    return;
                }
            } else {
                written = r as usize;
                add(&self.stats.bytes_out, written as u64);
            }
        }
        if written < self.wbuf.len() {
            self.spill(key, written);
        }
        self.wbuf.clear();
        self.marks.clear();
        if self.conns[key].out.is_some() {
            self.flush(key);
        } else {
            self.drained(key);
        }
    }

    /// Copies the unwritten tail of `wbuf` into the connection's queue, one entry per frame.
    pub(super) fn spill(&mut self, key: usize, written: usize) {
        // A frame the kernel took only part of is queued whole, with `head_written` recording the part already
        // sent, so that the slow-consumer policy sees it as partly written and never drops or cuts it mid-frame.
        // (Bytes are written directly only when the queue is empty, so `partial > 0` implies a fresh queue.)
        let frame_start = self
            .marks
            .iter()
            .map(|&(end, _)| end)
            .take_while(|&end| end <= written)
            .last()
            .unwrap_or(0);
        let partial = written - frame_start;
        let tail = Bytes::copy_from_slice(&self.wbuf[frame_start..]);
        let conn = &mut self.conns[key];
        let out = conn.out.get_or_insert_with(Box::default);
        debug_assert!(partial == 0 || out.frames.is_empty());
        if partial > 0 {
            out.head_written = partial;
        }
        let mut start = frame_start;
        let mut rest = tail;
        for &(end, control) in &self.marks {
            if end <= start {
                continue;
            }
            let piece = rest.split_to(end - start);
            out.bytes += piece.len();
            out.frames.push_back(OutFrame::one(piece, control, 0));
            start = end;
        }
        if !rest.is_empty() {
            out.bytes += rest.len();
            out.frames.push_back(OutFrame::one(rest, true, 0));
        }
        // `bytes` counts what is still unwritten.
        out.bytes -= partial;
        self.enforce_high_water(key);
    }

    /// Writes a group of shared frames staged for one connection with as few writev calls as the kernel allows,
    /// and queues what it refuses (as slices of the same `Bytes`, no copy).
    pub(super) fn write_shared(&mut self, key: usize, group: &mut [(u32, bool, u32, Bytes)]) {
        self.count_frames_out(key, group.len());
        let fd = self.conns[key].fd;
        let mut idx = 0; // first frame not fully written
        let mut partial = 0; // bytes of group[idx] already written
        if self.conns[key].out.is_none() {
            while idx < group.len() {
                // Not zeroed: 16 KiB of memset per call was 3 % of a core at one message per write.
                let mut iov = [const { MaybeUninit::<libc::iovec>::uninit() }; MAX_IOVECS];
                let mut cnt = 0;
                for (i, (_, _, _, b)) in group[idx..].iter().take(MAX_IOVECS).enumerate() {
                    let s = if i == 0 { &b[partial..] } else { &b[..] };
                    iov[i].write(libc::iovec {
                        iov_base: s.as_ptr() as *mut libc::c_void,
                        iov_len: s.len(),
                    });
                    cnt = i + 1;
                }
                // SAFETY: the first `cnt` iovecs were written just above (the rest are never read) and point
                // into `Bytes` owned by `group`, alive for the call.
                let r = unsafe { libc::writev(fd, iov.as_ptr().cast(), cnt as libc::c_int) };
                if r < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    if is_would_block(&e) {
                        break;
                    }
                    self.close(key);
                    return;
                }
                let mut n = r as usize;
                add(&self.stats.bytes_out, n as u64);
                while n > 0 && idx < group.len() {
                    let left = group[idx].3.len() - partial;
                    if n >= left {
                        n -= left;
                        idx += 1;
                        partial = 0;
                    } else {
                        partial += n;
                        n = 0;
                    }
                }
                if idx < group.len() && (partial > 0 || cnt < MAX_IOVECS) {
                    break; // the kernel took less than offered: the socket is full
                }
            }
            if idx == group.len() {
                self.drained(key);
                return;
            }
        }
        self.queue_shared(key, &mut group[idx..], partial);
    }

    /// Queues `group` for a connection (its first frame with `partial` bytes already written), then
    /// [`Core::after_queueing`].
    pub(super) fn queue_shared(
        &mut self,
        key: usize,
        group: &mut [(u32, bool, u32, Bytes)],
        partial: usize,
    ) {
        let conn = &mut self.conns[key];
        let out = conn.out.get_or_insert_with(Box::default);
        for (i, (_, control, slot, b)) in group.iter_mut().enumerate() {
            let bytes = std::mem::take(b);
            if i == 0 && partial > 0 {
                out.head_written = partial;
                out.bytes += bytes.len() - partial;
            } else {
                out.bytes += bytes.len();
            }
            out.frames.push_back(OutFrame::one(bytes, *control, *slot));
        }
        self.after_queueing(key);
    }

    /// Queues the WebSocket frames of a fan-out pass's joined buffer from frame `first` on (`ends`: the end offset
    /// of each frame in `joined`) for a connection, the first `partial` bytes of frame `first` already written
    /// (only when nothing was queued before), then [`Core::after_queueing`]. The frames go as slices of `joined`,
    /// shared with every other subscriber that queues them, each at most [`JOINED_ENTRY_MAX`] bytes (or one frame)
    /// and at most a quarter of the high-water mark: a single turn can batch thousands of messages, and one entry
    /// holding all of them would be out of reach of `DropOldest`, which never drops the newest entry.
    pub(super) fn queue_joined(
        &mut self,
        key: usize,
        joined: &Bytes,
        ends: &[usize],
        first: usize,
        partial: usize,
    ) {
        let max = (self.shared.config.write_high_water / 4).clamp(1, JOINED_ENTRY_MAX);
        let conn = &mut self.conns[key];
        let out = conn.out.get_or_insert_with(Box::default);
        debug_assert!(partial == 0 || out.frames.is_empty());
        let mut first = first;
        let mut start = first.checked_sub(1).map_or(0, |i| ends[i]);
        let mut partial = partial;
        while first < ends.len() {
            let last = entry_end(ends, first, start, max);
            let end = ends[last - 1];
            if partial > 0 {
                out.head_written = partial;
            }
            out.bytes += end - start - partial;
            out.frames.push_back(OutFrame {
                bytes: joined.slice(start..end),
                topic: 0,
                messages: u16::try_from(last - first).unwrap_or(u16::MAX),
                control: false,
            });
            partial = 0;
            first = last;
            start = end;
        }
        self.after_queueing(key);
    }

    /// After output was queued for `key`: the slow-consumer policy, then a flush, unless the connection already
    /// waits in the write set. There its socket refused bytes earlier, most often in this very turn, so a `writev`
    /// now would nearly always fail with EAGAIN (one wasted syscall per backed-up subscriber per fan-out pass); the
    /// level-triggered write set reports it once the kernel takes bytes again.
    fn after_queueing(&mut self, key: usize) {
        self.enforce_high_water(key);
        if self.conns.get(key).is_some_and(|c| !c.has(WANT_WRITE)) {
            self.flush(key);
        }
    }

    /// Applies the slow-consumer policy when the queue plus what the kernel holds for the connection is over the
    /// high-water mark. Conflated topics go first: a slow subscriber keeps only the newest queued message of each,
    /// and is never disconnected for them (a queue of such messages alone is measured against the mark without the
    /// kernel's part, which conflation cannot reach). `DropOldest` never drops the newest queued frame, so even
    /// behind a kernel buffer that fills the mark by itself the subscriber ends on the newest message.
    pub(super) fn enforce_high_water(&mut self, key: usize) {
        let config = &self.shared.config;
        // The most the kernel can hold with a configured SO_SNDBUF (it doubles the value); 0: autotuned, unknown.
        let kernel_cap = config.send_buffer.saturating_mul(2);
        let conn = &mut self.conns[key];
        let already_closing = conn.state == State::Closing && conn.has(ERRORED);
        let Some(out) = conn.out.as_mut() else { return };
        // Only reached when the kernel refused bytes, so its send buffer is full: ask it how much that is (one
        // ioctl), unless even a full one could not reach the mark.
        let kernel =
            if kernel_cap > 0 && out.bytes.saturating_add(kernel_cap) <= config.write_high_water {
                0
            } else {
                kernel_queued(conn.fd)
            };
        // What our own queue may keep.
        let mark = config.write_high_water;
        let high = mark.saturating_sub(kernel);
        if out.bytes <= high {
            return;
        }
        if out.frames.iter().any(|f| f.topic != 0) {
            let n = out.frames.len();
            let mut keep = vec![true; n];
            let mut seen: Vec<u32> = Vec::new();
            for i in (0..n).rev() {
                let f = &out.frames[i];
                if f.topic == 0 || f.control || (i == 0 && out.head_written > 0) {
                    continue;
                }
                if seen.contains(&f.topic) {
                    keep[i] = false;
                } else {
                    seen.push(f.topic);
                }
            }
            let mut i = 0;
            let mut dropped = 0u64;
            let mut bytes = out.bytes;
            out.frames.retain(|f| {
                let k = keep[i];
                i += 1;
                if !k {
                    bytes -= f.bytes.len();
                    dropped += 1;
                }
                k
            });
            out.bytes = bytes;
            add(&self.stats.conflated, dropped);
            if out.bytes <= high {
                return;
            }
            if out.bytes <= mark && out.frames.iter().all(|f| f.topic != 0 || f.control) {
                // Only the newest message of each conflated topic (and control frames) is left.
                return;
            }
        }
        match self.shared.config.slow_consumer {
            SlowConsumerPolicy::DropOldest => {
                let keep_head = out.head_written > 0;
                let newest = out.frames.len().saturating_sub(1);
                let mut dropped = 0u64;
                let mut idx = 0usize;
                let mut bytes = out.bytes;
                out.frames.retain(|f| {
                    let i = idx;
                    idx += 1;
                    if bytes <= high || f.control || (i == 0 && keep_head) || i == newest {
                        return true;
                    }
                    bytes -= f.bytes.len();
                    dropped += u64::from(f.messages);
                    false
                });
                out.bytes = bytes;
                add(&self.stats.slow_consumer_drops, dropped);
            }
            SlowConsumerPolicy::Disconnect => {
                if already_closing {
                    return;
                }
                // Keep a frame already partly written so the stream stays well-formed, then a close 1008.
                if out.head_written > 0 {
                    out.frames.truncate(1);
                    out.bytes = out
                        .frames
                        .front()
                        .map_or(0, |f| f.bytes.len() - out.head_written);
                } else {
                    out.frames.clear();
                    out.bytes = 0;
                }
                add(&self.stats.slow_consumer_disconnects, 1);
                if conn.state == State::Sse
                    || conn.state == State::Waiting
                    || conn.state == State::Http
                {
                    // No close frame on HTTP transports: the stream just ends.
                    conn.state = State::Closing;
                    conn.flags |= ERRORED | CLOSE_ON_FLUSH;
                    conn.deadline = self.now.wrapping_add(self.timers.close);
                    return;
                }
                let mut payload = [0u8; 125];
                let n = encode_close_payload(
                    CloseCode::POLICY_VIOLATION,
                    "slow consumer",
                    &mut payload,
                );
                let mut frame = Vec::with_capacity(n + 2);
                encode_server_frame(&mut frame, true, OpCode::Close, &payload[..n]);
                out.bytes += frame.len();
                out.frames
                    .push_back(OutFrame::one(Bytes::from(frame), true, 0));
                conn.state = State::Closing;
                conn.flags |= ERRORED | CLOSE_ON_FLUSH;
                conn.deadline = self.now.wrapping_add(self.timers.close);
                self.stats.protocol_error(CloseCode::POLICY_VIOLATION.0);
            }
        }
    }

    /// Writes as much of the queue as the kernel takes; re-arms EPOLLOUT while anything is left.
    pub(super) fn flush(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let flags = send_flags(conn);
        let Some(out) = conn.out.as_mut() else {
            return;
        };
        loop {
            // Not zeroed (see `write_shared`).
            let mut iov = [const { MaybeUninit::<libc::iovec>::uninit() }; MAX_IOVECS];
            let mut cnt = 0;
            for (i, f) in out.frames.iter().take(MAX_IOVECS).enumerate() {
                let skip = if i == 0 { out.head_written } else { 0 };
                let s = &f.bytes[skip.min(f.bytes.len())..];
                iov[i].write(libc::iovec {
                    iov_base: s.as_ptr() as *mut libc::c_void,
                    iov_len: s.len(),
                });
                cnt = i + 1;
            }
            if cnt == 0 {
                break;
            }
            // SAFETY: all-zero is a valid msghdr (no name, no control data).
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = iov.as_mut_ptr().cast();
            msg.msg_iovlen = cnt as _;
            // SAFETY: `msg` points at the first `cnt` iovecs, written just above (the rest are never read), which
            // point into `Bytes` held by `out.frames`, alive for the call.
            let r = unsafe { libc::sendmsg(conn.fd, &msg, flags) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                if is_would_block(&e) {
                    break;
                }
                self.close(key);
                return;
            }
            let mut n = r as usize;
            add(&self.stats.bytes_out, n as u64);
            out.bytes -= n.min(out.bytes);
            while n > 0 {
                let Some(front) = out.frames.front() else {
                    break;
                };
                let left = front.bytes.len() - out.head_written;
                if n >= left {
                    n -= left;
                    out.frames.pop_front();
                    out.head_written = 0;
                } else {
                    out.head_written += n;
                    n = 0;
                }
            }
            if out.frames.is_empty() || out.head_written > 0 {
                break;
            }
        }
        if out.frames.is_empty() {
            conn.out = None;
            if conn.has(WANT_WRITE) {
                conn.flags &= !WANT_WRITE;
                let _ = self.write_set.delete(conn.fd);
                sub(&self.stats.backlogged, 1);
            }
            self.drained(key);
        } else if !conn.has(WANT_WRITE) {
            conn.flags |= WANT_WRITE;
            let _ = self.write_set.add(conn.fd, WRITE, key as u64);
            add(&self.stats.backlogged, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::entry_end;
    use proptest::prelude::*;

    /// Splits frames of the given sizes from frame `first` on as `queue_joined` does.
    fn entries(sizes: &[usize], first: usize, max: usize) -> Vec<(usize, usize)> {
        let ends: Vec<usize> = sizes
            .iter()
            .scan(0, |end, &n| {
                *end += n;
                Some(*end)
            })
            .collect();
        let mut out = Vec::new();
        let mut first = first;
        let mut start = first.checked_sub(1).map_or(0, |i| ends[i]);
        while first < ends.len() {
            let last = entry_end(&ends, first, start, max);
            out.push((first, last));
            start = ends[last - 1];
            first = last;
        }
        out
    }

    #[test]
    fn entries_table() {
        assert_eq!(entries(&[10, 10, 10, 10], 0, 20), vec![(0, 2), (2, 4)]);
        assert_eq!(entries(&[10, 10, 10, 10], 1, 25), vec![(1, 3), (3, 4)]);
        // A frame larger than `max` goes alone.
        assert_eq!(entries(&[5, 50, 5, 5], 0, 20), vec![(0, 1), (1, 2), (2, 4)]);
        assert_eq!(entries(&[10, 10], 0, usize::MAX), vec![(0, 2)]);
        assert_eq!(entries(&[10, 10], 2, 20), vec![]);
    }

    proptest! {
        /// Entries cover every frame from `first` once, in order; each holds at most `max` bytes unless it is a
        /// single frame, and no entry could have taken the next frame too.
        #[test]
        fn entries_cover_each_frame_once_within_max(
            sizes in proptest::collection::vec(1usize..5000, 1..200),
            first_pick in any::<proptest::sample::Index>(),
            max in 1usize..20_000,
        ) {
            let first = first_pick.index(sizes.len());
            let got = entries(&sizes, first, max);
            let mut next = first;
            for &(a, b) in &got {
                prop_assert_eq!(a, next);
                prop_assert!(b > a);
                let bytes: usize = sizes[a..b].iter().sum();
                prop_assert!(bytes <= max || b == a + 1, "{a}..{b}: {bytes} > {max}");
                if b < sizes.len() {
                    prop_assert!(bytes + sizes[b] > max, "{a}..{b} could take frame {b}");
                }
                next = b;
            }
            prop_assert_eq!(next, sizes.len());
        }
    }
}
