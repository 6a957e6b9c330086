//! [`Client`]: one logical connection to a server, typed over [`Method`], that survives
//! transport loss by reconnecting and resuming its session.
//!
//! Structure: a *connection* ([`Conn`]) is one link plus a reader task that routes replies to
//! their callers by id and notifications to per-process and per-HTTP-request routes. A
//! *supervisor* task owns the lifecycle: when a connection ends it marks the client
//! `Connecting`, reconnects with `resumeSessionId` (every 100 ms, backing off to 1 s, until
//! the recovery deadline; it gives up at once on a connect failure retrying cannot fix, such
//! as a refused token or a changed executor key), then catches every live process up with
//! `process/read` from the last seq it delivered. Per-process routes order events by seq and
//! drop repeats, so output reaches the caller once and in order whether it came by
//! notification or by read.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use exec_server_protocol::environment::EnvironmentInfo;
use exec_server_protocol::initialize::{Initialize, InitializeParams, INITIALIZED};
use exec_server_protocol::process::{ReadParams, ReadResult};
use exec_server_protocol::{codes, http, process, ErrorObject, Method};
use futures::StreamExt;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::error::ClientError;
use crate::process::{ProcessEvent, Route};
use crate::transport::{Connector, Link};

/// Options of [`Client::connect`].
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Sent as `clientName` in `initialize`.
    pub client_name: String,
    /// Deadline for the `initialize` reply.
    pub initialize_timeout: Duration,
    /// Reconnect and resume when the connection drops. When false, a drop closes the client.
    pub reconnect: bool,
    /// How long to keep trying to resume after a drop (default 120 s: over a half-open link
    /// the server may take 65 s to notice the peer is gone, then keeps the detached session
    /// for 80 s; until it notices, a resume is answered `-32010` and retried).
    pub recovery_timeout: Duration,
    /// Ask for `process/heartbeat` every this long (an extension of this server, 100 ms to
    /// 1 h; `None`, the default, asks for none). Once a heartbeat has arrived on a connection,
    /// a link silent for three intervals is taken for dead and replaced (reconnect, resume,
    /// catch up), and a process the heartbeats show output for while nothing of it arrived
    /// for a whole interval is read again from its cursor. A server without heartbeats sends
    /// none, and then neither check runs.
    pub heartbeat: Option<Duration>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            client_name: "exec-server-client".into(),
            initialize_timeout: Duration::from_secs(10),
            reconnect: true,
            recovery_timeout: Duration::from_secs(120),
            heartbeat: None,
        }
    }
}

/// What a reply carries: the message text and where its raw result lies in it, or the error
/// object.
type Reply = Result<(String, std::ops::Range<usize>), ErrorObject>;

/// One live link and the replies it owes.
pub(crate) struct Conn {
    out: mpsc::Sender<String>,
    pending: Mutex<HashMap<i64, oneshot::Sender<Reply>>>,
    pub(crate) closed: CancellationToken,
    /// `process/heartbeat`s received (the link's silence is watched only once there was one).
    heartbeats: AtomicU64,
}

impl Conn {
    fn pending(&self) -> MutexGuard<'_, HashMap<i64, oneshot::Sender<Reply>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Clone)]
enum State {
    Connecting,
    Connected(Arc<Conn>),
    Closed(ClientError),
}

pub(crate) struct Inner {
    connector: Connector,
    options: ConnectOptions,
    next_id: AtomicI64,
    next_local_id: AtomicU64,
    state: watch::Sender<State>,
    session_id: Mutex<String>,
    info: Mutex<EnvironmentInfo>,
    pub(crate) routes: Mutex<HashMap<String, Route>>,
    http_routes: Mutex<HashMap<String, mpsc::Sender<http::BodyDeltaNotification>>>,
    shutdown: CancellationToken,
}

/// Closes the client when the last [`Client`] clone is dropped.
struct DropGuard(CancellationToken);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// A connection to an exec-server, with reconnect and resume.
///
/// Cheap to clone; every clone shares the connection. The connection closes when the last
/// clone (including those held by process handles) is dropped, or on [`Client::close`].
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
    _guard: Arc<DropGuard>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("target", &self.inner.connector.target())
            .field("session_id", &self.session_id())
            .finish()
    }
}

impl Client {
    /// Connects, sends `initialize` and `initialized`, and starts the supervisor.
    pub async fn connect(
        connector: Connector,
        options: ConnectOptions,
    ) -> Result<Client, ClientError> {
        let inner = Arc::new(Inner {
            connector: connector.for_new_session(),
            options,
            next_id: AtomicI64::new(1),
            next_local_id: AtomicU64::new(1),
            state: watch::channel(State::Connecting).0,
            session_id: Mutex::new(String::new()),
            info: Mutex::new(placeholder_info()),
            routes: Mutex::new(HashMap::new()),
            http_routes: Mutex::new(HashMap::new()),
            shutdown: CancellationToken::new(),
        });
        let conn = inner.clone().establish(None).await?;
        inner.state.send_replace(State::Connected(conn.clone()));
        tokio::spawn(inner.clone().supervise(conn));
        let guard = Arc::new(DropGuard(inner.shutdown.clone()));
        Ok(Client {
            inner,
            _guard: guard,
        })
    }

    /// Connects to a WebSocket URL with default options and an optional bearer token.
    pub async fn connect_ws(url: &str, token: Option<String>) -> Result<Client, ClientError> {
        let mut target = crate::transport::WebSocketTarget::new(url);
        target.bearer_token = token;
        Client::connect(Connector::WebSocket(target), ConnectOptions::default()).await
    }

    /// The session id (the same across resumes).
    pub fn session_id(&self) -> String {
        lock(&self.inner.session_id).clone()
    }

    /// The `environmentInfo` of the last `initialize`.
    pub fn environment_info(&self) -> EnvironmentInfo {
        lock(&self.inner.info).clone()
    }

    /// Sends one request and waits for its reply. A connection loss while waiting gives
    /// [`ClientError::Disconnected`] (the request may or may not have run); see
    /// [`Client::call_retrying`] for idempotent requests.
    pub async fn call<M: Method>(&self, params: M::Params) -> Result<M::Result, ClientError> {
        let conn = self.inner.connected().await?;
        request::<M>(&self.inner, &conn, &params).await
    }

    /// Like [`Client::call`], with the result decoded by `decode` from its JSON text (for
    /// results that carry megabytes of base64).
    pub(crate) async fn call_decoded<M: Method, T>(
        &self,
        params: M::Params,
        decode: impl FnOnce(&str) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let conn = self.inner.connected().await?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let text = serde_json::to_string(&Req {
            id,
            method: M::NAME,
            params: &params,
            trace: crate::trace::current(),
        })
        .map_err(|e| ClientError::Protocol(format!("cannot encode {} params: {e}", M::NAME)))?;
        exchange_with(&conn, id, text, decode).await
    }

    /// Like [`Client::call`], with the params written as JSON text by `write_params`, which
    /// runs before this returns (so it may borrow a buffer the caller reuses); `capacity` is
    /// their expected length. The params must be a JSON object matching `M::Params`.
    pub(crate) fn call_prebuilt<M: Method>(
        &self,
        capacity: usize,
        write_params: impl FnOnce(&mut String),
    ) -> futures::future::BoxFuture<'static, Result<M::Result, ClientError>> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let text = prebuilt_text(id, M::NAME, capacity, write_params);
        let inner = self.inner.clone();
        Box::pin(async move {
            let text = text?;
            let conn = inner.connected().await?;
            exchange::<M>(&conn, id, text).await
        })
    }

    /// Like [`Client::call`], but after a connection loss waits for the client to reconnect
    /// and sends the request again. Only for requests that are safe to repeat (reads,
    /// `process/write` with the same `writeId`, signals, ...).
    pub async fn call_retrying<M: Method>(
        &self,
        params: M::Params,
    ) -> Result<M::Result, ClientError> {
        loop {
            let conn = self.inner.connected().await?;
            match request::<M>(&self.inner, &conn, &params).await {
                Err(ClientError::Disconnected) => {
                    conn.closed.cancelled().await;
                    continue;
                }
                other => return other,
            }
        }
    }

    /// Closes the connection; later calls fail with [`ClientError::Closed`].
    pub fn close(&self) {
        self.inner.shutdown.cancel();
    }

    /// Drops the current transport as if the network failed (the client then reconnects and
    /// resumes). Meant for tests of recovery.
    #[doc(hidden)]
    pub fn break_connection(&self) {
        if let State::Connected(conn) = &*self.inner.state.borrow() {
            conn.closed.cancel();
        }
    }

    /// A fresh id for client-chosen names (process ids, handle ids, write ids).
    pub(crate) fn unique(&self, prefix: &str) -> String {
        let n = self.inner.next_local_id.fetch_add(1, Ordering::Relaxed);
        let sid = self.session_id();
        let short = sid.get(..8).unwrap_or(&sid);
        format!("{prefix}-{short}-{n}")
    }

    /// Registers a per-request route for `http/request/bodyDelta` notifications, holding at
    /// most [`HTTP_ROUTE_DELTAS`] undelivered deltas.
    pub(crate) fn http_route(
        &self,
        request_id: &str,
    ) -> mpsc::Receiver<http::BodyDeltaNotification> {
        let (tx, rx) = mpsc::channel(HTTP_ROUTE_DELTAS);
        lock(&self.inner.http_routes).insert(request_id.to_string(), tx);
        rx
    }

    /// Removes a per-request route.
    pub(crate) fn drop_http_route(&self, request_id: &str) {
        lock(&self.inner.http_routes).remove(request_id);
    }
}

/// Body deltas one streamed HTTP response may hold before its reader takes them (each at most
/// 1 MiB of body, the server's cap). When they are all waiting, the connection's reader waits
/// for the body's reader: back-pressure reaches the executor over TCP, and the executor stops
/// reading the upstream body, so a fast server and a slow consumer never pile up memory here.
/// The price: while a body is full, other messages of the connection wait too, so a body must
/// be read or dropped.
pub(crate) const HTTP_ROUTE_DELTAS: usize = 32;

/// A body delta to hand to its route once the reader may wait.
struct HttpDelivery {
    request_id: String,
    tx: mpsc::Sender<http::BodyDeltaNotification>,
    delta: http::BodyDeltaNotification,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn placeholder_info() -> EnvironmentInfo {
    EnvironmentInfo {
        shell: exec_server_protocol::environment::ShellInfo {
            name: String::new(),
            path: String::new(),
        },
        executor_version: "0.0.0".into(),
        provider_id: None,
        cwd: None,
        user_home_dir: None,
        platform_os: None,
        prepend_path_dirs: Vec::new(),
        temporary_directories: Vec::new(),
        temp_dir: None,
        capabilities: Default::default(),
    }
}

/// A request as sent.
#[derive(Serialize)]
struct Req<'a, P> {
    id: i64,
    method: &'static str,
    params: &'a P,
    /// The W3C trace context of the current span, so the server's span is its child.
    #[serde(skip_serializing_if = "Option::is_none")]
    trace: Option<exec_server_protocol::jsonrpc::TraceContext>,
}

/// Sends a request on `conn` and decodes its reply.
async fn request<M: Method>(
    inner: &Inner,
    conn: &Arc<Conn>,
    params: &M::Params,
) -> Result<M::Result, ClientError> {
    let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
    let text = serde_json::to_string(&Req {
        id,
        method: M::NAME,
        params,
        trace: crate::trace::current(),
    })
    .map_err(|e| ClientError::Protocol(format!("cannot encode {} params: {e}", M::NAME)))?;
    exchange::<M>(conn, id, text).await
}

/// The text of a request whose params `write_params` writes as JSON (for requests that carry
/// megabytes of base64, which need no escaping and should not go through serde_json's).
fn prebuilt_text(
    id: i64,
    method: &str,
    capacity: usize,
    write_params: impl FnOnce(&mut String),
) -> Result<String, ClientError> {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(capacity + 96);
    let _ = write!(text, r#"{{"id":{id},"method":"{method}","params":"#);
    write_params(&mut text);
    if let Some(trace) = crate::trace::current() {
        text.push_str(r#","trace":"#);
        text.push_str(
            &serde_json::to_string(&trace)
                .map_err(|e| ClientError::Protocol(format!("cannot encode {method} trace: {e}")))?,
        );
    }
    text.push('}');
    Ok(text)
}

/// Sends the request `text` (whose id is `id`) on `conn` and decodes its reply.
async fn exchange<M: Method>(
    conn: &Arc<Conn>,
    id: i64,
    text: String,
) -> Result<M::Result, ClientError> {
    exchange_with(conn, id, text, |result| {
        serde_json::from_str::<M::Result>(result)
            .map_err(|e| ClientError::Protocol(format!("{} result: {e}", M::NAME)))
    })
    .await
}

/// Sends the request `text` (whose id is `id`) on `conn` and decodes its reply's result (the
/// JSON text of the `result` member) with `decode`.
async fn exchange_with<T>(
    conn: &Arc<Conn>,
    id: i64,
    text: String,
    decode: impl FnOnce(&str) -> Result<T, ClientError>,
) -> Result<T, ClientError> {
    let (tx, rx) = oneshot::channel();
    conn.pending().insert(id, tx);
    if conn.closed.is_cancelled() || conn.out.send(text).await.is_err() {
        conn.pending().remove(&id);
        // Its writer is gone: mark the connection closed now, so that the next call waits
        // for the reconnection instead of failing on the same dead connection again (a
        // retry loop could otherwise use up its attempts before the reader notices).
        conn.closed.cancel();
        return Err(ClientError::Disconnected);
    }
    let reply = tokio::select! {
        r = rx => r.map_err(|_| ClientError::Disconnected)?,
        _ = conn.closed.cancelled() => {
            conn.pending().remove(&id);
            return Err(ClientError::Disconnected);
        }
    };
    match reply {
        Ok((text, range)) => decode(&text[range]),
        Err(e) => Err(ClientError::Rpc(e)),
    }
}

/// An incoming message as the client sees it.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default)]
    id: Option<serde_json::Number>,
    #[serde(default, borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    params: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(default)]
    error: Option<ErrorObject>,
}

/// Finds the id and the result of a success written as `{"id":N,"result":…}` (how this server
/// and upstream write them) without scanning the result, which can be megabytes of base64;
/// the caller's typed decode validates it. Anything else takes the full parse.
fn fast_success(msg: &str) -> Option<(i64, std::ops::Range<usize>)> {
    let rest = msg.strip_prefix(r#"{"id":"#)?;
    let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '-'))?;
    let id: i64 = rest[..digits].parse().ok()?;
    let body = rest[digits..].strip_prefix(r#","result":"#)?;
    let start = msg.len() - body.len();
    let end = msg.strip_suffix('}')?.len();
    (end > start && id >= 0).then_some((id, start..end))
}

/// Keeps a member that is present, even when its value is `null`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

impl Inner {
    /// Sends one request on `conn` and waits for its reply.
    pub(crate) async fn request<M: Method>(
        &self,
        conn: &Arc<Conn>,
        params: &M::Params,
    ) -> Result<M::Result, ClientError> {
        request::<M>(self, conn, params).await
    }

    /// Waits until connected; fails once closed.
    pub(crate) async fn connected(&self) -> Result<Arc<Conn>, ClientError> {
        let mut rx = self.state.subscribe();
        loop {
            if self.shutdown.is_cancelled() {
                return Err(ClientError::Closed);
            }
            match &*rx.borrow_and_update() {
                State::Connected(c) if !c.closed.is_cancelled() => return Ok(c.clone()),
                State::Closed(e) => return Err(e.clone()),
                _ => {}
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return Err(ClientError::Closed) },
                _ = self.shutdown.cancelled() => return Err(ClientError::Closed),
            }
        }
    }

    /// Opens a link, starts its reader and runs the handshake.
    async fn establish(self: Arc<Self>, resume: Option<String>) -> Result<Arc<Conn>, ClientError> {
        let link = self.connector.open().await?;
        let Link {
            out,
            incoming,
            closed,
            _guard,
        } = link;
        let conn = Arc::new(Conn {
            out,
            pending: Mutex::new(HashMap::new()),
            closed,
            heartbeats: AtomicU64::new(0),
        });
        tokio::spawn(self.clone().read_loop(conn.clone(), incoming, _guard));
        let params = InitializeParams {
            client_name: self.options.client_name.clone(),
            resume_session_id: resume,
            replay_after: None,
            heartbeat_ms: self
                .options
                .heartbeat
                .map(|d| (d.as_millis() as u64).clamp(100, 3_600_000)),
        };
        let timeout = self.options.initialize_timeout;
        let result = tokio::time::timeout(timeout, request::<Initialize>(&self, &conn, &params))
            .await
            .map_err(|_| ClientError::Timeout {
                what: "initialize",
                ms: timeout.as_millis(),
            })
            .and_then(|r| r);
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                conn.closed.cancel();
                return Err(e);
            }
        };
        let note = format!(r#"{{"method":"{INITIALIZED}"}}"#);
        if conn.out.send(note).await.is_err() {
            conn.closed.cancel();
            return Err(ClientError::Disconnected);
        }
        *lock(&self.session_id) = result.session_id;
        *lock(&self.info) = result.environment_info;
        Ok(conn)
    }

    /// Routes incoming messages until the link ends or the connection is cancelled.
    async fn read_loop(
        self: Arc<Self>,
        conn: Arc<Conn>,
        mut incoming: futures::stream::BoxStream<'static, String>,
        guard: Option<Box<dyn Send + Sync>>,
    ) {
        // The silence after which a link that sent heartbeats is taken for dead.
        let silence = self.options.heartbeat.map(|d| d * 3);
        let mut last_message = tokio::time::Instant::now();
        loop {
            let heard = conn.heartbeats.load(Ordering::Relaxed) > 0;
            let deadline = last_message + silence.unwrap_or_default();
            let msg = tokio::select! {
                m = incoming.next() => m,
                _ = conn.closed.cancelled() => None,
                _ = self.shutdown.cancelled() => None,
                _ = tokio::time::sleep_until(deadline), if heard && silence.is_some() => {
                    tracing::warn!(
                        silent_ms = last_message.elapsed().as_millis() as u64,
                        "no message (not even a heartbeat) from the server; reconnecting"
                    );
                    None
                }
            };
            let Some(msg) = msg else { break };
            last_message = tokio::time::Instant::now();
            if let Some(d) = self.route(&conn, msg) {
                // Back-pressure: wait until the body's reader has room (HTTP_ROUTE_DELTAS).
                let done = d.delta.done;
                if d.tx.capacity() == 0 {
                    tracing::debug!(request_id = %d.request_id, "http body full: reader waits");
                }
                let sent = tokio::select! {
                    r = d.tx.send(d.delta) => r.is_ok(),
                    _ = conn.closed.cancelled() => break,
                    _ = self.shutdown.cancelled() => break,
                };
                if !sent || done {
                    let mut routes = lock(&self.http_routes);
                    if routes
                        .get(&d.request_id)
                        .is_some_and(|tx| tx.same_channel(&d.tx))
                    {
                        routes.remove(&d.request_id);
                    }
                }
            }
        }
        conn.closed.cancel();
        conn.pending().clear();
        drop(guard);
        // Streamed HTTP bodies belong to the connection: they end with it.
        // A body's buffer may be full: its reader gets the error after what it holds (or the
        // send fails at once when the body was dropped).
        let routes: Vec<_> = lock(&self.http_routes).drain().collect();
        for (request_id, tx) in routes {
            tokio::spawn(async move {
                let _ = tx
                    .send(http::BodyDeltaNotification {
                        request_id,
                        seq: u64::MAX,
                        delta_base64: Default::default(),
                        done: true,
                        error: Some("the connection to the server was lost".into()),
                    })
                    .await;
            });
        }
    }

    fn route(self: &Arc<Self>, conn: &Arc<Conn>, msg: String) -> Option<HttpDelivery> {
        if let Some((id, range)) = fast_success(&msg) {
            if let Some(tx) = conn.pending().remove(&id) {
                let _ = tx.send(Ok((msg, range)));
            }
            return None;
        }
        let env: Envelope<'_> = match serde_json::from_str(&msg) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(%e, "undecodable message from the server");
                return None;
            }
        };
        if let Some(method) = env.method {
            return self.notification(conn, &method, env.params);
        }
        let id = env.id.and_then(|n| n.as_i64())?;
        let reply = match (env.result, env.error) {
            (_, Some(e)) => Err(e),
            (Some(r), None) => {
                let text = r.get().to_string();
                let len = text.len();
                Ok((text, 0..len))
            }
            (None, None) => return None,
        };
        if id < 0 {
            if let Err(e) = &reply {
                tracing::warn!(code = e.code, message = %e.message, "the server rejected a frame");
            }
            return None;
        }
        if let Some(tx) = conn.pending().remove(&id) {
            let _ = tx.send(reply);
        }
        None
    }

    /// Handles a notification; a body delta is returned for the reader to deliver.
    fn notification(
        self: &Arc<Self>,
        conn: &Arc<Conn>,
        method: &str,
        params: Option<&RawValue>,
    ) -> Option<HttpDelivery> {
        use exec_server_protocol::Notification as _;
        let text = params.map(RawValue::get).unwrap_or("null");
        if method == process::Output::NAME {
            if let Ok(p) = serde_json::from_str::<process::OutputNotification>(text) {
                let data = match p.chunk.decode() {
                    Ok(d) => Bytes::from(d),
                    Err(e) => {
                        tracing::warn!(%e, "bad base64 in process/output");
                        return None;
                    }
                };
                self.offer(
                    &p.process_id,
                    p.seq,
                    ProcessEvent::Output {
                        seq: p.seq,
                        stream: p.stream,
                        data,
                    },
                );
            }
        } else if method == process::Exited::NAME {
            if let Ok(p) = serde_json::from_str::<process::ExitedNotification>(text) {
                self.offer(
                    &p.process_id,
                    p.seq,
                    ProcessEvent::Exited {
                        seq: p.seq,
                        exit_code: p.exit_code,
                        timed_out: p.timed_out,
                    },
                );
            }
        } else if method == process::Heartbeat::NAME {
            if let Ok(p) = serde_json::from_str::<process::HeartbeatNotification>(text) {
                conn.heartbeats.fetch_add(1, Ordering::Relaxed);
                let stalled: Vec<String> = {
                    let mut routes = lock(&self.routes);
                    p.processes
                        .iter()
                        .filter(|e| {
                            routes
                                .get_mut(&e.process_id)
                                .is_some_and(|r| r.heartbeat(e.last_seq))
                        })
                        .map(|e| e.process_id.clone())
                        .collect()
                };
                for id in stalled {
                    tracing::debug!(process = %id, "stream stalled; reading from its cursor");
                    let (this, conn) = (self.clone(), conn.clone());
                    tokio::spawn(async move { this.catch_up_one(&conn, &id).await });
                }
            }
        } else if method == process::GapNote::NAME {
            // A replay after a resume that started before what the server retains.
            if let Ok(p) = serde_json::from_str::<process::GapNotification>(text) {
                let mut routes = lock(&self.routes);
                if let Some(route) = routes.get_mut(&p.process_id) {
                    route.offer(p.gap.from_seq, p.gap.to_seq, Err(lost(&p.gap)));
                }
            }
        } else if method == process::Closed::NAME {
            if let Ok(p) = serde_json::from_str::<process::ClosedNotification>(text) {
                self.offer(&p.process_id, p.seq, ProcessEvent::Closed { seq: p.seq });
            }
        } else if method == http::BodyDelta::NAME {
            if let Ok(p) = serde_json::from_str::<http::BodyDeltaNotification>(text) {
                let tx = lock(&self.http_routes).get(&p.request_id).cloned()?;
                return Some(HttpDelivery {
                    request_id: p.request_id.clone(),
                    tx,
                    delta: p,
                });
            }
        }
        None
    }

    fn offer(&self, process_id: &str, seq: u64, event: ProcessEvent) {
        let mut routes = lock(&self.routes);
        if let Some(route) = routes.get_mut(process_id) {
            route.offer(seq, seq, Ok(event));
            if route.is_done() {
                routes.remove(process_id);
            }
        }
    }

    /// Owns the connection lifecycle: waits for the connection to end, then reconnects and
    /// resumes until the recovery deadline.
    async fn supervise(self: Arc<Self>, mut conn: Arc<Conn>) {
        loop {
            tokio::select! {
                _ = conn.closed.cancelled() => {}
                _ = self.shutdown.cancelled() => {
                    conn.closed.cancel();
                    self.state.send_replace(State::Closed(ClientError::Closed));
                    return;
                }
            }
            if self.shutdown.is_cancelled() {
                self.state.send_replace(State::Closed(ClientError::Closed));
                return;
            }
            if !self.options.reconnect {
                self.fail(ClientError::Disconnected);
                return;
            }
            self.state.send_replace(State::Connecting);
            match self.clone().reconnect().await {
                Ok(c) => {
                    conn = c;
                    self.state.send_replace(State::Connected(conn.clone()));
                    tokio::spawn(self.clone().catch_up(conn.clone()));
                }
                Err(e) => {
                    self.fail(e);
                    return;
                }
            }
        }
    }

    /// Tries `initialize {resumeSessionId}` until it works, the session is gone, or the
    /// deadline passes.
    async fn reconnect(self: Arc<Self>) -> Result<Arc<Conn>, ClientError> {
        let session = lock(&self.session_id).clone();
        let deadline = tokio::time::Instant::now() + self.options.recovery_timeout;
        let mut delay = Duration::from_millis(100);
        loop {
            let attempt = self.clone().establish(Some(session.clone()));
            let result = tokio::select! {
                r = attempt => r,
                _ = self.shutdown.cancelled() => return Err(ClientError::Closed),
            };
            match result {
                Ok(conn) => {
                    tracing::debug!(session = %session, "resumed the session");
                    return Ok(conn);
                }
                Err(ClientError::Rpc(e)) if e.code != codes::SESSION_ALREADY_ATTACHED => {
                    return Err(ClientError::SessionLost(e.message));
                }
                Err(e) if e.is_permanent_connect_failure() => {
                    return Err(ClientError::SessionLost(e.to_string()));
                }
                Err(e) => {
                    tracing::debug!(%e, "reconnect attempt failed");
                }
            }
            if tokio::time::Instant::now() + delay > deadline {
                return Err(ClientError::SessionLost(format!(
                    "no connection within {} s",
                    self.options.recovery_timeout.as_secs()
                )));
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.shutdown.cancelled() => return Err(ClientError::Closed),
            }
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }

    /// Closes the client for good and ends every process's event stream with `e`.
    fn fail(&self, e: ClientError) {
        tracing::warn!(%e, "giving up on the connection");
        self.state.send_replace(State::Closed(e.clone()));
        let routes: Vec<Route> = lock(&self.routes).drain().map(|(_, r)| r).collect();
        for r in routes {
            r.fail(e.clone());
        }
    }

    /// Re-reads one process from the last seq it delivered, on the current connection (once
    /// its start is settled).
    pub(crate) async fn catch_up_process(self: Arc<Self>, id: String) {
        if let Ok(conn) = self.connected().await {
            self.catch_up_one(&conn, &id).await;
        }
    }

    /// Re-reads each live process from the last seq it delivered (not those whose start is
    /// still unsettled: `Client::start_process` catches them up).
    async fn catch_up(self: Arc<Self>, conn: Arc<Conn>) {
        let ids: Vec<String> = lock(&self.routes)
            .iter()
            .filter(|(_, r)| !r.starting)
            .map(|(id, _)| id.clone())
            .collect();
        let tasks = ids.into_iter().map(|id| {
            let this = self.clone();
            let conn = conn.clone();
            async move { this.catch_up_one(&conn, &id).await }
        });
        futures::future::join_all(tasks).await;
    }

    async fn catch_up_one(&self, conn: &Arc<Conn>, id: &str) {
        /// Bytes per catch-up read, well under the message limit once base64-encoded.
        const MAX_BYTES: u64 = 8 << 20;
        loop {
            let Some(after) = lock(&self.routes).get(id).map(Route::delivered) else {
                return;
            };
            let params = ReadParams {
                process_id: id.to_string(),
                after_seq: Some(after),
                max_bytes: Some(MAX_BYTES),
                wait_ms: None,
            };
            let r = match request::<process::Read>(self, conn, &params).await {
                Ok(r) => r,
                Err(ClientError::Rpc(e)) => {
                    // The process is gone from the server (forgotten after its retention).
                    let mut routes = lock(&self.routes);
                    if let Some(route) = routes.remove(id) {
                        route.fail(ClientError::Rpc(e));
                    }
                    return;
                }
                Err(_) => return, // The connection dropped again; the next catch-up retries.
            };
            let more = !r.chunks.is_empty() && !r.closed;
            // `process/read` does not say whether the exit was the deadline's; the status does
            // (false from a server without it).
            let timed_out = if r.exited && r.next_seq > after + 1 {
                match request::<process::Status>(
                    self,
                    conn,
                    &process::StatusParams {
                        process_id: id.to_string(),
                    },
                )
                .await
                {
                    Ok(s) => s.timed_out,
                    Err(ClientError::Rpc(_)) => false,
                    Err(_) => return, // The connection dropped again.
                }
            } else {
                false
            };
            let mut routes = lock(&self.routes);
            let Some(route) = routes.get_mut(id) else {
                return;
            };
            feed_read(route, after, &r, timed_out);
            if route.is_done() {
                routes.remove(id);
                return;
            }
            if !more {
                return;
            }
        }
    }
}

/// The error a reported gap becomes.
fn lost(gap: &process::Gap) -> ClientError {
    ClientError::OutputLost {
        from_seq: gap.from_seq,
        to_seq: gap.to_seq,
        bytes: gap.bytes,
    }
}

/// Feeds a `process/read` reply into a route: its chunks, the gap it reports, and the exit and
/// close events, whose seqs are the ones in `(after, nextSeq)` no chunk took (the close is
/// always the last seq). `timed_out` goes on the exit event.
pub(crate) fn feed_read(route: &mut Route, after: u64, r: &ReadResult, timed_out: bool) {
    let mut cursor = after;
    if let Some(gap) = &r.gap {
        route.offer(gap.from_seq, gap.to_seq, Err(lost(gap)));
        cursor = cursor.max(gap.to_seq);
    }
    let synth = |route: &mut Route, from: u64, to: u64| {
        for s in from..to {
            let event = if r.closed && s + 1 == r.next_seq {
                ProcessEvent::Closed { seq: s }
            } else {
                ProcessEvent::Exited {
                    seq: s,
                    exit_code: r.exit_code.unwrap_or(-1),
                    timed_out,
                }
            };
            if r.exited {
                route.offer(s, s, Ok(event));
            }
        }
    };
    for c in &r.chunks {
        synth(route, cursor + 1, c.seq);
        if let Ok(data) = c.chunk.decode() {
            route.offer(
                c.seq,
                c.seq,
                Ok(ProcessEvent::Output {
                    seq: c.seq,
                    stream: c.stream,
                    data: Bytes::from(data),
                }),
            );
        }
        cursor = c.seq;
    }
    synth(route, cursor + 1, r.next_seq);
}

#[cfg(test)]
mod tests {
    use super::fast_success;

    #[tokio::test]
    async fn reads_fill_holes_with_output_exit_and_close() {
        use super::feed_read;
        use crate::process::{ProcessEvent, Route};
        use exec_server_protocol::bytes::Base64;
        use exec_server_protocol::process::{OutputChunk, ReadResult, Stream};
        let chunk = |seq| OutputChunk {
            seq,
            stream: Stream::Stdout,
            chunk: Base64::encode(seq.to_string().as_bytes()),
        };
        let (mut route, mut events) = Route::new();
        route.offer(1, 1, Ok(out(1)));
        // Notifications 5 and 6 arrived on the new connection before the catch-up read.
        route.offer(5, 5, Ok(out(5)));
        // Seq 2 is output, 3 the exit, 4 output after the exit, 5 output, 6 the close.
        let r = ReadResult {
            chunks: vec![chunk(2), chunk(4), chunk(5)],
            next_seq: 7,
            exited: true,
            exit_code: Some(9),
            closed: true,
            failure: None,
            sandbox_denied: false,
            gap: None,
        };
        feed_read(&mut route, 1, &r, true);
        assert!(route.is_done());
        let mut seen = Vec::new();
        while let Some(ev) = events.next_event().await {
            seen.push(ev.expect("event"));
        }
        let kinds: Vec<String> = seen
            .iter()
            .map(|e| match e {
                ProcessEvent::Output { seq, .. } => format!("o{seq}"),
                ProcessEvent::Exited {
                    seq,
                    exit_code,
                    timed_out,
                } => format!("x{seq}={exit_code}{}", if *timed_out { "t" } else { "" }),
                ProcessEvent::Closed { seq } => format!("c{seq}"),
            })
            .collect();
        assert_eq!(kinds, ["o1", "o2", "x3=9t", "o4", "o5", "c6"]);
    }

    fn out(seq: u64) -> crate::process::ProcessEvent {
        crate::process::ProcessEvent::Output {
            seq,
            stream: exec_server_protocol::process::Stream::Stdout,
            data: bytes::Bytes::from(seq.to_string()),
        }
    }

    #[test]
    fn fast_path_finds_id_and_result() {
        let m = r#"{"id":12,"result":{"chunk":"QUJD","eof":true}}"#;
        let (id, r) = fast_success(m).expect("fast");
        assert_eq!((id, &m[r]), (12, r#"{"chunk":"QUJD","eof":true}"#));
        assert!(fast_success(r#"{"error":{"code":1,"message":"x"},"id":1}"#).is_none());
        assert!(fast_success(r#"{"id":"s","result":{}}"#).is_none());
        assert!(fast_success(r#"{"id":-1,"result":{}}"#).is_none());
        assert!(fast_success(r#"{"method":"x","params":{}}"#).is_none());
    }
}
