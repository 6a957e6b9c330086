//! W3C trace context for outgoing requests (spec §1.2): the `trace` member our client writes on
//! every request, so the server's span for it becomes a child of the caller's current span.
//!
//! The context comes from the current `tracing` span through `tracing-opentelemetry`; without an
//! OpenTelemetry layer in the subscriber (or outside any sampled span) there is none, and the
//! request carries no `trace` member.

use exec_server_protocol::jsonrpc::TraceContext;
use opentelemetry::trace::TraceContextExt as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The trace context of the current `tracing` span, to put in a request's `trace` member.
pub fn current() -> Option<TraceContext> {
    from_context(&tracing::Span::current().context())
}

/// The W3C trace context of an OpenTelemetry context, if it holds a valid span.
pub fn from_context(cx: &opentelemetry::Context) -> Option<TraceContext> {
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return None;
    }
    let traceparent = format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    );
    let state = sc.trace_state().header();
    Some(TraceContext {
        traceparent: Some(traceparent),
        tracestate: (!state.is_empty()).then_some(state),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    #[test]
    fn formats_traceparent_and_tracestate() {
        let sc = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex"),
            SpanId::from_hex("00f067aa0ba902b7").expect("hex"),
            TraceFlags::SAMPLED,
            false,
            TraceState::from_key_value([("k", "v")]).expect("state"),
        );
        let cx = opentelemetry::Context::new().with_remote_span_context(sc);
        let t = from_context(&cx).expect("a context");
        assert_eq!(
            t.traceparent.as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        assert_eq!(t.tracestate.as_deref(), Some("k=v"));
    }

    #[test]
    fn nothing_without_a_span() {
        assert_eq!(from_context(&opentelemetry::Context::new()), None);
        assert_eq!(current(), None);
    }
}
