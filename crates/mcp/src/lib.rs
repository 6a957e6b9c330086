//! MCP servers reached through an exec-server environment: a Streamable HTTP client transport
//! for [`rmcp`] (the official Rust MCP SDK) whose HTTP requests go through core's
//! [`HttpRunner`].
//!
//! With a remote environment every request becomes an `http/request` on the executor
//! (`streamResponse: true`, the body read from `http/request/bodyDelta`), so an MCP server on
//! the executor's network (its VPC, behind its egress rules, on its loopback) is reached from the
//! executor's network position with the same MCP session logic as a local connection. With a
//! local environment the same code sends from this machine with reqwest.
//!
//! The design choice: rmcp already implements the Streamable HTTP session logic (initialize,
//! `Mcp-Session-Id`, the GET event stream, resumption with `Last-Event-Id`, re-initializing
//! after a 404, `DELETE` on close) behind its [`StreamableHttpClient`] trait; this crate
//! implements only that trait, over the runner ([`McpHttpClient`]), plus an incremental SSE
//! parser ([`sse::SseParser`]) fed with body chunks as they arrive. Nothing reads a whole
//! streamed reply.
//!
//! [`StreamableHttpClient`]: rmcp::transport::streamable_http_client::StreamableHttpClient
//!
//! ```no_run
//! # async fn demo(env: exec_server_client::Environment) -> Result<(), Box<dyn std::error::Error>> {
//! use exec_server_mcp::rmcp::ServiceExt;
//! let transport = exec_server_mcp::transport(
//!     env.http_runner(),
//!     "http://10.0.0.5:8080/mcp",
//!     exec_server_mcp::McpHttpOptions::default(),
//! );
//! let mcp = ().serve(transport).await?;
//! let tools = mcp.list_all_tools().await?;
//! # let _ = tools; Ok(()) }
//! ```
//!
//! Affinity cookies (spec §6.4): a local environment's runner is core's `LocalHttpRunner`, which
//! keeps the process's one [`AffinityCookies`](exec_server_core::http::cookies::AffinityCookies)
//! store; through an executor the executor's runner applies its own.
//!
//! Bounds are listed in [`client`] and [`sse`].
#![deny(missing_docs)]

pub mod client;
pub mod sse;

use std::sync::Arc;
use std::time::Duration;

use exec_server_core::http::HttpRunner;
use rmcp::transport::common::client_side_sse::ExponentialBackoff;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;

pub use client::{McpHttpClient, McpHttpError, McpHttpOptions};
pub use exec_server_client::environment::EnvironmentHttp;
/// The rmcp this crate is built against.
pub use rmcp;

/// rmcp's Streamable HTTP transport over a runner.
pub type Transport<R> = StreamableHttpClientTransport<McpHttpClient<R>>;

/// Times a broken event stream is reopened (with `Last-Event-Id`) before the requests waiting
/// on it fail; see [`config`].
pub const STREAM_RETRIES: usize = 4;

/// rmcp's transport configuration for `uri` with this crate's defaults: rmcp's own (re-initialize
/// after session expiry, 16 MiB bounds), except that a broken event stream is reopened at most
/// [`STREAM_RETRIES`] times, 250 ms apart doubling up to 2 s, instead of forever. With the
/// executor gone every reopen fails at once, so a caller gets an error in about 4 s rather than
/// waiting for ever.
pub fn config(uri: impl Into<Arc<str>>) -> StreamableHttpClientTransportConfig {
    let mut retry = ExponentialBackoff::default();
    retry.max_times = Some(STREAM_RETRIES);
    retry.base_duration = Duration::from_millis(250);
    retry.max_delay = Some(Duration::from_secs(2));
    let mut config = StreamableHttpClientTransportConfig::with_uri(uri);
    config.retry_config = Arc::new(retry);
    config
}

/// A transport to the MCP server at `uri` with [`config`]'s settings.
pub fn transport<R: HttpRunner + 'static>(
    runner: R,
    uri: impl Into<Arc<str>>,
    options: McpHttpOptions,
) -> Transport<R> {
    transport_with_config(runner, config(uri), options)
}

/// A transport with rmcp's full configuration (bearer token in `auth_header`, custom headers,
/// bounds, retry policy); start from [`config`].
pub fn transport_with_config<R: HttpRunner + 'static>(
    runner: R,
    config: StreamableHttpClientTransportConfig,
    options: McpHttpOptions,
) -> Transport<R> {
    McpHttpClient::new(runner, options).transport(config)
}
