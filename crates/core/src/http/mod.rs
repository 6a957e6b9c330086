//! Executor-side HTTP (spec §6): the [`HttpRunner`] trait, the request and response types it
//! speaks, and [`LocalHttpRunner`], which sends requests from this machine with reqwest.
//!
//! The trait is the capability; the server's `http/request` handler and a remote client speak
//! the same types. A response arrives as soon as its headers do; its [`HttpBody`] is then read
//! chunk by chunk (streamed replies) or to the end under a size limit (buffered replies).
//!
//! Bounds (defaults in [`HttpConfig`]):
//! * a buffered body is refused past [`HttpConfig::max_buffered_body`] (32 MiB), before it is
//!   read when `content-length` already says so, otherwise as soon as the limit is crossed;
//!   the error tells the caller to use `streamResponse`;
//! * a streamed body is read one chunk at a time, only when the previous chunk was handed on,
//!   so a reader that stops reading stops the upstream transfer (TCP back-pressure);
//! * the request's timeout is one deadline for the whole exchange, headers and body alike.
//!
//! Transport: HTTP/1.1 over rustls with the platform's root certificates; `HTTP_PROXY`,
//! `HTTPS_PROXY`, `ALL_PROXY` and `NO_PROXY` (either case) from the server's environment are
//! honoured; no general cookie jar, only the load-balancer affinity cookies of
//! [`cookies`] for OpenAI HTTPS hosts; redirects are followed up to 10 hops unless the request says stop.
//! When the caller sends no `Accept-Encoding`, the runner offers gzip and zstd and returns the
//! decoded body without `content-encoding`/`content-length` (0.171.0, spec §17); a caller that
//! sets `Accept-Encoding` itself gets the raw body with its headers.

mod body;
pub mod cookies;
mod error;
mod local;
mod prepare;
#[cfg(test)]
mod tls_tests;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

pub use exec_server_protocol::http::{HttpHeader, RedirectPolicy};

pub use body::HttpBody;
pub use error::HttpError;
pub use local::LocalHttpRunner;

/// One request, as the caller describes it; the runner validates it.
#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    /// Any valid HTTP token, sent verbatim (case-sensitive).
    pub method: String,
    /// An absolute `http` or `https` URL.
    pub url: String,
    /// Headers in order, repeats kept; `valueEnvVar` is resolved by the runner that sends.
    pub headers: Vec<HttpHeader>,
    /// The request body.
    pub body: Option<Vec<u8>>,
    /// Deadline for the whole exchange; `None` uses [`HttpConfig::default_timeout`].
    pub timeout: Option<Duration>,
    /// Follow redirects or return the 3xx.
    pub redirect: RedirectPolicy,
}

/// A response whose headers have arrived; the body is still to be read.
#[derive(Debug)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Headers in order, names lower-case, repeats kept; values that are not UTF-8 dropped.
    pub headers: Vec<HttpHeader>,
    /// The body, bounded by the request's deadline.
    pub body: HttpBody,
}

/// Tunables of a runner.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest body a buffered reply may carry (default 32 MiB).
    pub max_buffered_body: usize,
    /// Deadline of requests that give none (default: none, spec §6.1's "no timeout").
    pub default_timeout: Option<Duration>,
    /// CA certificates (DER) trusted besides the platform's roots, e.g. a corporate CA.
    pub extra_root_certs_der: Vec<Vec<u8>>,
    /// Fixed addresses for host names, like curl's `--resolve` (the URL's port is kept).
    pub resolve: Vec<(String, SocketAddr)>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_buffered_body: 32 << 20,
            default_timeout: None,
            extra_root_certs_der: Vec::new(),
            resolve: Vec::new(),
        }
    }
}

/// Sends HTTP requests on behalf of a caller; implemented locally here and remotely by a client.
pub trait HttpRunner: Send + Sync {
    /// Sends `request` and resolves once the response headers are in.
    fn send(
        &self,
        request: HttpRequest,
    ) -> impl Future<Output = Result<HttpResponse, HttpError>> + Send;
}
