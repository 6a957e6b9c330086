//! Fuzz targets on the stable toolchain for the relay wire (spec §10.3–§10.5): the relay frame
//! decoder, the record framing (length-prefixed messages cut into ≤ 60 KiB records, reassembly,
//! the reorder window) through a real Noise channel, and the executor's per-socket state machine
//! fed hostile frames. Each runs for a time budget with `arbtest`, like
//! `crates/server/tests/fuzz.rs`.
//!
//! The budget per target is `EXEC_SERVER_FUZZ_SECONDS` (default 1 s; CI's fuzz step sets more).
//! A finding panics with the seed that reproduces it: rerun the one target with
//! `ARBTEST_SEED=0x...` (add `EXEC_SERVER_FUZZ_MINIMIZE=1` to shrink it).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use arbitrary::Unstructured;
use exec_server_relay::executor::{
    Action, ExecutorRelay, MAX_ACTIVE_STREAMS, MAX_PENDING_VALIDATIONS,
};
use exec_server_relay::frame::proto::{self, relay_message_frame::Body};
use exec_server_relay::frame::{
    Frame, FrameBody, StreamId, MAX_ENCODED_FRAME_LEN, MAX_RESET_REASON_LEN,
};
use exec_server_relay::harness::{new_stream_id, ConnectInfo, HarnessStream};
use exec_server_relay::noise::{
    prologue, read_request, Initiator, StaticIdentity, MAX_NOISE_MESSAGE_LEN, TAG_LEN,
};
use exec_server_relay::ordering::MAX_REORDER_GAP;
use exec_server_relay::record::{
    frame_message, records, MessageReader, RecordError, LENGTH_PREFIX_LEN, MAX_MESSAGE_LEN,
    MAX_RECORD_PLAINTEXT_LEN,
};
use exec_server_relay::stream::SecureStream;
use exec_server_relay::PROTOCOL_ERROR_RESET_REASON;
use prost::Message as _;

fn budget() -> Duration {
    let secs = std::env::var("EXEC_SERVER_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(1.0);
    Duration::from_secs_f64(secs.max(0.01))
}

/// Runs `property` on arbitrary data for the budget (or once, for `ARBTEST_SEED`).
fn fuzz(property: impl FnMut(&mut Unstructured<'_>) -> arbitrary::Result<()>) {
    let run = arbtest::arbtest(property).size_max(1 << 14);
    let minimize = std::env::var_os("EXEC_SERVER_FUZZ_MINIMIZE").is_some();
    match std::env::var("ARBTEST_SEED") {
        Ok(_) if minimize => run.minimize().budget(budget()).run(),
        Ok(_) => run.run(),
        Err(_) => run.budget(budget()).run(),
    }
}

/// Mutates a seed (or, now and then, raw bytes): bit flips, inserted, replaced, deleted,
/// duplicated and spliced ranges, dictionary tokens.
fn mutate(
    u: &mut Unstructured<'_>,
    seeds: &[Vec<u8>],
    dict: &[&[u8]],
) -> arbitrary::Result<Vec<u8>> {
    let mut data: Vec<u8> = if u.ratio(1, 10)? {
        u.arbitrary()?
    } else {
        u.choose(seeds)?.clone()
    };
    let rounds = u.int_in_range(0..=6)?;
    for _ in 0..rounds {
        let len = data.len();
        let at = u.int_in_range(0..=len)?;
        match u.int_in_range(0..=6)? {
            0 if len > 0 => {
                let i = at.min(len - 1);
                data[i] ^= 1 << u.int_in_range(0..=7)?;
            }
            1 => {
                let b = u.arbitrary::<u8>()?;
                data.insert(at, b);
            }
            2 if len > 0 => {
                let i = at.min(len - 1);
                data[i] = u.arbitrary()?;
            }
            3 => {
                let end = u.int_in_range(at..=len.min(at + 16))?;
                data.drain(at..end);
            }
            4 => {
                let token = u.choose(dict)?;
                data.splice(at..at, token.iter().copied());
            }
            5 => {
                let end = u.int_in_range(at..=len.min(at + 32))?;
                let chunk = data[at..end].to_vec();
                let to = u.int_in_range(0..=len)?;
                data.splice(to..to, chunk);
            }
            _ => {
                let other = u.choose(seeds)?;
                let from = u.int_in_range(0..=other.len())?;
                let end = u.int_in_range(from..=other.len())?;
                data.splice(at..at, other[from..end].iter().copied());
            }
        }
    }
    Ok(data)
}

// ---------------------------------------------------------------------------------------------
// Relay frames

fn raw_frame(stream_id: &str, body: Option<Body>) -> proto::RelayMessageFrame {
    proto::RelayMessageFrame {
        version: 1,
        stream_id: stream_id.into(),
        ack: 0,
        ack_bits: 0,
        body,
    }
}

fn raw_data(seq: u32, index: u32, count: u32, payload: &[u8]) -> Body {
    Body::Data(proto::RelayData {
        seq,
        segment_index: index,
        segment_count: count,
        payload: payload.to_vec(),
    })
}

/// Valid frames of every kind, and frames each rule of spec §10.3 rejects.
fn frame_seeds() -> Vec<Vec<u8>> {
    let id = "6f1c2a2e-4f43-4b43-9a0e-3f1d8f0e7c11";
    let mut seeds: Vec<proto::RelayMessageFrame> = vec![
        raw_frame(id, Some(Body::Resume(proto::RelayResume { next_seq: 0 }))),
        raw_frame(
            id,
            Some(Body::Handshake(proto::RelayHandshake {
                payload: vec![0x5a; 64],
            })),
        ),
        raw_frame(
            id,
            Some(raw_data(0, 0, 1, b"ciphertext-and-a-tag-0123456789")),
        ),
        raw_frame(id, Some(raw_data(u32::MAX, 0, 1, &[0xff]))),
        raw_frame(
            id,
            Some(Body::Reset(proto::RelayReset {
                reason: PROTOCOL_ERROR_RESET_REASON.into(),
            })),
        ),
        raw_frame(id, Some(Body::AckFrame(proto::RelayAck {}))),
        raw_frame(id, Some(Body::Heartbeat(proto::RelayHeartbeat {}))),
        // Invalid: segmented or empty data, bad reset reasons, empty handshake, no body.
        raw_frame(id, Some(raw_data(1, 1, 2, b"x"))),
        raw_frame(id, Some(raw_data(0, 0, 1, b""))),
        raw_frame(
            id,
            Some(Body::Reset(proto::RelayReset {
                reason: String::new(),
            })),
        ),
        raw_frame(
            id,
            Some(Body::Reset(proto::RelayReset {
                reason: "r".repeat(MAX_RESET_REASON_LEN + 1),
            })),
        ),
        raw_frame(
            id,
            Some(Body::Handshake(proto::RelayHandshake { payload: vec![] })),
        ),
        raw_frame(id, None),
        // Invalid stream ids.
        raw_frame("", Some(Body::Heartbeat(proto::RelayHeartbeat {}))),
        raw_frame(" s", Some(Body::Heartbeat(proto::RelayHeartbeat {}))),
        raw_frame(
            &"x".repeat(129),
            Some(Body::Heartbeat(proto::RelayHeartbeat {})),
        ),
    ];
    let mut acked = raw_frame(id, Some(raw_data(7, 0, 1, b"\x01\x02")));
    acked.ack = 3;
    acked.ack_bits = 0b1011;
    seeds.push(acked);
    let mut v2 = raw_frame(id, Some(Body::Heartbeat(proto::RelayHeartbeat {})));
    v2.version = 2;
    seeds.push(v2);
    let mut out: Vec<Vec<u8>> = seeds.iter().map(|f| f.encode_to_vec()).collect();
    // An unknown field (100, varint) after a valid frame.
    let mut unknown = out[0].clone();
    unknown.extend_from_slice(&[0xa0, 0x06, 0x01]);
    out.push(unknown);
    out
}

/// Protobuf tokens: field keys of every tag and wire type, long and overlong varints, lengths.
const PROTO_DICT: &[&[u8]] = &[
    &[0x08],
    &[0x08, 0x01],
    &[0x08, 0x02],
    &[0x12],
    &[0x12, 0x00],
    &[0x12, 0x01, b' '],
    &[0x18],
    &[0x20],
    &[0x2a],
    &[0x2a, 0x00],
    &[0x32, 0x00],
    &[0x3a, 0x00],
    &[0x42],
    &[0x4a, 0x00],
    &[0x52],
    &[0x52, 0x01, 0x00],
    &[0x09],
    &[0x0d],
    &[0x0b],
    &[0x0c],
    &[0x0f],
    &[0x10, 0x01],
    &[0x18, 0x01],
    &[0x22, 0x00],
    &[0x7f],
    &[0xff, 0x7f],
    &[0xff, 0xff, 0xff, 0xff, 0x0f],
    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
    &[
        0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
    ],
    &[0xc3, 0xa9],
    &[0xff],
    &[0xe2, 0x80, 0xa8],
];

/// Checks what spec §10.3 promises of every decoded frame.
fn assert_valid(frame: &Frame) {
    let id = frame.stream_id.as_str();
    assert!(
        StreamId::new(id).is_ok(),
        "decoded an invalid stream id {id:?}"
    );
    match &frame.body {
        FrameBody::Data { payload, .. } => assert!(!payload.is_empty(), "empty data payload"),
        FrameBody::Handshake { payload } => assert!(!payload.is_empty(), "empty handshake"),
        FrameBody::Reset { reason } => assert!(
            !reason.is_empty() && reason.len() <= MAX_RESET_REASON_LEN,
            "reset reason of {} bytes",
            reason.len()
        ),
        FrameBody::Ack | FrameBody::Resume { .. } | FrameBody::Heartbeat => {}
    }
}

/// Decoding arbitrary bytes never panics. What decodes is a valid frame (§10.3), agrees with
/// the raw protobuf decoding, re-encodes into no more bytes than it came in, and the
/// re-encoding decodes to the same frame and encodes to the same bytes again.
#[test]
fn fuzz_relay_frame_decode() {
    let seeds = frame_seeds();
    fuzz(|u| {
        let mut input = mutate(u, &seeds, PROTO_DICT)?;
        if u.ratio(1, 64)? {
            // Past the 256 KiB limit with an unknown length-delimited field: refused unread.
            let pad = MAX_ENCODED_FRAME_LEN + 1 - input.len().min(MAX_ENCODED_FRAME_LEN);
            input.extend_from_slice(&[0xa2, 0x06]);
            input.extend(std::iter::repeat_n(0x80, 3));
            input.push(0x01);
            input.resize(input.len() + pad, 0);
        }
        let decoded = Frame::decode(&input);
        let frame = match decoded {
            Err(e) => {
                let _ = e.to_string();
                return Ok(());
            }
            Ok(frame) => frame,
        };
        assert!(input.len() <= MAX_ENCODED_FRAME_LEN);
        assert_valid(&frame);
        let raw = proto::RelayMessageFrame::decode(&input[..]).expect("raw decode agrees");
        assert_eq!(
            Frame::from_proto(raw).expect("raw frame checks"),
            frame,
            "decode and from_proto disagree"
        );
        let bytes = frame.encode().expect("a decoded frame re-encodes");
        assert!(
            bytes.len() <= input.len(),
            "re-encoding grew {} -> {} bytes",
            input.len(),
            bytes.len()
        );
        let again = Frame::decode(&bytes).expect("a re-encoded frame decodes");
        assert_eq!(again, frame);
        assert_eq!(again.encode().expect("encodes"), bytes);
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// Record framing and the reorder window

/// A message of an interesting length: mostly small, sometimes around a record boundary or a
/// few records long. Small messages take their bytes from the input, large ones a pattern.
fn message(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<u8>> {
    let r = MAX_RECORD_PLAINTEXT_LEN;
    let len = match u.int_in_range(0..=9)? {
        0..=5 => u.int_in_range(1..=64)?,
        6 => u.int_in_range(65..=4096)?,
        7 => u.int_in_range(r - 2 * LENGTH_PREFIX_LEN..=r + 2 * LENGTH_PREFIX_LEN)?,
        8 => u.int_in_range(2 * r - 8..=2 * r + 8)?,
        _ => u.int_in_range(1..=3 * r + 100)?,
    };
    if len <= 64 {
        let mut m = Vec::with_capacity(len);
        for _ in 0..len {
            m.push(u.arbitrary()?);
        }
        return Ok(m);
    }
    let seed = u.arbitrary::<u8>()?;
    Ok((0..len)
        .map(|i| seed.wrapping_add((i % 251) as u8))
        .collect())
}

fn messages(u: &mut Unstructured<'_>, max: usize) -> arbitrary::Result<Vec<Vec<u8>>> {
    let n = u.int_in_range(1..=max)?;
    (0..n).map(|_| message(u)).collect()
}

/// Cuts `bytes` into records of 1 to 60 KiB at arbitrary points (whole records once the input
/// runs out).
fn arbitrary_cuts<'a>(
    u: &mut Unstructured<'_>,
    bytes: &'a [u8],
) -> arbitrary::Result<Vec<&'a [u8]>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let max = MAX_RECORD_PLAINTEXT_LEN.min(rest.len());
        let n = if u.is_empty() {
            max
        } else {
            match u.int_in_range(0..=3)? {
                0 => u.int_in_range(1..=max.min(8))?,
                1 => max,
                _ => u.int_in_range(1..=max)?,
            }
        };
        out.push(&rest[..n]);
        rest = &rest[n..];
    }
    Ok(out)
}

/// A completed handshake between fixed identities: (harness side, executor side).
fn secure_pair(
    executor: &StaticIdentity,
    harness: &StaticIdentity,
    stream: &str,
) -> (SecureStream, SecureStream) {
    let pro = prologue("e2e", "reg-1", stream);
    let (init, msg1) =
        Initiator::start(harness, executor.public_key(), &pro, "auth").expect("msg1");
    let (msg2, exec_t) = read_request(executor, &pro, &msg1)
        .expect("read msg1")
        .accept()
        .expect("msg2");
    let harness_t = init.finish(&msg2).expect("finish");
    (SecureStream::new(harness_t), SecureStream::new(exec_t))
}

fn data(body: FrameBody) -> (u32, Vec<u8>) {
    match body {
        FrameBody::Data { seq, payload } => (seq, payload),
        other => panic!("seal produced a non-data body: {other:?}"),
    }
}

/// Shuffles `items` in place with the input's choices.
fn shuffle<T>(u: &mut Unstructured<'_>, items: &mut [T]) -> arbitrary::Result<()> {
    for i in (1..items.len()).rev() {
        let j = u.int_in_range(0..=i)?;
        items.swap(i, j);
    }
    Ok(())
}

/// Arbitrary message sequences survive the record framing whatever the record cuts (the reader
/// ends idle), and survive a real Noise stream whatever the delivery order within the reorder
/// window, with replays of delivered or buffered records mixed in.
#[test]
fn fuzz_record_framing_round_trip() {
    let executor = StaticIdentity::generate().expect("identity");
    let harness = StaticIdentity::generate().expect("identity");
    fuzz(|u| {
        let msgs = messages(u, 8)?;
        let mut framed = Vec::new();
        for m in &msgs {
            framed.extend(frame_message(m).expect("frame"));
        }

        // 1. The plaintext framing, with arbitrary cuts of at most 60 KiB.
        let mut reader = MessageReader::new();
        let mut got = Vec::new();
        for record in arbitrary_cuts(u, &framed)? {
            assert!(record.len() <= MAX_RECORD_PLAINTEXT_LEN);
            got.extend(reader.push(record).expect("a well-framed stream parses"));
        }
        assert_eq!(got, msgs, "arbitrary cuts");
        assert!(reader.is_idle());

        // …and with the sender's own cut.
        let mut reader = MessageReader::new();
        let mut got = Vec::new();
        for record in records(&framed) {
            assert!(!record.is_empty() && record.len() <= MAX_RECORD_PLAINTEXT_LEN);
            got.extend(reader.push(record).expect("parses"));
        }
        assert_eq!(got, msgs, "records()");

        // 2. Through the Noise stream, reordered within the window, with replays.
        let (mut h, mut e) = secure_pair(&executor, &harness, "stream-1");
        let mut sealed = Vec::new();
        for m in &msgs {
            for body in h.seal(m).expect("seal") {
                let (seq, payload) = data(body);
                assert_eq!(seq as usize, sealed.len(), "seq counts records from 0");
                assert!(payload.len() <= MAX_RECORD_PLAINTEXT_LEN + TAG_LEN);
                sealed.push((seq, payload));
            }
        }
        // Blocks of at most 16 records (≤ 1 MiB buffered), each shuffled, replays added.
        let mut order = Vec::new();
        let mut i = 0;
        while i < sealed.len() {
            let k = u.int_in_range(1..=16)?.min(sealed.len() - i);
            let mut block: Vec<usize> = (i..i + k).collect();
            shuffle(u, &mut block)?;
            for idx in block {
                order.push(idx);
                if u.ratio(1, 8)? {
                    // A replay of something already delivered or buffered, under its own seq.
                    order.push(u.int_in_range(0..=idx)?);
                }
            }
            i += k;
        }
        let mut got = Vec::new();
        for idx in order {
            let (seq, payload) = sealed[idx].clone();
            got.extend(e.open(seq, payload).expect("an in-window delivery opens"));
        }
        assert_eq!(got, msgs, "through the Noise stream");
        assert!(e.is_at_message_boundary());
        Ok(())
    });
}

/// Arbitrary plaintext records: the reader never panics, fails only on an empty or oversize
/// announced length, and what it yields, framed again, is a prefix of the bytes it was fed.
/// Arbitrary, mutated, reordered, replayed and foreign ciphertext records: the receiving
/// stream never panics, fails with the protocol-error reset, and never yields a message the
/// sender did not send, in order.
#[test]
fn fuzz_hostile_records() {
    let executor = StaticIdentity::generate().expect("identity");
    let harness = StaticIdentity::generate().expect("identity");
    fuzz(|u| {
        // 1. Plaintext records.
        let mut fed = Vec::new();
        let mut reader = MessageReader::new();
        let mut yielded = Vec::new();
        let n = u.int_in_range(0..=8)?;
        for _ in 0..n {
            let mut record: Vec<u8> = u.arbitrary()?;
            if u.ratio(1, 4)? {
                // A plausible length prefix, often announcing more than will come.
                let len: u32 = match u.int_in_range(0..=3)? {
                    0 => 0,
                    1 => u.int_in_range(1..=16)?,
                    2 => MAX_MESSAGE_LEN as u32 + u.int_in_range(0..=1)?,
                    _ => u.arbitrary()?,
                };
                record.splice(0..0, len.to_be_bytes());
            }
            fed.extend_from_slice(&record);
            match reader.push(&record) {
                Ok(msgs) => yielded.extend(msgs),
                Err(RecordError::EmptyMessage) => break,
                Err(RecordError::MessageTooLarge { len }) => {
                    assert!(len > MAX_MESSAGE_LEN);
                    break;
                }
            }
        }
        let mut again = Vec::new();
        for m in &yielded {
            again.extend(frame_message(m).expect("a yielded message is framable"));
        }
        assert!(
            fed.starts_with(&again),
            "the reader yielded bytes it was not fed"
        );

        // 2. Ciphertext records on an established stream.
        let (mut h, mut e) = secure_pair(&executor, &harness, "stream-1");
        let (mut other_h, _) = secure_pair(&executor, &harness, "stream-2");
        let msgs = messages(u, 4)?;
        let mut sealed = Vec::new();
        for m in &msgs {
            sealed.extend(h.seal(m).expect("seal").into_iter().map(data));
        }
        let foreign: Vec<(u32, Vec<u8>)> = other_h
            .seal(b"{\"from\":\"another stream\"}")
            .expect("seal")
            .into_iter()
            .map(data)
            .collect();
        let mut got: Vec<Vec<u8>> = Vec::new();
        let ops = u.int_in_range(1..=24)?;
        for _ in 0..ops {
            let (seq, payload) = match u.int_in_range(0..=6)? {
                // An honest record, in order or not.
                0..=2 => u.choose(&sealed)?.clone(),
                // A record under another seq (replayed or relabelled).
                3 => {
                    let (_, p) = u.choose(&sealed)?.clone();
                    (u.int_in_range(0..=MAX_REORDER_GAP + 2)?, p)
                }
                // A tampered record: bit flip, truncation or extension.
                4 => {
                    let (seq, mut p) = u.choose(&sealed)?.clone();
                    match u.int_in_range(0..=2)? {
                        0 => {
                            let i = u.choose_index(p.len())?;
                            p[i] ^= 1 << u.int_in_range(0..=7)?;
                        }
                        1 => p.truncate(u.int_in_range(0..=p.len())?),
                        _ => p.push(u.arbitrary()?),
                    }
                    (seq, p)
                }
                // A record of another stream.
                5 => u.choose(&foreign)?.clone(),
                // Raw bytes: any length, including empty, short and over the Noise limit.
                _ => {
                    let seq = u.arbitrary()?;
                    let p = if u.ratio(1, 16)? {
                        vec![0; MAX_NOISE_MESSAGE_LEN + 1]
                    } else {
                        u.arbitrary()?
                    };
                    (seq, p)
                }
            };
            match e.open(seq, payload) {
                Ok(msgs) => got.extend(msgs),
                Err(err) => {
                    assert_eq!(err.reset_reason(), PROTOCOL_ERROR_RESET_REASON);
                    let _ = err.to_string();
                    break;
                }
            }
        }
        assert!(
            msgs.starts_with(&got),
            "the stream yielded {} messages that are not a prefix of the {} sent",
            got.len(),
            msgs.len()
        );
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// The executor's state machine under hostile frames

/// One honest harness stream and what crossed it.
struct Honest {
    stream: HarnessStream,
    /// The opening frames (resume, msg1), kept for replays.
    opening: Vec<Frame>,
    /// Messages the harness sealed, in order.
    sent: Vec<Vec<u8>>,
    /// Data frames sealed but not yet delivered, for reordering and replays.
    held: Vec<Frame>,
    /// Data frames already delivered, for replays.
    delivered_frames: Vec<Frame>,
    /// Messages the executor sent on this stream, in order, and those the harness got.
    from_executor: Vec<Vec<u8>>,
    got_from_executor: Vec<Vec<u8>>,
}

struct Relay {
    relay: ExecutorRelay,
    honest: Vec<Honest>,
    /// Messages delivered to the executor's JSON-RPC side since the stream last opened.
    delivered: HashMap<StreamId, Vec<Vec<u8>>>,
    /// Streams waiting for `validated`.
    validating: Vec<StreamId>,
    now: Instant,
}

impl Relay {
    /// Feeds one frame as the socket task does: encode, decode (invalid frames are dropped),
    /// `on_frame`.
    fn feed_bytes(&mut self, bytes: &[u8]) {
        if let Ok(frame) = Frame::decode(bytes) {
            let actions = self.relay.on_frame(frame, self.now);
            self.apply(actions);
        }
    }

    fn feed(&mut self, frame: &Frame) {
        let bytes = frame.encode().expect("test frames encode");
        self.feed_bytes(&bytes);
    }

    /// Checks and carries out the relay's actions; msg2 goes back to its honest harness.
    fn apply(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send(frame) => {
                    frame
                        .encode()
                        .expect("the executor sends only valid frames");
                    if let FrameBody::Reset { reason } = &frame.body {
                        assert_eq!(reason, PROTOCOL_ERROR_RESET_REASON);
                    }
                    self.deliver_to_harness(frame);
                }
                Action::Validate { stream_id, .. } => self.validating.push(stream_id),
                Action::Opened(id) => {
                    self.delivered.insert(id, Vec::new());
                }
                Action::Deliver(id, msgs) => {
                    let sent = self
                        .honest
                        .iter()
                        .find(|h| h.stream.stream_id() == &id)
                        .map(|h| h.sent.clone())
                        .unwrap_or_default();
                    let got = self
                        .delivered
                        .get_mut(&id)
                        .expect("delivery on a stream that was opened");
                    got.extend(msgs);
                    assert!(
                        sent.starts_with(got),
                        "stream {id}: delivered messages the harness never sent (in that order)"
                    );
                }
                Action::Closed(id) => {
                    self.delivered.remove(&id);
                    self.validating.retain(|v| v != &id);
                }
            }
        }
        assert!(self.relay.pending_count() <= MAX_PENDING_VALIDATIONS);
        assert!(self.relay.active_count() <= MAX_ACTIVE_STREAMS);
    }

    /// A frame from the executor reaches the honest harness of its stream, if any.
    fn deliver_to_harness(&mut self, frame: Frame) {
        let Some(h) = self
            .honest
            .iter_mut()
            .find(|h| h.stream.stream_id() == &frame.stream_id)
        else {
            return;
        };
        if let Ok(msgs) = h.stream.on_frame(frame.body) {
            h.got_from_executor.extend(msgs);
            assert!(
                h.from_executor.starts_with(&h.got_from_executor),
                "the harness got messages the executor never sent"
            );
        }
    }
}

/// The executor's per-socket relay fed honest streams mixed with garbage, mutated, reordered,
/// replayed and misdirected frames, guessed stream ids, late or negative validations and
/// expiries: it never panics, stays within its limits, only ever sends valid frames (resets
/// with `noise_relay_protocol_error`), and hands the JSON-RPC side only messages the honest
/// harness sent, in order.
#[test]
fn fuzz_executor_relay_frames() {
    let executor = StaticIdentity::generate().expect("identity");
    let harness = StaticIdentity::generate().expect("identity");
    let connect = ConnectInfo {
        environment_id: "e2e".into(),
        executor_registration_id: "reg-1".into(),
        executor_public_key: executor.public_key().clone(),
        harness_key_authorization: "auth-good".into(),
    };
    let seeds = frame_seeds();
    fuzz(|u| {
        let mut w = Relay {
            relay: ExecutorRelay::new(executor.clone(), "e2e", "reg-1"),
            honest: Vec::new(),
            delivered: HashMap::new(),
            validating: Vec::new(),
            now: Instant::now(),
        };
        let ops = u.int_in_range(1..=40)?;
        for _ in 0..ops {
            match u.int_in_range(0..=13)? {
                // A new honest stream: resume + msg1.
                0 if w.honest.len() < 4 => {
                    let (stream, opening) =
                        HarnessStream::start(&harness, &connect, new_stream_id()).expect("start");
                    for f in &opening {
                        w.feed(f);
                    }
                    w.honest.push(Honest {
                        stream,
                        opening,
                        sent: Vec::new(),
                        held: Vec::new(),
                        delivered_frames: Vec::new(),
                        from_executor: Vec::new(),
                        got_from_executor: Vec::new(),
                    });
                }
                // The registry answers a pending validation (mostly yes).
                1 | 2 if !w.validating.is_empty() => {
                    let i = u.choose_index(w.validating.len())?;
                    let id = w.validating.remove(i);
                    let valid = !u.ratio(1, 5)?;
                    let actions = w.relay.validated(&id, valid);
                    w.apply(actions);
                }
                // The honest harness seals a message; it is delivered now or held back.
                3 | 4 if !w.honest.is_empty() => {
                    let i = u.choose_index(w.honest.len())?;
                    let m = message(u)?;
                    let hold = u.ratio(1, 3)?;
                    let h = &mut w.honest[i];
                    let Ok(frames) = h.stream.send(&m) else {
                        continue;
                    };
                    h.sent.push(m);
                    if hold {
                        h.held.extend(frames);
                    } else {
                        for f in &frames {
                            w.feed(f);
                        }
                        w.honest[i].delivered_frames.extend(frames);
                    }
                }
                // Held frames are released in an arbitrary order.
                5 if w.honest.iter().any(|h| !h.held.is_empty()) => {
                    let i = u.choose_index(w.honest.len())?;
                    let mut held = std::mem::take(&mut w.honest[i].held);
                    shuffle(u, &mut held)?;
                    for f in &held {
                        w.feed(f);
                    }
                    w.honest[i].delivered_frames.extend(held);
                }
                // Replay: a delivered data frame, or the opening frames, again.
                6 if !w.honest.is_empty() => {
                    let i = u.choose_index(w.honest.len())?;
                    let h = &w.honest[i];
                    let frame = if h.delivered_frames.is_empty() || u.ratio(1, 3)? {
                        u.choose(&h.opening)?.clone()
                    } else {
                        u.choose(&h.delivered_frames)?.clone()
                    };
                    w.feed(&frame);
                }
                // A frame of one stream relabelled with another stream's id or another seq,
                // or with its payload tampered with.
                7 if !w.honest.is_empty() => {
                    let i = u.choose_index(w.honest.len())?;
                    let h = &w.honest[i];
                    let pool: Vec<&Frame> = h.delivered_frames.iter().chain(&h.opening).collect();
                    let mut frame = (*u.choose(&pool)?).clone();
                    match u.int_in_range(0..=2)? {
                        0 => {
                            let j = u.choose_index(w.honest.len())?;
                            frame.stream_id = w.honest[j].stream.stream_id().clone();
                        }
                        1 => {
                            if let FrameBody::Data { seq, .. } = &mut frame.body {
                                *seq = seq.wrapping_add(u.int_in_range(1..=70)?);
                            }
                        }
                        _ => match &mut frame.body {
                            FrameBody::Data { payload, .. } | FrameBody::Handshake { payload } => {
                                let k = u.choose_index(payload.len())?;
                                payload[k] ^= 1 << u.int_in_range(0..=7)?;
                            }
                            _ => {}
                        },
                    }
                    w.feed(&frame);
                }
                // A guessed stream id (a known one, or a fresh one) with a garbage body.
                8 => {
                    let id = if !w.honest.is_empty() && u.ratio(1, 2)? {
                        w.honest[u.choose_index(w.honest.len())?]
                            .stream
                            .stream_id()
                            .clone()
                    } else {
                        new_stream_id()
                    };
                    let body = match u.int_in_range(0..=3)? {
                        0 => FrameBody::Data {
                            seq: u.int_in_range(0..=MAX_REORDER_GAP + 1)?,
                            payload: {
                                let mut p: Vec<u8> = u.arbitrary()?;
                                p.push(0);
                                p
                            },
                        },
                        1 => FrameBody::Handshake {
                            payload: {
                                // Around msg1's size, to reach the Noise code, or anything.
                                let len = if u.ratio(1, 2)? {
                                    u.int_in_range(3500..=3700)?
                                } else {
                                    u.int_in_range(1..=200)?
                                };
                                let seed = u.arbitrary::<u8>()?;
                                (0..len).map(|i| seed ^ (i as u8)).collect()
                            },
                        },
                        2 => FrameBody::Reset {
                            reason: "peer-went-away".into(),
                        },
                        _ => FrameBody::Resume {
                            next_seq: u.arbitrary()?,
                        },
                    };
                    w.feed(&Frame::new(id, body));
                }
                // Mutated raw frame bytes.
                9 => {
                    let bytes = mutate(u, &seeds, PROTO_DICT)?;
                    w.feed_bytes(&bytes);
                }
                // Time passes: validations older than 10 s are reset.
                10 => {
                    w.now += Duration::from_secs(u.int_in_range(0..=6)?);
                    let actions = w.relay.expire_validations(w.now);
                    w.apply(actions);
                }
                // The executor's JSON-RPC side answers on a stream (or closes it).
                11 | 12 if !w.honest.is_empty() => {
                    let i = u.choose_index(w.honest.len())?;
                    let id = w.honest[i].stream.stream_id().clone();
                    if u.ratio(1, 8)? {
                        let actions = w.relay.close(&id);
                        w.apply(actions);
                        continue;
                    }
                    let m = message(u)?;
                    if let Ok(actions) = w.relay.send(&id, &m) {
                        w.honest[i].from_executor.push(m);
                        w.apply(actions);
                    }
                }
                // Arbitrary bodies at an honest harness: it never panics.
                13 if !w.honest.is_empty() => {
                    let i = u.choose_index(w.honest.len())?;
                    let bytes = mutate(u, &seeds, PROTO_DICT)?;
                    if let Ok(frame) = Frame::decode(&bytes) {
                        let h = &mut w.honest[i];
                        if let Ok(msgs) = h.stream.on_frame(frame.body) {
                            h.got_from_executor.extend(msgs);
                            assert!(h.from_executor.starts_with(&h.got_from_executor));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    });
}
