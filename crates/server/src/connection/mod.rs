//! The connection engine: one reader loop, requests run concurrently (bounded), one writer.
//!
//! The reader decodes each frame, answers envelope and lifecycle errors itself, handles
//! `initialize` inline (so the lifecycle is decided in arrival order), and hands every other
//! request to a task holding one of the connection's permits. Work that must follow arrival
//! order (stdin tickets) is taken by the reader before the task starts. Replies and process
//! notifications meet in the writer task, so neither side ever waits for the other.

#[cfg(test)]
mod tests;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use exec_server_core::process::ProcessEvent;
use exec_server_core::session::{ConnectionId, Session};
use exec_server_protocol::jsonrpc::{self, Incoming};
use exec_server_protocol::{codes, ErrorObject, Method, RequestId};
use futures::{Sink, Stream, StreamExt};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use tracing::Instrument as _;

pub use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::base64_text::Base64Text;
use crate::dispatch::{self, Lifecycle};
use crate::telemetry::RequestScope;
use crate::ServerState;

/// A whole message from a transport.
#[derive(Debug)]
pub enum InFrame {
    /// One JSON-RPC message as bytes (a binary frame): checked for UTF-8 while decoding.
    Message(bytes::Bytes),
    /// One JSON-RPC message already known to be UTF-8 (a text frame, a stdio line).
    Text(Utf8Bytes),
    /// A message over the size limit was refused by the transport.
    TooLarge,
    /// The peer showed it is alive without sending a message (e.g. a pong).
    Alive,
    /// The transport saw a protocol violation: close with this code (1002 protocol error,
    /// 1007 invalid UTF-8 in a text frame).
    Violation {
        /// The close code.
        code: u16,
        /// A short reason.
        reason: &'static str,
    },
}

/// A message for a transport to send.
#[derive(Debug)]
pub enum OutFrame {
    /// One JSON-RPC message.
    Text(String),
    /// One JSON-RPC message whose middle is base64, encoded as it is written.
    Base64(Base64Text),
    /// A keepalive ping (WebSocket only; other transports ignore it).
    Ping,
    /// Close the connection with this code and reason (WebSocket close frame).
    Close {
        /// The close code (1008 policy violation, 1009 message too big, ...).
        code: u16,
        /// A short reason.
        reason: String,
    },
}

/// How a transport wants its connection run.
#[derive(Debug, Clone)]
pub struct TransportInfo {
    /// Prefix of parse-error messages, e.g. `failed to parse JSON-RPC message from exec-server
    /// stdio`.
    pub parse_error_prefix: String,
    /// Wait for in-flight requests when the input ends (stdio: the output is still open).
    pub drain_on_end: bool,
    /// Send keepalive pings.
    pub keepalive: bool,
    /// Close the connection when no `initialize` arrives within
    /// [`crate::ServeConfig::initialize_deadline`] (WebSocket and relay streams: peers that
    /// could hold a slot without ever using it).
    pub initialize_deadline: bool,
    /// The runtime that runs requests which do not complete at once, and every
    /// `process/start` (`None`: the runtime the connection runs on). WebSocket connections run
    /// on a connection thread and hand such work to the server's multi-thread runtime
    /// ([`crate::transport::threads`]).
    pub work: Option<tokio::runtime::Handle>,
    /// Notified when the transport has bytes of its own to write (a WebSocket's replies to
    /// the peer's pings): the writer then flushes its sink, which writes them.
    pub transport_writes: Option<Arc<tokio::sync::Notify>>,
}

/// Messages to the writer besides process events.
#[derive(Debug)]
pub(crate) enum OutMsg {
    Text(String),
    Base64(Base64Text),
    Close(u16, String),
}

/// Runs one connection until its input ends or a protocol violation closes it.
pub async fn run<R, W>(mut reader: R, writer: W, state: Arc<ServerState>, info: TransportInfo)
where
    R: Stream<Item = InFrame> + Unpin + Send,
    W: Sink<OutFrame> + Unpin + Send + 'static,
{
    let cfg = &state.config;
    let (out_tx, out_rx) = mpsc::channel::<OutMsg>(cfg.outbound_queue);
    let (ev_tx, ev_rx) = mpsc::channel::<ProcessEvent>(cfg.event_queue);
    let keepalive = info.keepalive.then_some(cfg.ping_interval);
    let writer_task = tokio::spawn(writer::run(
        writer,
        out_rx,
        ev_rx,
        keepalive,
        info.transport_writes.clone(),
    ));
    let _counted = crate::telemetry::connection_opened(&info.parse_error_prefix);
    let mut conn = Connection {
        id: state.connection_id(),
        state: state.clone(),
        out: out_tx,
        events: ev_tx,
        lifecycle: Lifecycle::New,
        permits: Arc::new(Semaphore::new(cfg.concurrent_requests.max(1))),
        tasks: TaskTracker::new(),
        cancel: CancellationToken::new(),
        handles: Arc::default(),
        http: Arc::default(),
        watches: Arc::default(),
        work: info
            .work
            .clone()
            .unwrap_or_else(tokio::runtime::Handle::current),
        info,
    };
    // WebSocket peers must initialize in time and answer pings, relay streams must initialize
    // in time; stdio and in-memory peers are trusted by construction.
    let watchdog = conn.info.keepalive;
    let init_watch = conn.info.initialize_deadline;
    let init_deadline = tokio::time::Instant::now() + cfg.initialize_deadline;
    let dead_after = cfg.ping_interval * 2 + cfg.ping_interval.min(Duration::from_secs(5));
    let mut last_seen = tokio::time::Instant::now();
    let mut liveness = tokio::time::interval(cfg.ping_interval.min(Duration::from_secs(5)));
    let closed_by_server = loop {
        let uninitialized = matches!(conn.lifecycle, Lifecycle::New);
        let frame = tokio::select! {
            f = reader.next() => f,
            _ = conn.out.closed() => break false,
            _ = tokio::time::sleep_until(init_deadline), if init_watch && uninitialized => {
                tracing::warn!(connection = conn.id, "no initialize before the deadline; closing");
                conn.close(1008, "initialize deadline exceeded").await;
                break true;
            }
            _ = liveness.tick(), if watchdog => {
                if last_seen.elapsed() > dead_after {
                    tracing::warn!(connection = conn.id, "peer missed two pings; closing");
                    conn.close(1001, "peer missed two pings").await;
                    break true;
                }
                continue;
            }
        };
        let Some(frame) = frame else { break false };
        last_seen = tokio::time::Instant::now();
        match frame {
            InFrame::Alive => {}
            InFrame::Violation { code, reason } => {
                conn.close(code, reason).await;
                break true;
            }
            InFrame::TooLarge => {
                conn.close(1009, "message too big").await;
                break true;
            }
            InFrame::Message(bytes) => {
                if conn.on_message(Frame::Bytes(&bytes)).await.is_break() {
                    break true;
                }
            }
            InFrame::Text(text) => {
                if conn.on_message(Frame::Text(&text)).await.is_break() {
                    break true;
                }
            }
        }
    };
    tracing::debug!(
        connection = conn.id,
        closed_by_server,
        "connection input ended"
    );
    conn.finish(closed_by_server).await;
    drop(conn);
    let _ = writer_task.await;
}

/// A request at least this long (a write carrying megabytes of base64) runs on the worker pool
/// rather than being polled first on the reader.
const OFF_READER_BYTES: usize = dispatch::DEFER_PARAMS_BYTES;

/// A message as it came: bytes to check for UTF-8, or text already checked.
enum Frame<'a> {
    Bytes(&'a [u8]),
    Text(&'a Utf8Bytes),
}

/// The reply of a finished request, or `-32603` if its handler panicked.
fn reply_or_panic(
    id: &RequestId,
    r: Result<dispatch::Replied, Box<dyn std::any::Any + Send>>,
) -> dispatch::Replied {
    r.unwrap_or_else(|_| {
        tracing::error!(%id, "request handler panicked");
        let text = jsonrpc::encode_error(
            id,
            &ErrorObject::new(
                codes::INTERNAL_ERROR,
                "internal error: request handler panicked",
            ),
        );
        dispatch::Replied {
            msg: OutMsg::Text(text),
            queued: None,
        }
    })
}

/// One connection's state, owned by its reader loop.
pub(crate) struct Connection {
    id: ConnectionId,
    state: Arc<ServerState>,
    out: mpsc::Sender<OutMsg>,
    events: mpsc::Sender<ProcessEvent>,
    lifecycle: Lifecycle,
    permits: Arc<Semaphore>,
    tasks: TaskTracker,
    cancel: CancellationToken,
    handles: Arc<exec_server_core::fs::HandleTable>,
    http: Arc<crate::handlers::http::Streams>,
    watches: Arc<exec_server_core::fs::MissingWatches>,
    /// Where requests that wait run (see [`TransportInfo::work`]).
    work: tokio::runtime::Handle,
    info: TransportInfo,
}

impl Connection {
    async fn send(&self, text: String) {
        let _ = self.out.send(OutMsg::Text(text)).await;
    }

    async fn send_error(&self, id: &RequestId, error: ErrorObject) {
        self.send(jsonrpc::encode_error(id, &error)).await;
    }

    async fn close(&self, code: u16, reason: &str) {
        let _ = self.out.send(OutMsg::Close(code, reason.to_string())).await;
    }

    /// Handles one frame; `Break` closes the connection.
    async fn on_message(&mut self, frame: Frame<'_>) -> std::ops::ControlFlow<()> {
        use std::ops::ControlFlow::{Break, Continue};
        let (frame_len, decoded) = match frame {
            Frame::Bytes(bytes) => (bytes.len(), jsonrpc::decode(bytes)),
            Frame::Text(text) => (text.len(), jsonrpc::decode_str(text.as_str())),
        };
        crate::telemetry::message_received(frame_len);
        let msg = match decoded {
            Ok(m) => m,
            Err(e) => {
                let text = format!("{}: {e}", self.info.parse_error_prefix);
                self.send_error(
                    &RequestId::MALFORMED,
                    ErrorObject::new(codes::INVALID_REQUEST, text),
                )
                .await;
                return Continue(());
            }
        };
        match msg {
            Incoming::Response => {
                tracing::warn!(connection = self.id, "client sent a response; closing");
                self.close(1008, "unexpected response from client").await;
                Break(())
            }
            Incoming::Notification { method, .. } => {
                if method != exec_server_protocol::initialize::INITIALIZED {
                    tracing::warn!(connection = self.id, %method, "unexpected notification; closing");
                    self.close(1008, "unexpected notification").await;
                    return Break(());
                }
                match std::mem::replace(&mut self.lifecycle, Lifecycle::New) {
                    Lifecycle::New => {
                        self.close(1008, "initialized before initialize").await;
                        Break(())
                    }
                    Lifecycle::Initializing(s) | Lifecycle::Ready(s) => {
                        self.lifecycle = Lifecycle::Ready(s);
                        Continue(())
                    }
                }
            }
            Incoming::Request {
                id,
                method,
                params,
                trace,
            } => {
                let scope = RequestScope::start(&method, &id, trace.as_ref(), params);
                if method == exec_server_protocol::initialize::Initialize::NAME {
                    let span = scope.span().clone();
                    let reply = self.initialize(&id, params).instrument(span).await;
                    scope.finish_with(&reply);
                    self.send(reply).await;
                    return Continue(());
                }
                let ctx = dispatch::Ctx {
                    lifecycle: &self.lifecycle,
                    state: &self.state,
                    handles: &self.handles,
                    http: &self.http,
                    watches: &self.watches,
                    out: &self.out,
                    frame: match frame {
                        Frame::Text(t) => Some(t),
                        Frame::Bytes(_) => None,
                    },
                };
                match scope
                    .span()
                    .in_scope(|| dispatch::prepare(&method, params, &id, &ctx))
                {
                    Err(error) => {
                        scope.finish(true);
                        self.send_error(&id, error).await
                    }
                    Ok(fut) => {
                        // Spawning forks a child, and a big write decodes megabytes of
                        // base64: keep those off the reader so a burst of them runs on every
                        // worker while the reader takes the next frames.
                        let inline = !(method == exec_server_protocol::process::Start::NAME
                            || frame_len >= OFF_READER_BYTES);
                        self.spawn_request(id, scope.wrap(fut), inline).await
                    }
                }
                Continue(())
            }
        }
    }

    async fn initialize(
        &mut self,
        id: &RequestId,
        params: Option<&serde_json::value::RawValue>,
    ) -> String {
        use exec_server_protocol::initialize::{InitializeParams, InitializeResult};
        let p: InitializeParams = match jsonrpc::decode_params(params) {
            Ok(p) => p,
            Err(e) => {
                return jsonrpc::encode_error(id, &ErrorObject::new(codes::INVALID_PARAMS, e))
            }
        };
        if !matches!(self.lifecycle, Lifecycle::New) {
            return jsonrpc::encode_error(
                id,
                &ErrorObject::new(
                    codes::INVALID_REQUEST,
                    "initialize may only be sent once per connection",
                ),
            );
        }
        if let Some(e) = check_durability_params(&p, self.state.sessions.limits()) {
            return jsonrpc::encode_error(id, &ErrorObject::new(codes::INVALID_PARAMS, e));
        }
        let sessions = &self.state.sessions;
        let session: Result<Arc<Session>, ErrorObject> = match &p.resume_session_id {
            Some(sid) => sessions
                .resume(sid, self.id, self.events.clone(), p.replay_after.as_ref())
                .map_err(|e| {
                    let code = match e {
                        exec_server_core::session::ResumeError::Unknown(_) => {
                            codes::INVALID_REQUEST
                        }
                        exec_server_core::session::ResumeError::AlreadyAttached(_) => {
                            codes::SESSION_ALREADY_ATTACHED
                        }
                    };
                    ErrorObject::new(code, e.to_string())
                }),
            None => sessions
                .create(self.id, self.events.clone())
                .map_err(|e| ErrorObject::new(codes::INVALID_REQUEST, e.to_string())),
        };
        match session {
            Err(e) => jsonrpc::encode_error(id, &e),
            Ok(session) => {
                crate::telemetry::session_initialized(p.resume_session_id.is_some());
                tracing::info!(connection = self.id, session = session.id(), client = %p.client_name, resumed = p.resume_session_id.is_some(), "initialized");
                let result = InitializeResult {
                    session_id: session.id().to_string(),
                    environment_info: self.state.environment.clone(),
                };
                if let Some(ms) = p.heartbeat_ms {
                    tokio::spawn(heartbeat(
                        Arc::downgrade(&session),
                        self.out.clone(),
                        Duration::from_millis(ms),
                        self.cancel.clone(),
                    ));
                }
                self.lifecycle = Lifecycle::Initializing(session);
                jsonrpc::encode_result(id, &result)
            }
        }
    }

    /// Runs a request. With `inline`, it is first polled once right here: most requests
    /// complete at once, and answering them from the reader saves a task hop (and a wake-up of
    /// another CPU) on the round trip. Whatever is still pending runs as its own task.
    async fn spawn_request(&self, id: RequestId, fut: dispatch::Reply, inline: bool) {
        use futures::FutureExt;
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return;
        };
        let mut run = std::panic::AssertUnwindSafe(fut).catch_unwind();
        if inline {
            if let Some(r) = (&mut run).now_or_never() {
                let reply = reply_or_panic(&id, r);
                let _ = self.out.send(reply.msg).await;
                if let Some(queued) = reply.queued {
                    let _ = queued.send(());
                }
                drop(permit);
                return;
            }
        }
        let out = self.out.clone();
        let cancel = self.cancel.clone();
        let task = async move {
            let reply = tokio::select! {
                r = run => reply_or_panic(&id, r),
                _ = cancel.cancelled() => return,
            };
            let _ = out.send(reply.msg).await;
            if let Some(queued) = reply.queued {
                let _ = queued.send(());
            }
            drop(permit);
        };
        self.tasks.spawn_on(task, &self.work);
    }

    /// Ends the connection: waits for in-flight requests where the transport allows it,
    /// detaches the session and releases the file handles and watches.
    async fn finish(&mut self, closed_by_server: bool) {
        self.tasks.close();
        if self.info.drain_on_end && !closed_by_server {
            let drain = self.state.config.drain_timeout;
            if tokio::time::timeout(drain, self.tasks.wait())
                .await
                .is_err()
            {
                tracing::warn!(
                    connection = self.id,
                    "in-flight requests still running; cancelling"
                );
            }
        }
        self.cancel.cancel();
        self.http.close();
        self.watches.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tasks.wait()).await;
        match std::mem::replace(&mut self.lifecycle, Lifecycle::New) {
            Lifecycle::Initializing(s) | Lifecycle::Ready(s) => {
                self.state.sessions.detach(&s, self.id);
            }
            Lifecycle::New => {}
        }
    }
}

/// Shortest and longest `heartbeatMs`.
const HEARTBEAT_MS: std::ops::RangeInclusive<u64> = 100..=3_600_000;

/// What is wrong with `initialize`'s `replayAfter` and `heartbeatMs`, if anything.
fn check_durability_params(
    p: &exec_server_protocol::initialize::InitializeParams,
    limits: &exec_server_core::limits::Limits,
) -> Option<String> {
    if let Some(ms) = p.heartbeat_ms {
        if !HEARTBEAT_MS.contains(&ms) {
            return Some(format!(
                "heartbeatMs must be between {} and {}",
                HEARTBEAT_MS.start(),
                HEARTBEAT_MS.end()
            ));
        }
    }
    match &p.replay_after {
        Some(_) if p.resume_session_id.is_none() => {
            Some("replayAfter needs resumeSessionId".into())
        }
        Some(m) if m.len() > limits.max_processes_per_session => Some(format!(
            "replayAfter names more than {} processes",
            limits.max_processes_per_session
        )),
        _ => None,
    }
}

/// Sends `process/heartbeat` every `every` while the connection lasts: the last seq of each
/// running process of the session, so the client can tell a stalled stream from a quiet one.
async fn heartbeat(
    session: std::sync::Weak<Session>,
    out: mpsc::Sender<OutMsg>,
    every: Duration,
    cancel: CancellationToken,
) {
    use exec_server_protocol::process::{HeartbeatEntry, HeartbeatNotification};
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        let Some(session) = session.upgrade() else {
            return;
        };
        let mut processes: Vec<HeartbeatEntry> = session
            .processes()
            .iter()
            .filter(|p| p.exit_code().is_none())
            .map(|p| HeartbeatEntry {
                process_id: p.id().to_string(),
                last_seq: p.seq_info().0,
            })
            .collect();
        drop(session);
        processes.sort_by(|a, b| a.process_id.cmp(&b.process_id));
        use exec_server_protocol::Notification as _;
        let text = jsonrpc::encode_notification(
            exec_server_protocol::process::Heartbeat::NAME,
            &HeartbeatNotification { processes },
        );
        if out.send(OutMsg::Text(text)).await.is_err() {
            return;
        }
    }
}
