//! Owns the per-subscriber sequence check: every seq of the topic published during the run must arrive exactly
//! once and in order. Counts lost, duplicated and out-of-order seqs with 128 bits of state per subscriber.
//!
//! Definitions (per subscriber, over the expected range `first..=last` its topic was published with):
//! - **duplicated**: a seq that arrives when it has already arrived;
//! - **out of order**: a seq that arrives for the first time after a higher seq arrived (a swapped pair counts 1);
//! - **lost**: a seq of the expected range that never arrived.
//!
//! Seqs more than 128 below the highest one seen cannot be told apart from duplicates: they count as out of
//! order (and, not being remembered, a second copy would count out of order again).

/// Window of remembered seqs below the highest.
const WINDOW: u64 = 128;

/// The state of one subscriber's check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqChecker {
    /// Highest seq seen; 0 before the first.
    highest: u64,
    /// Bit i set: seq `highest - i` arrived.
    seen: u128,
    /// Distinct seqs that arrived.
    distinct: u64,
    /// Lowest seq that arrived.
    lowest: u64,
    /// Counters.
    duplicated: u64,
    out_of_order: u64,
}

/// The outcome of one subscriber's check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqResult {
    /// Distinct seqs received within the expected range.
    pub delivered: u64,
    /// Expected seqs that never arrived.
    pub lost: u64,
    /// Seqs that arrived more than once (each extra copy counts).
    pub duplicated: u64,
    /// Seqs that arrived after a higher one.
    pub out_of_order: u64,
}

impl SeqChecker {
    /// A checker that has seen nothing.
    pub fn new() -> Self {
        SeqChecker::default()
    }

    /// Records the arrival of `seq` (seqs start at 1).
    pub fn record(&mut self, seq: u64) {
        if self.distinct == 0 {
            self.highest = seq;
            self.lowest = seq;
            self.seen = 1;
            self.distinct = 1;
            return;
        }
        if seq > self.highest {
            let shift = seq - self.highest;
            self.seen = if shift >= WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.highest = seq;
            self.distinct += 1;
            return;
        }
        let back = self.highest - seq;
        if back >= WINDOW {
            self.out_of_order += 1;
            self.distinct += 1;
        } else if self.seen & (1u128 << back) != 0 {
            self.duplicated += 1;
        } else {
            self.seen |= 1u128 << back;
            self.out_of_order += 1;
            self.distinct += 1;
        }
        self.lowest = self.lowest.min(seq);
    }

    /// Distinct seqs received so far.
    pub fn distinct(&self) -> u64 {
        self.distinct
    }

    /// Highest seq received so far (0 before any).
    pub fn highest(&self) -> u64 {
        self.highest
    }

    /// The result against the expected range `first..=last` (`None`: nothing was published on the topic).
    pub fn finish(&self, expected: Option<(u64, u64)>) -> SeqResult {
        let want = expected.map_or(0, |(a, b)| b.saturating_sub(a) + 1);
        // Deliveries outside the expected range (e.g. an earlier publish replayed) are not part of the check.
        let delivered = self.distinct.min(want);
        SeqResult {
            delivered,
            lost: want - delivered,
            duplicated: self.duplicated,
            out_of_order: self.out_of_order,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seqs: &[u64], first: u64, last: u64) -> SeqResult {
        let mut c = SeqChecker::new();
        for &s in seqs {
            c.record(s);
        }
        c.finish(Some((first, last)))
    }

    #[test]
    fn table() {
        let r = |d, l, du, o| SeqResult {
            delivered: d,
            lost: l,
            duplicated: du,
            out_of_order: o,
        };
        let cases: &[(&[u64], u64, u64, SeqResult)] = &[
            (&[1, 2, 3, 4], 1, 4, r(4, 0, 0, 0)),
            (&[1, 2, 4], 1, 4, r(3, 1, 0, 0)),
            (&[1, 2, 2, 3], 1, 3, r(3, 0, 1, 0)),
            (&[1, 3, 2, 4], 1, 4, r(4, 0, 0, 1)),
            (&[2, 3, 4], 1, 4, r(3, 1, 0, 0)),
            (&[1, 2, 3], 1, 5, r(3, 2, 0, 0)),
            (&[], 1, 3, r(0, 3, 0, 0)),
            // Drop 3, duplicate 5, swap 7 and 8.
            (&[1, 2, 4, 5, 5, 6, 8, 7, 9, 10], 1, 10, r(9, 1, 1, 1)),
            (&[10, 11, 12], 10, 12, r(3, 0, 0, 0)),
            (&[1, 300, 2], 1, 300, r(3, 297, 0, 1)),
        ];
        for (seqs, a, b, want) in cases {
            assert_eq!(run(seqs, *a, *b), *want, "{seqs:?}");
        }
    }

    #[test]
    fn nothing_published_nothing_lost() {
        let c = SeqChecker::new();
        assert_eq!(c.finish(None), SeqResult::default());
    }
}
