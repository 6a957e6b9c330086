//! Transports: how a client reaches a server. Each one yields a link that only moves whole
//! JSON-RPC messages (text), as the server's transports do; nothing protocol-specific lives here.
//! A WebSocket and a spawned program are here; an executor behind a registry and rendezvous
//! (remote mode, Noise-encrypted relay streams) is in [`noise`].

pub mod noise;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::error::ClientError;

pub use noise::{AuthToken, NoiseConnectError, NoiseTarget, NoiseTimeouts};

/// Largest message accepted from the server (the server's own default limit).
const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// Outgoing messages queued per connection before callers wait.
const OUT_QUEUE: usize = 64;

/// How to reach a server; kept by the client so it can reconnect.
#[derive(Debug, Clone)]
pub enum Connector {
    /// A WebSocket URL (`ws://` or `wss://`).
    WebSocket(WebSocketTarget),
    /// A program speaking the protocol on its stdin/stdout (e.g. `exec-server --listen stdio`,
    /// or `ssh host exec-server --listen stdio`).
    Stdio(StdioCommand),
    /// An executor in remote mode, reached through its registry and rendezvous over a
    /// Noise-encrypted relay stream (spec §10.7).
    Noise(NoiseTarget),
}

/// A WebSocket server.
#[derive(Debug, Clone)]
pub struct WebSocketTarget {
    /// `ws://host:port` or `wss://host:port`.
    pub url: String,
    /// Sent as `Authorization: Bearer <token>` when set.
    pub bearer_token: Option<String>,
    /// Extra PEM CA certificates trusted for `wss://` besides the system roots.
    pub ca_certificates: Option<PathBuf>,
    /// Deadline for TCP + TLS + WebSocket handshake.
    pub connect_timeout: Duration,
}

impl WebSocketTarget {
    /// A target with no token, the system roots and a 10 s connect timeout.
    pub fn new(url: impl Into<String>) -> Self {
        WebSocketTarget {
            url: url.into(),
            bearer_token: None,
            ca_certificates: None,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// A program to spawn.
#[derive(Debug, Clone, Default)]
pub struct StdioCommand {
    /// The program.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Variables added to the inherited environment.
    pub env: HashMap<String, String>,
    /// Its working directory.
    pub cwd: Option<PathBuf>,
}

impl Connector {
    /// A short description for error messages.
    pub fn target(&self) -> String {
        match self {
            Connector::WebSocket(t) => t.url.clone(),
            Connector::Stdio(c) => format!("program `{}`", c.program),
            Connector::Noise(t) => t.describe(),
        }
    }

    /// Opens a new link.
    pub(crate) async fn open(&self) -> Result<Link, ClientError> {
        match self {
            Connector::WebSocket(t) => open_ws(t).await,
            Connector::Stdio(c) => open_stdio(c),
            Connector::Noise(t) => t.open().await,
        }
    }

    /// The connector a new client session keeps: the same, except that a Noise target forgets
    /// the executor key a previous session pinned (its harness identity stays).
    pub(crate) fn for_new_session(&self) -> Connector {
        match self {
            Connector::Noise(t) => Connector::Noise(t.for_new_session()),
            other => other.clone(),
        }
    }
}

/// reqwest and tokio-tungstenite are built without a default TLS crypto provider: install
/// ring's once, unless another one already is.
pub(crate) fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// One open connection: whole messages in, whole messages out.
pub(crate) struct Link {
    /// Outgoing messages; the writer task sends them in order.
    pub(crate) out: mpsc::Sender<String>,
    /// Incoming messages; ends when the connection does.
    pub(crate) incoming: BoxStream<'static, String>,
    /// Cancelled to close the link from our side: the writer stops (mid-message if it is
    /// stuck on a peer that does not read) and the connection is closed once `incoming` is
    /// dropped too, so the server sees the end at once and frees the session for a resume.
    pub(crate) closed: CancellationToken,
    /// Keeps what must live as long as the link (the stdio child).
    pub(crate) _guard: Option<Box<dyn Send + Sync>>,
}

fn connect_error(target: &str, reason: impl ToString) -> ClientError {
    ClientError::Connect {
        target: target.to_string(),
        reason: reason.to_string(),
    }
}

async fn open_ws(t: &WebSocketTarget) -> Result<Link, ClientError> {
    let mut request = t
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| connect_error(&t.url, e))?;
    if let Some(token) = &t.bearer_token {
        let value = format!("Bearer {token}").parse().map_err(|_| {
            connect_error(
                &t.url,
                "the token contains characters not allowed in a header",
            )
        })?;
        request.headers_mut().insert("authorization", value);
    }
    let connector = if t.url.starts_with("wss://") {
        Some(tokio_tungstenite::Connector::Rustls(
            tls_config(t.ca_certificates.as_deref()).map_err(|e| connect_error(&t.url, e))?,
        ))
    } else {
        None
    };
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    let connect =
        tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, connector);
    let (ws, _) = tokio::time::timeout(t.connect_timeout, connect)
        .await
        .map_err(|_| {
            connect_error(
                &t.url,
                format!("no answer within {} ms", t.connect_timeout.as_millis()),
            )
        })?
        .map_err(|e| {
            use tokio_tungstenite::tungstenite::Error as WsError;
            match e {
                WsError::Http(resp) if resp.status().as_u16() == 401 => connect_error(
                    &t.url,
                    "the server wants a bearer token (401); pass --token",
                ),
                WsError::Http(resp) => connect_error(&t.url, format!("HTTP {}", resp.status())),
                other => connect_error(&t.url, other),
            }
        })?;
    if let tokio_tungstenite::MaybeTlsStream::Plain(s) = ws.get_ref() {
        let _ = s.set_nodelay(true);
    }
    let (mut sink, stream) = ws.split();
    let (out, mut rx) = mpsc::channel::<String>(OUT_QUEUE);
    let closed = CancellationToken::new();
    let cancelled = closed.clone();
    tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                m = rx.recv() => m,
                _ = cancelled.cancelled() => None,
            };
            let Some(msg) = msg else { break };
            let sent = tokio::select! {
                r = sink.send(Message::Text(msg.into())) => r.is_ok(),
                _ = cancelled.cancelled() => return,
            };
            if !sent {
                return;
            }
        }
        // A close frame when the peer takes it; a peer that stopped reading does not hold us.
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    });
    let incoming = stream
        .take_while(|m| futures::future::ready(m.is_ok()))
        .filter_map(|m| {
            futures::future::ready(match m {
                Ok(Message::Text(t)) => Some(Some(t.as_str().to_owned())),
                Ok(Message::Binary(b)) => Some(String::from_utf8(b.to_vec()).ok()),
                Ok(Message::Close(_)) => Some(None),
                _ => None,
            })
        })
        .take_while(|m| futures::future::ready(m.is_some()))
        .filter_map(futures::future::ready)
        .boxed();
    Ok(Link {
        out,
        incoming,
        closed,
        _guard: None,
    })
}

/// The TLS configuration of `wss://` (and of an `https://` registry): the system roots plus
/// the PEM certificates of `extra_ca`.
pub(crate) fn tls_config(
    extra_ca: Option<&std::path::Path>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::CertificateDer;
    install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs();
    for cert in native {
        let _ = roots.add(cert);
    }
    if let Some(path) = extra_ca {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("bad PEM in {}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
        }
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The system's trusted roots (empty when none can be loaded).
fn rustls_native_certs() -> Vec<rustls::pki_types::CertificateDer<'static>> {
    // tokio-tungstenite's native-roots feature brings rustls-native-certs in; load the same
    // roots it would, so `--ca-cert` adds to them instead of replacing them.
    let mut out = Vec::new();
    for dir in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
    ] {
        use rustls::pki_types::pem::PemObject as _;
        if let Ok(iter) = rustls::pki_types::CertificateDer::pem_file_iter(dir) {
            out.extend(iter.flatten());
            break;
        }
    }
    out
}

/// Keeps the stdio child alive with the link and kills it when the link goes.
struct ChildGuard(#[allow(dead_code)] tokio::process::Child);

fn open_stdio(c: &StdioCommand) -> Result<Link, ClientError> {
    use std::process::Stdio;
    use tokio_util::codec::{FramedRead, LinesCodec};
    let target = format!("program `{}`", c.program);
    // The stdio transport's whole point is to start the server program; core's spawn module
    // is for the executor's children (sessions, sandboxes), not for a client's transport.
    #[allow(clippy::disallowed_methods)]
    let mut cmd = tokio::process::Command::new(&c.program);
    cmd.args(&c.args)
        .envs(&c.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    if let Some(dir) = &c.cwd {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn().map_err(|e| connect_error(&target, e))?;
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(connect_error(&target, "no stdin/stdout pipes"));
    };
    let (out, mut rx) = mpsc::channel::<String>(OUT_QUEUE);
    let closed = CancellationToken::new();
    let cancelled = closed.clone();
    tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                m = rx.recv() => m,
                _ = cancelled.cancelled() => None,
            };
            let Some(mut msg) = msg else { return };
            msg.push('\n');
            let written = tokio::select! {
                r = async { stdin.write_all(msg.as_bytes()).await?; stdin.flush().await } => r.is_ok(),
                _ = cancelled.cancelled() => return,
            };
            if !written {
                return;
            }
        }
    });
    let incoming = FramedRead::new(stdout, LinesCodec::new_with_max_length(MAX_MESSAGE_BYTES))
        .take_while(|l| futures::future::ready(l.is_ok()))
        .filter_map(|l| futures::future::ready(l.ok().filter(|l| !l.trim().is_empty())))
        .boxed();
    Ok(Link {
        out,
        incoming,
        closed,
        _guard: Some(Box::new(ChildGuard(child))),
    })
}
