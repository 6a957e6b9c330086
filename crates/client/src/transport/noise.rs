//! The Noise rendezvous transport (spec §10.7): reaching an executor that registered with a
//! registry and waits behind a rendezvous, through an end-to-end encrypted relay stream.
//!
//! Opening a link, as upstream harnesses do:
//!
//! 1. `POST {registry}/cloud/environment/{id}/connect` with the bearer and the harness public
//!    key (`registry`): a **fresh** connect bundle on every open, never reused.
//! 2. The answer must name the requested environment and `noise_hybrid_ik_v1`. Its executor key
//!    is checked against the key **pinned** by this client session's first successful open: a
//!    different key fails with `executor key changed during session recovery`, and the client
//!    gives up instead of retrying (the executor restarted, so the session is gone anyway, and a
//!    registry that swaps keys mid-session is exactly what pinning guards against).
//! 3. A WebSocket to the bundle's `url` (10 s), one relay stream on it (a fresh UUID), run by
//!    the relay crate's [`HarnessStream`] as the Noise initiator: `resume{0}`, msg1 carrying the
//!    harness key authorization, then msg2 from the executor within the handshake timeout.
//! 4. The link: a writer task seals each outgoing JSON-RPC message into data frames (and pings
//!    the rendezvous every 30 s); the incoming side opens data frames into whole messages as the
//!    client reads them, so back-pressure reaches the socket as on a plain WebSocket. When the
//!    client closes the link, the stream is reset and the socket closed.
//!
//! The harness static identity (X25519 + ML-KEM-768) is generated on first use and shared by
//! every clone of the [`NoiseTarget`], so it stays the same across reconnects; the pinned key
//! belongs to one [`crate::Client`] (each `Client::connect` starts unpinned). Secrets stay out of
//! Debug output and logs: the token, the bundle's URL query (its ticket) and the harness key
//! authorization.

mod registry;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use exec_server_relay::frame::{Frame, StreamId, MAX_ENCODED_FRAME_LEN};
use exec_server_relay::harness::{new_stream_id, ConnectInfo, HarnessError, HarnessStream};
use exec_server_relay::noise::{PublicKey, StaticIdentity};
use exec_server_relay::registry::{
    check_environment_id, url_for_logs, REGISTRY_TIMEOUT, REJECTION_REASON_HEADER,
    RENDEZVOUS_CONNECT_TIMEOUT,
};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::{tls_config, Link, OUT_QUEUE};
use crate::error::ClientError;

/// How often the harness pings the rendezvous (the rendezvous drops sockets idle for 90 s).
const PING_INTERVAL: Duration = Duration::from_secs(30);
/// How long closing the socket from our side may take.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// An executor behind a registry and rendezvous (spec §10.7), e.g. one started with
/// `exec-server --remote URL --environment-id ID` against `exec-server rendezvous`.
///
/// Clones share the harness identity and the registry's HTTP connection pool.
#[derive(Clone)]
pub struct NoiseTarget {
    /// The registry base URL (`http://` or `https://`; a trailing `/` is ignored).
    pub registry_url: String,
    /// The environment id the executor registered (1–256 of `[A-Za-z0-9_-]`).
    pub environment_id: String,
    /// The bearer of the `connect` call.
    pub auth_token: AuthToken,
    /// Sent as the `chatgpt-account-id` header when set.
    pub chatgpt_account_id: Option<String>,
    /// Extra PEM CA certificates trusted for `https://` and `wss://`, besides the system roots.
    pub ca_certificates: Option<PathBuf>,
    /// Deadlines and the retry of an unavailable registry.
    pub timeouts: NoiseTimeouts,
    shared: Arc<Shared>,
    /// The executor key of this client session, once one open succeeded.
    pin: Arc<Mutex<Option<PublicKey>>>,
}

/// Where the bearer of the registry's `connect` call comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum AuthToken {
    /// The token itself.
    Value(String),
    /// The name of an environment variable holding it, read at each connect (so a
    /// configuration file need not hold the secret).
    Env(String),
}

impl std::fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthToken::Value(_) => f.write_str("Value(<redacted>)"),
            AuthToken::Env(name) => f.debug_tuple("Env").field(name).finish(),
        }
    }
}

impl AuthToken {
    fn resolve(&self) -> Result<String, NoiseConnectError> {
        let value = match self {
            AuthToken::Value(v) => v.trim().to_string(),
            AuthToken::Env(name) => std::env::var(name)
                .map(|v| v.trim().to_string())
                .unwrap_or_default(),
        };
        if value.is_empty() {
            return Err(NoiseConnectError::Config(match self {
                AuthToken::Value(_) => "the auth token is empty".into(),
                AuthToken::Env(name) => {
                    format!("the auth token variable `{name}` is not set or empty")
                }
            }));
        }
        Ok(value)
    }
}

/// Deadlines of a Noise link open, and the retry of an unavailable registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoiseTimeouts {
    /// Each registry request (default 10 s).
    pub registry: Duration,
    /// The rendezvous WebSocket dial (default 10 s).
    pub connect: Duration,
    /// The Noise handshake: from msg1 sent to msg2 received, which includes the executor's
    /// validation of the harness key with the registry (default 10 s).
    pub handshake: Duration,
    /// First wait after a 503 (default 500 ms), doubled after each one ...
    pub retry_initial: Duration,
    /// ... up to this (default 5 s).
    pub retry_max: Duration,
    /// `connect` calls made before an unavailable registry is given up on (default 5).
    pub retry_attempts: u32,
}

impl Default for NoiseTimeouts {
    fn default() -> Self {
        NoiseTimeouts {
            registry: REGISTRY_TIMEOUT,
            connect: RENDEZVOUS_CONNECT_TIMEOUT,
            handshake: Duration::from_secs(10),
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(5),
            retry_attempts: 5,
        }
    }
}

/// Why a Noise link could not be opened.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum NoiseConnectError {
    /// The target cannot work as configured (registry URL, environment id, token).
    #[error("{0}")]
    Config(String),
    /// The registry refused the bearer (401 or 403); not retried.
    #[error("environment registry refused the auth token ({status}){detail}")]
    Unauthorized {
        /// Status code and reason.
        status: String,
        /// The registry's error code and message, if it gave them.
        detail: String,
    },
    /// The registry answered another error status.
    #[error("environment registry request failed ({status}){detail}")]
    Status {
        /// The status code.
        code: u16,
        /// Status code and reason.
        status: String,
        /// The registry's error code and message, if it gave them.
        detail: String,
    },
    /// The registry kept answering 503 (no executor attached) or a proxy's 502/504.
    #[error("environment registry request failed ({status}), {attempts} attempts{detail}; is the executor running and registered?")]
    Unavailable {
        /// The last status code and reason.
        status: String,
        /// Calls made.
        attempts: u32,
        /// The registry's error code and message, if it gave them.
        detail: String,
    },
    /// The registry could not be reached, or timed out.
    #[error("{0}")]
    Request(String),
    /// The registry's answer could not be decoded.
    #[error("{0}")]
    InvalidAnswer(String),
    /// The answer names another environment or security profile.
    #[error(transparent)]
    Answer(#[from] exec_server_relay::registry::AnswerError),
    /// The executor key differs from the one pinned when the session was opened.
    #[error("executor key changed during session recovery")]
    KeyChanged,
    /// The rendezvous WebSocket could not be opened or closed during the handshake.
    #[error("{0}")]
    Rendezvous(String),
    /// The Noise handshake failed or timed out.
    #[error("noise handshake failed: {0}")]
    Handshake(String),
    /// The stream was reset before it opened (the executor refused the harness key, or is
    /// not attached to the rendezvous).
    #[error("the relay stream was reset before it opened ({0})")]
    StreamReset(String),
    /// The harness static keys could not be generated.
    #[error("cannot generate the harness Noise keys: {0}")]
    Identity(String),
}

impl NoiseConnectError {
    /// True when trying again cannot help: a refused token, a configuration error, an answer
    /// for another environment, a changed executor key. The client does not retry these during
    /// session recovery.
    pub fn is_permanent(&self) -> bool {
        match self {
            NoiseConnectError::Config(_)
            | NoiseConnectError::Unauthorized { .. }
            | NoiseConnectError::Answer(_)
            | NoiseConnectError::KeyChanged
            | NoiseConnectError::Identity(_) => true,
            NoiseConnectError::Status { code, .. } => {
                (400..500).contains(code) && *code != 408 && *code != 429
            }
            _ => false,
        }
    }
}

/// What every clone of a target shares.
#[derive(Default)]
struct Shared {
    /// The harness static identity, generated on first use.
    identity: OnceLock<StaticIdentity>,
    /// The registry client (pooled connections) and the CA file it was built with.
    http: Mutex<Option<(Option<PathBuf>, reqwest::Client)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn identity(&self) -> Result<&StaticIdentity, NoiseConnectError> {
        if self.identity.get().is_none() {
            let identity = StaticIdentity::generate()
                .map_err(|e| NoiseConnectError::Identity(e.to_string()))?;
            // A concurrent first use may have won; either way every caller gets the one stored.
            let _ = self.identity.set(identity);
        }
        self.identity
            .get()
            .ok_or_else(|| NoiseConnectError::Identity("the identity was not stored".into()))
    }

    fn http(&self, ca: Option<&Path>) -> Result<reqwest::Client, NoiseConnectError> {
        let mut cached = lock(&self.http);
        if let Some((path, client)) = &*cached {
            if path.as_deref() == ca {
                return Ok(client.clone());
            }
        }
        let tls = tls_config(ca).map_err(NoiseConnectError::Config)?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .tls_backend_preconfigured((*tls).clone())
            .build()
            .map_err(|e| NoiseConnectError::Config(format!("cannot build the HTTP client: {e}")))?;
        *cached = Some((ca.map(Path::to_path_buf), client.clone()));
        Ok(client)
    }
}

impl NoiseTarget {
    /// A target with default timeouts, no account id and the system roots.
    pub fn new(
        registry_url: impl Into<String>,
        environment_id: impl Into<String>,
        auth_token: AuthToken,
    ) -> Self {
        NoiseTarget {
            registry_url: registry_url.into(),
            environment_id: environment_id.into(),
            auth_token,
            chatgpt_account_id: None,
            ca_certificates: None,
            timeouts: NoiseTimeouts::default(),
            shared: Arc::default(),
            pin: Arc::default(),
        }
    }

    /// The harness public key this target (and its clones) connects with.
    pub fn harness_public_key(&self) -> Result<PublicKey, NoiseConnectError> {
        Ok(self.shared.identity()?.public_key().clone())
    }

    /// A short description for errors: the environment and the registry, without a query.
    pub fn describe(&self) -> String {
        format!(
            "noise environment `{}` at {}",
            self.environment_id,
            url_for_logs(&self.registry_url)
        )
    }

    /// The same target for a new client session: same identity, no pinned executor key.
    pub(crate) fn for_new_session(&self) -> Self {
        NoiseTarget {
            pin: Arc::default(),
            ..self.clone()
        }
    }

    fn check(&self) -> Result<(), NoiseConnectError> {
        let url = self.registry_url.as_str();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(NoiseConnectError::Config(format!(
                "registry url `{}` must use http:// or https://",
                url_for_logs(url)
            )));
        }
        check_environment_id(&self.environment_id)
            .map_err(|e| NoiseConnectError::Config(format!("`{}`: {e}", self.environment_id)))
    }

    /// Opens a link: fresh bundle, key check, WebSocket, handshake.
    pub(crate) async fn open(&self) -> Result<Link, ClientError> {
        self.open_link().await.map_err(|error| ClientError::Noise {
            target: self.describe(),
            error,
        })
    }

    async fn open_link(&self) -> Result<Link, NoiseConnectError> {
        self.check()?;
        let bearer = self.auth_token.resolve()?;
        super::install_crypto_provider();
        let identity = self.shared.identity()?;
        let http = self.shared.http(self.ca_certificates.as_deref())?;
        let answer = registry::connect(&http, self, &bearer, identity.public_key()).await?;
        let url = answer.url.clone();
        let info = answer.into_connect_info(&self.environment_id)?;
        if lock(&self.pin)
            .as_ref()
            .is_some_and(|pinned| *pinned != info.executor_public_key)
        {
            return Err(NoiseConnectError::KeyChanged);
        }
        if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            return Err(NoiseConnectError::InvalidAnswer(format!(
                "environment registry returned rendezvous url `{}`, not ws:// or wss://",
                url_for_logs(&url)
            )));
        }
        let mut ws = dial(&url, self).await?;
        let stream = handshake(&mut ws, identity, &info, self.timeouts.handshake).await?;
        {
            // Pinned once the executor proved it holds the key (msg2 verified against it).
            let mut pin = lock(&self.pin);
            if pin.is_none() {
                *pin = Some(info.executor_public_key.clone());
            }
        }
        tracing::debug!(
            environment_id = %self.environment_id,
            rendezvous = %url_for_logs(&url),
            stream_id = %stream.stream_id(),
            "relay stream established"
        );
        Ok(link(ws, stream))
    }
}

impl std::fmt::Debug for NoiseTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoiseTarget")
            .field("registry_url", &url_for_logs(&self.registry_url))
            .field("environment_id", &self.environment_id)
            .field("auth_token", &self.auth_token)
            .field("chatgpt_account_id", &self.chatgpt_account_id)
            .field("ca_certificates", &self.ca_certificates)
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

/// Dials the rendezvous URL of a connect bundle (spec §10.7: no extra headers).
async fn dial(url: &str, target: &NoiseTarget) -> Result<Socket, NoiseConnectError> {
    let shown = url_for_logs(url);
    let request = url.into_client_request().map_err(|e| {
        NoiseConnectError::InvalidAnswer(format!("invalid rendezvous url `{shown}`: {e}"))
    })?;
    let connector = if url.starts_with("wss://") {
        Some(tokio_tungstenite::Connector::Rustls(
            tls_config(target.ca_certificates.as_deref()).map_err(NoiseConnectError::Config)?,
        ))
    } else {
        None
    };
    let config = WebSocketConfig::default()
        .read_buffer_size(exec_server_relay::frame::SOCKET_READ_BUFFER)
        .max_message_size(Some(MAX_ENCODED_FRAME_LEN))
        .max_frame_size(Some(MAX_ENCODED_FRAME_LEN));
    let dial =
        tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, connector);
    match tokio::time::timeout(target.timeouts.connect, dial).await {
        Err(_) => Err(NoiseConnectError::Rendezvous(format!(
            "rendezvous websocket connection to {shown} timed out"
        ))),
        Ok(Ok((ws, _))) => {
            if let tokio_tungstenite::MaybeTlsStream::Plain(s) = ws.get_ref() {
                let _ = s.set_nodelay(true);
            }
            Ok(ws)
        }
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
            let reason = resp
                .headers()
                .get(REJECTION_REASON_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none given");
            Err(NoiseConnectError::Rendezvous(format!(
                "rendezvous refused the websocket ({}; reason: {reason})",
                resp.status()
            )))
        }
        Ok(Err(e)) => Err(NoiseConnectError::Rendezvous(format!(
            "cannot reach the rendezvous at {shown}: {e}"
        ))),
    }
}

/// Runs the initiator side of the handshake on a fresh stream of `ws` (spec §10.4 items 1–3).
async fn handshake(
    ws: &mut Socket,
    identity: &StaticIdentity,
    info: &ConnectInfo,
    deadline: Duration,
) -> Result<HarnessStream, NoiseConnectError> {
    let stream_id = new_stream_id();
    let (mut stream, frames) = HarnessStream::start(identity, info, stream_id.clone())
        .map_err(|e| NoiseConnectError::Handshake(e.to_string()))?;
    let closed = || {
        NoiseConnectError::Rendezvous(
            "the rendezvous closed the socket during the handshake".into(),
        )
    };
    let exchange = async {
        for frame in frames {
            let bytes = frame
                .encode()
                .map_err(|e| NoiseConnectError::Handshake(e.to_string()))?;
            ws.send(Message::Binary(bytes.into()))
                .await
                .map_err(|e| NoiseConnectError::Rendezvous(format!("rendezvous socket: {e}")))?;
        }
        loop {
            let bytes = match ws.next().await {
                None | Some(Ok(Message::Close(_))) => return Err(closed()),
                Some(Err(e)) => {
                    return Err(NoiseConnectError::Rendezvous(format!(
                        "rendezvous socket: {e}"
                    )))
                }
                Some(Ok(Message::Binary(bytes))) => bytes,
                Some(Ok(_)) => continue,
            };
            let frame = match Frame::decode(&bytes) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(error = %e, "dropping an invalid relay frame");
                    continue;
                }
            };
            if frame.stream_id != stream_id {
                continue;
            }
            match stream.on_frame(frame.body) {
                Err(HarnessError::Reset { reason }) => {
                    return Err(NoiseConnectError::StreamReset(reason))
                }
                Err(e) => return Err(NoiseConnectError::Handshake(e.to_string())),
                Ok(_) if stream.is_established() => return Ok(()),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(deadline, exchange)
        .await
        .map_err(|_| {
            NoiseConnectError::Handshake(format!(
                "no answer from the executor within {} ms",
                deadline.as_millis()
            ))
        })??;
    Ok(stream)
}

/// What the two halves of a link share.
struct Stream {
    id: StreamId,
    state: Mutex<HarnessStream>,
    /// The peer reset the stream: no reset goes back.
    peer_reset: AtomicBool,
}

/// Turns an established stream into a link of whole JSON-RPC messages.
fn link(ws: Socket, stream: HarnessStream) -> Link {
    let (sink, source) = ws.split();
    let shared = Arc::new(Stream {
        id: stream.stream_id().clone(),
        state: Mutex::new(stream),
        peer_reset: AtomicBool::new(false),
    });
    let (out, rx) = mpsc::channel::<String>(OUT_QUEUE);
    let closed = CancellationToken::new();
    tokio::spawn(write_loop(sink, rx, shared.clone(), closed.clone()));
    let reader = Reader {
        source,
        stream: shared,
        pending: VecDeque::new(),
        done: false,
    };
    let incoming = futures::stream::unfold(reader, |mut r| async move {
        let message = r.next().await?;
        Some((message, r))
    })
    .boxed();
    Link {
        out,
        incoming,
        closed,
        _guard: None,
    }
}

/// Seals outgoing messages into data frames, pings, and on the way out resets the stream and
/// closes the socket. Ends the link (cancels `closed`) when it stops.
async fn write_loop(
    mut sink: SplitSink<Socket, Message>,
    mut rx: mpsc::Receiver<String>,
    stream: Arc<Stream>,
    closed: CancellationToken,
) {
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
    loop {
        let message = tokio::select! {
            m = rx.recv() => m,
            _ = closed.cancelled() => None,
            _ = ping.tick() => {
                let sent = tokio::select! {
                    r = sink.send(Message::Ping(Vec::new().into())) => r.is_ok(),
                    _ = closed.cancelled() => return,
                };
                if !sent {
                    closed.cancel();
                    return;
                }
                continue;
            }
        };
        let Some(message) = message else { break };
        let frames = lock(&stream.state).send(message.as_bytes());
        let frames = match frames {
            Ok(frames) => frames,
            Err(e) => {
                tracing::warn!(error = %e, stream_id = %stream.id, "cannot seal a message; closing the relay stream");
                break;
            }
        };
        for frame in frames {
            let bytes = match frame.encode() {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot encode a relay frame");
                    closed.cancel();
                    return;
                }
            };
            let sent = tokio::select! {
                r = sink.send(Message::Binary(bytes.into())) => r.is_ok(),
                _ = closed.cancelled() => return,
            };
            if !sent {
                closed.cancel();
                return;
            }
        }
    }
    // Ending from our side: reset the stream so the executor detaches the session at once,
    // then close. A peer that stopped reading does not hold us.
    let reset = (!stream.peer_reset.load(Ordering::Relaxed))
        .then(|| lock(&stream.state).reset_frame().encode().ok())
        .flatten();
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if let Some(bytes) = reset {
            let _ = sink.send(Message::Binary(bytes.into())).await;
        }
        let _ = sink.close().await;
    })
    .await;
    closed.cancel();
}

/// The incoming half: opens data frames of our stream into whole messages, when read.
struct Reader {
    source: SplitStream<Socket>,
    stream: Arc<Stream>,
    pending: VecDeque<String>,
    done: bool,
}

impl Reader {
    async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(message) = self.pending.pop_front() {
                return Some(message);
            }
            if self.done {
                return None;
            }
            let bytes = match self.source.next().await? {
                Ok(Message::Binary(bytes)) => bytes,
                Ok(Message::Close(_)) => return None,
                Ok(_) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "rendezvous socket failed");
                    return None;
                }
            };
            let frame = match Frame::decode(&bytes) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(error = %e, "dropping an invalid relay frame");
                    continue;
                }
            };
            if frame.stream_id != self.stream.id {
                continue; // One stream per socket; the rendezvous routes no other here.
            }
            let opened = lock(&self.stream.state).on_frame(frame.body);
            match opened {
                Ok(messages) => {
                    for m in messages {
                        match String::from_utf8(m) {
                            Ok(text) => self.pending.push_back(text),
                            Err(_) => {
                                tracing::warn!(stream_id = %self.stream.id, "a message from the executor is not UTF-8; closing the relay stream");
                                self.done = true;
                                break;
                            }
                        }
                    }
                }
                Err(HarnessError::Reset { reason }) => {
                    tracing::info!(stream_id = %self.stream.id, %reason, "relay stream reset by the peer");
                    self.stream.peer_reset.store(true, Ordering::Relaxed);
                    return None;
                }
                Err(e) => {
                    tracing::warn!(stream_id = %self.stream.id, error = %e, "relay stream failed");
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> NoiseTarget {
        NoiseTarget::new(
            "http://127.0.0.1:1/base/",
            "e2e",
            AuthToken::Value("topsecret".into()),
        )
    }

    #[test]
    fn debug_hides_the_token_and_the_query() {
        let mut t = target();
        t.registry_url = "https://rv.example/?sig=zzz".into();
        t.chatgpt_account_id = Some("acct".into());
        let text = format!("{t:?}");
        assert!(
            !text.contains("topsecret") && !text.contains("zzz"),
            "{text}"
        );
        assert!(text.contains("acct") && text.contains("e2e"), "{text}");
        assert_eq!(
            format!("{:?}", AuthToken::Env("MY_TOKEN".into())),
            r#"Env("MY_TOKEN")"#
        );
        assert_eq!(
            t.describe(),
            "noise environment `e2e` at https://rv.example/"
        );
    }

    #[test]
    fn clones_share_the_identity_and_new_sessions_start_unpinned() {
        let t = target();
        let key = t.harness_public_key().expect("key");
        assert_eq!(t.clone().harness_public_key().expect("key"), key);
        let other = StaticIdentity::generate().expect("identity");
        *lock(&t.pin) = Some(other.public_key().clone());
        assert!(lock(&t.clone().pin).is_some(), "a clone shares the session");
        let fresh = t.for_new_session();
        assert!(lock(&fresh.pin).is_none());
        assert_eq!(fresh.harness_public_key().expect("key"), key);
    }

    #[test]
    fn tokens_resolve_from_the_value_or_a_variable() {
        assert_eq!(
            AuthToken::Value(" t \n".into()).resolve().expect("value"),
            "t"
        );
        assert!(AuthToken::Value("  ".into()).resolve().is_err());
        let err = AuthToken::Env("EXEC_SERVER_TEST_SURELY_UNSET_VAR".into())
            .resolve()
            .expect_err("unset");
        assert_eq!(
            err.to_string(),
            "the auth token variable `EXEC_SERVER_TEST_SURELY_UNSET_VAR` is not set or empty"
        );
        assert!(err.is_permanent());
    }

    #[test]
    fn targets_are_checked_before_any_request() {
        let mut t = target();
        t.registry_url = "ws://x".into();
        assert!(t
            .check()
            .unwrap_err()
            .to_string()
            .contains("http:// or https://"));
        let mut t = target();
        t.environment_id = "a/b".into();
        assert!(t.check().is_err());
        assert!(target().check().is_ok());
    }

    #[test]
    fn permanence_of_errors() {
        assert!(NoiseConnectError::KeyChanged.is_permanent());
        assert_eq!(
            NoiseConnectError::KeyChanged.to_string(),
            "executor key changed during session recovery"
        );
        let status = |code| NoiseConnectError::Status {
            code,
            status: String::new(),
            detail: String::new(),
        };
        assert!(status(404).is_permanent());
        assert!(!status(429).is_permanent());
        assert!(!status(500).is_permanent());
        assert!(!NoiseConnectError::StreamReset("x".into()).is_permanent());
        assert!(!NoiseConnectError::Request("x".into()).is_permanent());
    }
}
