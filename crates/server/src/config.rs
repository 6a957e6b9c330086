//! The validated server configuration the CLI builds (the CLI's clap types never reach here).

use std::time::Duration;

use exec_server_core::Limits;

/// How a server runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Requests processed concurrently per connection (default 64).
    pub concurrent_requests: usize,
    /// Largest inbound message: a WebSocket message or a stdio line (default 96 MiB, so a 64 MiB `fs/writeFile` fits).
    pub max_message_bytes: usize,
    /// Queued outgoing replies per connection (default 1024 messages).
    pub outbound_queue: usize,
    /// Queued process events per connection (default 256 events).
    pub event_queue: usize,
    /// WebSocket keepalive ping interval (default 30 s, as upstream).
    pub ping_interval: Duration,
    /// How long a stdio connection whose input ended waits for in-flight requests.
    pub drain_timeout: Duration,
    /// Session and process limits.
    pub limits: Limits,
    /// WebSocket authentication.
    pub auth: crate::auth::WsAuth,
    /// Accepted `Host` headers on the upgrade.
    pub hosts: crate::auth::HostPolicy,
    /// Time to receive a request's headers before the connection is closed (default 10 s).
    pub header_read_timeout: Duration,
    /// Time after the upgrade to complete `initialize` (default 10 s).
    pub initialize_deadline: Duration,
    /// Connections that have not finished their HTTP upgrade (default 64).
    pub max_pending_connections: usize,
    /// Open WebSocket connections (default 256).
    pub max_connections: usize,
    /// Largest body a buffered `http/request` reply may carry (default 32 MiB).
    pub http_max_buffered_body: usize,
    /// Deadline of `http/request`s that give no `timeoutMs` (default 300 s; `null` still
    /// means none).
    pub http_default_timeout: Option<Duration>,
    /// Largest file `fs/readFile` returns (default 48 MiB, so the base64 reply fits 64 MiB).
    pub read_file_limit: u64,
    /// Threads that run WebSocket connections (default one per CPU, at most 16; 0 runs them
    /// on the server's multi-thread runtime), see [`crate::transport::threads`].
    pub connection_threads: usize,
    /// SHA-256 of the admin token that `process/list {allSessions}` requires (default none:
    /// the admin listing is off).
    pub admin_token_sha256: Option<[u8; 32]>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            concurrent_requests: 64,
            max_message_bytes: 96 << 20,
            outbound_queue: 1024,
            event_queue: 256,
            ping_interval: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            limits: Limits::default(),
            auth: crate::auth::WsAuth::None,
            hosts: crate::auth::HostPolicy::default(),
            header_read_timeout: Duration::from_secs(10),
            initialize_deadline: Duration::from_secs(10),
            max_pending_connections: 64,
            max_connections: 256,
            http_max_buffered_body: 32 << 20,
            http_default_timeout: Some(Duration::from_secs(300)),
            read_file_limit: exec_server_core::fs::DEFAULT_READ_FILE_LIMIT,
            connection_threads: crate::transport::threads::ConnectionThreads::default_count(),
            admin_token_sha256: None,
        }
    }
}
