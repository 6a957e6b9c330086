//! Processes: the events a process produces ([`ProcessEvent`], delivered by [`ProcessEvents`]
//! in seq order, each once), the per-process [`Route`] that orders and dedupes them, and
//! [`RemoteProcess`], the handle of a process started through a [`Client`].

use std::collections::BTreeMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use exec_server_protocol::bytes::Base64;
use exec_server_protocol::codes;
use exec_server_protocol::process::{
    self, IfExists, ProcessSignal, ProcessState, ResizeParams, SignalParams, StartParams,
    StatusParams, Stream, TerminateParams, WriteParams, WriteStatus,
};
use std::time::Duration;
use tokio::sync::mpsc;

use crate::client::{lock, Client};
use crate::error::ClientError;

/// Something a process did. Every event carries the process's shared sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessEvent {
    /// A chunk of output.
    Output {
        /// Its seq.
        seq: u64,
        /// `stdout`, `stderr`, or `pty` for a tty process.
        stream: Stream,
        /// The bytes.
        data: Bytes,
    },
    /// The process exited (more output may follow until [`ProcessEvent::Closed`]).
    Exited {
        /// Its seq.
        seq: u64,
        /// Exit status, or 128 + signal number.
        exit_code: i32,
        /// Killed by its `timeoutMs` deadline (`StartParams::timeout_ms`, an extension of
        /// this server; always false from a server without it).
        timed_out: bool,
    },
    /// The process exited and every output stream reached EOF; the last event.
    Closed {
        /// Its seq.
        seq: u64,
    },
}

type Item = Result<ProcessEvent, ClientError>;

/// The event stream of one process: output in seq order, then the exit and the close, each
/// exactly once (across reconnects too). An `Err` item reports output the server no longer
/// had after a long disconnect ([`ClientError::OutputLost`], events continue after it) or the
/// loss of the session ([`ClientError::SessionLost`], the stream then ends).
#[derive(Debug)]
pub struct ProcessEvents {
    rx: mpsc::UnboundedReceiver<Item>,
}

impl futures::Stream for ProcessEvents {
    type Item = Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        self.rx.poll_recv(cx)
    }
}

impl ProcessEvents {
    /// The next event; `None` after the close (or after a fatal error).
    pub async fn next_event(&mut self) -> Option<Item> {
        self.rx.recv().await
    }

    /// Collects everything until the close: `(stdout + pty, stderr, exit code)`.
    pub async fn collect_output(&mut self) -> Result<(Vec<u8>, Vec<u8>, Option<i32>), ClientError> {
        let (mut out, mut err, mut code) = (Vec::new(), Vec::new(), None);
        while let Some(ev) = self.next_event().await {
            match ev? {
                ProcessEvent::Output { stream, data, .. } => match stream {
                    Stream::Stderr => err.extend_from_slice(&data),
                    _ => out.extend_from_slice(&data),
                },
                ProcessEvent::Exited { exit_code, .. } => code = Some(exit_code),
                ProcessEvent::Closed { .. } => break,
            }
        }
        Ok((out, err, code))
    }
}

/// Orders the events of one process by seq, drops repeats, and hands them on.
///
/// Unbounded on purpose: the reader task that feeds routes must never wait for a slow
/// consumer (it also carries every reply). The server bounds what is in flight: it stops
/// reading a child whose undelivered output reaches its retention bound.
#[derive(Debug)]
pub struct Route {
    delivered: u64,
    /// Buffered items by first seq, with the last seq each covers.
    buffer: BTreeMap<u64, (u64, Item)>,
    /// Dropped once the close was handed on, which ends the stream.
    tx: Option<mpsc::UnboundedSender<Item>>,
    done: bool,
    /// Its `process/start` is not yet known to have run: the catch-up after a reconnect
    /// leaves it alone (a read would fail on an id the server does not know yet), and
    /// [`Client::start_process`] catches it up once the start is settled.
    pub(crate) starting: bool,
    /// At the last heartbeat: the server's last seq and what had been delivered, when the
    /// server was ahead.
    behind: Option<(u64, u64)>,
}

impl Route {
    /// A route and the stream its events come out of.
    pub fn new() -> (Route, ProcessEvents) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Route {
                delivered: 0,
                buffer: BTreeMap::new(),
                tx: Some(tx),
                done: false,
                starting: false,
                behind: None,
            },
            ProcessEvents { rx },
        )
    }

    /// The highest seq handed on with nothing missing before it.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// The close was handed on (or the route failed).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Offers an item covering seqs `from..=to`; items already delivered are dropped.
    pub fn offer(&mut self, from: u64, to: u64, item: Item) {
        if self.done || to <= self.delivered {
            return;
        }
        let from = from.max(self.delivered + 1);
        self.buffer.entry(from).or_insert((to, item));
        while let Some((to, item)) = self.buffer.remove(&(self.delivered + 1)) {
            self.delivered = to;
            let closed = matches!(item, Ok(ProcessEvent::Closed { .. }));
            if let Some(tx) = &self.tx {
                let _ = tx.send(item);
            }
            if closed {
                self.done = true;
                self.tx = None;
                self.buffer.clear();
                return;
            }
        }
    }

    /// Takes a heartbeat's last seq for this process; true when the stream stalled: the server
    /// was already ahead at the previous heartbeat and nothing was delivered since.
    pub(crate) fn heartbeat(&mut self, last_seq: u64) -> bool {
        let stalled =
            matches!(self.behind, Some((ahead, at)) if at == self.delivered && ahead > at);
        self.behind = (last_seq > self.delivered && !stalled).then_some((last_seq, self.delivered));
        stalled && !self.starting
    }

    /// Ends the stream with an error.
    pub fn fail(self, e: ClientError) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Err(e));
        }
    }
}

/// A process started through a [`Client`].
#[derive(Debug)]
pub struct RemoteProcess {
    client: Client,
    id: String,
    events: ProcessEvents,
    attached: bool,
}

/// How long [`Client::start_process`] waits for a server that answers `process/status` with
/// `unknown` (its first `process/start` is still being carried out) before giving up.
const UNKNOWN_START_PATIENCE: Duration = Duration::from_secs(10);

impl Client {
    /// Starts a process (`process/start`) and returns its handle. The route for its events is
    /// registered before the request goes out, so no early output is missed.
    ///
    /// Retry-safe: if the connection drops before the reply, the outcome is ambiguous (the
    /// server may or may not have started it). After the resume the client asks
    /// `process/status`: for `notStarted`, `running` or `exited` it sends the same params again
    /// with `ifExists: "attach"`, which starts the process if it did not run and otherwise
    /// answers the existing one (only when argv, cwd, env, tty and sandbox are the same; a
    /// different process under the id is an error, never taken for ours). The command therefore
    /// runs once. `unknown` (the start is still being carried out) is asked again for up to
    /// 10 s; an id the server has forgotten gives [`ClientError::StartOutcomeUnknown`] and
    /// nothing is sent again. A server without these extensions (upstream answers
    /// `process/status` with `-32601`) gets the params again, and its "already exists" reply
    /// counts as success.
    pub async fn start_process(&self, params: StartParams) -> Result<RemoteProcess, ClientError> {
        let id = params.process_id.clone();
        let (mut route, events) = Route::new();
        route.starting = true;
        {
            let mut routes = lock(&self.inner.routes);
            if routes.contains_key(&id) {
                return Err(ClientError::Rpc(exec_server_protocol::ErrorObject::new(
                    exec_server_protocol::codes::INVALID_REQUEST,
                    format!("process {id} already exists"),
                )));
            }
            routes.insert(id.clone(), route);
        }
        let (attached, conn) = match self.settle_start(params).await {
            Ok(started) => started,
            Err(e) => {
                lock(&self.inner.routes).remove(&id);
                return Err(e);
            }
        };
        if let Some(route) = lock(&self.inner.routes).get_mut(&id) {
            route.starting = false;
        }
        // The catch-up of a reconnect skipped this route while its start was unsettled, and an
        // attached process may have produced output no connection of ours saw: read it from
        // the start (the route drops what it already has), beside the caller's reading.
        if attached || conn.closed.is_cancelled() {
            tokio::spawn(self.inner.clone().catch_up_process(id.clone()));
        }
        Ok(RemoteProcess {
            client: self.clone(),
            id,
            events,
            attached,
        })
    }

    /// Sends `process/start` until its outcome is known; returns whether the answer is a
    /// process an earlier attempt started, and the connection that answered.
    async fn settle_start(
        &self,
        params: StartParams,
    ) -> Result<(bool, std::sync::Arc<crate::client::Conn>), ClientError> {
        let id = params.process_id.clone();
        let conn = self.inner.connected().await?;
        match self.inner.request::<process::Start>(&conn, &params).await {
            Ok(r) => return Ok((r.attached, conn)),
            Err(ClientError::Disconnected) => {}
            Err(e) => return Err(e),
        }
        let mut again = params;
        again.if_exists = Some(IfExists::Attach);
        let mut unknown_since: Option<tokio::time::Instant> = None;
        loop {
            // Waits for the resume.
            let conn = self.inner.connected().await?;
            let status = StatusParams {
                process_id: id.clone(),
            };
            match self.inner.request::<process::Status>(&conn, &status).await {
                Ok(s) if s.state == ProcessState::Unknown => {
                    let since = *unknown_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() >= UNKNOWN_START_PATIENCE {
                        return Err(ClientError::StartOutcomeUnknown { process_id: id });
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                // notStarted: start it; running or exited: attach to it.
                Ok(_) => {}
                Err(ClientError::Disconnected) => continue,
                // A server without process/status (upstream: -32601): today's rule below.
                Err(ClientError::Rpc(e)) if e.code == codes::METHOD_NOT_FOUND => {}
                Err(e) => return Err(e),
            }
            match self.inner.request::<process::Start>(&conn, &again).await {
                Ok(r) => return Ok((r.attached, conn)),
                Err(ClientError::Disconnected) => continue,
                // A server that ignores ifExists: the id is taken, so a start of ours ran.
                Err(ClientError::Rpc(e))
                    if e.code == codes::INVALID_REQUEST
                        && e.message == format!("process {id} already exists") =>
                {
                    return Ok((true, conn))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A process id unique to this client.
    pub fn new_process_id(&self) -> String {
        self.unique("p")
    }
}

impl RemoteProcess {
    /// The process id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// True when the connection dropped during the start and the process found afterwards is
    /// the one the lost attempt started (the server answered `attached`, or an upstream
    /// server said the id already exists): the command ran once, and its output is read from
    /// the beginning.
    pub fn attached(&self) -> bool {
        self.attached
    }

    /// Its events.
    pub fn events(&mut self) -> &mut ProcessEvents {
        &mut self.events
    }

    /// Splits the handle into a control part and the event stream, so one task can write
    /// while another reads.
    pub fn split(self) -> (ProcessControl, ProcessEvents) {
        (
            ProcessControl {
                client: self.client,
                id: self.id,
            },
            self.events,
        )
    }

    /// The control part (cheap to clone).
    pub fn control(&self) -> ProcessControl {
        ProcessControl {
            client: self.client.clone(),
            id: self.id.clone(),
        }
    }
}

/// Writes, signals, resizes and terminates a process; cloneable.
#[derive(Debug, Clone)]
pub struct ProcessControl {
    client: Client,
    id: String,
}

impl ProcessControl {
    /// The process id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Writes to stdin. The write carries a fresh `writeId` and is sent again with the same
    /// id after a reconnect, so it takes effect exactly once.
    pub async fn write(&self, data: &[u8]) -> Result<WriteStatus, ClientError> {
        let params = WriteParams {
            process_id: self.id.clone(),
            chunk: Base64::encode(data),
            write_id: self.client.unique("w"),
        };
        Ok(self
            .client
            .call_retrying::<process::Write>(params)
            .await?
            .status)
    }

    /// Ends the process's input after every earlier write (`process/closeStdin`, an extension
    /// of this server): a pipe is closed, a PTY gets end-of-file (`^D`).
    pub async fn close_stdin(&self) -> Result<WriteStatus, ClientError> {
        let params = exec_server_protocol::process::CloseStdinParams {
            process_id: self.id.clone(),
        };
        Ok(self
            .client
            .call_retrying::<process::CloseStdin>(params)
            .await?
            .status)
    }

    /// Sends a signal to the process group. The call carries a fresh `opId` and is sent again
    /// with the same id after a reconnect, so the signal is delivered once (by a server with
    /// operation ids; upstream ignores the field and may deliver a retried signal twice).
    pub async fn signal(&self, signal: ProcessSignal) -> Result<(), ClientError> {
        let params = SignalParams {
            process_id: self.id.clone(),
            signal,
            op_id: Some(self.client.unique("op")),
        };
        self.client.call_retrying::<process::Signal>(params).await?;
        Ok(())
    }

    /// Kills the process tree; returns whether it was running. Retried after a reconnect with
    /// the same `opId`, so a retry gets the first answer.
    pub async fn terminate(&self) -> Result<bool, ClientError> {
        let params = TerminateParams {
            process_id: self.id.clone(),
            op_id: Some(self.client.unique("op")),
        };
        Ok(self
            .client
            .call_retrying::<process::Terminate>(params)
            .await?
            .running)
    }

    /// Resizes the PTY of a tty process (`process/resize`, an extension of this server).
    pub async fn resize(&self, rows: u16, cols: u16) -> Result<(), ClientError> {
        let params = ResizeParams {
            process_id: self.id.clone(),
            rows,
            cols,
        };
        self.client.call_retrying::<process::Resize>(params).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(seq: u64) -> Item {
        Ok(ProcessEvent::Output {
            seq,
            stream: Stream::Stdout,
            data: Bytes::from(seq.to_string()),
        })
    }

    #[tokio::test]
    async fn route_orders_and_drops_repeats() {
        let (mut r, mut ev) = Route::new();
        r.offer(2, 2, out(2));
        r.offer(1, 1, out(1));
        r.offer(1, 1, out(1));
        r.offer(3, 3, Ok(ProcessEvent::Closed { seq: 3 }));
        r.offer(2, 2, out(2));
        assert!(r.is_done());
        drop(r); // the stream ends once its route is gone
        let mut seqs = Vec::new();
        while let Some(Ok(e)) = ev.next_event().await {
            seqs.push(match e {
                ProcessEvent::Output { seq, .. } | ProcessEvent::Closed { seq } => seq,
                ProcessEvent::Exited { seq, .. } => seq,
            });
        }
        assert_eq!(seqs, vec![1, 2, 3]);
    }

    #[test]
    fn heartbeats_flag_a_stream_that_stopped_moving() {
        let (mut r, _events) = Route::new();
        assert!(!r.heartbeat(0), "nothing to receive");
        assert!(!r.heartbeat(3), "ahead once: not yet a stall");
        r.offer(1, 1, out(1));
        assert!(!r.heartbeat(5), "it moved since");
        assert!(r.heartbeat(5), "ahead for a whole interval without moving");
        assert!(!r.heartbeat(5), "reported once, then watched again");
        for s in 2..=5 {
            r.offer(s, s, out(s));
        }
        assert!(!r.heartbeat(5) && !r.heartbeat(5), "caught up");
        r.starting = true;
        assert!(
            !r.heartbeat(7) && !r.heartbeat(7),
            "not while its start is unsettled"
        );
    }

    #[tokio::test]
    async fn gaps_cover_their_range() {
        let (mut r, mut ev) = Route::new();
        r.offer(1, 1, out(1));
        r.offer(5, 5, out(5));
        r.offer(
            1,
            4,
            Err(ClientError::OutputLost {
                from_seq: 1,
                to_seq: 4,
                bytes: 9,
            }),
        );
        assert_eq!(r.delivered(), 5);
        assert!(ev.next_event().await.expect("1").is_ok());
        assert!(ev.next_event().await.expect("gap").is_err());
        assert!(ev.next_event().await.expect("5").is_ok());
    }
}
