//! The hot paths: process events and `process/read` replies, and file data replies
//! (`fs/readBlock`, `fs/readFile`), assembled by hand as [`Base64Text`]: JSON text around the
//! data, whose base64 is encoded while the message is written (never run through serde_json's
//! string escaping, which base64 does not need).

use std::fmt::Write as _;

use exec_server_core::process::{EventKind, ProcessEvent, ReadOutcome};
use exec_server_protocol::process::Stream;
use exec_server_protocol::RequestId;

use crate::base64_text::Base64Text;
use crate::connection::{OutFrame, OutMsg};

fn id_text(id: &RequestId) -> String {
    serde_json::to_string(id).unwrap_or_else(|_| "null".into())
}

/// `{"id":…,"result":{` + `member` + `":"`: the head of a reply whose first member is a
/// base64 string.
fn base64_head(id: &RequestId, member: &str) -> String {
    format!(r#"{{"id":{},"result":{{"{member}":""#, id_text(id))
}

/// The reply to `fs/readBlock` with `data` and `eof`: the text `jsonrpc::encode_result` gives
/// for the `ReadBlockResult`, its base64 encoded as it is written.
pub(crate) fn read_block_result(id: &RequestId, (data, eof): (Vec<u8>, bool)) -> OutMsg {
    let tail = if eof {
        r#"","eof":true}}"#
    } else {
        r#"","eof":false}}"#
    };
    OutMsg::Base64(Base64Text::new(base64_head(id, "chunk"), data, tail))
}

/// The reply to `fs/readFile` with the file's `data`: the text `jsonrpc::encode_result` gives
/// for the `ReadFileResult`, its base64 encoded as it is written.
pub(crate) fn read_file_result(id: &RequestId, data: Vec<u8>) -> OutMsg {
    OutMsg::Base64(Base64Text::new(
        base64_head(id, "dataBase64"),
        data,
        r#""}}"#,
    ))
}

/// `"seq":…,"stream":…,"chunk":"…"`: the members of an output chunk, in a `process/read` reply
/// and in a `process/output` notification alike.
fn push_output(t: &mut Base64Text, seq: u64, stream: Stream, data: &bytes::Bytes) {
    t.push_text(format!(
        r#""seq":{seq},"stream":"{}","chunk":""#,
        stream.as_str()
    ));
    t.push_base64(data.clone());
    t.push_str("\"");
}

/// The reply to `process/read`: the text `jsonrpc::encode_result` gives for the
/// `ReadResult` of `r`, each chunk's base64 encoded as it is written.
pub(crate) fn read_result(id: &RequestId, r: ReadOutcome) -> OutMsg {
    OutMsg::Base64(read_result_text(id, &r))
}

fn read_result_text(id: &RequestId, r: &ReadOutcome) -> Base64Text {
    let mut t = Base64Text::default();
    t.push_text(format!(r#"{{"id":{},"result":{{"chunks":["#, id_text(id)));
    for (i, (seq, stream, bytes)) in r.log.chunks.iter().enumerate() {
        t.push_str(if i > 0 { ",{" } else { "{" });
        push_output(&mut t, *seq, *stream, bytes);
        t.push_str("}");
    }
    let mut s = String::with_capacity(160);
    let _ = write!(
        s,
        r#"],"nextSeq":{},"exited":{},"exitCode":"#,
        r.log.next_seq, r.exited
    );
    match r.exit_code {
        Some(code) => {
            let _ = write!(s, "{code}");
        }
        None => s.push_str("null"),
    }
    let _ = write!(
        s,
        r#","closed":{},"failure":null,"sandboxDenied":{}"#,
        r.closed, r.sandbox_denied
    );
    if let Some(gap) = &r.log.gap {
        let _ = write!(
            s,
            r#","gap":{{"fromSeq":{},"toSeq":{},"bytes":{}}}"#,
            gap.from_seq, gap.to_seq, gap.bytes
        );
    }
    s.push_str("}}");
    t.push_text(s);
    t
}

/// The `process/gap` notification that goes ahead of an event after a replay's eviction.
pub(crate) fn process_gap(process_id: &str, gap: &exec_server_protocol::process::Gap) -> OutFrame {
    let id = serde_json::to_string(process_id).unwrap_or_else(|_| "\"\"".into());
    OutFrame::Text(format!(
        r#"{{"method":"process/gap","params":{{"processId":{id},"fromSeq":{},"toSeq":{},"bytes":{}}}}}"#,
        gap.from_seq, gap.to_seq, gap.bytes
    ))
}

/// Encodes a process event as its notification (an output chunk's base64 encoded as it is
/// written).
pub(crate) fn process_event(ev: &ProcessEvent) -> OutFrame {
    let id = serde_json::to_string(ev.process_id.as_ref()).unwrap_or_else(|_| "\"\"".into());
    match &ev.event.kind {
        EventKind::Output { stream, data } => {
            let mut t = Base64Text::default();
            t.push_text(format!(
                r#"{{"method":"process/output","params":{{"processId":{id},"#
            ));
            push_output(&mut t, ev.event.seq, *stream, data);
            t.push_str("}}");
            OutFrame::Base64(t)
        }
        EventKind::Exited { code } => OutFrame::Text(format!(
            r#"{{"method":"process/exited","params":{{"processId":{id},"seq":{},"exitCode":{code},"sandboxDenied":{}{}}}}}"#,
            ev.event.seq,
            ev.sandbox_denied,
            if ev.timed_out {
                r#","timedOut":true"#
            } else {
                ""
            }
        )),
        EventKind::Closed => OutFrame::Text(format!(
            r#"{{"method":"process/closed","params":{{"processId":{id},"seq":{}}}}}"#,
            ev.event.seq
        )),
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
            timed_out: false,
            gap: None,
        };
        let v: serde_json::Value = serde_json::from_str(&event_text(&ev)).unwrap();
        assert_eq!(v["method"], "process/output");
        let n: OutputNotification = serde_json::from_value(v["params"].clone()).unwrap();
        assert_eq!(n.process_id, "p\"1");
        assert_eq!(n.seq, 7);
        assert_eq!(n.stream, Stream::Stderr);
        assert_eq!(n.chunk.decode().unwrap(), b"\x00\xffhi");
    }

    fn event_text(ev: &ProcessEvent) -> String {
        match process_event(ev) {
            OutFrame::Text(t) => t,
            OutFrame::Base64(b) => b.into_string(),
            other => panic!("not a message: {other:?}"),
        }
    }

    fn text(msg: OutMsg) -> String {
        match msg {
            OutMsg::Base64(b) => b.into_string(),
            OutMsg::Text(t) => t,
            OutMsg::Close(..) => panic!("a close"),
        }
    }

    #[test]
    fn file_replies_match_the_generic_encoder() {
        use exec_server_protocol::bytes::Base64;
        use exec_server_protocol::fs::{ReadBlockResult, ReadFileResult};
        use exec_server_protocol::jsonrpc::encode_result;
        let ids = [RequestId::from(7), RequestId::from("a\"b".to_string())];
        for id in &ids {
            for data in [&b""[..], b"\x00\xff\xfe hello", &[7u8; 1000]] {
                for eof in [false, true] {
                    let typed = ReadBlockResult {
                        chunk: Base64::encode(data),
                        eof,
                    };
                    assert_eq!(
                        text(read_block_result(id, (data.to_vec(), eof))),
                        encode_result(id, &typed)
                    );
                }
                let typed = ReadFileResult {
                    data_base64: Base64::encode(data),
                };
                assert_eq!(
                    text(read_file_result(id, data.to_vec())),
                    encode_result(id, &typed)
                );
            }
        }
    }

    #[test]
    fn read_replies_match_the_generic_encoder() {
        use exec_server_core::process::LogRead;
        use exec_server_protocol::bytes::Base64;
        use exec_server_protocol::jsonrpc::encode_result;
        use exec_server_protocol::process::{Gap, OutputChunk, ReadResult, Stream};
        let chunk_sets: [Vec<(u64, Stream, bytes::Bytes)>; 3] = [
            vec![],
            vec![(4, Stream::Stdout, bytes::Bytes::from_static(b"\x00\xffhi"))],
            vec![
                (4, Stream::Stdout, bytes::Bytes::from_static(b"a")),
                (5, Stream::Stderr, bytes::Bytes::from(vec![9u8; 1000])),
                (7, Stream::Pty, bytes::Bytes::from_static(b"")),
            ],
        ];
        let gaps = [
            None,
            Some(Gap {
                from_seq: 1,
                to_seq: 3,
                bytes: 4096,
            }),
        ];
        for id in [RequestId::from(7), RequestId::from("r\"1".to_string())] {
            for chunks in &chunk_sets {
                for gap in &gaps {
                    for (exited, exit_code, closed, denied) in
                        [(false, None, false, false), (true, Some(-1), true, true)]
                    {
                        let outcome = ReadOutcome {
                            log: LogRead {
                                chunks: chunks.clone(),
                                next_seq: 8,
                                gap: gap.clone(),
                            },
                            exited,
                            exit_code,
                            closed,
                            sandbox_denied: denied,
                        };
                        let typed = ReadResult {
                            chunks: chunks
                                .iter()
                                .map(|(seq, stream, data)| OutputChunk {
                                    seq: *seq,
                                    stream: *stream,
                                    chunk: Base64::encode(data),
                                })
                                .collect(),
                            next_seq: 8,
                            exited,
                            exit_code,
                            closed,
                            failure: None,
                            sandbox_denied: denied,
                            gap: gap.clone(),
                        };
                        assert_eq!(
                            read_result_text(&id, &outcome).into_string(),
                            encode_result(&id, &typed)
                        );
                    }
                }
            }
        }
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
            timed_out: false,
            gap: None,
        };
        assert_eq!(
            event_text(&mk(EventKind::Exited { code: 130 })),
            r#"{"method":"process/exited","params":{"processId":"p","seq":3,"exitCode":130,"sandboxDenied":false}}"#
        );
        assert_eq!(
            event_text(&mk(EventKind::Closed)),
            r#"{"method":"process/closed","params":{"processId":"p","seq":3}}"#
        );
        let timed_out = ProcessEvent {
            timed_out: true,
            ..mk(EventKind::Exited { code: 143 })
        };
        assert_eq!(
            event_text(&timed_out),
            r#"{"method":"process/exited","params":{"processId":"p","seq":3,"exitCode":143,"sandboxDenied":false,"timedOut":true}}"#
        );
    }

    #[test]
    fn gap_notification_decodes_as_the_typed_one() {
        use exec_server_protocol::process::{Gap, GapNotification};
        let gap = Gap {
            from_seq: 2,
            to_seq: 9,
            bytes: 4096,
        };
        let text = match process_gap("p\"1", &gap) {
            OutFrame::Text(t) => t,
            other => panic!("unexpected frame {other:?}"),
        };
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["method"], "process/gap");
        let n: GapNotification = serde_json::from_value(v["params"].clone()).unwrap();
        assert_eq!(n.process_id, "p\"1");
        assert_eq!(n.gap, gap);
    }
}
