//! [`LocalExec`]: the process face of this machine, a thin adapter over one of core's sessions.
//!
//! The session's notifications (core's `ProcessEvent`s, the ones the server would send) are
//! routed per process through the same [`Route`] the remote client uses, so both faces deliver
//! identical event streams. Errors are built like the server's replies (same codes, texts and
//! `data.kind`), so a caller sees the same failure locally and remotely.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use exec_server_core::process::{EventKind, Process};
use exec_server_core::session::StartError;
use exec_server_core::{Limits, Session, Sessions};
use exec_server_protocol::process::{ProcessSignal, StartParams, WriteStatus};
use exec_server_protocol::{codes, ErrorObject};
use tokio::sync::mpsc;

use super::{ExecBackend, ExecProcess};
use crate::client::lock;
use crate::error::ClientError;
use crate::process::{ProcessEvent, ProcessEvents, Route};

/// Events queued between the session and the router (as a connection's queue would).
const EVENT_QUEUE: usize = 256;

struct Shared {
    session: Arc<Session>,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    next_write: AtomicU64,
    router: tokio::task::JoinHandle<()>,
    _sessions: Arc<Sessions>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.session.shutdown();
        self.router.abort();
    }
}

/// Processes on this machine, in a session of their own; they are killed when the last clone
/// is dropped.
#[derive(Clone)]
pub struct LocalExec {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LocalExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalExec")
            .field("session", &self.shared.session.id())
            .finish()
    }
}

impl Default for LocalExec {
    fn default() -> Self {
        LocalExec::new()
    }
}

impl LocalExec {
    /// A fresh session with the server's default limits. Needs a tokio runtime.
    pub fn new() -> Self {
        LocalExec::with_limits(Limits::default())
    }

    /// A fresh session with these limits. Needs a tokio runtime.
    pub fn with_limits(mut limits: Limits) -> Self {
        limits.max_sessions = limits.max_sessions.max(1);
        let sessions = Sessions::new(limits);
        let (tx, mut rx) = mpsc::channel(EVENT_QUEUE);
        let session = match sessions.create(0, tx) {
            Ok(s) => s,
            // A fresh registry with room for at least one session always has room.
            Err(e) => unreachable!("a new session registry refused a session: {e}"),
        };
        let routes: Arc<Mutex<HashMap<String, Route>>> = Arc::default();
        let r = routes.clone();
        let router = tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                let seq = ev.event.seq;
                let event = match ev.event.kind {
                    EventKind::Output { stream, data } => {
                        ProcessEvent::Output { seq, stream, data }
                    }
                    EventKind::Exited { code, .. } => ProcessEvent::Exited {
                        seq,
                        exit_code: code,
                        timed_out: ev.timed_out,
                    },
                    EventKind::Closed => ProcessEvent::Closed { seq },
                };
                let mut routes = lock(&r);
                if let Some(route) = routes.get_mut(ev.process_id.as_ref()) {
                    route.offer(seq, seq, Ok(event));
                    if route.is_done() {
                        routes.remove(ev.process_id.as_ref());
                    }
                }
            }
        });
        LocalExec {
            shared: Arc::new(Shared {
                session,
                routes,
                next_write: AtomicU64::new(1),
                router,
                _sessions: sessions,
            }),
        }
    }
}

/// A process started by [`LocalExec`].
pub struct LocalProcess {
    process: Arc<Process>,
    events: ProcessEvents,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LocalProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalProcess")
            .field("id", self.process.id())
            .finish_non_exhaustive()
    }
}

/// A start failure as the server would answer it.
fn start_error(e: StartError) -> ClientError {
    let mut obj = ErrorObject::new(e.code(), e.to_string());
    obj.data = e.kind().map(|k| serde_json::json!({ "kind": k }));
    ClientError::Rpc(obj)
}

impl ExecBackend for LocalExec {
    type Process = LocalProcess;

    async fn start(&self, params: StartParams) -> Result<LocalProcess, ClientError> {
        let id = params.process_id.clone();
        let (route, events) = Route::new();
        {
            let mut routes = lock(&self.shared.routes);
            if routes.contains_key(&id) {
                return Err(start_error(StartError::AlreadyExists(id)));
            }
            routes.insert(id.clone(), route);
        }
        match self.shared.session.start(&params) {
            Ok(started) => Ok(LocalProcess {
                process: started.process,
                events,
                shared: self.shared.clone(),
            }),
            Err(e) => {
                lock(&self.shared.routes).remove(&id);
                Err(start_error(e))
            }
        }
    }
}

impl ExecProcess for LocalProcess {
    fn id(&self) -> &str {
        self.process.id()
    }

    fn events(&mut self) -> &mut ProcessEvents {
        &mut self.events
    }

    async fn write(&self, data: &[u8]) -> Result<WriteStatus, ClientError> {
        let n = self.shared.next_write.fetch_add(1, Ordering::Relaxed);
        let ticket = self.process.stdin_ticket(data.len()).map_err(|e| {
            ClientError::Rpc(ErrorObject::new(codes::INVALID_REQUEST, e.to_string()))
        })?;
        Ok(ticket.write(format!("local-{n}"), data.to_vec()).await)
    }

    async fn signal(&self, signal: ProcessSignal) -> Result<(), ClientError> {
        self.process.signal(signal, None);
        Ok(())
    }

    async fn terminate(&self) -> Result<bool, ClientError> {
        Ok(self.process.terminate(None))
    }

    async fn resize(&self, rows: u16, cols: u16) -> Result<(), ClientError> {
        if rows == 0 || cols == 0 {
            return Err(ClientError::Rpc(ErrorObject::new(
                codes::INVALID_PARAMS,
                "rows and cols must be at least 1",
            )));
        }
        self.process
            .resize(rows, cols)
            .map_err(|e| ClientError::Rpc(ErrorObject::new(codes::INVALID_REQUEST, e.to_string())))
    }
}
