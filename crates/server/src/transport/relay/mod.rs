//! Remote mode, executor side (spec §10.1–§10.6, §10.8): the executor dials out to a registry
//! and a rendezvous, and every virtual stream the rendezvous opens on that one socket runs an
//! ordinary JSON-RPC connection through the same [`crate::connection::run`] as WebSocket and
//! stdio (or, with [`Target::Forward`], is relayed to an existing exec-server).
//!
//! Flow, as upstream 0.169.0 does it:
//!
//! 1. A Noise static identity is generated for the process lifetime (§10.1).
//! 2. `POST {base}/cloud/environment/{id}/register` with the executor public key; any failure
//!    is fatal, no retry ([`serve`] returns the error).
//! 3. WebSocket to the returned rendezvous URL with `x-request-id: req_<32 hex>`, no
//!    Authorization, 10 s connect timeout, 256 KiB message limit (§10.2).
//! 4. Frames go through the sans-I/O [`ExecutorRelay`] (resume, handshake, validation, data);
//!    the socket task (`socket`) does its I/O: registry validations run as tasks (at most
//!    32 at once, enforced by the relay), established streams get a `stream` adapter.
//! 5. When the socket drops, every stream on it ends (their sessions detach and stay
//!    resumable through a new stream, as over WebSocket); the executor redials the same URL
//!    with backoff from 1 s doubling to 30 s, reset after a successful connect. Like upstream
//!    it does not register again while the rendezvous accepts its ticket; unlike upstream, when
//!    the rendezvous refuses the ticket with 401 (it restarted and forgot the registration, or
//!    another executor replaced it), it registers again (with the same identity) after the
//!    backoff, so a restarted rendezvous does not need the executor restarted. A failure of that
//!    registration is logged and retried with the backoff (only the first one is fatal).
//!
//! The socket task and every stream's connection run on one connection thread
//! ([`crate::transport::threads`]), as a WebSocket connection does; requests that wait and
//! every `process/start` run on the multi-thread runtime `serve` was called on.
//!
//! Bounded everywhere: per-stream inbound queue of `stream::INBOUND_QUEUE` (128) messages
//! (overflow resets the stream, spec §10.4 item 7), one outbound queue per socket of
//! `socket::OUTBOUND_QUEUE` (256) messages shared by its streams, a validation results queue
//! of 32, plus the relay's own limits (128 streams, 32 pending validations, 10 s each).
//!
//! After 8 handshakes in a row failed, the relay pauses handshakes (1 s, doubling to 30 s;
//! see `exec_server_relay::executor`). Not done: rotating credentials, Agent Identity and the
//! direct transport (§10.9).

mod registry;
mod socket;
mod stream;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use exec_server_relay::executor::ExecutorRelay;
use exec_server_relay::noise::StaticIdentity;
use exec_server_relay::registry::{url_for_logs, REQUEST_ID_HEADER};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use crate::transport::threads::ConnectionThreads;
use crate::ServerState;

pub use registry::{CHATGPT_ACCOUNT_ID_HEADER, REGISTRY_TIMEOUT};

/// Timeout of the rendezvous WebSocket connect (spec §10.2).
pub const RENDEZVOUS_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// WebSocket message and frame limit of the rendezvous socket (spec §10.2).
pub const RENDEZVOUS_MESSAGE_LIMIT: usize = exec_server_relay::frame::MAX_ENCODED_FRAME_LEN;
/// First reconnect delay; doubled after each attempt up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_secs(1);
/// Longest reconnect delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The registration credential: a bearer, and with a ChatGPT token its account id.
#[derive(Clone)]
pub struct Credentials {
    /// Sent as `Authorization: Bearer …` on `register` and `validate`.
    pub bearer: String,
    /// Sent as `ChatGPT-Account-Id` when set.
    pub chatgpt_account_id: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("bearer", &"<redacted>")
            .field("chatgpt_account_id", &self.chatgpt_account_id)
            .finish()
    }
}

/// Where and how to register.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// Registry base URL (`--remote`); a trailing `/` is ignored.
    pub registry_url: String,
    /// Environment id (checked by the caller).
    pub environment_id: String,
    /// Human-readable name (`--name`); logged only, 0.169.0 does not send it.
    pub name: Option<String>,
    /// The registration credential.
    pub credentials: Credentials,
    /// Interval of WebSocket pings on the rendezvous socket; a socket silent for two
    /// intervals is dropped (`pong_timeout`) and redialled.
    pub ping_interval: Duration,
}

/// What each authenticated virtual stream is connected to.
#[derive(Debug, Clone)]
pub enum Target {
    /// Serve it with this server's connection engine.
    Serve(Arc<ServerState>),
    /// Relay it to the exec-server at this WebSocket URL (`forward`, spec §10.8).
    Forward(String),
}

/// Why remote mode stopped.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// Registration failed (the text is upstream's where the spec fixes it).
    #[error("{0}")]
    Registry(String),
    /// The connection thread could not be started (or its task failed).
    #[error("cannot run the relay socket on a connection thread: {0}")]
    Thread(std::io::Error),
    /// The Noise static keys could not be generated.
    #[error("cannot generate the Noise static identity: {0}")]
    Identity(#[from] exec_server_relay::noise::KeyError),
}

/// reqwest and tokio-tungstenite are built without a default TLS crypto provider: install
/// ring's once, unless another one already is.
fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Registers, then serves the rendezvous socket (redialling it when it drops) until
/// `shutdown` resolves. Returns an error only when registration fails.
pub async fn serve(
    config: RemoteConfig,
    target: Target,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RemoteError> {
    let cancel = CancellationToken::new();
    let guard = cancel.clone().drop_guard();
    let on_shutdown = cancel.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown => on_shutdown.cancel(),
            _ = on_shutdown.cancelled() => {}
        }
    });
    // Like WebSocket connections (transport::threads), the socket and its streams'
    // connections run on a connection thread of their own: a relayed round trip crosses the
    // socket task, the stream's connection and its writer, and on the multi-thread runtime
    // each hop could wake another worker. Work that waits runs on this (multi-thread) runtime.
    let threads = match &target {
        Target::Serve(state) if state.config.connection_threads > 0 => {
            let _ = state.work_runtime.set(tokio::runtime::Handle::current());
            Some(ConnectionThreads::start(1).map_err(RemoteError::Thread)?)
        }
        _ => None,
    };
    let run = run_registered(config, target, cancel.clone());
    let result = match &threads {
        Some(threads) => threads
            .pick()
            .spawn(run)
            .await
            .unwrap_or_else(|e| Err(RemoteError::Thread(std::io::Error::other(e)))),
        None => run.await,
    };
    drop(guard);
    result
}

/// [`serve`] after the runtime is chosen: registers, then serves and redials the socket until
/// `cancel` fires.
async fn run_registered(
    config: RemoteConfig,
    target: Target,
    cancel: CancellationToken,
) -> Result<(), RemoteError> {
    let identity = StaticIdentity::generate()?;
    let registry = Arc::new(registry::RegistryClient::new(
        &config.registry_url,
        &config.environment_id,
        config.credentials.clone(),
    )?);
    let registration = tokio::select! {
        r = registry.register(identity.public_key()) => r?,
        _ = cancel.cancelled() => return Ok(()),
    };
    tracing::info!(
        environment_id = %config.environment_id,
        name = config.name.as_deref().unwrap_or(""),
        registration_id = %registration.executor_registration_id,
        rendezvous = %url_for_logs(&registration.url),
        "registered remote environment"
    );
    let mut registration = registration;
    let shared_for = |registration_id: &str| {
        Arc::new(socket::Shared {
            registry: registry.clone(),
            registration_id: registration_id.to_string(),
            target: target.clone(),
            ping_interval: config.ping_interval,
        })
    };
    let mut shared = shared_for(&registration.executor_registration_id);
    let mut backoff = MIN_BACKOFF;
    let mut register_again = false;
    loop {
        if register_again {
            let again = tokio::select! {
                r = registry.register(identity.public_key()) => r,
                _ = cancel.cancelled() => break,
            };
            match again {
                Ok(r) => {
                    tracing::info!(
                        registration_id = %r.executor_registration_id,
                        rendezvous = %url_for_logs(&r.url),
                        "registered again: the rendezvous refused the old ticket"
                    );
                    shared = shared_for(&r.executor_registration_id);
                    registration = r;
                    register_again = false;
                }
                Err(e) => tracing::warn!(error = %e, ?backoff, "registering again failed"),
            }
        }
        let connected = if register_again {
            Err(ConnectError::Other("not registered".into()))
        } else {
            tokio::select! {
                c = connect(&registration.url) => c,
                _ = cancel.cancelled() => break,
            }
        };
        match connected {
            Ok(ws) => {
                backoff = MIN_BACKOFF;
                tracing::info!(rendezvous = %url_for_logs(&registration.url), "rendezvous connected");
                let relay = ExecutorRelay::new(
                    identity.clone(),
                    &config.environment_id,
                    &registration.executor_registration_id,
                );
                match socket::run(ws, relay, shared.clone(), &cancel).await {
                    socket::End::Shutdown => break,
                    socket::End::Disconnected(reason) => {
                        tracing::warn!(%reason, "rendezvous socket closed; reconnecting");
                    }
                }
            }
            Err(ConnectError::TicketRefused(e)) => {
                tracing::warn!(error = %e, ?backoff, "rendezvous refused the ticket; registering again");
                register_again = true;
            }
            Err(e) => tracing::warn!(error = %e, ?backoff, "rendezvous connect failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = cancel.cancelled() => break,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    Ok(())
}

/// The rendezvous socket.
pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Why the rendezvous socket could not be opened.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    /// The rendezvous answered 401: it does not know the registration's ticket.
    #[error("{0}")]
    TicketRefused(String),
    /// Anything else (network, timeout, other statuses): redial the same URL.
    #[error("{0}")]
    Other(String),
}

/// Dials the rendezvous (spec §10.2).
async fn connect(url: &str) -> Result<Socket, ConnectError> {
    install_crypto_provider();
    let mut request = url
        .into_client_request()
        .map_err(|e| ConnectError::Other(format!("invalid rendezvous url: {e}")))?;
    let request_id = format!("req_{}", uuid::Uuid::new_v4().simple());
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        request.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    let config = WebSocketConfig::default()
        .read_buffer_size(exec_server_relay::frame::SOCKET_READ_BUFFER)
        .max_message_size(Some(RENDEZVOUS_MESSAGE_LIMIT))
        .max_frame_size(Some(RENDEZVOUS_MESSAGE_LIMIT));
    let dial = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
    match tokio::time::timeout(RENDEZVOUS_CONNECT_TIMEOUT, dial).await {
        Err(_) => Err(ConnectError::Other(
            "rendezvous websocket connection timed out".into(),
        )),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
            let reason = resp
                .headers()
                .get(exec_server_relay::registry::REJECTION_REASON_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none given");
            let text = format!(
                "rendezvous refused the websocket ({}; reason: {reason})",
                resp.status()
            );
            if resp.status() == tokio_tungstenite::tungstenite::http::StatusCode::UNAUTHORIZED {
                Err(ConnectError::TicketRefused(text))
            } else {
                Err(ConnectError::Other(text))
            }
        }
        Ok(Err(e)) => Err(ConnectError::Other(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_debug_hides_the_bearer() {
        let c = Credentials {
            bearer: "topsecret".into(),
            chatgpt_account_id: Some("acct".into()),
        };
        let text = format!("{c:?}");
        assert!(
            !text.contains("topsecret") && text.contains("acct"),
            "{text}"
        );
    }
}
