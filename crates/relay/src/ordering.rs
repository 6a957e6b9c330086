//! Inbound record ordering (spec §10.4 item 5). Noise nonces are implicit, so records must be
//! decrypted in `seq` order; the relay may deliver them out of order. [`ReorderWindow`] buffers
//! early records and releases runs that start at the next expected `seq`.
//!
//! A duplicate or old `seq` is ignored (a replay of an already delivered record never reaches
//! the cipher). A record more than [`MAX_REORDER_GAP`] ahead, more than [`MAX_BUFFERED_RECORDS`]
//! buffered records, or more than [`MAX_BUFFERED_BYTES`] buffered bytes is a protocol error,
//! which bounds the window's memory at 1 MiB of payload.

use std::collections::BTreeMap;

/// Largest accepted distance between a record's `seq` and the next expected `seq`.
pub const MAX_REORDER_GAP: u32 = 64;
/// Most records buffered while waiting for a missing one.
pub const MAX_BUFFERED_RECORDS: usize = 64;
/// Most payload bytes buffered while waiting for a missing record: 1 MiB.
pub const MAX_BUFFERED_BYTES: usize = 1024 * 1024;

/// Why an inbound record broke the ordering rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// `seq` is more than [`MAX_REORDER_GAP`] past the next expected one.
    #[error("relay record seq {seq} is too far ahead of expected seq {expected}")]
    GapTooLarge {
        /// Received seq.
        seq: u32,
        /// Next expected seq.
        expected: u64,
    },
    /// Buffering the record would exceed [`MAX_BUFFERED_RECORDS`].
    #[error("too many out-of-order relay records buffered")]
    TooManyRecords,
    /// Buffering the record would exceed [`MAX_BUFFERED_BYTES`].
    #[error("too many out-of-order relay record bytes buffered")]
    TooManyBytes,
}

/// What [`ReorderWindow::push`] did with a record.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Records now deliverable, in `seq` order (possibly empty when the record was buffered).
    Ready(Vec<Vec<u8>>),
    /// A duplicate or already delivered `seq`: dropped.
    Duplicate,
}

/// The per-direction reorder buffer of one stream.
#[derive(Debug, Default)]
pub struct ReorderWindow {
    /// Next seq to deliver; a `u64` so delivering `u32::MAX` does not wrap.
    next: u64,
    buffered: BTreeMap<u32, Vec<u8>>,
    buffered_bytes: usize,
}

impl ReorderWindow {
    /// A window expecting seq 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next seq this window will deliver.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Accepts the record `seq`. After an error the stream must be reset.
    pub fn push(&mut self, seq: u32, payload: Vec<u8>) -> Result<Pushed, OrderError> {
        let s = u64::from(seq);
        if s < self.next || self.buffered.contains_key(&seq) {
            return Ok(Pushed::Duplicate);
        }
        if s - self.next > u64::from(MAX_REORDER_GAP) {
            return Err(OrderError::GapTooLarge {
                seq,
                expected: self.next,
            });
        }
        if s == self.next {
            self.next += 1;
            let mut ready = vec![payload];
            while let Some(p) = u32::try_from(self.next)
                .ok()
                .and_then(|n| self.buffered.remove(&n))
            {
                self.buffered_bytes -= p.len();
                self.next += 1;
                ready.push(p);
            }
            return Ok(Pushed::Ready(ready));
        }
        if self.buffered.len() >= MAX_BUFFERED_RECORDS {
            return Err(OrderError::TooManyRecords);
        }
        if self.buffered_bytes + payload.len() > MAX_BUFFERED_BYTES {
            return Err(OrderError::TooManyBytes);
        }
        self.buffered_bytes += payload.len();
        self.buffered.insert(seq, payload);
        Ok(Pushed::Ready(Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(p: Pushed) -> Vec<Vec<u8>> {
        match p {
            Pushed::Ready(r) => r,
            Pushed::Duplicate => panic!("unexpected duplicate"),
        }
    }

    #[test]
    fn in_order_records_pass_straight_through() {
        let mut w = ReorderWindow::new();
        assert_eq!(ready(w.push(0, vec![0]).unwrap()), [vec![0]]);
        assert_eq!(ready(w.push(1, vec![1]).unwrap()), [vec![1]]);
        assert_eq!(w.next_seq(), 2);
    }

    #[test]
    fn out_of_order_records_are_released_in_order() {
        let mut w = ReorderWindow::new();
        assert!(ready(w.push(2, vec![2]).unwrap()).is_empty());
        assert!(ready(w.push(1, vec![1]).unwrap()).is_empty());
        assert_eq!(
            ready(w.push(0, vec![0]).unwrap()),
            [vec![0], vec![1], vec![2]]
        );
        assert_eq!(w.buffered_bytes, 0);
    }

    #[test]
    fn duplicates_and_old_records_are_ignored() {
        let mut w = ReorderWindow::new();
        ready(w.push(0, vec![0]).unwrap());
        assert_eq!(w.push(0, vec![0]).unwrap(), Pushed::Duplicate);
        ready(w.push(2, vec![2]).unwrap());
        assert_eq!(w.push(2, vec![9]).unwrap(), Pushed::Duplicate);
    }

    #[test]
    fn a_gap_over_64_is_an_error() {
        let mut w = ReorderWindow::new();
        assert!(ready(w.push(64, vec![1]).unwrap()).is_empty());
        assert_eq!(
            w.push(65, vec![1]),
            Err(OrderError::GapTooLarge {
                seq: 65,
                expected: 0
            })
        );
    }

    #[test]
    fn buffer_limits_are_enforced() {
        let mut w = ReorderWindow::new();
        for seq in 1..=MAX_REORDER_GAP {
            ready(w.push(seq, vec![0]).unwrap());
        }
        assert_eq!(w.buffered.len(), 64);
        // All of 1..=64 is buffered; only seq 0 can still arrive, and it drains everything.
        assert_eq!(ready(w.push(0, vec![0]).unwrap()).len(), 65);

        let mut w = ReorderWindow::new();
        let big = vec![0; 60 * 1024];
        for seq in 1..=17 {
            ready(w.push(seq, big.clone()).unwrap());
        }
        assert_eq!(w.push(18, big), Err(OrderError::TooManyBytes));
    }

    #[test]
    fn the_last_seq_does_not_wrap() {
        let mut w = ReorderWindow {
            next: u64::from(u32::MAX),
            ..ReorderWindow::default()
        };
        assert_eq!(ready(w.push(u32::MAX, vec![1]).unwrap()), [vec![1]]);
        assert_eq!(w.next_seq(), 1 << 32);
        assert_eq!(w.push(0, vec![1]).unwrap(), Pushed::Duplicate);
    }
}
