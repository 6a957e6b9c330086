//! The JSON-RPC connection engine and its transports (WebSocket via axum, stdio, in-memory).
//!
//! Every transport only moves whole messages; one transport-agnostic [`connection`] engine
//! decodes them, enforces the lifecycle, runs requests concurrently (bounded), and writes
//! replies and process notifications through one writer task.
//!
//! **Architecture invariants:** nothing protocol-specific lives in `transport`; handlers are
//! thin (decode, call core, encode); error codes are chosen in `rpc_error` only.

pub mod auth;
pub mod base64_text;
pub mod config;
pub mod connection;
mod dispatch;
mod encode;
mod handlers;
mod rpc_error;
mod telemetry;
pub mod transport;

use std::sync::Arc;

use exec_server_core::Sessions;
use exec_server_protocol::environment::EnvironmentInfo;

pub use config::ServeConfig;

/// What every connection of a server shares.
#[derive(Debug)]
pub struct ServerState {
    /// The sessions.
    pub sessions: Arc<Sessions>,
    /// The environment, detected once.
    pub environment: EnvironmentInfo,
    /// `environment`, encoded once (the `environment/info` reply).
    pub(crate) environment_json: Box<serde_json::value::RawValue>,
    /// The configuration.
    pub config: ServeConfig,
    next_connection: std::sync::atomic::AtomicU64,
    /// Open WebSocket connections (bounded by `max_connections`).
    pub(crate) connections: Arc<tokio::sync::Semaphore>,
    /// The multi-thread runtime that runs waiting requests of WebSocket connections (set by
    /// [`transport::ws::serve`]).
    pub(crate) work_runtime: std::sync::OnceLock<tokio::runtime::Handle>,
}

impl ServerState {
    /// Builds the shared state from a configuration.
    pub fn new(config: ServeConfig) -> Arc<Self> {
        let sessions = Sessions::new(config.limits.clone());
        telemetry::register_gauges(&sessions);
        let environment = exec_server_core::environment::detect();
        let environment_json = serde_json::value::to_raw_value(&environment)
            .expect("EnvironmentInfo always serializes");
        Arc::new(ServerState {
            sessions,
            environment,
            environment_json,
            connections: Arc::new(tokio::sync::Semaphore::new(config.max_connections.max(1))),
            config,
            next_connection: std::sync::atomic::AtomicU64::new(1),
            work_runtime: std::sync::OnceLock::new(),
        })
    }

    fn connection_id(&self) -> u64 {
        self.next_connection
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}
