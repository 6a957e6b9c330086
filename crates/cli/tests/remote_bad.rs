//! Remote mode under bad input, executor side (spec §10.3–§10.6): the real binary with
//! `--remote` gets malformed and oversize frames, data before the handshake, replayed and
//! reordered records, a harness pinning the wrong executor key, refused, failing, reused and
//! expired authorizations, and a harness naming another stream's id. Each must end in the spec's
//! reset (`noise_relay_protocol_error`), or in the frame being dropped, or (for a WebSocket
//! message over 256 KiB) in the socket being dropped and redialled; nothing may reach the
//! executor's JSON-RPC (every forged request would append to a marker file); and a healthy
//! stream on the same executor socket keeps working throughout.
//!
//! The in-test registry and rendezvous of `remote.rs` carry frames as they are, so the test's
//! harness can say anything on the executor's socket; the last tests run our real rendezvous
//! in-process instead, for the authorizations it issues.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::extract::ws::Message as AxMessage;
use exec_server_relay::frame::{Frame, FrameBody, StreamId};
use exec_server_relay::harness::{new_stream_id, ConnectInfo, HarnessStream};
use exec_server_relay::noise::{StaticIdentity, MAX_NOISE_MESSAGE_LEN};
use exec_server_relay::ordering::MAX_REORDER_GAP;
use exec_server_relay::record::frame_message;
use exec_server_relay::registry::{ConnectRequest, ConnectResponse};
use exec_server_rendezvous::{Config, Limits, Options, Rendezvous};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::Message as TMessage;

use crate::remote::{
    start, start_params, Harness, World, ERROR_AUTH, GARBAGE_AUTH, GOOD_AUTH, SLOW_AUTH,
    STRING_VALID_AUTH,
};
use crate::support::{unb64, BIN};

const RESET: &str = "noise_relay_protocol_error";

/// A file every forged request would append to; it must never appear.
struct Marker {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Marker {
    fn new() -> Marker {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("forged-request-ran");
        Marker { _dir: dir, path }
    }

    fn argv(&self) -> Vec<String> {
        vec![
            "/bin/sh".into(),
            "-c".into(),
            format!("echo ran >> {}", self.path.display()),
        ]
    }

    /// A `process/start` that would append to the marker.
    fn request(&self, rpc: i64, pid: &str) -> Value {
        let argv = self.argv();
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        json!({"id": rpc, "method": "process/start", "params": start_params(pid, &argv)})
    }

    fn lines(&self) -> usize {
        std::fs::read_to_string(&self.path).map_or(0, |t| t.lines().count())
    }

    fn assert_untouched(&self) {
        assert!(
            !self.path.exists(),
            "a forged request reached the executor's JSON-RPC: {} exists",
            self.path.display()
        );
    }
}

/// Runs `echo tag` on the healthy stream and checks its output: the stream still works.
async fn healthy(h: &mut Harness, id: &StreamId, tag: &str) {
    let pid = format!("healthy-{tag}-{}", h.next_id);
    let r = h
        .call(id, "process/start", start_params(&pid, &["echo", tag]))
        .await;
    assert_eq!(r["processId"], pid.as_str(), "{r}");
    let (out, last) = h.read_all(id, &pid).await;
    assert_eq!(out, format!("{tag}\n").as_bytes());
    assert_eq!(last["exitCode"], 0);
    assert!(!h.resets.contains(id), "the healthy stream was reset");
}

/// The executor registered, its socket accepted, and one healthy, initialized stream on it.
async fn healthy_world() -> (World, Harness, StreamId) {
    let (world, h, good, _) = healthy_world_session().await;
    (world, h, good)
}

/// [`healthy_world`] and the healthy stream's session id.
async fn healthy_world_session() -> (World, Harness, StreamId, String) {
    let mut world = start().await;
    let mut h = world.accept().await;
    let good = h.open(GOOD_AUTH).await;
    let sid = h.initialize(&good, None).await;
    healthy(&mut h, &good, "first").await;
    (world, h, good, sid)
}

/// The reply to request `rpc` on stream `id` (notifications and other replies are skipped).
async fn reply(h: &mut Harness, id: &StreamId, rpc: i64) -> Value {
    loop {
        let v = h.recv(id).await;
        if v["id"] == rpc {
            return v;
        }
    }
}

async fn send_raw(h: &mut Harness, bytes: Vec<u8>) {
    h.ws.send(AxMessage::Binary(bytes.into()))
        .await
        .expect("send raw frame");
}

/// Pumps frames until stream `id` was reset.
async fn await_reset(h: &mut Harness, id: &StreamId) {
    while !h.resets.contains(id) {
        h.pump().await;
    }
}

fn validations(world: &World) -> usize {
    world.seen.lock().expect("lock").validations.len()
}

/// Protobuf by hand (the cli tests do not depend on prost): a varint.
fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

/// A varint field.
fn pb_uint(tag: u64, v: u64) -> Vec<u8> {
    let mut out = varint(tag << 3);
    out.extend(varint(v));
    out
}

/// A length-delimited field.
fn pb_bytes(tag: u64, bytes: &[u8]) -> Vec<u8> {
    let mut out = varint((tag << 3) | 2);
    out.extend(varint(bytes.len() as u64));
    out.extend_from_slice(bytes);
    out
}

/// A `RelayMessageFrame` with any version, stream id and body field (tag, encoded message).
fn raw_frame(version: u64, stream_id: &str, body: Option<(u64, Vec<u8>)>) -> Vec<u8> {
    let mut out = pb_uint(1, version);
    out.extend(pb_bytes(2, stream_id.as_bytes()));
    if let Some((tag, message)) = body {
        out.extend(pb_bytes(tag, &message));
    }
    out
}

/// A `RelayData` message.
fn raw_data(seq: u64, index: u64, count: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = pb_uint(1, seq);
    out.extend(pb_uint(2, index));
    out.extend(pb_uint(3, count));
    out.extend(pb_bytes(4, payload));
    out
}

/// The plaintext record a forged request would be if the executor did not decrypt: the JSON
/// framed with its length prefix.
fn plaintext_record(marker: &Marker) -> Vec<u8> {
    let json = serde_json::to_vec(&marker.request(90_000, "forged")).expect("json");
    frame_message(&json).expect("frame")
}

/// Seals `v` on stream `id` without sending it.
fn seal(h: &mut Harness, id: &StreamId, v: &Value) -> Vec<Frame> {
    let bytes = serde_json::to_vec(v).expect("json");
    h.streams
        .get_mut(id)
        .expect("open stream")
        .send(&bytes)
        .expect("seal")
}

fn seq_of(frame: &Frame) -> u32 {
    match &frame.body {
        FrameBody::Data { seq, .. } => *seq,
        other => panic!("not a data frame: {other:?}"),
    }
}

#[tokio::test]
async fn malformed_frames_are_dropped_without_touching_any_stream() {
    let (world, mut h, good) = healthy_world().await;
    let marker = Marker::new();
    let id = good.as_str();
    let forged = plaintext_record(&marker);
    let junk: Vec<(&str, Vec<u8>)> = vec![
        (
            "garbage bytes",
            b"\xff\xfe not a protobuf \x00\x01".to_vec(),
        ),
        ("truncated stream id", vec![0x08, 0x01, 0x12, 0x40, b'a']),
        (
            "invalid UTF-8 stream id",
            vec![0x08, 0x01, 0x12, 0x01, 0xff, 0x3a, 0x00],
        ),
        (
            "version 2 data naming the healthy stream",
            raw_frame(2, id, Some((5, raw_data(0, 0, 1, &forged)))),
        ),
        (
            "version 0 reset of the healthy stream",
            raw_frame(0, id, Some((8, pb_bytes(1, b"bye")))),
        ),
        (
            "unknown body (tag 11)",
            raw_frame(1, id, Some((11, vec![]))),
        ),
        ("no body", raw_frame(1, id, None)),
        (
            "segmented data",
            raw_frame(1, id, Some((5, raw_data(0, 1, 2, &forged)))),
        ),
        (
            "empty data payload",
            raw_frame(1, id, Some((5, raw_data(0, 0, 1, b"")))),
        ),
        ("empty reset reason", raw_frame(1, id, Some((8, vec![])))),
        (
            "reset reason of 257 bytes",
            raw_frame(1, id, Some((8, pb_bytes(1, &[b'r'; 257])))),
        ),
        ("empty handshake", raw_frame(1, id, Some((10, vec![])))),
        (
            "empty stream id",
            raw_frame(1, "", Some((5, raw_data(0, 0, 1, &forged)))),
        ),
        (
            "stream id with surrounding whitespace",
            raw_frame(1, &format!(" {id}"), Some((8, pb_bytes(1, b"bye")))),
        ),
        (
            "stream id of 129 bytes",
            raw_frame(1, &"s".repeat(129), Some((10, pb_bytes(1, b"hs")))),
        ),
    ];
    for (what, bytes) in junk {
        send_raw(&mut h, bytes).await;
        // The executor handles its socket's frames in order: a reset for any of them would
        // arrive before this call's answer.
        healthy(&mut h, &good, "after-junk").await;
        assert!(h.resets.is_empty(), "{what}: a stream was reset");
    }
    h.ws.send(AxMessage::Text(
        serde_json::to_string(&marker.request(90_001, "text"))
            .expect("json")
            .into(),
    ))
    .await
    .expect("send text");
    // Valid frames the executor ignores, naming the healthy stream.
    h.send_frames(vec![
        Frame::new(good.clone(), FrameBody::Ack),
        Frame::new(good.clone(), FrameBody::Heartbeat),
        Frame::new(good.clone(), FrameBody::Resume { next_seq: 7 }),
    ])
    .await;
    healthy(&mut h, &good, "last").await;
    assert!(h.resets.is_empty(), "no stream was reset");
    assert_eq!(validations(&world), 1, "no handshake was attempted");
    marker.assert_untouched();
}

#[tokio::test]
async fn oversize_records_and_handshakes_reset_only_their_stream() {
    let (world, mut h, good) = healthy_world().await;
    let marker = Marker::new();
    // A data record over the 65 535-byte Noise limit (its frame is well under 256 KiB).
    let victim = h.open(GOOD_AUTH).await;
    let mut payload = plaintext_record(&marker);
    payload.resize(MAX_NOISE_MESSAGE_LEN + 1, b' ');
    h.send_frames(vec![Frame::new(
        victim.clone(),
        FrameBody::Data { seq: 0, payload },
    )])
    .await;
    await_reset(&mut h, &victim).await;
    healthy(&mut h, &good, "after-big-record").await;

    // A handshake over the limit: reset before the registry is asked.
    let before = validations(&world);
    let big = new_stream_id();
    h.send_frames(vec![
        Frame::new(big.clone(), FrameBody::Resume { next_seq: 0 }),
        Frame::new(
            big.clone(),
            FrameBody::Handshake {
                payload: vec![0x42; MAX_NOISE_MESSAGE_LEN + 1],
            },
        ),
    ])
    .await;
    await_reset(&mut h, &big).await;
    assert_eq!(validations(&world), before, "no validation for it");
    healthy(&mut h, &good, "after-big-handshake").await;
    marker.assert_untouched();
}

#[tokio::test]
async fn a_websocket_message_over_256_kib_drops_the_socket_which_is_redialled() {
    let (mut world, mut h, good, sid) = healthy_world_session().await;
    h.call(
        &good,
        "process/start",
        start_params("bg", &["/bin/sh", "-c", "echo before; sleep 1; echo after"]),
    )
    .await;
    // One binary message over the executor's 256 KiB limit: it cannot be read, so the socket
    // goes (tungstenite refuses it); the executor redials without registering again.
    let big = raw_frame(
        1,
        good.as_str(),
        Some((5, raw_data(0, 0, 1, &vec![0; 256 << 10]))),
    );
    send_raw(&mut h, big).await;
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match h.ws.recv().await {
                None | Some(Err(_)) | Some(Ok(AxMessage::Close(_))) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the executor kept a socket it could not read"
    );
    drop(h);
    let mut h = world.accept().await;
    assert_eq!(world.seen.lock().expect("lock").registrations, 1);
    let s2 = h.open(GOOD_AUTH).await;
    assert_eq!(
        h.initialize(&s2, Some(&sid)).await,
        sid,
        "the session resumes"
    );
    let (out, last) = h.read_all(&s2, "bg").await;
    assert_eq!(out, b"before\nafter\n");
    assert_eq!(last["exitCode"], 0);
}

#[tokio::test]
async fn data_before_or_during_the_handshake_is_reset_and_never_read() {
    let (world, mut h, good) = healthy_world().await;
    h.strays = Some(Vec::new());
    let marker = Marker::new();
    let record = plaintext_record(&marker);
    // After resume only, then with no frame before it at all.
    for opening in [true, false] {
        let id = new_stream_id();
        let mut frames = Vec::new();
        if opening {
            frames.push(Frame::new(id.clone(), FrameBody::Resume { next_seq: 0 }));
        }
        frames.push(Frame::new(
            id.clone(),
            FrameBody::Data {
                seq: 0,
                payload: record.clone(),
            },
        ));
        h.send_frames(frames).await;
        await_reset(&mut h, &id).await;
    }
    healthy(&mut h, &good, "after-early-data").await;

    // While the registry takes 2 s to validate: the data resets the stream, and the late
    // `valid: true` is ignored (no msg2 ever comes).
    let connect = h.connect_info(SLOW_AUTH);
    let slow = new_stream_id();
    let (stream, frames) = HarnessStream::start(&h.identity, &connect, slow.clone()).expect("msg1");
    h.send_frames(frames).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !world
        .seen
        .lock()
        .expect("lock")
        .validations
        .iter()
        .any(|(s, _)| s == slow.as_str())
    {
        assert!(tokio::time::Instant::now() < deadline, "no validate call");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.send_frames(vec![Frame::new(
        slow.clone(),
        FrameBody::Data {
            seq: 0,
            payload: record.clone(),
        },
    )])
    .await;
    await_reset(&mut h, &slow).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    healthy(&mut h, &good, "after-slow-validation").await;
    let strays = h.strays.take().expect("strays");
    assert!(
        strays.iter().all(|f| f.stream_id != slow),
        "the executor answered a stream it had reset: {strays:?}"
    );
    drop(stream);
    marker.assert_untouched();
}

#[tokio::test]
async fn replayed_records_are_dropped_or_reset_and_never_run_twice() {
    let (_world, mut h, good) = healthy_world().await;
    let marker = Marker::new();
    let s = h.open(GOOD_AUTH).await;
    h.initialize(&s, None).await;
    let frames = seal(&mut h, &s, &marker.request(50_000, "once"));
    assert_eq!(frames.len(), 1);
    let record = frames[0].clone();
    h.send_frames(frames).await;
    // The same record again under its own seq: dropped before decryption.
    h.send_frames(vec![record.clone(), record.clone()]).await;
    let started = reply(&mut h, &s, 50_000).await;
    assert_eq!(started["result"]["processId"], "once", "{started}");
    let (_, last) = h.read_all(&s, "once").await;
    assert_eq!(last["exitCode"], 0);
    assert_eq!(marker.lines(), 1, "the replayed request ran again");
    healthy(&mut h, &good, "after-replay").await;

    // The same ciphertext under the next seq: it fails authentication, the stream is reset.
    let mut relabelled = record;
    let next = seal(
        &mut h,
        &s,
        &json!({"id": 50_001, "method": "process/list", "params": {}}),
    );
    if let FrameBody::Data { seq, .. } = &mut relabelled.body {
        *seq = seq_of(&next[0]);
    }
    h.send_frames(vec![relabelled]).await;
    await_reset(&mut h, &s).await;
    // The genuine record for that seq now reaches nothing.
    h.send_frames(next).await;
    healthy(&mut h, &good, "after-relabel").await;
    assert_eq!(marker.lines(), 1);
}

#[tokio::test]
async fn records_beyond_the_reorder_window_reset_the_stream_before_anything_runs() {
    let (_world, mut h, good) = healthy_world().await;
    let marker = Marker::new();

    // Within the window, in reverse order: every request is answered.
    let s = h.open(GOOD_AUTH).await;
    h.initialize(&s, None).await;
    let mut frames = Vec::new();
    for i in 0..5 {
        frames.extend(seal(
            &mut h,
            &s,
            &json!({"id": 60_000 + i, "method": "process/list", "params": {}}),
        ));
    }
    frames.reverse();
    h.send_frames(frames).await;
    let mut answered = Vec::new();
    while answered.len() < 5 {
        let v = h.recv(&s).await;
        if let Some(id) = v["id"].as_i64() {
            assert!(v.get("result").is_some(), "{v}");
            answered.push(id);
        }
    }
    answered.sort_unstable();
    assert_eq!(answered, [60_000, 60_001, 60_002, 60_003, 60_004]);

    // 66 forged-looking requests; the first is held back, the next 64 wait in the window, the
    // 66th is 65 ahead of the expected seq: reset, and none of the buffered ones runs.
    let far = h.open(GOOD_AUTH).await;
    h.initialize(&far, None).await;
    let mut frames = Vec::new();
    for i in 0..=MAX_REORDER_GAP as i64 + 1 {
        let pid = format!("window-{i}");
        frames.extend(seal(&mut h, &far, &marker.request(70_000 + i, &pid)));
    }
    assert_eq!(frames.len(), MAX_REORDER_GAP as usize + 2);
    let first = frames.remove(0);
    let beyond = frames.pop().expect("last");
    h.send_frames(frames).await;
    healthy(&mut h, &good, "window-full").await;
    assert!(!h.resets.contains(&far), "64 buffered records are allowed");
    h.send_frames(vec![beyond]).await;
    await_reset(&mut h, &far).await;
    h.send_frames(vec![first]).await;
    healthy(&mut h, &good, "after-window").await;
    marker.assert_untouched();
}

#[tokio::test]
async fn handshakes_for_the_wrong_key_registration_or_stream_reset_before_validation() {
    let (world, mut h, good) = healthy_world().await;
    let before = validations(&world);
    let stranger = StaticIdentity::generate().expect("identity");
    let mut wrong_key = h.connect_info(GOOD_AUTH);
    wrong_key.executor_public_key = stranger.public_key().clone();
    let mut stale_registration = h.connect_info(GOOD_AUTH);
    stale_registration.executor_registration_id = "reg-0".into();
    let mut other_environment = h.connect_info(GOOD_AUTH);
    other_environment.environment_id = "prod".into();
    for (what, connect) in [
        ("a pinned key that is not the executor's", wrong_key),
        ("a stale registration id", stale_registration),
        ("another environment id", other_environment),
    ] {
        let id = h.open_with(&connect, new_stream_id()).await;
        assert!(h.resets.contains(&id), "{what}: not reset");
        healthy(&mut h, &good, "after-bad-handshake").await;
    }
    // The healthy stream's own msg1, replayed under a new stream id: the prologue binds it.
    let connect = h.connect_info(GOOD_AUTH);
    let original = new_stream_id();
    let (_stream, frames) =
        HarnessStream::start(&h.identity, &connect, original.clone()).expect("msg1");
    let mut msg1 = frames[1].clone();
    msg1.stream_id = new_stream_id();
    let replayed = msg1.stream_id.clone();
    h.send_frames(vec![msg1]).await;
    await_reset(&mut h, &replayed).await;
    assert_eq!(
        validations(&world),
        before,
        "the registry was asked about a handshake the executor could not read"
    );
    healthy(&mut h, &good, "last").await;
}

#[tokio::test]
async fn a_registry_that_refuses_fails_or_answers_garbage_resets_the_stream() {
    let (world, mut h, good) = healthy_world().await;
    for auth in [
        "auth-forged",
        ERROR_AUTH,
        GARBAGE_AUTH,
        STRING_VALID_AUTH,
        "",
    ] {
        let before = validations(&world);
        let id = h.open(auth).await;
        assert!(h.resets.contains(&id), "{auth:?}: not reset");
        assert_eq!(
            validations(&world),
            before + 1,
            "{auth:?}: one validate call"
        );
        healthy(&mut h, &good, "after-refusal").await;
    }
}

#[tokio::test]
async fn a_harness_naming_another_streams_id_cannot_inject_and_the_victim_resumes() {
    let (_world, mut h, good) = healthy_world().await;
    let marker = Marker::new();
    let victim = h.open(GOOD_AUTH).await;
    let sid = h.initialize(&victim, None).await;
    h.call(
        &victim,
        "process/start",
        start_params(
            "work",
            &["/bin/sh", "-c", "echo before; sleep 1; echo after"],
        ),
    )
    .await;

    // A harness with a valid authorization of its own seals a forged request and names the
    // victim's stream: the executor decrypts it with the victim's keys, fails, resets.
    let attacker = h.open(GOOD_AUTH).await;
    h.initialize(&attacker, None).await;
    // It even guesses the victim's next seq (here: by sealing, and never sending, a probe).
    let probe = seal(
        &mut h,
        &victim,
        &json!({"id": 80_000, "method": "process/list"}),
    );
    let mut forged = seal(&mut h, &attacker, &marker.request(80_001, "forged"));
    assert_eq!(forged.len(), 1);
    forged[0].stream_id = victim.clone();
    if let FrameBody::Data { seq, .. } = &mut forged[0].body {
        *seq = seq_of(&probe[0]);
    }
    h.send_frames(forged).await;
    await_reset(&mut h, &victim).await;
    healthy(&mut h, &good, "after-injection").await;

    // The victim's owner opens a new stream and resumes its session: nothing was lost.
    let again = h.open(GOOD_AUTH).await;
    assert_eq!(h.initialize(&again, Some(&sid)).await, sid);
    let (out, last) = h.read_all(&again, "work").await;
    assert_eq!(out, b"before\nafter\n");
    assert_eq!(last["exitCode"], 0);

    // A second handshake naming an established stream (the attacker's own keys and a valid
    // authorization) resets it rather than replacing its keys.
    let (_stream, frames) =
        HarnessStream::start(&h.identity, &h.connect_info(GOOD_AUTH), again.clone()).expect("msg1");
    h.send_frames(frames).await;
    await_reset(&mut h, &again).await;
    healthy(&mut h, &good, "after-duplicate-handshake").await;
    marker.assert_untouched();
}

// ---------------------------------------------------------------------------------------------
// Through our real rendezvous: reused and expired authorizations

const RV_CONFIG: &str = "[environments.e2e]\nexecutor_tokens = [\"exec-secret\"]\n\
                         harness_tokens = [\"harness-secret\"]\n";

/// The executor binary registered with an in-process `Rendezvous`; killed on drop.
struct RealRv {
    addr: std::net::SocketAddr,
    child: Child,
}

impl Drop for RealRv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn real_rendezvous(authorization_ttl: Duration) -> RealRv {
    let config = Config::parse(RV_CONFIG).expect("config");
    let options = Options {
        public_url: None,
        limits: Limits {
            authorization_ttl,
            ..Limits::default()
        },
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let rv = Rendezvous::new(config, options).expect("rendezvous");
    tokio::spawn(rv.serve(listener, std::future::pending()));
    #[allow(clippy::disallowed_methods)]
    let mut child = Command::new(BIN)
        .args(["--remote", &format!("http://{addr}")])
        .args(["--environment-id", "e2e", "--registration-bearer-stdin"])
        .env("RUST_LOG", "warn")
        .env_remove("CODEX_API_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start exec-server");
    let mut stdin = child.stdin.take().expect("stdin");
    std::io::Write::write_all(&mut stdin, b"exec-secret\n").expect("write bearer");
    drop(stdin);
    RealRv { addr, child }
}

/// `POST /cloud/environment/e2e/connect` with the harness token: status and body.
async fn connect_call(addr: std::net::SocketAddr, identity: &StaticIdentity) -> (u16, String) {
    let body = serde_json::to_string(&ConnectRequest {
        harness_public_key: identity.public_key().clone(),
    })
    .expect("json");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp");
    let request = format!(
        "POST /cloud/environment/e2e/connect HTTP/1.1\r\nhost: {addr}\r\n\
         authorization: Bearer harness-secret\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).await.expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, body.to_string())
}

/// A connect bundle, once the executor is attached (503 until then).
async fn bundle(addr: std::net::SocketAddr, identity: &StaticIdentity) -> ConnectResponse {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = connect_call(addr, identity).await;
        if status == 200 {
            return serde_json::from_str(&body).expect("connect answer");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "connect still {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

type ClientWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A harness socket on the real rendezvous, opening one stream at a time. Frames that arrive
/// for another stream than the one waited for (a late `process/closed` notification of an
/// established stream while a new one opens) wait in `backlog`, in order.
struct RvHarness {
    ws: ClientWs,
    identity: StaticIdentity,
    backlog: std::collections::VecDeque<Frame>,
}

enum Opened {
    Established(HarnessStream),
    Reset(String),
}

impl RvHarness {
    async fn connect(url: &str, identity: StaticIdentity) -> RvHarness {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("harness socket");
        RvHarness {
            ws,
            identity,
            backlog: std::collections::VecDeque::new(),
        }
    }

    async fn send(&mut self, frames: Vec<Frame>) {
        for f in frames {
            let bytes = f.encode().expect("encode");
            self.ws
                .send(TMessage::Binary(bytes.into()))
                .await
                .expect("send");
        }
    }

    /// The next frame of stream `id`, from the backlog first; other streams' frames are kept.
    async fn next_frame_for(&mut self, id: &StreamId) -> Frame {
        if let Some(i) = self.backlog.iter().position(|f| &f.stream_id == id) {
            if let Some(f) = self.backlog.remove(i) {
                return f;
            }
        }
        loop {
            let f = self.next_frame().await;
            if &f.stream_id == id {
                return f;
            }
            self.backlog.push_back(f);
        }
    }

    async fn next_frame(&mut self) -> Frame {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(15), self.ws.next())
                .await
                .expect("a frame in time")
                .expect("socket open")
                .expect("socket ok");
            if let TMessage::Binary(b) = msg {
                return Frame::decode(&b).expect("valid frame");
            }
        }
    }

    async fn open(&mut self, info: &ConnectInfo) -> Opened {
        let (mut stream, frames) =
            HarnessStream::start(&self.identity, info, new_stream_id()).expect("msg1");
        let id = stream.stream_id().clone();
        self.send(frames).await;
        loop {
            let f = self.next_frame_for(&id).await;
            if let FrameBody::Reset { reason } = f.body {
                return Opened::Reset(reason);
            }
            stream.on_frame(f.body).expect("msg2");
            if stream.is_established() {
                return Opened::Established(stream);
            }
        }
    }

    /// A request on `stream` and its result (notifications are skipped).
    async fn call(
        &mut self,
        stream: &mut HarnessStream,
        rpc: i64,
        method: &str,
        params: Value,
    ) -> Value {
        let bytes = serde_json::to_vec(&json!({"id": rpc, "method": method, "params": params}))
            .expect("json");
        let frames = stream.send(&bytes).expect("seal");
        self.send(frames).await;
        let id = stream.stream_id().clone();
        loop {
            let f = self.next_frame_for(&id).await;
            for m in stream.on_frame(f.body).expect("stream frame") {
                let v: Value = serde_json::from_slice(&m).expect("JSON-RPC");
                if v["id"] == rpc {
                    assert!(v.get("error").is_none(), "{method}: {v}");
                    return v["result"].clone();
                }
            }
        }
    }

    /// `initialize`, then `initialized`.
    async fn initialize(&mut self, stream: &mut HarnessStream) {
        self.call(stream, 1, "initialize", json!({"clientName": "remote-bad"}))
            .await;
        let frames = stream.send(br#"{"method":"initialized"}"#).expect("seal");
        self.send(frames).await;
    }

    /// `echo tag` through `stream`.
    async fn echo(&mut self, stream: &mut HarnessStream, rpc: i64, tag: &str) {
        let pid = format!("p{rpc}");
        self.call(
            stream,
            rpc,
            "process/start",
            start_params(&pid, &["echo", tag]),
        )
        .await;
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let r = self
                .call(
                    stream,
                    rpc + 1,
                    "process/read",
                    json!({"processId": pid, "afterSeq": after, "waitMs": 2000}),
                )
                .await;
            for c in r["chunks"].as_array().expect("chunks") {
                out.extend(unb64(c["chunk"].as_str().expect("chunk")));
            }
            after = r["nextSeq"].as_u64().expect("nextSeq").saturating_sub(1);
            if r["closed"] == true {
                break;
            }
        }
        assert_eq!(out, format!("{tag}\n").as_bytes());
    }
}

fn connect_info(bundle: &ConnectResponse) -> ConnectInfo {
    bundle.clone().into_connect_info("e2e").expect("bundle")
}

#[tokio::test]
async fn reused_and_expired_authorizations_are_refused_through_our_rendezvous() {
    let ttl = Duration::from_secs(1);
    let rv = real_rendezvous(ttl).await;
    let identity = StaticIdentity::generate().expect("identity");
    let first = bundle(rv.addr, &identity).await;
    let mut h = RvHarness::connect(&first.url, identity.clone()).await;
    let info = connect_info(&first);
    let Opened::Established(mut good) = h.open(&info).await else {
        panic!("a fresh authorization is accepted");
    };
    h.initialize(&mut good).await;
    h.echo(&mut good, 10, "fresh").await;

    // The same authorization for a second stream on the same socket: consumed, refused.
    match h.open(&info).await {
        Opened::Reset(reason) => assert_eq!(reason, RESET),
        Opened::Established(_) => panic!("a reused authorization was accepted"),
    }
    h.echo(&mut good, 20, "after-reuse").await;

    // A new bundle used after its lifetime (the socket is already open): refused.
    let late = bundle(rv.addr, &identity).await;
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    match h.open(&connect_info(&late)).await {
        Opened::Reset(reason) => assert_eq!(reason, RESET),
        Opened::Established(_) => panic!("an expired authorization was accepted"),
    }
    h.echo(&mut good, 30, "after-expiry").await;

    // Another harness's authorization (bound to its key): refused for ours.
    let other = StaticIdentity::generate().expect("identity");
    let theirs = bundle(rv.addr, &other).await;
    match h.open(&connect_info(&theirs)).await {
        Opened::Reset(reason) => assert_eq!(reason, RESET),
        Opened::Established(_) => panic!("an authorization bound to another key was accepted"),
    }
    h.echo(&mut good, 40, "last").await;
}
