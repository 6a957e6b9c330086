//! `http/request` (spec §6): decode, call core's [`LocalHttpRunner`], encode. Streamed bodies
//! are pumped as `http/request/bodyDelta` notifications by one task per stream.
//!
//! Ordering and bounds of a streamed body:
//! * the pump starts only once the response has been queued on the connection (the
//!   dispatcher's [`OnReply`](crate::dispatch::OnReply) signal), so the response always
//!   precedes the first delta (spec §6.3);
//! * a delta carries at most [`MAX_DELTA_BYTES`] (1 MiB) of body; a bigger chunk is split;
//! * before queuing a delta the pump waits until at most [`QUEUED_DELTAS`] messages are
//!   queued on the connection, so the deltas a connection holds in memory stay below
//!   `(QUEUED_DELTAS + 1) × 1.4 MiB` (base64 of 1 MiB plus the envelope), whatever the number of
//!   streams; the next chunk is read from the upstream only after that, so a client that stops
//!   reading stops the transfer;
//! * the `requestId` stays reserved until the terminal delta is queued, and every stream is
//!   aborted when the connection ends ([`Streams::close`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use exec_server_core::http::{HttpBody, HttpConfig, HttpRequest, HttpRunner, LocalHttpRunner};
use exec_server_protocol::bytes::Base64;
use exec_server_protocol::http::{
    BodyDelta, BodyDeltaNotification, HttpRequestParams, HttpRequestResult,
};
use exec_server_protocol::{jsonrpc, Notification};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::connection::OutMsg;
use crate::dispatch::Call;
use crate::rpc_error::{http_error, RpcError};

/// Largest body slice in one `http/request/bodyDelta`.
pub(crate) const MAX_DELTA_BYTES: usize = 1 << 20;

/// Messages that may already be queued on a connection when a pump queues one more delta.
pub(crate) const QUEUED_DELTAS: usize = 8;

/// The connection's active streamed responses (request ids reserved until their terminal
/// delta); aborted when the connection ends.
#[derive(Debug, Default)]
pub(crate) struct Streams {
    inner: Mutex<Active>,
}

#[derive(Debug, Default)]
struct Active {
    closed: bool,
    next_generation: u64,
    /// Request id → (generation, the stream's abort switch).
    streams: HashMap<String, (u64, CancellationToken)>,
}

impl Streams {
    fn lock(&self) -> std::sync::MutexGuard<'_, Active> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves `id` for a new stream, or rejects it while a stream with that id is active.
    fn reserve(self: &Arc<Self>, id: &str) -> Result<Reservation, RpcError> {
        let mut active = self.lock();
        if active.closed {
            return Err(RpcError::internal("http/request failed: connection closed"));
        }
        if active.streams.contains_key(id) {
            return Err(RpcError::invalid_params(format!(
                "http/request streamResponse requestId `{id}` is already active"
            )));
        }
        active.next_generation += 1;
        let generation = active.next_generation;
        let cancel = CancellationToken::new();
        active
            .streams
            .insert(id.to_string(), (generation, cancel.clone()));
        Ok(Reservation {
            streams: self.clone(),
            id: id.to_string(),
            generation,
            cancel,
        })
    }

    /// Aborts every active stream (the connection ended).
    pub(crate) fn close(&self) {
        let mut active = self.lock();
        active.closed = true;
        for (_, (_, cancel)) in active.streams.drain() {
            cancel.cancel();
        }
    }

    #[cfg(test)]
    fn is_active(&self, id: &str) -> bool {
        self.lock().streams.contains_key(id)
    }
}

/// A reserved request id; released when dropped.
struct Reservation {
    streams: Arc<Streams>,
    id: String,
    generation: u64,
    cancel: CancellationToken,
}

impl Reservation {
    fn release(&self, active: &mut Active) {
        if active.streams.get(&self.id).map(|(g, _)| *g) == Some(self.generation) {
            active.streams.remove(&self.id);
        }
    }

    /// Queues the terminal delta and releases the id in one step, so a request reusing the id
    /// can only be accepted after the terminal delta is queued.
    fn finish(self, permit: mpsc::Permit<'_, OutMsg>, terminal: String) {
        let mut active = self.streams.lock();
        permit.send(OutMsg::Text(terminal));
        self.release(&mut active);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let streams = self.streams.clone();
        self.release(&mut streams.lock());
    }
}

/// The process's runner: one connection pool and TLS setup shared by every connection.
/// Built on first use from the server's configuration (the same for every connection).
fn runner(cfg: &crate::ServeConfig) -> Result<&'static LocalHttpRunner, RpcError> {
    static RUNNER: OnceLock<Result<LocalHttpRunner, String>> = OnceLock::new();
    RUNNER
        .get_or_init(|| {
            let config = HttpConfig {
                max_buffered_body: cfg.http_max_buffered_body,
                ..HttpConfig::default()
            };
            LocalHttpRunner::new(config).map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| RpcError::internal(e.clone()))
}

pub(crate) async fn request(
    call: Call,
    p: HttpRequestParams,
) -> Result<HttpRequestResult, RpcError> {
    let body = match &p.body_base64 {
        Some(b) => Some(b.decode().map_err(|e| {
            RpcError::invalid_params(format!("http/request bodyBase64 is invalid: {e}"))
        })?),
        None => None,
    };
    let runner = runner(&call.state.config)?;
    // Absent: the server's default; null: no deadline; a number: that deadline.
    let timeout = match p.timeout_ms {
        None => call.state.config.http_default_timeout,
        Some(ms) => ms.map(Duration::from_millis),
    };
    let req = HttpRequest {
        method: p.method,
        url: p.url,
        headers: p.headers,
        body,
        timeout,
        redirect: p.redirect_policy.unwrap_or_default(),
    };
    if !p.stream_response {
        let resp = runner.send(req).await.map_err(http_error)?;
        let body = resp
            .body
            .read_to_end(runner.config().max_buffered_body)
            .await
            .map_err(http_error)?;
        return Ok(HttpRequestResult {
            status: resp.status,
            headers: resp.headers,
            body_base64: Base64::encode(&body),
        });
    }
    // Reserved before sending, so a duplicate is refused at once; released on every early
    // return by the reservation's drop.
    let reservation = call.http.reserve(&p.request_id)?;
    let resp = runner.send(req).await.map_err(http_error)?;
    let queued = call.on_reply.queued();
    tokio::spawn(pump(call.out.clone(), reservation, resp.body, queued));
    Ok(HttpRequestResult {
        status: resp.status,
        headers: resp.headers,
        body_base64: Base64::default(),
    })
}

/// Sends the body as deltas once the response is queued; stops when the connection ends.
async fn pump(
    out: mpsc::Sender<OutMsg>,
    reservation: Reservation,
    body: HttpBody,
    queued: oneshot::Receiver<()>,
) {
    let cancel = reservation.cancel.clone();
    tokio::select! {
        biased;
        _ = cancel.cancelled() => {}
        _ = send_deltas(&out, reservation, body, queued) => {}
    }
}

async fn send_deltas(
    out: &mpsc::Sender<OutMsg>,
    reservation: Reservation,
    mut body: HttpBody,
    queued: oneshot::Receiver<()>,
) {
    if queued.await.is_err() {
        return; // The response was never sent (cancelled); nothing may follow it.
    }
    let id = reservation.id.clone();
    let mut seq = 0;
    let error = loop {
        match body.next_chunk().await {
            Some(Ok(mut chunk)) => {
                while !chunk.is_empty() {
                    let piece = chunk.split_to(chunk.len().min(MAX_DELTA_BYTES));
                    seq += 1;
                    let Some(permit) = reserve(out).await else {
                        return;
                    };
                    permit.send(OutMsg::Text(delta(&id, seq, &piece, None)));
                }
            }
            Some(Err(e)) => break Some(e.to_string()),
            None => break None,
        }
    };
    seq += 1;
    if let Some(permit) = reserve(out).await {
        reservation.finish(permit, delta(&id, seq, &[], Some(error)));
    }
}

/// A slot on the connection's queue, granted once at most [`QUEUED_DELTAS`] messages wait.
async fn reserve(out: &mpsc::Sender<OutMsg>) -> Option<mpsc::Permit<'_, OutMsg>> {
    // Waiting for all but QUEUED_DELTAS slots at once means waiting until the queue is that
    // short; the semaphore is fair, so replies queued meanwhile go first, and the slots not
    // used are returned when the iterator drops.
    let wanted = out.max_capacity().saturating_sub(QUEUED_DELTAS).max(1);
    let mut permits = out.reserve_many(wanted).await.ok()?;
    permits.next()
}

/// One `http/request/bodyDelta`; `done` is `Some(error)` for the terminal frame.
fn delta(id: &str, seq: u64, data: &[u8], done: Option<Option<String>>) -> String {
    let (done, error) = match done {
        Some(error) => (true, error),
        None => (false, None),
    };
    jsonrpc::encode_notification(
        BodyDelta::NAME,
        &BodyDeltaNotification {
            request_id: id.to_string(),
            seq,
            delta_base64: Base64::encode(data),
            done,
            error,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_ids_are_refused_until_released() {
        let streams = Arc::new(Streams::default());
        let r = streams.reserve("a").expect("first");
        let err = streams.reserve("a").err().expect("duplicate");
        assert_eq!(err.0.code, -32602);
        assert_eq!(
            err.0.message,
            "http/request streamResponse requestId `a` is already active"
        );
        assert!(streams.reserve("b").is_ok());
        drop(r);
        assert!(!streams.is_active("a"));
        assert!(streams.reserve("a").is_ok());
    }

    #[test]
    fn an_old_reservation_does_not_release_a_newer_one() {
        let streams = Arc::new(Streams::default());
        let old = streams.reserve("a").expect("first");
        streams.lock().streams.remove("a");
        let _new = streams.reserve("a").expect("second");
        drop(old);
        assert!(streams.is_active("a"));
    }

    #[test]
    fn close_cancels_streams_and_refuses_new_ones() {
        let streams = Arc::new(Streams::default());
        let r = streams.reserve("a").expect("first");
        streams.close();
        assert!(r.cancel.is_cancelled());
        assert!(streams.reserve("b").is_err());
    }

    #[tokio::test]
    async fn terminal_delta_is_queued_before_the_id_is_released() {
        let streams = Arc::new(Streams::default());
        let r = streams.reserve("a").expect("first");
        let (tx, mut rx) = mpsc::channel(4);
        let permit = reserve(&tx).await.expect("slot");
        r.finish(permit, delta("a", 1, &[], Some(None)));
        assert!(!streams.is_active("a"));
        let Some(OutMsg::Text(text)) = rx.recv().await else {
            panic!("no delta")
        };
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["method"], "http/request/bodyDelta");
        assert_eq!(v["params"]["done"], true);
        assert_eq!(v["params"]["error"], serde_json::Value::Null);
        assert_eq!(v["params"]["deltaBase64"], "");
    }

    #[tokio::test]
    async fn reserve_waits_until_the_queue_is_short() {
        let (tx, mut rx) = mpsc::channel(QUEUED_DELTAS + 4);
        for _ in 0..QUEUED_DELTAS + 2 {
            tx.send(OutMsg::Text(String::new())).await.expect("send");
        }
        let waiting = tokio::time::timeout(Duration::from_millis(50), reserve(&tx)).await;
        assert!(waiting.is_err(), "granted with a long queue");
        rx.recv().await;
        rx.recv().await;
        let granted = tokio::time::timeout(Duration::from_secs(1), reserve(&tx)).await;
        assert!(granted.is_ok(), "not granted once the queue is short");
    }

    #[tokio::test]
    async fn pump_splits_big_chunks_and_ends_with_one_terminal_delta() {
        let streams = Arc::new(Streams::default());
        let r = streams.reserve("s").expect("reserve");
        let (tx, mut rx) = mpsc::channel(64);
        let (qtx, qrx) = oneshot::channel();
        let big = vec![7u8; MAX_DELTA_BYTES + 10];
        let body = HttpBody::from_bytes(big);
        let task = tokio::spawn(pump(tx, r, body, qrx));
        qtx.send(()).expect("queued");
        task.await.expect("pump");
        let mut seqs = Vec::new();
        let mut total = 0;
        while let Ok(OutMsg::Text(t)) = rx.try_recv() {
            let v: serde_json::Value = serde_json::from_str(&t).expect("json");
            seqs.push(v["params"]["seq"].as_u64().expect("seq"));
            let data = Base64(v["params"]["deltaBase64"].as_str().expect("b64").into())
                .decode()
                .expect("base64");
            assert!(data.len() <= MAX_DELTA_BYTES);
            total += data.len();
        }
        assert_eq!(seqs, [1, 2, 3]);
        assert_eq!(total, MAX_DELTA_BYTES + 10);
        assert!(!streams.is_active("s"));
    }

    #[tokio::test]
    async fn pump_sends_nothing_if_the_response_was_never_queued() {
        let streams = Arc::new(Streams::default());
        let r = streams.reserve("s").expect("reserve");
        let (tx, mut rx) = mpsc::channel(8);
        let (qtx, qrx) = oneshot::channel::<()>();
        drop(qtx);
        pump(tx, r, HttpBody::from_bytes(&b"x"[..]), qrx).await;
        assert!(rx.try_recv().is_err());
        assert!(!streams.is_active("s"));
    }
}
