//! A topic's retained history on its owner core: the last messages, bounded by count, bytes and age, for resume.
//!
//! Entries are kept in sequence order with no gaps (the owner appends every message it numbers), so the entry for
//! `seq` is found by arithmetic, not search. A reader asking for everything after `since` learns whether the
//! history still covers that point; when it does not, the answer carries a reset to the oldest retained message.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Bounds of one topic's history. Zero `max_messages` or `max_bytes` disables history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Most messages kept.
    pub max_messages: usize,
    /// Most payload bytes kept.
    pub max_bytes: usize,
    /// Oldest message kept; `None` keeps messages regardless of age.
    pub max_age: Option<Duration>,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits {
            max_messages: 1000,
            max_bytes: 1 << 20,
            max_age: Some(Duration::from_secs(3600)),
        }
    }
}

/// One retained message.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) seq: u64,
    /// The message's JSON data.
    pub(crate) data: Bytes,
    pub(crate) at: Instant,
}

/// What a read of "everything after `since`" found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Range {
    /// `Some(m)` when history no longer covers `since`: the client missed messages up to `m` inclusive and the
    /// entries returned start at `m + 1`.
    pub(crate) reset: Option<u64>,
    /// Index in the history of the first entry to return, and how many.
    pub(crate) start: usize,
    pub(crate) len: usize,
}

/// The retained messages of one topic, oldest first.
#[derive(Debug, Default)]
pub(crate) struct History {
    entries: VecDeque<Entry>,
    bytes: usize,
}

impl History {
    /// Appends the message numbered `seq` (always the last seq + 1) and trims to the limits.
    pub(crate) fn push(&mut self, limits: &HistoryLimits, seq: u64, data: Bytes, now: Instant) {
        if limits.max_messages == 0 || limits.max_bytes == 0 {
            return;
        }
        debug_assert!(self.entries.back().is_none_or(|e| e.seq + 1 == seq));
        self.bytes += data.len();
        self.entries.push_back(Entry { seq, data, at: now });
        while self.entries.len() > limits.max_messages
            || (self.bytes > limits.max_bytes && self.entries.len() > 1)
        {
            self.pop_front();
        }
        self.expire(limits, now);
    }

    fn pop_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.bytes -= e.data.len();
        }
    }

    /// Drops messages older than the age limit.
    pub(crate) fn expire(&mut self, limits: &HistoryLimits, now: Instant) {
        if let Some(age) = limits.max_age {
            while self
                .entries
                .front()
                .is_some_and(|e| now.saturating_duration_since(e.at) > age)
            {
                self.pop_front();
            }
        }
    }

    /// Everything after `since`, at most `limit` entries, given that the topic's last seq is `last_seq`.
    pub(crate) fn after(&self, since: u64, last_seq: u64, limit: usize) -> Range {
        if since > last_seq {
            // The client is ahead of the topic: the server restarted (or the cursor came from elsewhere). Its
            // cursor is reset to where the topic is, and it must resync what it had.
            return Range {
                reset: Some(last_seq),
                start: 0,
                len: 0,
            };
        }
        if since == last_seq {
            return Range {
                reset: None,
                start: 0,
                len: 0,
            };
        }
        let Some(oldest) = self.entries.front().map(|e| e.seq) else {
            // Nothing retained but messages exist after `since`: they are gone.
            return Range {
                reset: Some(last_seq),
                start: 0,
                len: 0,
            };
        };
        let (reset, first) = if since + 1 < oldest {
            (Some(oldest - 1), oldest)
        } else {
            (None, since + 1)
        };
        let start = (first - oldest) as usize;
        let len = (self.entries.len() - start).min(limit);
        Range { reset, start, len }
    }

    /// The entries of a range.
    pub(crate) fn entries(&self, r: &Range) -> impl Iterator<Item = &Entry> {
        self.entries.range(r.start..r.start + r.len)
    }

    /// Messages retained.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(n: usize, bytes: usize) -> HistoryLimits {
        HistoryLimits {
            max_messages: n,
            max_bytes: bytes,
            max_age: None,
        }
    }

    fn filled(l: &HistoryLimits, upto: u64) -> History {
        let mut h = History::default();
        let now = Instant::now();
        for seq in 1..=upto {
            h.push(l, seq, Bytes::from(format!("{seq}")), now);
        }
        h
    }

    fn seqs(h: &History, r: &Range) -> Vec<u64> {
        h.entries(r).map(|e| e.seq).collect()
    }

    #[test]
    fn keeps_the_last_n_and_answers_ranges() {
        let l = limits(5, 1 << 20);
        let h = filled(&l, 12);
        assert_eq!(h.len(), 5);
        let r = h.after(9, 12, 100);
        assert_eq!((r.reset, seqs(&h, &r)), (None, vec![10, 11, 12]));
        let r = h.after(7, 12, 100);
        assert_eq!(
            (r.reset, seqs(&h, &r)),
            (None, vec![8, 9, 10, 11, 12]),
            "exactly covered"
        );
        let r = h.after(6, 12, 100);
        assert_eq!(
            (r.reset, seqs(&h, &r)),
            (Some(7), vec![8, 9, 10, 11, 12]),
            "one missed"
        );
        let r = h.after(0, 12, 2);
        assert_eq!(
            (r.reset, seqs(&h, &r)),
            (Some(7), vec![8, 9]),
            "limit applies"
        );
        let r = h.after(12, 12, 100);
        assert_eq!((r.reset, r.len), (None, 0), "up to date");
        let r = h.after(40, 12, 100);
        assert_eq!(
            (r.reset, r.len),
            (Some(12), 0),
            "ahead of the topic (a restart): reset to where it is"
        );
    }

    #[test]
    fn byte_limit_and_disabled_history() {
        let l = limits(100, 10);
        let h = filled(&l, 20); // "11".."20" are two bytes each
        assert_eq!(h.len(), 5);
        let off = limits(0, 10);
        let h = filled(&off, 20);
        assert_eq!(h.len(), 0);
        let r = h.after(3, 20, 100);
        assert_eq!((r.reset, r.len), (Some(20), 0));
    }

    #[test]
    fn age_limit_expires_old_messages() {
        let l = HistoryLimits {
            max_messages: 100,
            max_bytes: 1 << 20,
            max_age: Some(Duration::from_secs(10)),
        };
        let mut h = History::default();
        let t0 = Instant::now();
        h.push(&l, 1, Bytes::from_static(b"a"), t0);
        h.push(&l, 2, Bytes::from_static(b"b"), t0 + Duration::from_secs(8));
        h.expire(&l, t0 + Duration::from_secs(11));
        assert_eq!(h.len(), 1);
        let r = h.after(0, 2, 10);
        assert_eq!((r.reset, seqs(&h, &r)), (Some(1), vec![2]));
    }
}
