//! The hot paths: process events encoded straight into one JSON string, base64 written in
//! place; file data replies (`fs/readBlock`, `fs/readFile`) assembled without running the
//! megabytes of base64 through serde_json's string escaping (base64 needs none).

use exec_server_core::process::{EventKind, ProcessEvent, ReadOutcome};
use exec_server_protocol::bytes::encode_into;
use exec_server_protocol::process::Stream;
use exec_server_protocol::RequestId;

use crate::base64_text::Base64Text;
use crate::connection::OutMsg;

/// `{"id":…,"result":{` + `fields` + `}}`.
fn result_with(id: &RequestId, capacity: usize, fields: impl FnOnce(&mut String)) -> String {
    let id = serde_json::to_string(id).unwrap_or_else(|_| "null".into());
    let mut s = String::with_capacity(capacity + id.len() + 48);
    s.push_str(r#"{"id":"#);
    s.push_str(&id);
    s.push_str(r#","result":{"#);
    fields(&mut s);
    s.push_str("}}");
    s
}

fn base64_len(data: &[u8]) -> usize {
    crate::base64_text::base64_len(data.len())
}

/// `{"id":…,"result":{` + `member` + `":"`: the head of a reply whose first member is a
/// base64 string.
fn base64_head(id: &RequestId, member: &str) -> String {
    let id = serde_json::to_string(id).unwrap_or_else(|_| "null".into());
    format!(r#"{{"id":{id},"result":{{"{member}":""#)
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
fn push_output(s: &mut String, seq: u64, stream: Stream, data: &[u8]) {
    use std::fmt::Write as _;
    let _ = write!(s, r#""seq":{seq},"stream":"{}","chunk":""#, stream.as_str());
    encode_into(data, s);
    s.push('"');
}

/// The reply to `process/read`: the text `jsonrpc::encode_result` gives for the
/// `ReadResult` of `r`, with each chunk's base64 written in place.
pub(crate) fn read_result(id: &RequestId, r: ReadOutcome) -> OutMsg {
    OutMsg::Text(read_result_text(id, &r))
}

fn read_result_text(id: &RequestId, r: &ReadOutcome) -> String {
    use std::fmt::Write as _;
    let data: usize = r
        .log
        .chunks
        .iter()
        .map(|(_, _, d)| base64_len(d) + 64)
        .sum();
    result_with(id, data + 160, |s| {
        s.push_str(r#""chunks":["#);
        for (i, (seq, stream, bytes)) in r.log.chunks.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push('{');
            push_output(s, *seq, *stream, bytes);
            s.push('}');
        }
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
    })
}

/// Encodes a process event as its notification.
pub(crate) fn process_event(ev: &ProcessEvent) -> String {
    let id = serde_json::to_string(ev.process_id.as_ref()).unwrap_or_else(|_| "\"\"".into());
    match &ev.event.kind {
        EventKind::Output { stream, data } => {
            let mut s = String::with_capacity(96 + id.len() + base64_len(data));
            s.push_str(r#"{"method":"process/output","params":{"processId":"#);
            s.push_str(&id);
            s.push(',');
            push_output(&mut s, ev.event.seq, *stream, data);
            s.push_str("}}");
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
                        assert_eq!(read_result_text(&id, &outcome), encode_result(&id, &typed));
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
