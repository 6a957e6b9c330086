//! Logs, traces and metrics for the binary (docs/observability.md).
//!
//! * Logs go to stderr (stdout is the stdio transport), as text or one JSON object per line,
//!   filtered by `RUST_LOG` (default `info`). They carry ids, method names and reasons, never
//!   tokens, secrets or request bodies; trace-level events of the dependencies that log frame
//!   or body contents (WebSocket, HTTP, TLS) are dropped whatever `RUST_LOG` says.
//! * Traces and metrics are exported over OTLP (http/protobuf) only when the standard
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` (or the per-signal `..._TRACES_ENDPOINT` /
//!   `..._METRICS_ENDPOINT`) variables are set; nothing is exported otherwise. The other
//!   standard variables (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//!   `OTEL_EXPORTER_OTLP_HEADERS`, `..._TIMEOUT`, `OTEL_TRACES_SAMPLER`,
//!   `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_SDK_DISABLED`, `OTEL_TRACES_EXPORTER=none`,
//!   `OTEL_METRICS_EXPORTER=none`) are honoured.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::args::LogFormat;

/// The service name reported when `OTEL_SERVICE_NAME` is not set.
const SERVICE_NAME: &str = "exec-server";

/// How long shutdown waits for the last spans and metrics to be exported.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Which signals to export, decided from the environment.
#[derive(Debug, Default, PartialEq, Eq)]
struct Export {
    traces: bool,
    metrics: bool,
    /// Why a configured signal is not exported (logged once logging is up).
    warnings: Vec<String>,
}

/// Reads the standard OTLP variables through `get`.
fn export_from_env(get: impl Fn(&str) -> Option<String>) -> Export {
    let set = |k: &str| get(k).filter(|v| !v.trim().is_empty());
    let mut export = Export::default();
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return export;
    }
    for (signal, upper) in [("traces", "TRACES"), ("metrics", "METRICS")] {
        let endpoint = set(&format!("OTEL_EXPORTER_OTLP_{upper}_ENDPOINT"))
            .or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"));
        if endpoint.is_none() {
            continue;
        }
        if let Some(exporter) = set(&format!("OTEL_{upper}_EXPORTER")) {
            if !exporter.split(',').any(|e| e.trim() == "otlp") {
                continue;
            }
        }
        let protocol = set(&format!("OTEL_EXPORTER_OTLP_{upper}_PROTOCOL"))
            .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"));
        if let Some(p) = protocol.filter(|p| p.trim() != "http/protobuf") {
            export.warnings.push(format!(
                "OTLP protocol {p:?} is not supported (only http/protobuf); {signal} are not exported"
            ));
            continue;
        }
        match signal {
            "traces" => export.traces = true,
            _ => export.metrics = true,
        }
    }
    export
}

/// Keeps the exporters alive; dropping it flushes and stops them.
pub(crate) struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(t) = self.tracer.take() {
            if let Err(e) = t.shutdown_with_timeout(FLUSH_TIMEOUT) {
                eprintln!("exec-server: flushing traces failed: {e}");
            }
        }
        if let Some(m) = self.meter.take() {
            if let Err(e) = m.shutdown_with_timeout(FLUSH_TIMEOUT) {
                eprintln!("exec-server: flushing metrics failed: {e}");
            }
        }
    }
}

fn resource() -> Resource {
    let builder = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_some() {
        builder.build()
    } else {
        builder.with_service_name(SERVICE_NAME).build()
    }
}

/// Installs the log subscriber and, when configured, the OTLP trace and metric exporters.
/// Call once, before the runtime starts; keep the result until the end of `main`.
pub(crate) fn init(format: LogFormat) -> Telemetry {
    use std::io::IsTerminal as _;
    let export = export_from_env(|k| std::env::var(k).ok());
    let mut errors = export.warnings.clone();
    if export.traces || export.metrics {
        // reqwest is built without a default crypto provider (https endpoints need one).
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let tracer = export.traces.then(|| {
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .build()
            .map(|exporter| {
                SdkTracerProvider::builder()
                    .with_resource(resource())
                    .with_batch_exporter(exporter)
                    .build()
            })
    });
    let tracer = match tracer {
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            errors.push(format!("OTLP trace export disabled: {e}"));
            None
        }
        None => None,
    };
    let meter = export.metrics.then(|| {
        opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .build()
            .map(|exporter| {
                SdkMeterProvider::builder()
                    .with_resource(resource())
                    .with_periodic_exporter(exporter)
                    .build()
            })
    });
    let meter = match meter {
        Some(Ok(m)) => {
            opentelemetry::global::set_meter_provider(m.clone());
            Some(m)
        }
        Some(Err(e)) => {
            errors.push(format!("OTLP metric export disabled: {e}"));
            None
        }
        None => None,
    };

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let fmt = match format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    // Request spans reach the log lines only when debug output is asked for: at the default
    // level no event is logged inside a request, and formatting every request's span fields
    // cost ~2 % of the server's CPU per small request.
    let spans_in_logs = std::env::var("RUST_LOG")
        .map(|v| v.contains("debug") || v.contains("trace"))
        .unwrap_or(false);
    let fmt = fmt.with_filter(tracing_subscriber::filter::filter_fn(move |meta| {
        payload_safe(meta) && (spans_in_logs || !is_request_span(meta))
    }));
    let otel = tracer.as_ref().map(|t| {
        tracing_opentelemetry::layer()
            .with_tracer(t.tracer(SERVICE_NAME))
            .with_filter(tracing_subscriber::filter::filter_fn(payload_safe))
    });
    if let Err(e) = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
    {
        eprintln!("exec-server: logging already initialised: {e}");
    }
    for e in errors {
        tracing::warn!("{e}");
    }
    if tracer.is_some() || meter.is_some() {
        tracing::info!(
            traces = tracer.is_some(),
            metrics = meter.is_some(),
            "OpenTelemetry export over OTLP enabled"
        );
    }
    Telemetry { tracer, meter }
}

/// Crates whose trace-level events show frame, header or body contents.
const PAYLOAD_LOGGERS: &[&str] = &[
    "tungstenite",
    "tokio_tungstenite",
    "hyper",
    "hyper_util",
    "h2",
    "reqwest",
    "rustls",
    "axum",
    "opentelemetry",
    "opentelemetry_sdk",
    "opentelemetry_otlp",
    "opentelemetry_http",
];

/// False for the trace-level events of the crates that log message contents.
/// The per-request span of the server's connection engine.
fn is_request_span(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span() && meta.name() == "request"
}

fn payload_safe(meta: &tracing::Metadata<'_>) -> bool {
    if *meta.level() == tracing::Level::TRACE {
        let root = meta.target().split("::").next().unwrap_or_default();
        return !PAYLOAD_LOGGERS.contains(&root);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export(vars: &[(&str, &str)]) -> Export {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        export_from_env(|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    #[test]
    fn nothing_is_exported_without_an_endpoint() {
        assert_eq!(export(&[]), Export::default());
        assert_eq!(
            export(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]),
            Export::default()
        );
        assert_eq!(
            export(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]),
            Export::default()
        );
    }

    #[test]
    fn endpoints_select_signals() {
        let both = export(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")]);
        assert!(both.traces && both.metrics);
        let traces = export(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://127.0.0.1:4318/v1/traces",
        )]);
        assert!(traces.traces && !traces.metrics);
        let no_metrics = export(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_METRICS_EXPORTER", "none"),
        ]);
        assert!(no_metrics.traces && !no_metrics.metrics);
        let disabled = export(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ]);
        assert_eq!(disabled, Export::default());
    }

    #[test]
    fn unsupported_protocols_are_refused_with_a_warning() {
        let e = export(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf"),
        ]);
        assert!(!e.traces && e.metrics);
        assert_eq!(e.warnings.len(), 1);
    }

    #[test]
    fn dependency_payload_traces_are_dropped() {
        use tracing::callsite::Identifier;
        use tracing::metadata::Kind;
        struct Cs;
        impl tracing::Callsite for Cs {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &tracing::Metadata<'_> {
                unreachable!()
            }
        }
        static CS: Cs = Cs;
        let meta = |target: &'static str, level| {
            tracing::Metadata::new(
                "e",
                target,
                level,
                None,
                None,
                None,
                tracing::field::FieldSet::new(&[], Identifier(&CS)),
                Kind::EVENT,
            )
        };
        assert!(!payload_safe(&meta(
            "tungstenite::protocol",
            tracing::Level::TRACE
        )));
        assert!(payload_safe(&meta(
            "tungstenite::protocol",
            tracing::Level::DEBUG
        )));
        assert!(payload_safe(&meta(
            "exec_server_server::connection",
            tracing::Level::TRACE
        )));
    }
}
