//! The writer task: replies and process events, coalesced into batches, flushed when idle.

use std::sync::Arc;
use std::time::Duration;

use exec_server_core::process::ProcessEvent;
use futures::{Sink, SinkExt};
use tokio::sync::{mpsc, Notify};

use super::{OutFrame, OutMsg};
use crate::encode;

/// Frames written before a flush is forced.
const BATCH: usize = 64;

/// Writes until the reply channel closes or a close frame is sent.
pub(super) async fn run<W>(
    mut sink: W,
    mut out: mpsc::Receiver<OutMsg>,
    mut events: mpsc::Receiver<ProcessEvent>,
    keepalive: Option<Duration>,
    transport_writes: Option<Arc<Notify>>,
) where
    W: Sink<OutFrame> + Unpin,
{
    let period = keepalive.unwrap_or(Duration::from_secs(3600 * 24 * 365));
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut events_open = true;
    loop {
        let first = tokio::select! {
            m = out.recv() => match m {
                Some(m) => Item::Out(m),
                None => break,
            },
            e = events.recv(), if events_open => match e {
                Some(e) => Item::Event(e),
                None => { events_open = false; continue }
            },
            _ = ping.tick(), if keepalive.is_some() => Item::Ping,
            _ = notified(&transport_writes), if transport_writes.is_some() => Item::TransportWrites,
        };
        let mut item = Some(first);
        let mut n = 0;
        while let Some(it) = item.take() {
            let frame = match it {
                Item::Out(OutMsg::Text(t)) => OutFrame::Text(t),
                Item::Out(OutMsg::Base64(b)) => OutFrame::Base64(b),
                Item::Out(OutMsg::Close(code, reason)) => {
                    let _ = sink.send(OutFrame::Close { code, reason }).await;
                    let _ = sink.close().await;
                    return;
                }
                Item::Event(e) => {
                    if let Some(gap) = &e.gap {
                        if sink
                            .feed(encode::process_gap(&e.process_id, gap))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    crate::telemetry::event_sent(&e);
                    encode::process_event(&e)
                }
                Item::Ping => OutFrame::Ping,
                Item::TransportWrites => continue,
            };
            match &frame {
                OutFrame::Text(t) => crate::telemetry::message_sent(t.len()),
                OutFrame::Base64(b) => crate::telemetry::message_sent(b.len()),
                _ => {}
            }
            if sink.feed(frame).await.is_err() {
                return;
            }
            n += 1;
            if n < BATCH {
                item = match out.try_recv() {
                    Ok(m) => Some(Item::Out(m)),
                    Err(_) => events.try_recv().ok().map(Item::Event),
                };
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}

enum Item {
    Out(OutMsg),
    Event(ProcessEvent),
    Ping,
    /// The transport has bytes of its own to write (see [`super::TransportInfo`]): a flush
    /// writes them.
    TransportWrites,
}

async fn notified(n: &Option<Arc<Notify>>) {
    match n {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}
