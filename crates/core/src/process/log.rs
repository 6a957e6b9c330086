//! The per-process event log: one buffer that feeds both notifications and `process/read`.
//!
//! Every output chunk, the exit and the close take the next sequence number. Output is never
//! dropped before it has been delivered: eviction only takes delivered events from the front,
//! and the readers of the child's pipes stop reading while the undelivered backlog is at its
//! bound. *Delivered* means pushed to a live connection or returned by a read — except while
//! a client is actively reading the process with `process/read` (*reader mode*): then only
//! what the reads returned counts, so a client that streams with reads alone loses nothing
//! even though notifications are pushed too. Delivered output stays
//! replayable until the retained bytes exceed the retention bound; a cursor older than what is
//! retained gets an explicit [`Gap`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use exec_server_protocol::process::{Gap, Stream};

/// How many evicted positions are remembered to size gaps exactly.
const EVICTION_INDEX: usize = 4096;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// A chunk of output.
    Output {
        /// Its stream.
        stream: Stream,
        /// The bytes.
        data: Bytes,
    },
    /// The direct child exited.
    Exited {
        /// Exit status or 128 + signal.
        code: i32,
    },
    /// Exited and every output stream reached EOF; the last event.
    Closed,
}

/// One event with its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The per-process sequence number (from 1).
    pub seq: u64,
    /// Output bytes of this process before this event.
    pub offset: u64,
    /// What happened.
    pub kind: EventKind,
}

impl Event {
    fn len(&self) -> usize {
        match &self.kind {
            EventKind::Output { data, .. } => data.len(),
            _ => 0,
        }
    }
}

/// The result of a read from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRead {
    /// Output chunks after the cursor: `(seq, stream, bytes)`.
    pub chunks: Vec<(u64, Stream, Bytes)>,
    /// Where the next read continues.
    pub next_seq: u64,
    /// Evicted output between the cursor and the first chunk.
    pub gap: Option<Gap>,
}

/// Output bytes held by all the logs of one session, against the session's cap
/// (`--retention-per-session`).
#[derive(Debug)]
pub struct SessionBytes {
    retained: AtomicUsize,
    undelivered: AtomicUsize,
    cap: usize,
}

impl SessionBytes {
    /// Nothing held yet; at most `cap` bytes retained across the session.
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(SessionBytes {
            retained: AtomicUsize::new(0),
            undelivered: AtomicUsize::new(0),
            cap,
        })
    }

    /// Output bytes retained by the session's logs.
    pub fn retained(&self) -> usize {
        self.retained.load(Ordering::Relaxed)
    }

    /// Output bytes of the session not yet delivered anywhere.
    pub fn undelivered(&self) -> usize {
        self.undelivered.load(Ordering::Relaxed)
    }

    /// The cap.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// More is retained than the cap allows.
    pub fn over(&self) -> bool {
        self.retained() > self.cap
    }
}

/// The event log of one process.
#[derive(Debug)]
pub struct EventLog {
    events: VecDeque<Event>,
    /// Seq of `events[0]`, or `next_seq` when empty.
    first_seq: u64,
    next_seq: u64,
    /// Output bytes ever appended.
    total_bytes: u64,
    retained_bytes: usize,
    undelivered_bytes: usize,
    /// The effective delivery point (see the module docs).
    delivered: u64,
    /// Highest seq pushed to a connection.
    pushed: u64,
    /// Highest seq a read returned (or that a read's cursor vouched for).
    read: u64,
    /// A client is streaming this process with reads: only `read` counts as delivered.
    reader_mode: bool,
    retention: usize,
    /// `(seq, offset)` of recently evicted events, oldest first.
    evicted: VecDeque<(u64, u64)>,
    /// The session's totals, which this log's bytes count towards.
    session: Option<Arc<SessionBytes>>,
}

impl Drop for EventLog {
    fn drop(&mut self) {
        self.add_retained(-(self.retained_bytes as isize));
        self.add_undelivered(-(self.undelivered_bytes as isize));
    }
}

impl EventLog {
    /// An empty log retaining about `retention` bytes of delivered output.
    pub fn new(retention: usize) -> Self {
        Self::build(retention, None)
    }

    /// An empty log whose bytes also count towards its session's cap: while the session
    /// retains more than the cap, delivered output is evicted even below `retention`.
    pub fn in_session(retention: usize, session: Arc<SessionBytes>) -> Self {
        Self::build(retention, Some(session))
    }

    fn build(retention: usize, session: Option<Arc<SessionBytes>>) -> Self {
        EventLog {
            events: VecDeque::new(),
            first_seq: 1,
            next_seq: 1,
            total_bytes: 0,
            retained_bytes: 0,
            undelivered_bytes: 0,
            delivered: 0,
            pushed: 0,
            read: 0,
            reader_mode: false,
            retention,
            evicted: VecDeque::new(),
            session,
        }
    }

    fn add_retained(&mut self, delta: isize) {
        self.retained_bytes = self.retained_bytes.wrapping_add_signed(delta);
        if let Some(s) = &self.session {
            if delta >= 0 {
                s.retained.fetch_add(delta as usize, Ordering::Relaxed);
            } else {
                s.retained
                    .fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
            }
        }
    }

    fn add_undelivered(&mut self, delta: isize) {
        self.undelivered_bytes = self.undelivered_bytes.wrapping_add_signed(delta);
        if let Some(s) = &self.session {
            if delta >= 0 {
                s.undelivered.fetch_add(delta as usize, Ordering::Relaxed);
            } else {
                s.undelivered
                    .fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
            }
        }
    }

    /// Evicts delivered output while its session is over the session's cap (the session
    /// picks which logs to trim: largest first).
    pub fn trim_for_session(&mut self) {
        self.evict_while(|log| log.session.as_ref().is_some_and(|s| s.over()));
    }

    /// Appends an event and returns its seq.
    pub fn push(&mut self, kind: EventKind) -> u64 {
        let seq = self.next_seq;
        let ev = Event {
            seq,
            offset: self.total_bytes,
            kind,
        };
        let len = ev.len();
        self.total_bytes += len as u64;
        self.add_retained(len as isize);
        self.add_undelivered(len as isize);
        if self.events.is_empty() {
            self.first_seq = seq;
        }
        self.events.push_back(ev);
        self.next_seq += 1;
        self.evict();
        seq
    }

    /// The next unallocated seq.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Output bytes not yet delivered anywhere.
    pub fn undelivered_bytes(&self) -> usize {
        self.undelivered_bytes
    }

    /// Output bytes retained.
    pub fn retained_bytes(&self) -> usize {
        self.retained_bytes
    }

    /// The retained seq range, `None` when nothing is retained.
    pub fn retained_range(&self) -> Option<(u64, u64)> {
        self.events.back().map(|b| (self.first_seq, b.seq))
    }

    /// Records that every event up to `seq` has been delivered (pushed and read alike; used
    /// where the difference does not matter).
    pub fn mark_delivered(&mut self, seq: u64) {
        self.mark_pushed(seq);
        self.mark_read(seq);
    }

    /// Records that every event up to `seq` was pushed to a connection.
    pub fn mark_pushed(&mut self, seq: u64) {
        self.pushed = self.pushed.max(seq.min(self.next_seq - 1));
        self.update_delivered();
    }

    /// Records that a read returned (or its cursor vouched for) every event up to `seq`.
    pub fn mark_read(&mut self, seq: u64) {
        self.read = self.read.max(seq.min(self.next_seq - 1));
        self.update_delivered();
    }

    /// Enters or leaves reader mode.
    pub fn set_reader_mode(&mut self, on: bool) {
        if self.reader_mode != on {
            self.reader_mode = on;
            self.update_delivered();
        }
    }

    /// The highest seq reads returned or vouched for.
    pub fn read_cursor(&self) -> u64 {
        self.read
    }

    /// Whether reader mode is on.
    pub fn reader_mode(&self) -> bool {
        self.reader_mode
    }

    fn update_delivered(&mut self) {
        let target = if self.reader_mode {
            self.read
        } else {
            self.pushed.max(self.read)
        };
        let old = self.delivered;
        if target > old {
            let start = old.max(self.first_seq.saturating_sub(1));
            for s in (start + 1)..=target {
                if let Some(n) = self.get(s).map(Event::len) {
                    self.add_undelivered(-(n as isize));
                }
            }
        } else if target < old {
            // Back to an earlier point (reader mode began): what is still retained between
            // the two points counts as undelivered again.
            let start = target.max(self.first_seq.saturating_sub(1));
            for s in (start + 1)..=old {
                if let Some(n) = self.get(s).map(Event::len) {
                    self.add_undelivered(n as isize);
                }
            }
        }
        self.delivered = target;
        self.evict();
    }

    fn get(&self, seq: u64) -> Option<&Event> {
        seq.checked_sub(self.first_seq)
            .and_then(|i| self.events.get(i as usize))
    }

    fn evict(&mut self) {
        self.evict_while(|log| log.retained_bytes > log.retention);
    }

    /// Evicts delivered events from the front while `over` holds.
    fn evict_while(&mut self, over: impl Fn(&Self) -> bool) {
        while over(self) {
            match self.events.front() {
                Some(front) if front.seq <= self.delivered => {}
                _ => break,
            }
            if let Some(ev) = self.events.pop_front() {
                self.add_retained(-(ev.len() as isize));
                self.first_seq = ev.seq + 1;
                if self.evicted.len() == EVICTION_INDEX {
                    self.evicted.pop_front();
                }
                self.evicted.push_back((ev.seq, ev.offset));
            }
        }
        if self.events.is_empty() {
            self.first_seq = self.next_seq;
        }
    }

    /// Output bytes of the process before `seq`. For a seq evicted longer ago than the
    /// eviction index remembers, the oldest remembered position is used, so the gap's byte
    /// count is then a lower bound.
    fn offset_before(&self, seq: u64) -> u64 {
        if seq <= 1 {
            return 0;
        }
        if let Some(ev) = self.get(seq) {
            return ev.offset;
        }
        let idx = self.evicted.partition_point(|&(s, _)| s < seq);
        self.evicted
            .get(idx)
            .map(|&(_, off)| off)
            .unwrap_or(self.total_bytes)
    }

    /// Events with `seq > after`, at most `limit` of them, for the notification pump.
    pub fn events_after(&self, after: u64, limit: usize) -> Vec<Event> {
        let start = (after + 1).max(self.first_seq);
        let skip = (start - self.first_seq) as usize;
        self.events.iter().skip(skip).take(limit).cloned().collect()
    }

    /// The evicted events right after `after`, if any: what a cursor at `after` has lost.
    pub fn gap_after(&self, after: u64) -> Option<Gap> {
        if after + 1 >= self.first_seq {
            return None;
        }
        let from = after + 1;
        let first_offset = self
            .events
            .front()
            .map(|e| e.offset)
            .unwrap_or(self.total_bytes);
        let bytes = first_offset.saturating_sub(self.offset_before(from).min(first_offset));
        Some(Gap {
            from_seq: from,
            to_seq: self.first_seq - 1,
            bytes,
        })
    }

    /// A `process/read`: output chunks with `seq > after`, whole chunks only, at least one,
    /// stopping before the total would exceed `max_bytes`.
    pub fn read(&self, after: u64, max_bytes: Option<u64>) -> LogRead {
        let start = (after + 1).max(self.first_seq);
        let gap = self.gap_after(after);
        let mut chunks = Vec::new();
        let mut total: u64 = 0;
        let mut cut_at = None;
        let skip = (start - self.first_seq) as usize;
        for ev in self.events.iter().skip(skip) {
            if let EventKind::Output { stream, data } = &ev.kind {
                let n = data.len() as u64;
                if let Some(max) = max_bytes {
                    if !chunks.is_empty() && total + n > max {
                        cut_at = Some(ev.seq);
                        break;
                    }
                }
                chunks.push((ev.seq, *stream, data.clone()));
                total += n;
                if let Some(max) = max_bytes {
                    if total >= max {
                        cut_at = Some(ev.seq + 1);
                        break;
                    }
                }
            }
        }
        let next_seq = match cut_at {
            // Cut short by the budget: continue after the last returned chunk.
            Some(_) => chunks.last().map(|c| c.0 + 1).unwrap_or(self.next_seq),
            None => self.next_seq,
        };
        LogRead {
            chunks,
            next_seq,
            gap,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(s: &str) -> EventKind {
        EventKind::Output {
            stream: Stream::Stdout,
            data: Bytes::copy_from_slice(s.as_bytes()),
        }
    }

    #[test]
    fn seqs_are_shared_and_next_seq_counts_terminal_events() {
        let mut log = EventLog::new(1 << 20);
        assert_eq!(log.push(out("a")), 1);
        assert_eq!(log.push(out("b")), 2);
        assert_eq!(log.push(EventKind::Exited { code: 0 }), 3);
        assert_eq!(log.push(EventKind::Closed), 4);
        let r = log.read(0, None);
        assert_eq!(r.chunks.len(), 2);
        assert_eq!(r.next_seq, 5);
        let r = log.read(0, Some(1));
        assert_eq!(r.chunks.len(), 1);
        assert_eq!(r.next_seq, 2);
    }

    #[test]
    fn budget_takes_whole_chunks_greedily() {
        let mut log = EventLog::new(1 << 20);
        for _ in 0..4 {
            log.push(out("abcd"));
        }
        assert_eq!(log.read(0, Some(8)).chunks.len(), 2);
        assert_eq!(log.read(0, Some(11)).chunks.len(), 2);
        assert_eq!(log.read(0, Some(12)).chunks.len(), 3);
        assert_eq!(log.read(0, Some(3)).chunks.len(), 1);
        assert_eq!(log.read(2, Some(100)).chunks.len(), 2);
    }

    #[test]
    fn undelivered_output_is_never_evicted() {
        let mut log = EventLog::new(4);
        log.push(out("aaaa"));
        log.push(out("bbbb"));
        log.push(out("cccc"));
        assert_eq!(log.undelivered_bytes(), 12);
        assert_eq!(log.read(0, None).chunks.len(), 3);
        log.mark_delivered(2);
        assert_eq!(log.undelivered_bytes(), 4);
        // Only the newest 4 bytes fit: seqs 1 and 2 go, with a gap that says so.
        let r = log.read(0, None);
        assert_eq!(r.chunks.len(), 1);
        assert_eq!(
            r.gap,
            Some(Gap {
                from_seq: 1,
                to_seq: 2,
                bytes: 8
            })
        );
        let r = log.read(1, None);
        assert_eq!(r.gap.map(|g| g.bytes), Some(4));
        assert_eq!(log.read(2, None).gap, None);
    }

    #[test]
    fn pump_sees_every_event_in_order() {
        let mut log = EventLog::new(1 << 20);
        log.push(out("x"));
        log.push(EventKind::Exited { code: 1 });
        let evs = log.events_after(0, 10);
        assert_eq!(evs.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
        assert!(log.events_after(2, 10).is_empty());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Out(usize),
        Pushed(u64),
        ReadTo(u64),
        Mode(bool),
        Read(u64, Option<u64>),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0usize..300).prop_map(Op::Out),
            (0u64..80).prop_map(Op::Pushed),
            (0u64..80).prop_map(Op::ReadTo),
            any::<bool>().prop_map(Op::Mode),
            ((0u64..80), proptest::option::of(1u64..600)).prop_map(|(a, m)| Op::Read(a, m)),
        ]
    }

    proptest! {
        /// Seqs stay contiguous, accounting matches the retained events, undelivered output
        /// is never evicted, and reads return whole chunks in order or an explicit gap.
        #[test]
        fn log_invariants(retention in 1usize..2000, ops in proptest::collection::vec(op(), 1..120)) {
            let mut log = EventLog::new(retention);
            let mut lens: Vec<usize> = Vec::new(); // by seq - 1
            let (mut pushed, mut read, mut mode) = (0u64, 0u64, false);
            // Seqs whose bytes may have been evicted: only ever-delivered ones.
            let mut ever_delivered = 0u64;
            for op in ops {
                match op {
                    Op::Out(n) => {
                        let seq = log.push(EventKind::Output {
                            stream: Stream::Stdout,
                            data: Bytes::from(vec![7u8; n]),
                        });
                        prop_assert_eq!(seq, lens.len() as u64 + 1);
                        lens.push(n);
                    }
                    Op::Pushed(s) => {
                        log.mark_pushed(s);
                        pushed = pushed.max(s.min(lens.len() as u64));
                    }
                    Op::ReadTo(s) => {
                        log.mark_read(s);
                        read = read.max(s.min(lens.len() as u64));
                    }
                    Op::Mode(m) => {
                        log.set_reader_mode(m);
                        mode = m;
                    }
                    Op::Read(after, max) => {
                        let r = log.read(after, max);
                        let mut prev = after;
                        let mut total = 0u64;
                        for (i, (seq, _, data)) in r.chunks.iter().enumerate() {
                            prop_assert!(*seq > prev);
                            prop_assert_eq!(data.len(), lens[*seq as usize - 1]);
                            total += data.len() as u64;
                            if let Some(m) = max {
                                prop_assert!(i == 0 || total <= m);
                            }
                            prev = *seq;
                        }
                        if let Some(g) = &r.gap {
                            prop_assert_eq!(g.from_seq, after + 1);
                            prop_assert!(g.to_seq >= g.from_seq);
                            let evicted: usize = lens[(g.from_seq - 1) as usize..g.to_seq as usize].iter().sum();
                            prop_assert!(g.bytes <= evicted as u64);
                        }
                    }
                }
                let delivered = if mode { read } else { pushed.max(read) };
                ever_delivered = ever_delivered.max(delivered);
                // Accounting.
                let (first, last) = log.retained_range().unwrap_or((lens.len() as u64 + 1, lens.len() as u64));
                let retained: usize = lens[(first - 1) as usize..last as usize].iter().sum();
                prop_assert_eq!(log.retained_bytes(), retained);
                let undelivered: usize = lens[(delivered as usize).max(first as usize - 1)..].iter().sum();
                prop_assert_eq!(log.undelivered_bytes(), undelivered);
                // Nothing that was never delivered was evicted; in reader mode nothing past the
                // read cursor is evicted after the mode began.
                prop_assert!(first <= ever_delivered + 1);
            }
        }
    }
}
