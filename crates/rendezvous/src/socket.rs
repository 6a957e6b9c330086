//! The rendezvous WebSocket: one task pair per socket, executor or harness.
//!
//! Each socket has a reader (this task) and a writer task that drains the socket's bounded
//! outbound queue ([`crate::Limits`]) and pings every `ping_interval`. The reader decodes each
//! binary message as a relay frame (spec §10.3) only to learn its stream id and whether it is
//! a reset; an invalid frame or a text message is dropped and logged, as the endpoints
//! themselves would. A valid frame is forwarded as the exact bytes received: payloads are
//! never decrypted, altered or kept.
//!
//! When a socket ends (close, error, idle timeout, replacement, shutdown) the streams that ran
//! through it are reset towards the other side with `rendezvous_peer_disconnected`; an abrupt
//! TCP drop counts as a normal end (spec §10.11: harnesses exit without a close frame).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use exec_server_relay::frame::{Frame, FrameBody};
use exec_server_relay::noise::PublicKey;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt as _, StreamExt as _};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::hub::{reset_frame, ExecutorRoute, HarnessRoute, Hub, Peer};

/// How long a closing writer may spend flushing what was queued before the close.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs an upgraded executor socket for registration `registration_id` of `env`.
pub(crate) async fn run_executor(
    hub: Arc<Hub>,
    ws: WebSocket,
    env: String,
    registration_id: String,
) {
    let (peer, rx) = hub.new_peer(hub.limits.executor_queue_frames);
    if !hub.attach_executor(&env, &registration_id, peer.clone()) {
        tracing::info!(environment = %env, "registration replaced before the executor socket attached");
        return;
    }
    tracing::info!(environment = %env, peer = peer.id, "executor socket attached");
    let (sink, mut stream) = ws.split();
    let writer = tokio::spawn(write_loop(
        sink,
        rx,
        peer.cancel.clone(),
        hub.limits.ping_interval,
    ));
    let ended = loop {
        let bytes = match next_binary(&mut stream, &peer.cancel, hub.limits.idle_timeout).await {
            Ok(bytes) => bytes,
            Err(ended) => break ended,
        };
        let Some((frame_stream, is_reset)) = inspect(&bytes, "executor") else {
            continue;
        };
        match hub.route_from_executor(&env, &registration_id, peer.id, &frame_stream, is_reset) {
            ExecutorRoute::Forward(target) => {
                if !send_bounded(&target, bytes, hub.limits.slow_peer_timeout).await {
                    tracing::warn!(environment = %env, peer = target.id, "harness socket too slow; disconnecting it");
                    target.cancel.cancel();
                }
            }
            ExecutorRoute::Drop => {
                tracing::debug!(environment = %env, stream_id = %frame_stream, "executor frame for an unrouted stream dropped");
            }
            ExecutorRoute::Gone => break Ended::Replaced,
        }
    };
    hub.detach_executor(&env, &registration_id, peer.id);
    peer.cancel.cancel();
    let _ = writer.await;
    tracing::info!(environment = %env, peer = peer.id, reason = %ended, "executor socket closed");
}

/// Runs an upgraded harness socket, opened with a ticket issued for `key`.
pub(crate) async fn run_harness(
    hub: Arc<Hub>,
    ws: WebSocket,
    env: String,
    registration_id: String,
    key: PublicKey,
) {
    let (peer, rx) = hub.new_peer(hub.limits.harness_queue_frames);
    if let Err(reason) = hub.attach_harness(&env, &registration_id, peer.clone(), key) {
        tracing::info!(environment = %env, %reason, "harness socket refused after upgrade");
        let mut ws = ws;
        let _ = ws.send(Message::Close(None)).await;
        return;
    }
    tracing::debug!(environment = %env, peer = peer.id, "harness socket attached");
    let (sink, mut stream) = ws.split();
    let writer = tokio::spawn(write_loop(
        sink,
        rx,
        peer.cancel.clone(),
        hub.limits.ping_interval,
    ));
    let ended = loop {
        let bytes = match next_binary(&mut stream, &peer.cancel, hub.limits.idle_timeout).await {
            Ok(bytes) => bytes,
            Err(ended) => break ended,
        };
        let Some((frame_stream, is_reset)) = inspect(&bytes, "harness") else {
            continue;
        };
        match hub.route_from_harness(&env, &registration_id, peer.id, &frame_stream, is_reset) {
            HarnessRoute::Forward(executor) => {
                if !send_bounded(&executor, bytes, hub.limits.slow_peer_timeout).await {
                    tracing::warn!(environment = %env, "executor socket too slow; disconnecting it");
                    executor.cancel.cancel();
                }
            }
            HarnessRoute::Refuse(reason) => {
                let reset = reset_frame(&frame_stream, reason);
                if !send_bounded(&peer, reset, hub.limits.slow_peer_timeout).await {
                    break Ended::Cancelled;
                }
            }
            HarnessRoute::Drop => {}
            HarnessRoute::Gone => break Ended::Replaced,
        }
    };
    let (resets, executor) = hub.detach_harness(&env, &registration_id, peer.id);
    peer.cancel.cancel();
    if let Some(executor) = executor {
        for reset in resets {
            if !send_bounded(&executor, reset, hub.limits.slow_peer_timeout).await {
                tracing::warn!(environment = %env, "executor socket too slow; disconnecting it");
                executor.cancel.cancel();
                break;
            }
        }
    }
    let _ = writer.await;
    tracing::debug!(environment = %env, peer = peer.id, reason = %ended, "harness socket closed");
}

/// Decodes a frame just enough to route it: its stream id and whether it is a reset.
fn inspect(bytes: &[u8], from: &'static str) -> Option<(exec_server_relay::frame::StreamId, bool)> {
    match Frame::decode(bytes) {
        Ok(frame) => {
            let is_reset = matches!(frame.body, FrameBody::Reset { .. });
            Some((frame.stream_id, is_reset))
        }
        Err(e) => {
            tracing::debug!(from, error = %e, len = bytes.len(), "invalid relay frame dropped");
            None
        }
    }
}

/// Queues `bytes` on `peer`, waiting at most `timeout` for room. False when the queue stayed
/// full that long; true when queued or when the peer is already gone.
async fn send_bounded(peer: &Peer, bytes: Bytes, timeout: Duration) -> bool {
    // A send error means the peer's writer is gone: nothing to wait for.
    tokio::time::timeout(timeout, peer.tx.send(bytes))
        .await
        .is_ok()
}

/// Why a socket's reader stopped, for the log line that says it closed.
#[derive(Debug)]
enum Ended {
    /// The peer sent a close frame (with its code and reason, if any).
    Closed(Option<(u16, String)>),
    /// The TCP connection ended without a close frame.
    Eof,
    /// A read failed (reset, protocol error, oversize message...).
    Error(String),
    /// Nothing arrived within the idle timeout.
    Idle,
    /// The socket was cancelled: shutdown, a slow peer, or its writer failed.
    Cancelled,
    /// Its registration was replaced or removed.
    Replaced,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Closed(Some((code, reason))) => write!(f, "close frame {code} {reason:?}"),
            Ended::Closed(None) => f.write_str("close frame"),
            Ended::Eof => f.write_str("connection ended without a close frame"),
            Ended::Error(e) => write!(f, "read failed: {e}"),
            Ended::Idle => f.write_str("idle timeout"),
            Ended::Cancelled => {
                f.write_str("closed by the rendezvous (shutdown, slow peer or failed write)")
            }
            Ended::Replaced => f.write_str("registration replaced or gone"),
        }
    }
}

/// The next binary message, or why the socket ended (closed, idled out, cancelled). Text
/// messages are dropped (spec §10.3); pings are answered by the WebSocket layer.
async fn next_binary(
    stream: &mut SplitStream<WebSocket>,
    cancel: &CancellationToken,
    idle: Duration,
) -> Result<Bytes, Ended> {
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => return Err(Ended::Cancelled),
            next = tokio::time::timeout(idle, stream.next()) => next,
        };
        match next {
            Err(_) => return Err(Ended::Idle),
            Ok(None) => return Err(Ended::Eof),
            Ok(Some(Err(e))) => return Err(Ended::Error(e.to_string())),
            Ok(Some(Ok(Message::Binary(bytes)))) => return Ok(bytes),
            Ok(Some(Ok(Message::Text(_)))) => {
                tracing::debug!("text message dropped");
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                return Err(Ended::Closed(frame.map(|f| (f.code, f.reason.to_string()))))
            }
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
        }
    }
}

/// Writes queued frames and periodic pings until cancelled or the socket fails, then flushes
/// what is already queued (bounded by [`CLOSE_FLUSH_TIMEOUT`]) and closes. Cancels `cancel`
/// on the way out so the reader stops too.
async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Bytes>,
    cancel: CancellationToken,
    ping_interval: Duration,
) {
    let mut ping = tokio::time::interval(ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    loop {
        let result = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            next = rx.recv() => match next {
                Some(bytes) => sink.send(Message::Binary(bytes)).await,
                None => break,
            },
            _ = ping.tick() => sink.send(Message::Ping(Bytes::new())).await,
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "socket write failed");
            cancel.cancel();
            return;
        }
    }
    cancel.cancel();
    let flush = async {
        while let Ok(bytes) = rx.try_recv() {
            if sink.send(Message::Binary(bytes)).await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    };
    let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, flush).await;
}
