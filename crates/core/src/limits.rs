//! Bounds and timings of the executor, with their defaults. Every bound is documented in
//! docs/protocol.md ("Limits").

use std::time::Duration;

/// Tunable limits shared by sessions and processes.
#[derive(Debug, Clone)]
pub struct Limits {
    /// How long a detached session stays resumable (upstream: 80 s).
    pub session_ttl: Duration,
    /// How long a closed process stays readable and its id taken (upstream: 80 s).
    pub closed_retention: Duration,
    /// Delivered output retained per process for replay; also the bound of the undelivered
    /// backlog at which the server stops draining the child's pipes.
    pub retention_bytes: usize,
    /// Output retained by all the processes of one session; delivered output is evicted from
    /// the largest holders while a session is over it, and the children's pipes are no longer
    /// read while the session's undelivered output reaches it.
    pub session_retention_bytes: usize,
    /// Largest output chunk read from a child at once.
    pub read_chunk_bytes: usize,
    /// `writeId`s remembered per process (oldest forgotten first).
    pub max_write_ids: usize,
    /// Processes (running or retained) per session.
    pub max_processes_per_session: usize,
    /// Sessions (attached or detached) per server.
    pub max_sessions: usize,
    /// Running processes per session.
    pub max_live_processes_per_session: usize,
    /// Running processes per server.
    pub max_live_processes: usize,
    /// Bytes of `process/write` data queued for one process's stdin.
    pub max_stdin_queue_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            session_ttl: Duration::from_secs(80),
            closed_retention: Duration::from_secs(80),
            retention_bytes: 64 << 20,
            session_retention_bytes: 256 << 20,
            read_chunk_bytes: 256 << 10,
            max_write_ids: 16_384,
            max_processes_per_session: 4096,
            max_sessions: 4096,
            max_live_processes_per_session: 256,
            max_live_processes: 1024,
            max_stdin_queue_bytes: 8 << 20,
        }
    }
}
