//! Processes: the events a process produces ([`ProcessEvent`], delivered by [`ProcessEvents`]
//! in seq order, each once), the per-process [`Route`] that orders and dedupes them, and
//! [`RemoteProcess`], the handle of a process started through a [`Client`].

use std::collections::BTreeMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use exec_server_protocol::bytes::Base64;
use exec_server_protocol::process::{
    self, ProcessSignal, ResizeParams, SignalParams, StartParams, Stream, TerminateParams,
    WriteParams, WriteStatus,
};
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
}

impl Client {
    /// Starts a process (`process/start`) and returns its handle. The route for its events is
    /// registered before the request goes out, so no early output is missed. If the
    /// connection drops during the start, the start is sent again after the resume; a reply of
    /// "already exists" then means the first one ran.
    pub async fn start_process(&self, params: StartParams) -> Result<RemoteProcess, ClientError> {
        let id = params.process_id.clone();
        let (route, events) = Route::new();
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
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.call::<process::Start>(params.clone()).await {
                Ok(_) => break,
                Err(ClientError::Disconnected) => continue,
                Err(ClientError::Rpc(e))
                    if attempt > 1 && e.message == format!("process {id} already exists") =>
                {
                    break
                }
                Err(e) => {
                    lock(&self.inner.routes).remove(&id);
                    return Err(e);
                }
            }
        }
        Ok(RemoteProcess {
            client: self.clone(),
            id,
            events,
        })
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

    /// Sends a signal to the process group.
    pub async fn signal(&self, signal: ProcessSignal) -> Result<(), ClientError> {
        let params = SignalParams {
            process_id: self.id.clone(),
            signal,
            op_id: None,
        };
        self.client.call_retrying::<process::Signal>(params).await?;
        Ok(())
    }

    /// Kills the process tree; returns whether it was running.
    pub async fn terminate(&self) -> Result<bool, ClientError> {
        let params = TerminateParams {
            process_id: self.id.clone(),
            op_id: None,
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
