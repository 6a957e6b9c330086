//! An open registry + rendezvous for exec-server remote mode (spec §10), in memory, one
//! listener: `exec-server rendezvous --listen http://IP:PORT --config FILE [--public-url URL]`.
//!
//! * The **registry** (spec §10.1, §10.6, §10.7) registers executors (`register`), hands
//!   harnesses a connect bundle (`connect`: the executor's public key, its registration id, a
//!   socket URL and a single-use harness key authorization) and answers the executor's
//!   `validate` calls. Who may do what is the TOML configuration ([`config`]).
//! * The **rendezvous** is a WebSocket router: the executor keeps one socket, each harness
//!   opens its own, and relay frames (spec §10.3) are forwarded by `stream_id` only. A stream id
//!   belongs to the harness socket that used it first, so one harness cannot reach another's
//!   streams by guessing ids. Payloads are Noise ciphertext end to end (spec §10.5): the
//!   rendezvous never holds a key, never decrypts, and forwards the bytes it received.
//!
//! The authorization issued by `connect` is bound to the environment, the registration and the
//! harness key named in the call; it is consumed by its first `validate`, and expires after
//! [`Limits::authorization_ttl`] (60 s). `validate` also checks that the stream is owned by a
//! harness socket opened with a ticket issued for that same key.
//!
//! Layout: [`config`] (the file and bearer checks), `hub` (state and every routing and
//! authorization decision, no I/O), `http` (axum handlers), `socket` (per-socket tasks),
//! `listener` (the connection bound), [`limits`] (every bound, documented). Architecture invariant: the hub never sees a payload
//! it could decrypt, and no frame crosses from one registration to another.
#![deny(missing_docs)]

pub mod config;
mod http;
mod hub;
pub mod limits;
mod listener;
mod secret;
mod socket;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use config::{Config, ConfigError};
pub use hub::{
    EXECUTOR_UNAVAILABLE_RESET_REASON, PEER_GONE_RESET_REASON, STREAM_REFUSED_RESET_REASON,
};
pub use limits::Limits;

/// Why a `--public-url` was rejected.
#[derive(Debug, thiserror::Error)]
pub enum PublicUrlError {
    /// Not a URL.
    #[error("invalid public URL: {0}")]
    Parse(#[from] url::ParseError),
    /// A scheme other than `http`, `https`, `ws` or `wss`.
    #[error("public URL must use http, https, ws or wss, not `{0}`")]
    Scheme(String),
    /// A query or fragment, which socket URLs cannot carry.
    #[error("public URL must not have a query or fragment")]
    QueryOrFragment,
}

/// Turns a public URL (`http://host:port/prefix`) into the WebSocket base handed out
/// (`ws://host:port/prefix`, no trailing `/`).
pub fn websocket_base(public_url: &str) -> Result<String, PublicUrlError> {
    let url = url::Url::parse(public_url)?;
    let scheme = match url.scheme() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        other => return Err(PublicUrlError::Scheme(other.to_string())),
    };
    if url.query().is_some() || url.fragment().is_some() {
        return Err(PublicUrlError::QueryOrFragment);
    }
    let rest = &url.as_str()[url.scheme().len()..];
    Ok(format!("{scheme}{}", rest.trim_end_matches('/')))
}

/// Options besides the configuration.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The URL clients reach this rendezvous at when it sits behind a proxy (`--public-url`);
    /// socket URLs handed out start with it. `None`: `ws://` + the request's `Host` header.
    pub public_url: Option<String>,
    /// Bounds and timers.
    pub limits: Limits,
}

/// A registry + rendezvous, ready to serve.
pub struct Rendezvous {
    state: http::AppState,
}

impl Rendezvous {
    /// A rendezvous for `config`.
    pub fn new(config: Config, options: Options) -> Result<Self, PublicUrlError> {
        let public_base = options
            .public_url
            .as_deref()
            .map(websocket_base)
            .transpose()?;
        Ok(Self {
            state: http::AppState {
                hub: Arc::new(hub::Hub::new(config, options.limits)),
                public_base,
            },
        })
    }

    /// The axum router serving the registry API and the rendezvous sockets, for embedding.
    pub fn router(&self) -> axum::Router {
        http::router(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` resolves, then closes every socket (their streams
    /// end; executors redial, harnesses reconnect) and returns.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        use axum::serve::Listener as _;
        let hub = self.state.hub.clone();
        let stop = hub.shutdown.clone();
        let timeout = hub.limits.header_read_timeout;
        let mut listener = listener::LimitedListener::new(listener, hub.limits.max_connections);
        let router = self.router();
        let connections = tokio_util::task::TaskTracker::new();
        tokio::pin!(shutdown);
        loop {
            let (io, _peer) = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = &mut shutdown => break,
            };
            connections.spawn(serve_http(io, router.clone(), timeout, stop.clone()));
        }
        // Sockets close (their streams end), HTTP calls in flight finish; a client that does
        // not is not waited for beyond the header timeout.
        stop.cancel();
        connections.close();
        let _ = tokio::time::timeout(timeout, connections.wait()).await;
        Ok(())
    }
}

/// Serves one HTTP/1.1 connection: registry calls, or the upgrade to a rendezvous socket
/// (which then lives in its own task). Unlike `axum::serve`, with a header read timeout.
async fn serve_http(
    io: listener::LimitedStream,
    router: axum::Router,
    header_read_timeout: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let mut router = router.clone();
        async move { tower_service::Service::call(&mut router, req).await }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%e, "http connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_urls_become_websocket_bases() {
        assert_eq!(
            websocket_base("https://rv.example.com/relay/").unwrap(),
            "wss://rv.example.com/relay"
        );
        assert_eq!(
            websocket_base("http://10.0.0.1:8080").unwrap(),
            "ws://10.0.0.1:8080"
        );
        assert_eq!(websocket_base("ws://h:1/p").unwrap(), "ws://h:1/p");
        assert!(matches!(
            websocket_base("ftp://h"),
            Err(PublicUrlError::Scheme(_))
        ));
        assert!(matches!(
            websocket_base("https://h/?a=1"),
            Err(PublicUrlError::QueryOrFragment)
        ));
        assert!(websocket_base("not a url").is_err());
    }
}
