//! Checked relay frames: decode one WebSocket binary message into a [`Frame`], or encode one.
//!
//! [`proto`] holds the raw `codex.exec_server.relay.v1` messages; this module applies every rule
//! spec §10.3 gives before a frame reaches a stream, and the same rules before one is sent, so we
//! never emit a frame upstream would drop. An invalid inbound frame is dropped and logged by the
//! caller; it does not reset its stream (spec §10.3).
//!
//! Limits enforced here: an encoded frame is at most [`MAX_ENCODED_FRAME_LEN`] bytes (the
//! WebSocket message limit of Noise relay sockets, §10.2); a stream id is 1 to
//! [`MAX_STREAM_ID_LEN`] bytes without surrounding whitespace; a reset reason is 1 to
//! [`MAX_RESET_REASON_LEN`] bytes. Noise message sizes (at most 65 535 bytes) are checked by the
//! Noise layer, whose violations reset the stream instead of being dropped.

pub mod proto;

use std::fmt;

use prost::Message as _;

use proto::relay_message_frame::Body;

/// The only relay frame version (`RelayMessageFrame.version`).
pub const RELAY_FRAME_VERSION: u32 = 1;
/// Longest `stream_id`, in bytes.
pub const MAX_STREAM_ID_LEN: usize = 128;
/// Longest `RelayReset.reason`, in bytes.
pub const MAX_RESET_REASON_LEN: usize = 256;
/// Largest encoded frame, in bytes: the 256 KiB WebSocket frame and message limit of Noise relay
/// sockets (spec §10.2). Checked before decoding, so a larger message costs no allocation.
pub const MAX_ENCODED_FRAME_LEN: usize = 256 * 1024;
/// Read buffer of a relay socket's WebSocket (tungstenite's `read_buffer_size`, 128 KiB by
/// default). tungstenite zero-fills the free part of its read buffer, up to this much, before
/// every read, including reads that find nothing: at 128 KiB that was ~12 % of a
/// rendezvous's CPU on small messages (docs/benchmarks.md, remote mode). Larger frames are
/// read in several reads, which costs less than zeroing.
pub const SOCKET_READ_BUFFER: usize = 16 * 1024;

/// Why a relay frame was rejected. Messages fixed by the spec are copied exactly.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The encoded frame is over [`MAX_ENCODED_FRAME_LEN`].
    #[error("relay message frame is {len} bytes, over the {MAX_ENCODED_FRAME_LEN}-byte limit")]
    TooLarge {
        /// Encoded length.
        len: usize,
    },
    /// The bytes are not a `RelayMessageFrame` (bad varint, invalid UTF-8 string, truncation...).
    #[error("failed to decode relay message frame")]
    Decode(#[source] prost::DecodeError),
    /// `version` is not [`RELAY_FRAME_VERSION`].
    #[error("unsupported relay message frame version {0}")]
    UnsupportedVersion(u32),
    /// The stream id is invalid.
    #[error(transparent)]
    StreamId(#[from] StreamIdError),
    /// No `body` field is set.
    #[error("relay message frame is missing body")]
    MissingBody,
    /// `RelayData` is segmented; only `segment_index == 0`, `segment_count == 1` is allowed.
    #[error("relay data segment {index} of {count} is not supported (only 0 of 1)")]
    SegmentedData {
        /// `segment_index`.
        index: u32,
        /// `segment_count`.
        count: u32,
    },
    /// `RelayData.payload` is empty.
    #[error("relay data message frame is missing payload")]
    EmptyDataPayload,
    /// `RelayReset.reason` is empty.
    #[error("relay reset message frame is missing reason")]
    EmptyResetReason,
    /// `RelayReset.reason` is over [`MAX_RESET_REASON_LEN`].
    #[error("relay reset reason is {len} bytes, over the {MAX_RESET_REASON_LEN}-byte limit")]
    ResetReasonTooLong {
        /// Reason length in bytes.
        len: usize,
    },
    /// `RelayHandshake.payload` is empty.
    #[error("relay handshake message frame is missing payload")]
    EmptyHandshakePayload,
}

/// Why a stream id was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamIdError {
    /// The id is empty.
    #[error("relay message frame is missing stream id")]
    Empty,
    /// The id starts or ends with whitespace (Unicode `White_Space`, as `str::trim` sees it).
    #[error("relay message frame stream id has surrounding whitespace")]
    Whitespace,
    /// The id is over [`MAX_STREAM_ID_LEN`] bytes.
    #[error(
        "relay message frame stream id is {len} bytes, over the {MAX_STREAM_ID_LEN}-byte limit"
    )]
    TooLong {
        /// Length in bytes.
        len: usize,
    },
}

/// A valid virtual stream id: 1 to [`MAX_STREAM_ID_LEN`] bytes, no surrounding whitespace.
/// Harnesses pick a UUID v4 string (spec §10.4).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(String);

impl StreamId {
    /// Checks and wraps a stream id.
    pub fn new(id: impl Into<String>) -> Result<Self, StreamIdError> {
        let id = id.into();
        if id.is_empty() {
            return Err(StreamIdError::Empty);
        }
        if id.len() > MAX_STREAM_ID_LEN {
            return Err(StreamIdError::TooLong { len: id.len() });
        }
        if id.trim() != id {
            return Err(StreamIdError::Whitespace);
        }
        Ok(Self(id))
    }

    /// Wraps an id this crate generated and knows to be valid.
    pub(crate) fn from_trusted(id: String) -> Self {
        debug_assert!(Self::new(id.clone()).is_ok());
        Self(id)
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for StreamId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The checked body of a relay frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameBody {
    /// A record: `seq` and a non-empty payload (Noise ciphertext). Always one segment on the wire.
    Data {
        /// Per-direction sequence number, from 0.
        seq: u32,
        /// The record bytes, never empty.
        payload: Vec<u8>,
    },
    /// `RelayAck`: ignored by 0.169.0 executors.
    Ack,
    /// `RelayResume`: the first frame of a harness stream (`next_seq` 0).
    Resume {
        /// The next sequence number the sender expects.
        next_seq: u32,
    },
    /// `RelayReset`: the stream is torn down.
    Reset {
        /// 1 to [`MAX_RESET_REASON_LEN`] bytes.
        reason: String,
    },
    /// `RelayHeartbeat`: ignored by 0.169.0 executors.
    Heartbeat,
    /// `RelayHandshake`: a Noise handshake message, never empty.
    Handshake {
        /// The handshake message.
        payload: Vec<u8>,
    },
}

impl FrameBody {
    /// A short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            FrameBody::Data { .. } => "data",
            FrameBody::Ack => "ack",
            FrameBody::Resume { .. } => "resume",
            FrameBody::Reset { .. } => "reset",
            FrameBody::Heartbeat => "heartbeat",
            FrameBody::Handshake { .. } => "handshake",
        }
    }
}

/// A checked relay frame (version 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The virtual stream.
    pub stream_id: StreamId,
    /// Cumulative ack; 0 (absent) in 0.169.0, carried for newer peers.
    pub ack: u32,
    /// Selective ack bitmap; 0 (absent) in 0.169.0, carried for newer peers.
    pub ack_bits: u32,
    /// What the frame carries.
    pub body: FrameBody,
}

impl Frame {
    /// A frame with `ack` and `ack_bits` 0, as 0.169.0 sends them.
    pub fn new(stream_id: StreamId, body: FrameBody) -> Self {
        Self {
            stream_id,
            ack: 0,
            ack_bits: 0,
            body,
        }
    }

    /// Decodes and checks one WebSocket binary message.
    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        if bytes.len() > MAX_ENCODED_FRAME_LEN {
            return Err(FrameError::TooLarge { len: bytes.len() });
        }
        let raw = proto::RelayMessageFrame::decode(bytes).map_err(FrameError::Decode)?;
        Self::from_proto(raw)
    }

    /// Checks a raw frame and converts it.
    pub fn from_proto(raw: proto::RelayMessageFrame) -> Result<Self, FrameError> {
        if raw.version != RELAY_FRAME_VERSION {
            return Err(FrameError::UnsupportedVersion(raw.version));
        }
        let stream_id = StreamId::new(raw.stream_id)?;
        let body = match raw.body.ok_or(FrameError::MissingBody)? {
            Body::Data(d) => FrameBody::Data {
                seq: d.seq,
                payload: d.payload,
            }
            .checked_data(d.segment_index, d.segment_count)?,
            Body::AckFrame(_) => FrameBody::Ack,
            Body::Resume(r) => FrameBody::Resume {
                next_seq: r.next_seq,
            },
            Body::Reset(r) => FrameBody::Reset { reason: r.reason },
            Body::Heartbeat(_) => FrameBody::Heartbeat,
            Body::Handshake(h) => FrameBody::Handshake { payload: h.payload },
        };
        check_body(&body)?;
        Ok(Self {
            stream_id,
            ack: raw.ack,
            ack_bits: raw.ack_bits,
            body,
        })
    }

    /// The raw wire form of this frame.
    pub fn to_proto(&self) -> proto::RelayMessageFrame {
        let body = match &self.body {
            FrameBody::Data { seq, payload } => Body::Data(proto::RelayData {
                seq: *seq,
                segment_index: 0,
                segment_count: 1,
                payload: payload.clone(),
            }),
            FrameBody::Ack => Body::AckFrame(proto::RelayAck {}),
            FrameBody::Resume { next_seq } => Body::Resume(proto::RelayResume {
                next_seq: *next_seq,
            }),
            FrameBody::Reset { reason } => Body::Reset(proto::RelayReset {
                reason: reason.clone(),
            }),
            FrameBody::Heartbeat => Body::Heartbeat(proto::RelayHeartbeat {}),
            FrameBody::Handshake { payload } => Body::Handshake(proto::RelayHandshake {
                payload: payload.clone(),
            }),
        };
        proto::RelayMessageFrame {
            version: RELAY_FRAME_VERSION,
            stream_id: self.stream_id.0.clone(),
            ack: self.ack,
            ack_bits: self.ack_bits,
            body: Some(body),
        }
    }

    /// Checks and encodes the frame for one WebSocket binary message. Fails on a body the peer
    /// would drop (empty payload, bad reset reason) or an encoding over
    /// [`MAX_ENCODED_FRAME_LEN`].
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        check_body(&self.body)?;
        let raw = self.to_proto();
        let len = raw.encoded_len();
        if len > MAX_ENCODED_FRAME_LEN {
            return Err(FrameError::TooLarge { len });
        }
        Ok(raw.encode_to_vec())
    }
}

impl FrameBody {
    fn checked_data(self, index: u32, count: u32) -> Result<Self, FrameError> {
        if index != 0 || count != 1 {
            return Err(FrameError::SegmentedData { index, count });
        }
        Ok(self)
    }
}

fn check_body(body: &FrameBody) -> Result<(), FrameError> {
    match body {
        FrameBody::Data { payload, .. } if payload.is_empty() => Err(FrameError::EmptyDataPayload),
        FrameBody::Reset { reason } if reason.is_empty() => Err(FrameError::EmptyResetReason),
        FrameBody::Reset { reason } if reason.len() > MAX_RESET_REASON_LEN => {
            Err(FrameError::ResetReasonTooLong { len: reason.len() })
        }
        FrameBody::Handshake { payload } if payload.is_empty() => {
            Err(FrameError::EmptyHandshakePayload)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sid() -> StreamId {
        StreamId::new("6f1c2a2e-4f43-4b43-9a0e-3f1d8f0e7c11").unwrap()
    }

    fn raw(body: Option<Body>) -> proto::RelayMessageFrame {
        proto::RelayMessageFrame {
            version: 1,
            stream_id: "s".into(),
            ack: 0,
            ack_bits: 0,
            body,
        }
    }

    fn decode_raw(raw: proto::RelayMessageFrame) -> Result<Frame, FrameError> {
        Frame::decode(&raw.encode_to_vec())
    }

    #[test]
    fn every_body_round_trips() {
        let bodies = [
            FrameBody::Data {
                seq: 7,
                payload: vec![1, 2, 3],
            },
            FrameBody::Ack,
            FrameBody::Resume { next_seq: 0 },
            FrameBody::Reset {
                reason: "noise_relay_protocol_error".into(),
            },
            FrameBody::Heartbeat,
            FrameBody::Handshake {
                payload: vec![9; 3577],
            },
        ];
        for body in bodies {
            let frame = Frame {
                stream_id: sid(),
                ack: 3,
                ack_bits: 0b101,
                body,
            };
            let bytes = frame.encode().unwrap();
            assert_eq!(Frame::decode(&bytes).unwrap(), frame);
        }
    }

    #[test]
    fn encoding_matches_the_proto3_wire_bytes() {
        // resume{next_seq:0}: version=1 (08 01), stream_id "ab" (12 02 61 62), empty resume
        // message at tag 7 (3a 00); zero fields (ack, ack_bits, next_seq) are omitted.
        let frame = Frame::new(
            StreamId::new("ab").unwrap(),
            FrameBody::Resume { next_seq: 0 },
        );
        assert_eq!(
            frame.encode().unwrap(),
            [0x08, 0x01, 0x12, 0x02, b'a', b'b', 0x3a, 0x00]
        );
        // data{seq:0, segment_count:1, payload:[0xff]}: tag 5 (2a), inner 18 01 (count) 22 01 ff.
        let frame = Frame::new(
            StreamId::new("ab").unwrap(),
            FrameBody::Data {
                seq: 0,
                payload: vec![0xff],
            },
        );
        assert_eq!(
            frame.encode().unwrap(),
            [0x08, 0x01, 0x12, 0x02, b'a', b'b', 0x2a, 0x05, 0x18, 0x01, 0x22, 0x01, 0xff]
        );
        // handshake at tag 10 (52), reset at tag 8 (42).
        let hs = Frame::new(
            StreamId::new("ab").unwrap(),
            FrameBody::Handshake { payload: vec![7] },
        );
        assert_eq!(hs.encode().unwrap()[6..], [0x52, 0x03, 0x0a, 0x01, 7]);
        let reset = Frame::new(
            StreamId::new("ab").unwrap(),
            FrameBody::Reset { reason: "x".into() },
        );
        assert_eq!(reset.encode().unwrap()[6..], [0x42, 0x03, 0x0a, 0x01, b'x']);
    }

    #[test]
    fn decode_rejects_wrong_version() {
        let mut r = raw(Some(Body::Heartbeat(proto::RelayHeartbeat {})));
        r.version = 2;
        let err = decode_raw(r).unwrap_err();
        assert!(matches!(err, FrameError::UnsupportedVersion(2)));
        assert_eq!(err.to_string(), "unsupported relay message frame version 2");
        let mut r = raw(Some(Body::Heartbeat(proto::RelayHeartbeat {})));
        r.version = 0;
        assert!(matches!(
            decode_raw(r),
            Err(FrameError::UnsupportedVersion(0))
        ));
    }

    #[test]
    fn decode_rejects_bad_stream_ids() {
        for (id, want) in [
            (String::new(), StreamIdError::Empty),
            (" s".to_string(), StreamIdError::Whitespace),
            ("s\n".to_string(), StreamIdError::Whitespace),
            ("x".repeat(129), StreamIdError::TooLong { len: 129 }),
        ] {
            let mut r = raw(Some(Body::Heartbeat(proto::RelayHeartbeat {})));
            r.stream_id = id;
            match decode_raw(r) {
                Err(FrameError::StreamId(got)) => assert_eq!(got, want),
                other => panic!("expected {want:?}, got {other:?}"),
            }
        }
        assert!(StreamId::new("x".repeat(128)).is_ok());
        assert!(StreamId::new("a b").is_ok());
    }

    #[test]
    fn decode_rejects_missing_body() {
        let err = decode_raw(raw(None)).unwrap_err();
        assert!(matches!(err, FrameError::MissingBody));
        assert_eq!(err.to_string(), "relay message frame is missing body");
    }

    #[test]
    fn decode_rejects_segmented_or_empty_data() {
        let data = |index, count, payload: &[u8]| {
            raw(Some(Body::Data(proto::RelayData {
                seq: 0,
                segment_index: index,
                segment_count: count,
                payload: payload.to_vec(),
            })))
        };
        assert!(matches!(
            decode_raw(data(1, 2, b"x")),
            Err(FrameError::SegmentedData { index: 1, count: 2 })
        ));
        assert!(matches!(
            decode_raw(data(0, 0, b"x")),
            Err(FrameError::SegmentedData { index: 0, count: 0 })
        ));
        assert!(matches!(
            decode_raw(data(0, 1, b"")),
            Err(FrameError::EmptyDataPayload)
        ));
        assert!(decode_raw(data(0, 1, b"x")).is_ok());
    }

    #[test]
    fn decode_rejects_bad_reset_reasons() {
        let reset = |reason: String| raw(Some(Body::Reset(proto::RelayReset { reason })));
        assert!(matches!(
            decode_raw(reset(String::new())),
            Err(FrameError::EmptyResetReason)
        ));
        assert!(matches!(
            decode_raw(reset("r".repeat(257))),
            Err(FrameError::ResetReasonTooLong { len: 257 })
        ));
        assert!(decode_raw(reset("r".repeat(256))).is_ok());
    }

    #[test]
    fn decode_rejects_empty_handshake() {
        let r = raw(Some(Body::Handshake(proto::RelayHandshake {
            payload: vec![],
        })));
        let err = decode_raw(r).unwrap_err();
        assert_eq!(
            err.to_string(),
            "relay handshake message frame is missing payload"
        );
    }

    #[test]
    fn decode_rejects_oversize_and_garbage() {
        assert!(matches!(
            Frame::decode(&vec![0; MAX_ENCODED_FRAME_LEN + 1]),
            Err(FrameError::TooLarge { .. })
        ));
        // Truncated length-delimited stream id.
        assert!(matches!(
            Frame::decode(&[0x08, 0x01, 0x12, 0x05, b'a']),
            Err(FrameError::Decode(_))
        ));
        // Invalid UTF-8 in the stream id.
        assert!(matches!(
            Frame::decode(&[0x08, 0x01, 0x12, 0x01, 0xff, 0x3a, 0x00]),
            Err(FrameError::Decode(_))
        ));
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let mut bytes = Frame::new(sid(), FrameBody::Heartbeat).encode().unwrap();
        bytes.extend_from_slice(&[0xa0, 0x06, 0x01]); // field 100, varint 1
        assert_eq!(Frame::decode(&bytes).unwrap().body, FrameBody::Heartbeat);
    }

    #[test]
    fn encode_refuses_frames_the_peer_would_drop() {
        let empty = Frame::new(
            sid(),
            FrameBody::Data {
                seq: 0,
                payload: vec![],
            },
        );
        assert!(matches!(empty.encode(), Err(FrameError::EmptyDataPayload)));
        let huge = Frame::new(
            sid(),
            FrameBody::Handshake {
                payload: vec![1; MAX_ENCODED_FRAME_LEN],
            },
        );
        assert!(matches!(huge.encode(), Err(FrameError::TooLarge { .. })));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Frame::decode(&bytes);
        }

        #[test]
        fn valid_data_frames_round_trip(seq in any::<u32>(), ack in any::<u32>(), payload in proptest::collection::vec(any::<u8>(), 1..256), id in "[a-z0-9-]{1,128}") {
            let frame = Frame { stream_id: StreamId::new(id).unwrap(), ack, ack_bits: 0, body: FrameBody::Data { seq, payload } };
            prop_assert_eq!(Frame::decode(&frame.encode().unwrap()).unwrap(), frame);
        }
    }
}
