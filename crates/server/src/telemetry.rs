//! Request spans and server metrics (docs/observability.md).
//!
//! Every request runs in a `tracing` span named after its method (`otel.name`), whose parent is
//! the W3C trace context the client sent in the request's `trace` member (spec §1.2). Without an
//! OpenTelemetry layer in the subscriber the parent is simply not recorded; invalid carriers
//! are ignored with a debug line.
//!
//! Metrics go through the global OpenTelemetry meter, a no-op unless the binary installed a
//! provider (OTLP configured). Labels are low-cardinality only: known method names (anything
//! else is `other`), result, transport, stream, direction; never ids, paths or URLs.
//!
//! What spans and metrics record is chosen here: ids, method names and paths, never params
//! bodies, argv, environment, tokens or file contents.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use exec_server_core::process::{EventKind, ProcessEvent};
use exec_server_core::Sessions;
use exec_server_protocol::jsonrpc::TraceContext;
use exec_server_protocol::{environment, fs, http, initialize, process, Method, RequestId};
use futures::FutureExt;
use opentelemetry::metrics::{Counter, Histogram, Meter, UpDownCounter};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::KeyValue;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use serde::Deserialize;
use serde_json::value::RawValue;
use tracing::field::Empty;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::dispatch::{Replied, Reply};

/// The instrumentation scope of every instrument.
pub(crate) const METER_NAME: &str = "exec-server";

/// The method names used as labels and span names; anything else is `other`.
const METHODS: &[&str] = &[
    initialize::Initialize::NAME,
    process::Start::NAME,
    process::Read::NAME,
    process::Write::NAME,
    process::Signal::NAME,
    process::Terminate::NAME,
    process::Resize::NAME,
    process::CloseStdin::NAME,
    process::Status::NAME,
    process::List::NAME,
    environment::Info::NAME,
    environment::Status::NAME,
    fs::ReadFile::NAME,
    fs::WriteFile::NAME,
    fs::CreateDirectory::NAME,
    fs::GetMetadata::NAME,
    fs::Canonicalize::NAME,
    fs::ReadDirectory::NAME,
    fs::Walk::NAME,
    fs::Remove::NAME,
    fs::Copy::NAME,
    fs::Open::NAME,
    fs::ReadBlock::NAME,
    fs::WriteBlock::NAME,
    fs::Close::NAME,
    fs::WatchMissing::NAME,
    http::Request::NAME,
];

/// The label for a method: its name when it is one of ours, else `other`.
pub(crate) fn method_label(method: &str) -> &'static str {
    METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

/// The server's instruments, created once from the global meter.
struct Metrics {
    connections_active: UpDownCounter<i64>,
    connections_total: Counter<u64>,
    sessions_total: Counter<u64>,
    requests_total: Counter<u64>,
    request_duration: Histogram<f64>,
    message_bytes: Counter<u64>,
    output_bytes: Counter<u64>,
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| Metrics::new(&opentelemetry::global::meter(METER_NAME)))
}

impl Metrics {
    fn new(m: &Meter) -> Self {
        Metrics {
            connections_active: m
                .i64_up_down_counter("exec_server_connections_active")
                .with_description("Open connections")
                .build(),
            connections_total: m
                .u64_counter("exec_server_connections_total")
                .with_description("Connections accepted")
                .build(),
            sessions_total: m
                .u64_counter("exec_server_sessions_total")
                .with_description("Sessions created or resumed by initialize")
                .build(),
            requests_total: m
                .u64_counter("exec_server_requests_total")
                .with_description("Requests answered, by method and result")
                .build(),
            request_duration: m
                .f64_histogram("exec_server_request_duration_seconds")
                .with_description("Time from a request's arrival to its reply being queued")
                .with_unit("s")
                .with_boundaries(vec![
                    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                ])
                .build(),
            message_bytes: m
                .u64_counter("exec_server_message_bytes_total")
                .with_description("JSON-RPC message bytes received and sent")
                .with_unit("By")
                .build(),
            output_bytes: m
                .u64_counter("exec_server_process_output_bytes_total")
                .with_description("Process output bytes streamed in process/output notifications")
                .with_unit("By")
                .build(),
        }
    }
}

/// Registers the gauges read from the session registry (sessions held and attached, live
/// processes). Called once per server state; the callbacks stop reporting when it is dropped.
pub(crate) fn register_gauges(sessions: &Arc<Sessions>) {
    let meter = opentelemetry::global::meter(METER_NAME);
    let weak: Weak<Sessions> = Arc::downgrade(sessions);
    let w = weak.clone();
    let _sessions = meter
        .u64_observable_gauge("exec_server_sessions_active")
        .with_description("Sessions held, attached to a connection or detached")
        .with_callback(move |o| {
            if let Some(s) = w.upgrade() {
                let stats = s.stats();
                o.observe(stats.attached as u64, &[KeyValue::new("state", "attached")]);
                o.observe(
                    (stats.sessions - stats.attached) as u64,
                    &[KeyValue::new("state", "detached")],
                );
            }
        })
        .build();
    let _processes = meter
        .u64_observable_gauge("exec_server_processes_active")
        .with_description("Running processes")
        .with_callback(move |o| {
            if let Some(s) = weak.upgrade() {
                o.observe(s.stats().live_processes as u64, &[]);
            }
        })
        .build();
}

/// The transport label from a transport's parse-error prefix.
fn transport_label(prefix: &str) -> &'static str {
    ["websocket", "stdio", "memory"]
        .into_iter()
        .find(|t| prefix.contains(t))
        .unwrap_or("other")
}

/// Counts a connection while it is held.
pub(crate) struct ConnectionGuard(KeyValue);

/// Counts a new connection; the returned guard counts it as closed when dropped.
pub(crate) fn connection_opened(parse_error_prefix: &str) -> ConnectionGuard {
    let kv = KeyValue::new("transport", transport_label(parse_error_prefix));
    let m = metrics();
    m.connections_total.add(1, std::slice::from_ref(&kv));
    m.connections_active.add(1, std::slice::from_ref(&kv));
    ConnectionGuard(kv)
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        metrics()
            .connections_active
            .add(-1, std::slice::from_ref(&self.0));
    }
}

/// Counts a session created (`resumed == false`) or resumed by `initialize`.
pub(crate) fn session_initialized(resumed: bool) {
    let kind = if resumed { "resumed" } else { "created" };
    metrics()
        .sessions_total
        .add(1, &[KeyValue::new("kind", kind)]);
}

/// Counts the bytes of a message received from the client.
pub(crate) fn message_received(len: usize) {
    metrics()
        .message_bytes
        .add(len as u64, &[KeyValue::new("direction", "received")]);
}

/// Counts the bytes of a message sent to the client.
pub(crate) fn message_sent(len: usize) {
    metrics()
        .message_bytes
        .add(len as u64, &[KeyValue::new("direction", "sent")]);
}

/// Counts the output bytes of a process event about to be sent.
pub(crate) fn event_sent(ev: &ProcessEvent) {
    if let EventKind::Output { stream, data } = &ev.event.kind {
        metrics().output_bytes.add(
            data.len() as u64,
            &[KeyValue::new("stream", stream.as_str())],
        );
    }
}

/// True if `reply` (as encoded by `jsonrpc::encode_error`, whose first member is `error`; a
/// result starts with `id`) is an error response.
fn is_error_reply(reply: &str) -> bool {
    reply.starts_with(r#"{"error":"#)
}

/// The span and timing of one request, from its arrival until its reply is queued.
pub(crate) struct RequestScope {
    span: Span,
    method: &'static str,
    start: Instant,
}

/// The members of params worth recording on a span: `processId`, and `path` (else
/// `sourcePath`).
#[derive(Debug, Default, PartialEq)]
struct SpanAttrs<'a> {
    process_id: Option<Cow<'a, str>>,
    path: Option<Cow<'a, str>>,
}

/// How much of a request's params is read for its span attributes. Members are taken in
/// order until this point, so a write's `path` (before its megabytes of `dataBase64`) is
/// found without scanning the data; a member that only starts past it is not recorded.
const ATTR_SCAN_BYTES: usize = 16 * 1024;

/// A string member, borrowed from the params when it has no escapes.
#[derive(Deserialize)]
struct Str<'a>(#[serde(borrow)] Cow<'a, str>);

impl<'de> serde::de::Visitor<'de> for &mut SpanAttrs<'de> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("params object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Str(key)) = map.next_key()? {
            match &*key {
                "processId" => self.process_id = Some(map.next_value::<Str<'de>>()?.0),
                "path" => self.path = Some(map.next_value::<Str<'de>>()?.0),
                "sourcePath" => {
                    let v = map.next_value::<Str<'de>>()?.0;
                    self.path.get_or_insert(v);
                }
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// The span attributes found in the first [`ATTR_SCAN_BYTES`] of `params`: members are kept
/// as they are read, so a cut in the middle of a later member loses only what follows.
fn span_attrs(params: &str) -> SpanAttrs<'_> {
    let mut end = params.len().min(ATTR_SCAN_BYTES);
    while !params.is_char_boundary(end) {
        end -= 1;
    }
    let mut attrs = SpanAttrs::default();
    let mut de = serde_json::Deserializer::from_str(&params[..end]);
    let _ = serde::Deserializer::deserialize_map(&mut de, &mut attrs);
    attrs
}

/// Longest value recorded from a client-chosen string.
const MAX_ATTR: usize = 512;

fn clip(s: &str) -> &str {
    if s.len() <= MAX_ATTR {
        return s;
    }
    let mut end = MAX_ATTR;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl RequestScope {
    /// Opens the span of a request: named after the method, child of the client's trace
    /// context when it sent a valid one, with the process id or path as attributes.
    pub(crate) fn start(
        method: &str,
        id: &RequestId,
        trace: Option<&TraceContext>,
        params: Option<&RawValue>,
    ) -> Self {
        let label = method_label(method);
        let span = tracing::info_span!(
            "request",
            otel.name = label,
            otel.kind = "server",
            rpc.system = "jsonrpc",
            rpc.method = %clip(method),
            rpc.jsonrpc.request_id = %id,
            process.id = Empty,
            fs.path = Empty,
        );
        if !span.is_disabled() {
            if let Some(parent) = trace.and_then(parent_context) {
                let _ = span.set_parent(parent);
            }
            if label.starts_with("process/") || label.starts_with("fs/") {
                record_attrs(&span, params);
            }
        }
        RequestScope {
            span,
            method: label,
            start: Instant::now(),
        }
    }

    /// The request's span.
    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// Records a reply sent without running a handler task (`initialize`, or an error found
    /// before the handler: unknown method, bad params, lifecycle).
    pub(crate) fn finish(self, reply_is_error: bool) {
        record(self.method, self.start, result(reply_is_error));
    }

    /// Records `reply`'s outcome (see [`Self::finish`]).
    pub(crate) fn finish_with(self, reply: &str) {
        self.finish(is_error_reply(reply));
    }

    /// Runs a handler's future in the span and records its outcome when it completes (or
    /// `cancelled` if it is dropped first: the connection closed, or the handler panicked).
    pub(crate) fn wrap(self, fut: Reply) -> Reply {
        let RequestScope {
            span,
            method,
            start,
        } = self;
        let pending = Pending {
            method,
            start,
            done: false,
        };
        async move {
            let pending = pending;
            let reply: Replied = fut.await;
            let is_error = match &reply.msg {
                crate::connection::OutMsg::Text(t) => is_error_reply(t),
                _ => false,
            };
            pending.complete(is_error);
            reply
        }
        .instrument(span)
        .boxed()
    }
}

fn result(is_error: bool) -> &'static str {
    if is_error {
        "error"
    } else {
        "ok"
    }
}

fn record(method: &'static str, start: Instant, result: &'static str) {
    let attrs = [
        KeyValue::new("method", method),
        KeyValue::new("result", result),
    ];
    let m = metrics();
    m.requests_total.add(1, &attrs);
    m.request_duration
        .record(start.elapsed().as_secs_f64(), &attrs);
}

/// Records `cancelled` for a handler future dropped before it completed.
struct Pending {
    method: &'static str,
    start: Instant,
    done: bool,
}

impl Pending {
    fn complete(mut self, is_error: bool) {
        self.done = true;
        record(self.method, self.start, result(is_error));
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            record(self.method, self.start, "cancelled");
        }
    }
}

fn record_attrs(span: &Span, params: Option<&RawValue>) {
    let Some(raw) = params else { return };
    let attrs = span_attrs(raw.get());
    if let Some(p) = attrs.process_id {
        span.record("process.id", clip(&p));
    }
    if let Some(p) = attrs.path {
        span.record("fs.path", clip(&p));
    }
}

/// A request's `trace` member as a propagation carrier.
struct Carrier<'a>(&'a TraceContext);

impl Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.0.traceparent.as_deref(),
            "tracestate" => self.0.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        let mut keys = Vec::with_capacity(2);
        if self.0.traceparent.is_some() {
            keys.push("traceparent");
        }
        if self.0.tracestate.is_some() {
            keys.push("tracestate");
        }
        keys
    }
}

/// The remote parent described by a W3C trace context, if it is valid.
pub(crate) fn parent_context(trace: &TraceContext) -> Option<opentelemetry::Context> {
    trace.traceparent.as_ref()?;
    let cx = TraceContextPropagator::new()
        .extract_with_context(&opentelemetry::Context::new(), &Carrier(trace));
    if cx.span().span_context().is_valid() {
        Some(cx)
    } else {
        tracing::debug!("ignoring invalid inbound exec-server trace carrier");
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_replies_are_told_from_results() {
        let id = RequestId::from(7);
        let err = exec_server_protocol::jsonrpc::encode_error(
            &id,
            &exec_server_protocol::ErrorObject::new(-32600, "x"),
        );
        let ok =
            exec_server_protocol::jsonrpc::encode_result(&id, &serde_json::json!({"error": 1}));
        assert!(is_error_reply(&err));
        assert!(!is_error_reply(&ok));
    }

    #[test]
    fn span_attrs_come_from_the_head_of_the_params() {
        let big = format!(
            r#"{{"path":"file:///tmp/a\u00e9","dataBase64":"{}","processId":"late"}}"#,
            "A".repeat(4 * ATTR_SCAN_BYTES)
        );
        let attrs = span_attrs(&big);
        assert_eq!(attrs.path.as_deref(), Some("file:///tmp/a\u{e9}"));
        assert_eq!(attrs.process_id, None, "past the scanned head");
        let small = r#"{"sourcePath":"s","destinationPath":"d","x":[1,{"y":2}],"path":"p","processId":"7"}"#;
        let attrs = span_attrs(small);
        assert_eq!(
            attrs.path.as_deref(),
            Some("p"),
            "path wins over sourcePath"
        );
        assert_eq!(attrs.process_id.as_deref(), Some("7"));
        let copy = span_attrs(r#"{"sourcePath":"s","destinationPath":"d"}"#);
        assert_eq!(copy.path.as_deref(), Some("s"));
        // A cut inside a multi-byte character is moved back to a boundary.
        let wide = format!(
            r#"{{"processId":"p","pad":"{}"}}"#,
            "é".repeat(ATTR_SCAN_BYTES)
        );
        assert_eq!(span_attrs(&wide).process_id.as_deref(), Some("p"));
        assert_eq!(span_attrs("[1]"), SpanAttrs::default());
    }

    #[test]
    fn labels_are_bounded() {
        assert_eq!(method_label("process/start"), "process/start");
        assert_eq!(method_label("process/start/../x"), "other");
        assert_eq!(transport_label("from exec-server stdio"), "stdio");
        assert_eq!(
            transport_label("exec-server websocket 1.2.3.4:5"),
            "websocket"
        );
        assert_eq!(clip(&"é".repeat(400)).len(), 512);
    }

    #[test]
    fn carriers_are_validated() {
        let good = TraceContext {
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            tracestate: Some("k=v".into()),
        };
        let cx = parent_context(&good).expect("valid");
        let sc = cx.span().span_context().clone();
        assert!(sc.is_remote());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let t = TraceContext {
                traceparent: Some(bad.into()),
                tracestate: None,
            };
            assert!(parent_context(&t).is_none(), "{bad}");
        }
        assert!(parent_context(&TraceContext::default()).is_none());
    }
}
