//! The hot path: process events encoded straight into one JSON string, base64 written in place.

use exec_server_core::process::{EventKind, ProcessEvent};

/// Encodes a process event as its notification.
pub(crate) fn process_event(ev: &ProcessEvent) -> String {
    use std::fmt::Write as _;
    let id = serde_json::to_string(ev.process_id.as_ref()).unwrap_or_else(|_| "\"\"".into());
    match &ev.event.kind {
        EventKind::Output { stream, data } => {
            let mut s = String::with_capacity(96 + id.len() + data.len().div_ceil(3) * 4);
            s.push_str(r#"{"method":"process/output","params":{"processId":"#);
            s.push_str(&id);
            let _ = write!(
                s,
                r#","seq":{},"stream":"{}","chunk":""#,
                ev.event.seq,
                stream.as_str()
            );
            exec_server_protocol::bytes::encode_into(data, &mut s);
            s.push_str("\"}}");
            s
        }
        EventKind::Exited { code } => format!(
            r#"{{"method":"process/exited","params":{{"processId":{id},"seq":{},"exitCode":{code},"sandboxDenied":{}}}}}"#,
            ev.event.seq, ev.sandbox_denied
        ),
        EventKind::Closed => format!(
            r#"{{"method":"process/closed","params":{{"processId":{id},"seq":{}}}}}"#,
            ev.event.seq
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use exec_server_core::process::Event;
    use exec_server_protocol::process::{OutputNotification, Stream};

    #[test]
    fn output_decodes_as_the_typed_notification() {
        let ev = ProcessEvent {
            process_id: "p\"1".into(),
            event: Event {
                seq: 7,
                offset: 0,
                kind: EventKind::Output {
                    stream: Stream::Stderr,
                    data: bytes::Bytes::from_static(b"\x00\xffhi"),
                },
            },
            sandbox_denied: false,
        };
        let v: serde_json::Value = serde_json::from_str(&process_event(&ev)).unwrap();
        assert_eq!(v["method"], "process/output");
        let n: OutputNotification = serde_json::from_value(v["params"].clone()).unwrap();
        assert_eq!(n.process_id, "p\"1");
        assert_eq!(n.seq, 7);
        assert_eq!(n.stream, Stream::Stderr);
        assert_eq!(n.chunk.decode().unwrap(), b"\x00\xffhi");
    }

    #[test]
    fn exit_and_close_shapes() {
        let mk = |kind| ProcessEvent {
            process_id: "p".into(),
            event: Event {
                seq: 3,
                offset: 0,
                kind,
            },
            sandbox_denied: false,
        };
        assert_eq!(
            process_event(&mk(EventKind::Exited { code: 130 })),
            r#"{"method":"process/exited","params":{"processId":"p","seq":3,"exitCode":130,"sandboxDenied":false}}"#
        );
        assert_eq!(
            process_event(&mk(EventKind::Closed)),
            r#"{"method":"process/closed","params":{"processId":"p","seq":3}}"#
        );
    }
}
