//! Every bound the rendezvous applies, in one place, with its default.
//!
//! Open connections are bounded by [`Limits::max_connections`]. Memory per registration is
//! bounded by these numbers: at most
//! [`Limits::max_harness_sockets`] harness sockets plus one executor socket, each with an
//! outbound queue of at most [`Limits::harness_queue_frames`] (or
//! [`Limits::executor_queue_frames`]) frames of at most 256 KiB (the relay frame limit,
//! `exec_server_relay::frame::MAX_ENCODED_FRAME_LEN`); at most
//! [`Limits::max_pending_connects`] unused connect bundles; at most
//! [`Limits::max_streams_per_registration`] routed streams. Registrations are one per configured
//! environment, so the configuration bounds the rest.

use std::time::Duration;

/// The rendezvous's bounds and timers. [`Limits::default`] is what the binary uses; tests
/// shrink them.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections (registry calls and sockets) open at once; at the limit the listener stops
    /// accepting until one closes. Default 4096.
    pub max_connections: usize,
    /// How long a harness key authorization and its socket ticket stay usable after `connect`
    /// (each is single-use). Default 60 s.
    pub authorization_ttl: Duration,
    /// Unused connect bundles (authorization + socket ticket) kept per registration; a
    /// `connect` beyond this, after expired ones are purged, gets a 503. Default 256.
    pub max_pending_connects: usize,
    /// Harness sockets attached to one registration at once. Default 256.
    pub max_harness_sockets: usize,
    /// Streams one harness socket may own at once (the executor itself allows 128 established
    /// plus 32 validating). Default 160.
    pub max_streams_per_harness: usize,
    /// Streams routed for one registration at once, across its harness sockets. Default 1024.
    pub max_streams_per_registration: usize,
    /// Frames queued towards the executor socket (from all its harnesses) before senders wait.
    /// Default 128 (at most 32 MiB; data frames are about 61 KiB, so typically 8 MiB).
    pub executor_queue_frames: usize,
    /// Frames queued towards one harness socket before the executor's reader waits. Default 32
    /// (at most 8 MiB; typically 2 MiB).
    pub harness_queue_frames: usize,
    /// How long a frame may wait for room in a full queue. A peer whose queue stays full this
    /// long is disconnected (its streams are reset). Until then the sender is back-pressured:
    /// relay streams have no flow control of their own in 0.169.0. Default 5 s.
    pub slow_peer_timeout: Duration,
    /// Interval of the WebSocket pings the rendezvous sends on every socket. Default 30 s.
    pub ping_interval: Duration,
    /// A socket on which nothing (frame, ping or pong) arrives for this long is closed.
    /// Default 90 s.
    pub idle_timeout: Duration,
    /// Time to receive an HTTP request's headers (registry calls and socket upgrades) before
    /// the connection is closed, so idle or trickling clients cannot hold the connection
    /// slots. Default 10 s.
    pub header_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            authorization_ttl: Duration::from_secs(60),
            max_pending_connects: 256,
            max_harness_sockets: 256,
            max_streams_per_harness: 160,
            max_streams_per_registration: 1024,
            executor_queue_frames: 128,
            harness_queue_frames: 32,
            slow_peer_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            header_read_timeout: Duration::from_secs(10),
        }
    }
}
