//! Ordering of stdin writes: tickets are taken in request arrival order (by the connection's
//! reader, before the request runs concurrently) and writes take effect in ticket order. A
//! ticket dropped without writing gives its turn away, so a cancelled request never wedges the
//! writes behind it.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use exec_server_protocol::process::WriteStatus;
use tokio::sync::watch;

use super::Process;

/// The turn state of one process's stdin.
#[derive(Debug)]
pub(super) struct Order {
    inner: Mutex<OrderState>,
    turn: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct OrderState {
    next_ticket: u64,
    turn: u64,
    finished: BTreeSet<u64>,
}

impl Default for Order {
    fn default() -> Self {
        Order {
            inner: Mutex::new(OrderState::default()),
            turn: watch::channel(0).0,
        }
    }
}

impl Order {
    fn take(&self) -> u64 {
        let mut st = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let n = st.next_ticket;
        st.next_ticket += 1;
        n
    }

    fn finish(&self, n: u64) {
        let mut st = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        st.finished.insert(n);
        let mut advanced = false;
        loop {
            let turn = st.turn;
            if !st.finished.remove(&turn) {
                break;
            }
            st.turn += 1;
            advanced = true;
        }
        if advanced {
            let turn = st.turn;
            self.turn.send_replace(turn);
        }
    }

    async fn wait_turn(&self, n: u64) {
        let mut rx = self.turn.subscribe();
        loop {
            if *rx.borrow_and_update() >= n {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

/// Too many bytes are already queued for this process's stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stdin queue is full ({max} bytes pending); retry once the process has read its input")]
pub struct StdinQueueFull {
    /// The limit in bytes.
    pub max: usize,
}

/// A place in a process's stdin order.
#[derive(Debug)]
pub struct StdinTicket {
    proc: Arc<Process>,
    n: u64,
    /// Bytes reserved in the process's stdin queue.
    bytes: usize,
}

impl StdinTicket {
    /// Takes the next place in the order and reserves `bytes` of the stdin queue, in
    /// request arrival order. Fails at once, without queueing, when the bytes already queued
    /// plus these would exceed the limit (a single write larger than the limit is allowed
    /// when nothing else is queued).
    pub(super) fn new(proc: Arc<Process>, bytes: usize) -> Result<Self, StdinQueueFull> {
        use std::sync::atomic::Ordering;
        let max = proc.limits.max_stdin_queue_bytes;
        proc.stdin_queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q + bytes <= max || q == 0).then_some(q + bytes)
            })
            .map_err(|_| StdinQueueFull { max })?;
        let n = proc.stdin_order.take();
        Ok(StdinTicket { proc, n, bytes })
    }

    /// Waits for this ticket's turn, then closes stdin (pipe) or sends end-of-file (`^D`,
    /// PTY), after every earlier write took effect.
    pub async fn close(self) -> WriteStatus {
        self.proc.stdin_order.wait_turn(self.n).await;
        self.proc.close_stdin_in_order().await
    }

    /// Waits for this ticket's turn, then writes (unless `write_id` was accepted before).
    pub async fn write(self, write_id: String, data: Vec<u8>) -> WriteStatus {
        self.proc.stdin_order.wait_turn(self.n).await;
        self.proc.write_in_order(write_id, data).await
        // `self` drops here: the turn passes on and the reservation is released.
    }
}

impl Drop for StdinTicket {
    fn drop(&mut self) {
        self.proc
            .stdin_queued
            .fetch_sub(self.bytes, std::sync::atomic::Ordering::AcqRel);
        self.proc.stdin_order.finish(self.n);
    }
}
