//! One rendezvous socket: the task that owns the [`ExecutorRelay`] and does its I/O.
//!
//! Everything that can wake the socket task is one arm of a `select!` in [`run`]: a WebSocket
//! message, a registry validation result, a message or end from one of its streams, the
//! validation-expiry tick, the ping tick, shutdown. Each produces relay [`Action`]s, which are
//! carried out in order by [`Socket::act`]. The task never waits on a stream: inbound messages
//! are handed over with `try_send` (a full queue resets that stream), so one slow connection
//! cannot stall the others; it only waits on the WebSocket itself.
//!
//! Stream ids can be reused by a harness after a reset, so each opened stream gets a
//! generation number and messages from a stream's old connection are dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use exec_server_relay::executor::{Action, ExecutorRelay, MAX_PENDING_VALIDATIONS};
use exec_server_relay::frame::{Frame, StreamId};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::registry::RegistryClient;
use super::stream::{self, Outbound};
use super::{Socket, Target};

/// Messages from all the streams of one socket waiting to be sealed and sent. Senders wait
/// when it is full, so a stream producing output faster than the socket drains it is slowed
/// down, not buffered.
pub(super) const OUTBOUND_QUEUE: usize = 256;

/// How often pending validations are checked against the relay's 10 s timeout.
const EXPIRY_TICK: Duration = Duration::from_secs(1);

/// What every socket of a registration shares.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) registry: Arc<RegistryClient>,
    pub(super) registration_id: String,
    pub(super) target: Target,
    pub(super) ping_interval: Duration,
}

/// Why [`run`] returned.
#[derive(Debug)]
pub(super) enum End {
    /// Shutdown was requested.
    Shutdown,
    /// The socket closed or failed; redial.
    Disconnected(String),
}

/// An established stream, as the socket task sees it.
struct Entry {
    generation: u64,
    /// Whole JSON-RPC messages for the stream's connection ([`stream::INBOUND_QUEUE`]).
    inbound: mpsc::Sender<Vec<u8>>,
}

struct SocketTask {
    relay: ExecutorRelay,
    shared: Arc<Shared>,
    streams: HashMap<StreamId, Entry>,
    next_generation: u64,
    out_tx: mpsc::Sender<Outbound>,
    validations: mpsc::Sender<(StreamId, bool)>,
    tasks: TaskTracker,
}

/// Serves one connected rendezvous socket until it closes or `cancel` fires. Streams still
/// open when it returns end (their sessions detach).
pub(super) async fn run(
    ws: Socket,
    relay: ExecutorRelay,
    shared: Arc<Shared>,
    cancel: &CancellationToken,
) -> End {
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Outbound>(OUTBOUND_QUEUE);
    let (val_tx, mut val_rx) = mpsc::channel::<(StreamId, bool)>(MAX_PENDING_VALIDATIONS);
    let ping_interval = shared.ping_interval;
    let mut s = SocketTask {
        relay,
        shared,
        streams: HashMap::new(),
        next_generation: 0,
        out_tx,
        validations: val_tx,
        tasks: TaskTracker::new(),
    };
    let mut expiry = tokio::time::interval(EXPIRY_TICK);
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + ping_interval, ping_interval);
    let mut last_seen = tokio::time::Instant::now();
    let end = loop {
        let actions = tokio::select! {
            _ = cancel.cancelled() => break End::Shutdown,
            msg = ws_rx.next() => {
                last_seen = tokio::time::Instant::now();
                match msg {
                    None => break End::Disconnected("rendezvous closed the socket".into()),
                    Some(Err(e)) => break End::Disconnected(e.to_string()),
                    Some(Ok(Message::Binary(bytes))) => match Frame::decode(&bytes) {
                        Ok(frame) => s.relay.on_frame(frame, Instant::now()),
                        Err(e) => {
                            tracing::warn!(error = %e, "dropping invalid relay frame");
                            continue;
                        }
                    },
                    Some(Ok(Message::Close(frame))) => {
                        break End::Disconnected(format!("rendezvous sent close {frame:?}"))
                    }
                    // Text messages are dropped (spec §10.3); pings are answered by tungstenite.
                    Some(Ok(_)) => continue,
                }
            }
            Some((id, valid)) = val_rx.recv() => s.relay.validated(&id, valid),
            Some(out) = out_rx.recv() => s.on_outbound(out),
            _ = expiry.tick(), if s.relay.pending_count() > 0 => {
                s.relay.expire_validations(Instant::now())
            }
            _ = ping.tick() => {
                if last_seen.elapsed() > ping_interval * 2 {
                    break End::Disconnected("pong_timeout".into());
                }
                if let Err(e) = ws_tx.send(Message::Ping(Vec::new().into())).await {
                    break End::Disconnected(e.to_string());
                }
                continue;
            }
        };
        if let Err(e) = s.act(actions, &mut ws_tx).await {
            break End::Disconnected(e);
        }
    };
    // Ends every stream: their connections see their input end and detach their sessions.
    s.streams.clear();
    s.tasks.close();
    if matches!(end, End::Shutdown) {
        let _ = ws_tx.close().await;
    }
    end
}

impl SocketTask {
    /// A message or end from a stream's connection.
    fn on_outbound(&mut self, out: Outbound) -> Vec<Action> {
        let (id, generation) = match &out {
            Outbound::Message { id, generation, .. } | Outbound::Ended { id, generation } => {
                (id, *generation)
            }
        };
        if self.streams.get(id).map(|e| e.generation) != Some(generation) {
            return Vec::new(); // from a stream that already ended
        }
        match out {
            Outbound::Message { id, bytes, .. } => match self.relay.send(&id, &bytes) {
                Ok(actions) => actions,
                Err(e) => {
                    tracing::debug!(error = %e, "dropping a message of an ended stream");
                    Vec::new()
                }
            },
            Outbound::Ended { id, .. } => {
                self.streams.remove(&id);
                self.relay.close(&id)
            }
        }
    }

    /// Carries out relay actions in order; an error means the socket failed.
    async fn act<S>(&mut self, actions: Vec<Action>, ws: &mut S) -> Result<(), String>
    where
        S: futures::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
    {
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Send(frame) => match frame.encode() {
                    Ok(bytes) => ws
                        .send(Message::Binary(bytes.into()))
                        .await
                        .map_err(|e| e.to_string())?,
                    Err(e) => tracing::warn!(error = %e, "cannot encode a relay frame"),
                },
                Action::Validate {
                    stream_id,
                    harness_public_key,
                    authorization,
                } => {
                    let shared = self.shared.clone();
                    let results = self.validations.clone();
                    self.tasks.spawn(async move {
                        let valid = match shared
                            .registry
                            .validate(
                                &shared.registration_id,
                                &stream_id,
                                harness_public_key,
                                authorization,
                            )
                            .await
                        {
                            Ok(valid) => valid,
                            Err(e) => {
                                tracing::warn!(%stream_id, error = %e, "harness key validation failed");
                                false
                            }
                        };
                        let _ = results.send((stream_id, valid)).await;
                    });
                }
                Action::Opened(id) => {
                    self.next_generation += 1;
                    let generation = self.next_generation;
                    let inbound = stream::spawn(
                        &self.tasks,
                        &self.shared.target,
                        id.clone(),
                        generation,
                        self.out_tx.clone(),
                    );
                    tracing::debug!(stream_id = %id, "relay stream opened");
                    self.streams.insert(
                        id,
                        Entry {
                            generation,
                            inbound,
                        },
                    );
                }
                Action::Deliver(id, messages) => {
                    let Some(entry) = self.streams.get(&id) else {
                        continue;
                    };
                    let mut overflow = false;
                    for m in messages {
                        if let Err(e) = entry.inbound.try_send(m) {
                            tracing::warn!(stream_id = %id, error = %e, "relay stream inbound queue full or closed; resetting");
                            overflow = true;
                            break;
                        }
                    }
                    if overflow {
                        self.streams.remove(&id);
                        queue.extend(self.relay.close(&id));
                    }
                }
                Action::Closed(id) => {
                    if self.streams.remove(&id).is_some() {
                        tracing::debug!(stream_id = %id, "relay stream closed");
                    }
                }
            }
        }
        Ok(())
    }
}
