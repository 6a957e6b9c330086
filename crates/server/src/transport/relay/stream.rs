//! One established relay stream as a transport: a `Stream<Item = InFrame>` fed by the socket
//! task and a `Sink<OutFrame>` back to it, driving [`connection::run`] exactly as WebSocket and
//! stdio do ([`Target::Serve`]); or a WebSocket to another exec-server ([`Target::Forward`]).
//!
//! The stream's connection ends when its inbound queue closes (the peer reset the stream or
//! the socket went: the session detaches and stays resumable), and the socket task learns that
//! a connection ended from [`Outbound::Ended`] (it then resets the stream if it still exists).

use std::sync::Arc;

use exec_server_relay::frame::StreamId;
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::task::TaskTracker;

use super::Target;
use crate::connection::{self, InFrame, OutFrame, TransportInfo};
use crate::ServerState;

/// Whole JSON-RPC messages waiting for one stream's connection (spec §10.4 item 7: 128, and a
/// full queue resets the stream).
pub(super) const INBOUND_QUEUE: usize = 128;

/// From a stream's connection to its socket task.
#[derive(Debug)]
pub(super) enum Outbound {
    /// One JSON-RPC message to seal and send.
    Message {
        id: StreamId,
        generation: u64,
        bytes: Vec<u8>,
    },
    /// The connection ended (or asked to close): reset the stream.
    Ended { id: StreamId, generation: u64 },
}

/// Starts the stream's connection and returns the sender of its inbound queue.
pub(super) fn spawn(
    tasks: &TaskTracker,
    target: &Target,
    id: StreamId,
    generation: u64,
    out: mpsc::Sender<Outbound>,
) -> mpsc::Sender<Vec<u8>> {
    let (tx, rx) = mpsc::channel::<Vec<u8>>(INBOUND_QUEUE);
    match target {
        Target::Serve(state) => {
            tasks.spawn(serve(state.clone(), id, generation, rx, out));
        }
        Target::Forward(url) => {
            tasks.spawn(forward(url.clone(), id, generation, rx, out));
        }
    }
    tx
}

/// Runs the connection engine on the stream.
async fn serve(
    state: Arc<ServerState>,
    id: StreamId,
    generation: u64,
    inbound: mpsc::Receiver<Vec<u8>>,
    out: mpsc::Sender<Outbound>,
) {
    let max = state.config.max_message_bytes;
    let reader = futures::stream::unfold(inbound, move |mut rx| async move {
        let m = rx.recv().await?;
        let frame = if m.len() > max {
            InFrame::TooLarge
        } else {
            InFrame::Message(bytes::Bytes::from(m))
        };
        Some((frame, rx))
    })
    .boxed();
    let (sink_id, sink_out) = (id.clone(), out.clone());
    let writer = tokio_util::sync::PollSender::new(sink_out).with_flat_map(move |f: OutFrame| {
        let item = match f {
            OutFrame::Text(t) => Some(Outbound::Message {
                id: sink_id.clone(),
                generation,
                bytes: t.into_bytes(),
            }),
            OutFrame::Base64(b) => Some(Outbound::Message {
                id: sink_id.clone(),
                generation,
                bytes: b.into_string().into_bytes(),
            }),
            // No per-stream pings (the socket has its own); a close ends the stream.
            OutFrame::Ping => None,
            OutFrame::Close { code, reason } => {
                tracing::debug!(stream_id = %sink_id, code, %reason, "connection closed its relay stream");
                Some(Outbound::Ended {
                    id: sink_id.clone(),
                    generation,
                })
            }
        };
        futures::stream::iter(item.map(Ok))
    });
    let info = TransportInfo {
        parse_error_prefix: "failed to parse JSON-RPC message from exec-server relay".into(),
        // The peer is gone when the input ends (a reset or a dropped socket): nothing to drain.
        drain_on_end: false,
        // The rendezvous socket is pinged; relay streams carry no pings of their own.
        keepalive: false,
        // A harness that opens a stream and never initializes is closed (its stream reset).
        initialize_deadline: true,
        // Requests that wait, and process starts, run on the multi-thread runtime (the
        // stream's connection runs on the socket's connection thread, see `super::serve`).
        work: state.work_runtime.get().cloned(),
        transport_writes: None,
    };
    connection::run(reader, Box::pin(writer), state, info).await;
    let _ = out.send(Outbound::Ended { id, generation }).await;
}

/// Relays the stream to the exec-server at `url`, message for message.
async fn forward(
    url: String,
    id: StreamId,
    generation: u64,
    mut inbound: mpsc::Receiver<Vec<u8>>,
    out: mpsc::Sender<Outbound>,
) {
    let ws = match tokio::time::timeout(
        super::RENDEZVOUS_CONNECT_TIMEOUT,
        tokio_tungstenite::connect_async(url.as_str()),
    )
    .await
    {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => {
            tracing::warn!(stream_id = %id, error = %e, "forward: cannot reach the exec-server");
            let _ = out.send(Outbound::Ended { id, generation }).await;
            return;
        }
        Err(_) => {
            tracing::warn!(stream_id = %id, "forward: exec-server connect timed out");
            let _ = out.send(Outbound::Ended { id, generation }).await;
            return;
        }
    };
    let (mut ws_tx, mut ws_rx) = ws.split();
    loop {
        tokio::select! {
            m = inbound.recv() => match m {
                Some(bytes) => {
                    let msg = match String::from_utf8(bytes) {
                        Ok(text) => Message::text(text),
                        Err(e) => Message::binary(e.into_bytes()),
                    };
                    if ws_tx.send(msg).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            m = ws_rx.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let bytes = t.as_bytes().to_vec();
                    if out.send(Outbound::Message { id: id.clone(), generation, bytes }).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Binary(b))) => {
                    if out.send(Outbound::Message { id: id.clone(), generation, bytes: b.to_vec() }).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = ws_tx.close().await;
    let _ = out.send(Outbound::Ended { id, generation }).await;
}
