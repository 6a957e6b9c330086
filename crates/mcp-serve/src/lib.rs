//! exec-server as an MCP server (`exec-server mcp-serve`): a `shell` tool whose every exec,
//! nested ones included, is checked against execpolicy rules, plus `read_file`, `write_file`
//! and `list_directory`, over stdio or Streamable HTTP.
//!
//! - [`shell`]: one call of the shell tool: the process tree under the exec guard
//!   (`exec-server-execguard`), the timeout that pauses while an approval is open, the whole
//!   tree killed at the deadline;
//! - [`decide`]: the rules applied to one exec (every name it runs under, strictest wins);
//! - [`output`]: the bounded capture of the tool's output;
//! - [`server`]: the rmcp handler, the tools' schemas and the elicitation approver.
//!
//! Bounds: 16 shell calls at once ([`server::MAX_CONCURRENT_CALLS`]), output 64 KiB head +
//! 960 KiB tail per call ([`output`]), 64 execs waiting for a decision per call
//! (`exec_server_execguard::supervisor::QUEUE`), `timeout_ms` up to 24 h (default 10 min),
//! `read_file` up to 16 MiB. See `docs/mcp-serve.md`.

pub mod decide;
pub mod output;
pub mod server;
pub mod shell;

use std::net::SocketAddr;
use std::sync::Arc;

use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::ServiceExt;
use tokio_util::sync::CancellationToken;

pub use server::ShellServer;
pub use shell::{Approval, Approver, Shell, ShellError, ShellOutcome, ShellRequest};

/// Why serving stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The MCP session could not start (e.g. the client's handshake failed).
    #[error("MCP session: {0}")]
    Session(String),
    /// The listener failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves one MCP session on stdin/stdout until the client closes it.
pub async fn serve_stdio(server: ShellServer) -> Result<(), ServeError> {
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| ServeError::Session(e.to_string()))?;
    running
        .waiting()
        .await
        .map_err(|e| ServeError::Session(e.to_string()))?;
    Ok(())
}

/// Serves Streamable HTTP at `/mcp` on `listener` until `stop` is cancelled. Requests whose
/// `Host` is not loopback are refused (DNS-rebinding protection) unless `allowed_hosts` adds
/// names.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    server: ShellServer,
    allowed_hosts: Vec<String>,
    stop: CancellationToken,
) -> Result<(), ServeError> {
    let mut config =
        StreamableHttpServerConfig::default().with_cancellation_token(stop.child_token());
    if !allowed_hosts.is_empty() {
        let mut hosts = config.allowed_hosts.clone();
        hosts.extend(allowed_hosts);
        config = config.with_allowed_hosts(hosts);
    }
    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let router = axum::Router::new().nest_service("/mcp", service);
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await?;
    Ok(())
}

/// The URL clients use for a listener bound to `addr`.
pub fn http_url(addr: SocketAddr) -> String {
    format!("http://{addr}/mcp")
}
