//! Observability through an in-process server (in-memory transport): a trace started by our
//! client's trace module is the parent of the server's request spans, and requests,
//! connections, sessions and streamed bytes are counted. One test, because the metrics are
//! read from the process-wide meter provider, which must be installed before the first use.

use std::time::Duration;

use exec_server_server::connection::{InFrame, OutFrame};
use exec_server_server::transport::memory::{self, Peer};
use exec_server_server::{ServeConfig, ServerState};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::Value;
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::{json, Value as Json};
use tracing_subscriber::layer::SubscriberExt as _;

async fn send(p: &Peer, v: Json) {
    p.tx.send(InFrame::Message(v.to_string().into()))
        .await
        .expect("engine alive");
}

/// The next reply (process notifications are skipped).
async fn reply(p: &mut Peer) -> Json {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), p.rx.recv())
            .await
            .expect("engine answered");
        match frame {
            Some(OutFrame::Text(t)) => {
                let v: Json = serde_json::from_str(&t).expect("json");
                if v.get("id").is_some() {
                    return v;
                }
            }
            other => panic!("expected a reply, got {other:?}"),
        }
    }
}

fn attr(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

#[test]
fn client_trace_is_the_parent_of_server_spans_and_requests_are_counted() {
    let metrics = InMemoryMetricExporter::default();
    let meter = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(metrics.clone()).build())
        .build();
    opentelemetry::global::set_meter_provider(meter.clone());

    let spans = InMemorySpanExporter::default();
    let tracer = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(tracer.tracer("test")));
    let guard = tracing::subscriber::set_default(subscriber);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let dir_uri = format!("file://{}", dir.path().display());
    // Held until the gauges are read: they observe the live server's sessions.
    let state = ServerState::new(ServeConfig::default());
    let (client_trace, client_span_id) = rt.block_on(async {
        let mut p = memory::connect(state.clone(), 16);
        let client_span = tracing::info_span!("client operation");
        let trace = client_span.in_scope(exec_server_client::trace::current);
        let trace = trace.expect("a trace context inside a sampled span");
        let client_span_id = {
            use opentelemetry::trace::TraceContextExt as _;
            use tracing_opentelemetry::OpenTelemetrySpanExt as _;
            client_span.context().span().span_context().span_id()
        };
        send(
            &p,
            json!({"id": 1, "method": "initialize", "params": {"clientName": "t"}, "trace": trace}),
        )
        .await;
        assert!(reply(&mut p).await["result"]["sessionId"].is_string());
        send(&p, json!({"method": "initialized"})).await;
        send(
            &p,
            json!({"id": 2, "method": "fs/getMetadata", "params": {"path": dir_uri}, "trace": trace}),
        )
        .await;
        assert!(reply(&mut p).await.get("result").is_some());
        send(
            &p,
            json!({"id": 3, "method": "process/start", "trace": trace, "params": {
                "processId": "p1", "argv": ["sh", "-c", "printf hello"], "cwd": dir_uri,
                "env": {"PATH": "/usr/bin:/bin"}, "tty": false}}),
        )
        .await;
        assert!(reply(&mut p).await.get("result").is_some());
        // An unknown method is answered inline, and still counted under a bounded label.
        send(&p, json!({"id": 4, "method": "no/such/method/1234"})).await;
        assert_eq!(reply(&mut p).await["error"]["code"], -32601);
        // Wait for the output to be streamed, then close and let the engine finish.
        let mut seen = String::new();
        while !seen.contains("process/closed") {
            match tokio::time::timeout(Duration::from_secs(10), p.rx.recv()).await {
                Ok(Some(OutFrame::Text(t))) => seen.push_str(&t),
                other => panic!("expected process notifications, got {other:?}"),
            }
        }
        drop(client_span);
        drop(p.tx);
        while p.rx.recv().await.is_some() {}
        (trace, client_span_id)
    });
    drop(rt);
    drop(guard);
    tracer.force_flush().expect("flush spans");
    let finished = spans.get_finished_spans().expect("spans");

    let client = finished
        .iter()
        .find(|s| s.name == "client operation")
        .expect("the client span was exported");
    assert_eq!(client.span_context.span_id(), client_span_id);
    let trace_id = client.span_context.trace_id();
    assert!(client_trace
        .traceparent
        .as_deref()
        .is_some_and(|t| t.contains(&trace_id.to_string())));
    for name in ["initialize", "fs/getMetadata", "process/start"] {
        let server = finished
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no server span {name}: {finished:#?}"));
        assert_eq!(server.span_context.trace_id(), trace_id, "{name}");
        assert_eq!(server.parent_span_id, client_span_id, "{name}");
        assert!(server.parent_span_is_remote, "{name}");
        assert_eq!(attr(server, "rpc.method"), Some(Value::from(name)));
    }
    let start = finished.iter().find(|s| s.name == "process/start");
    assert_eq!(
        start.and_then(|s| attr(s, "process.id")),
        Some(Value::from("p1"))
    );
    let meta = finished.iter().find(|s| s.name == "fs/getMetadata");
    assert!(meta
        .and_then(|s| attr(s, "fs.path"))
        .is_some_and(|v| v.as_str().starts_with("file://")));
    // The request without a trace context starts its own trace.
    let other = finished
        .iter()
        .find(|s| s.name == "other")
        .expect("the unknown method's span");
    assert_ne!(other.span_context.trace_id(), trace_id);
    // No span carries the params themselves.
    for s in &finished {
        for kv in &s.attributes {
            assert!(
                !kv.value.as_str().contains("printf hello"),
                "{s:?} holds a request body"
            );
        }
    }

    meter.force_flush().expect("flush metrics");
    let exported = metrics.get_finished_metrics().expect("metrics");
    let mut by_name = std::collections::HashMap::new();
    for rm in &exported {
        for sm in rm.scope_metrics() {
            for m in sm.metrics() {
                by_name.insert(m.name().to_string(), format!("{:?}", m.data()));
            }
        }
    }
    for name in [
        "exec_server_connections_total",
        "exec_server_connections_active",
        "exec_server_sessions_total",
        "exec_server_sessions_active",
        "exec_server_processes_active",
        "exec_server_requests_total",
        "exec_server_request_duration_seconds",
        "exec_server_message_bytes_total",
        "exec_server_process_output_bytes_total",
    ] {
        assert!(
            by_name.contains_key(name),
            "missing metric {name}: {by_name:#?}"
        );
    }
    let requests = &by_name["exec_server_requests_total"];
    for label in ["fs/getMetadata", "process/start", "initialize", "other"] {
        assert!(requests.contains(label), "{label} not counted: {requests}");
    }
    assert!(!requests.contains("no/such/method"), "{requests}");
    assert!(
        by_name["exec_server_process_output_bytes_total"].contains("value: 5,"),
        "{by_name:#?}"
    );
    assert!(
        by_name["exec_server_sessions_active"].contains("detached"),
        "{by_name:#?}"
    );
    drop(state);
}
