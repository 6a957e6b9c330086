//! Remote mode, executor side (spec §10.1–§10.6, §10.8): the real binary with `--remote`
//! registers with an in-test registry, dials the in-test rendezvous, and the test plays the
//! harness on that socket with the relay crate's harness state machine: Noise handshake,
//! registry validation, then JSON-RPC through the encrypted stream into the same connection
//! engine as WebSocket. `forward` relays each stream to a second, ordinary server.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message as AxMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{any, post};
use axum::{Json, Router};
use exec_server_relay::frame::{Frame, FrameBody, StreamId};
use exec_server_relay::harness::{new_stream_id, ConnectInfo, HarnessStream};
use exec_server_relay::noise::{PublicKey, StaticIdentity};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::support::{unb64, BIN};

pub(crate) const ENV_ID: &str = "e2e";
pub(crate) const REG_ID: &str = "reg-1";
pub(crate) const BEARER: &str = "exec-secret";
pub(crate) const GOOD_AUTH: &str = "auth-good";
/// Authorizations the fake registry answers specially (remote_bad.rs): valid after 2 s, a 500,
/// a 200 whose body is not JSON, a 200 whose `valid` is not a boolean.
pub(crate) const SLOW_AUTH: &str = "auth-slow";
pub(crate) const ERROR_AUTH: &str = "auth-500";
pub(crate) const GARBAGE_AUTH: &str = "auth-garbage";
pub(crate) const STRING_VALID_AUTH: &str = "auth-string-valid";

/// What the fake registry saw.
#[derive(Default)]
pub(crate) struct Seen {
    pub(crate) registrations: usize,
    pub(crate) executor_key: Option<PublicKey>,
    /// (x-codex-noise-stream-id, authorization) per validate call.
    pub(crate) validations: Vec<(String, String)>,
    /// x-request-id of each rendezvous dial, and whether it carried an Authorization header.
    pub(crate) dials: Vec<(String, bool)>,
    pub(crate) bad_requests: Vec<String>,
}

#[derive(Clone)]
struct Rv {
    seen: Arc<Mutex<Seen>>,
    port: u16,
    sockets: mpsc::Sender<WebSocket>,
}

fn bearer_ok(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer exec-secret")
}

async fn register(
    State(rv): State<Rv>,
    Path(env): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> impl IntoResponse {
    if !bearer_ok(&headers) {
        return (StatusCode::UNAUTHORIZED, Json(json!({"error": {}})));
    }
    let mut seen = rv.seen.lock().expect("lock");
    if env != ENV_ID || body["security_profile"] != "noise_hybrid_ik_v1" {
        seen.bad_requests.push(format!("register {env}: {body}"));
        return (StatusCode::BAD_REQUEST, Json(json!({"error": {}})));
    }
    seen.registrations += 1;
    seen.executor_key = serde_json::from_value(body["executor_public_key"].clone()).ok();
    (
        StatusCode::OK,
        Json(json!({
            "environment_id": ENV_ID, "url": format!("ws://127.0.0.1:{}/rv?ticket=t1", rv.port),
            "security_profile": "noise_hybrid_ik_v1", "executor_registration_id": REG_ID,
        })),
    )
}

async fn validate(
    State(rv): State<Rv>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> axum::response::Response {
    let stream = headers
        .get("x-codex-noise-stream-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let auth = body["harness_key_authorization"]
        .as_str()
        .unwrap_or("")
        .to_string();
    {
        let mut seen = rv.seen.lock().expect("lock");
        if !bearer_ok(&headers) || body["executor_registration_id"] != REG_ID {
            seen.bad_requests.push(format!("validate: {body}"));
        }
        seen.validations.push((stream, auth.clone()));
    }
    match auth.as_str() {
        SLOW_AUTH => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Json(json!({"valid": true})).into_response()
        }
        ERROR_AUTH => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"valid": true})),
        )
            .into_response(),
        GARBAGE_AUTH => (StatusCode::OK, "valid: true").into_response(),
        STRING_VALID_AUTH => Json(json!({"valid": "true"})).into_response(),
        _ => Json(json!({"valid": auth == GOOD_AUTH})).into_response(),
    }
}

async fn rendezvous(
    State(rv): State<Rv>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> impl IntoResponse {
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    rv.seen
        .lock()
        .expect("lock")
        .dials
        .push((request_id, headers.contains_key("authorization")));
    ws.max_message_size(256 << 10)
        .on_upgrade(move |socket| async move {
            let _ = rv.sockets.send(socket).await;
        })
}

/// The registry + rendezvous and the executor registered with it.
pub(crate) struct World {
    pub(crate) seen: Arc<Mutex<Seen>>,
    pub(crate) sockets: mpsc::Receiver<WebSocket>,
    pub(crate) child: Child,
    pub(crate) harness: StaticIdentity,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn start() -> World {
    start_with(&[]).await
}

/// The registry + rendezvous, and `exec-server <args> --remote …` registered with it.
pub(crate) async fn start_with(args: &[&str]) -> World {
    start_full(args, BEARER).await
}

pub(crate) async fn start_full(args: &[&str], bearer: &str) -> World {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = mpsc::channel(4);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let rv = Rv {
        seen: seen.clone(),
        port,
        sockets: tx,
    };
    let app = Router::new()
        .route("/cloud/environment/{env}/register", post(register))
        .route("/cloud/environment/{env}/validate", post(validate))
        .route("/rv", any(rendezvous))
        .with_state(rv);
    tokio::spawn(async move { axum::serve(listener, app).await });
    #[allow(clippy::disallowed_methods)]
    let mut child = Command::new(BIN)
        .args(args)
        .args(["--remote", &format!("http://127.0.0.1:{port}/")])
        .args(["--environment-id", ENV_ID, "--name", "remote test"])
        .arg("--registration-bearer-stdin")
        .env("RUST_LOG", "warn")
        .env_remove("CODEX_API_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(if bearer == BEARER {
            Stdio::inherit()
        } else {
            Stdio::piped()
        })
        .spawn()
        .expect("start exec-server");
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, "{bearer}").expect("write bearer");
    drop(stdin);
    World {
        seen,
        sockets: rx,
        child,
        harness: StaticIdentity::generate().expect("harness identity"),
    }
}

impl World {
    pub(crate) async fn accept(&mut self) -> Harness {
        let ws = tokio::time::timeout(Duration::from_secs(20), self.sockets.recv())
            .await
            .expect("executor dialled the rendezvous in time")
            .expect("socket");
        let key = self
            .seen
            .lock()
            .expect("lock")
            .executor_key
            .clone()
            .expect("registered key");
        Harness {
            ws,
            identity: self.harness.clone(),
            executor_key: key,
            streams: HashMap::new(),
            inbox: HashMap::new(),
            resets: HashSet::new(),
            strays: None,
            next_id: 0,
        }
    }
}

/// The test's harness on one executor socket: several streams, demultiplexed by id.
pub(crate) struct Harness {
    pub(crate) ws: WebSocket,
    pub(crate) identity: StaticIdentity,
    pub(crate) executor_key: PublicKey,
    pub(crate) streams: HashMap<StreamId, HarnessStream>,
    pub(crate) inbox: HashMap<StreamId, VecDeque<Value>>,
    pub(crate) resets: HashSet<StreamId>,
    /// Frames (other than resets) for streams the harness does not hold: `pump` panics on one
    /// unless this is `Some`, which collects them instead.
    pub(crate) strays: Option<Vec<Frame>>,
    pub(crate) next_id: i64,
}

impl Harness {
    pub(crate) async fn send_frames(&mut self, frames: Vec<Frame>) {
        for f in frames {
            let bytes = f.encode().expect("encode");
            self.ws
                .send(AxMessage::Binary(bytes.into()))
                .await
                .expect("send frame");
        }
    }

    /// Reads one frame and routes it.
    pub(crate) async fn pump(&mut self) {
        let msg = tokio::time::timeout(Duration::from_secs(15), self.ws.recv())
            .await
            .expect("a frame from the executor in time")
            .expect("socket open")
            .expect("socket ok");
        let AxMessage::Binary(bytes) = msg else {
            return;
        };
        let frame = Frame::decode(&bytes).expect("the executor sends valid frames");
        let id = frame.stream_id.clone();
        if let FrameBody::Reset { reason } = &frame.body {
            assert_eq!(reason, "noise_relay_protocol_error");
            self.streams.remove(&id);
            self.resets.insert(id);
            return;
        }
        let Some(stream) = self.streams.get_mut(&id) else {
            let strays = self.strays.as_mut().expect("frame for a known stream");
            strays.push(frame);
            return;
        };
        let messages = stream
            .on_frame(frame.body)
            .expect("harness accepts the frame");
        let inbox = self.inbox.entry(id).or_default();
        for m in messages {
            inbox.push_back(serde_json::from_slice(&m).expect("JSON-RPC message"));
        }
    }

    /// The registry `connect` answer this harness would get, with `authorization`.
    pub(crate) fn connect_info(&self, authorization: &str) -> ConnectInfo {
        ConnectInfo {
            environment_id: ENV_ID.into(),
            executor_registration_id: REG_ID.into(),
            executor_public_key: self.executor_key.clone(),
            harness_key_authorization: authorization.into(),
        }
    }

    /// Opens a stream whose msg1 carries `authorization`; returns once msg2 or a reset came.
    pub(crate) async fn open(&mut self, authorization: &str) -> StreamId {
        let connect = self.connect_info(authorization);
        self.open_with(&connect, new_stream_id()).await
    }

    /// Opens stream `id` from the `connect` answer `connect`; returns once msg2 or a reset came.
    pub(crate) async fn open_with(&mut self, connect: &ConnectInfo, id: StreamId) -> StreamId {
        let (stream, frames) =
            HarnessStream::start(&self.identity, connect, id.clone()).expect("msg1");
        self.streams.insert(id.clone(), stream);
        self.send_frames(frames).await;
        while self.streams.get(&id).is_some_and(|s| !s.is_established()) {
            self.pump().await;
        }
        id
    }

    pub(crate) async fn send(&mut self, id: &StreamId, v: Value) {
        let bytes = serde_json::to_vec(&v).expect("json");
        let frames = self
            .streams
            .get_mut(id)
            .expect("open stream")
            .send(&bytes)
            .expect("seal");
        self.send_frames(frames).await;
    }

    /// The next message of stream `id`.
    pub(crate) async fn recv(&mut self, id: &StreamId) -> Value {
        loop {
            if let Some(v) = self.inbox.get_mut(id).and_then(VecDeque::pop_front) {
                return v;
            }
            assert!(!self.resets.contains(id), "stream {id} was reset");
            self.pump().await;
        }
    }

    /// A request's result (notifications in between are dropped).
    pub(crate) async fn call(&mut self, id: &StreamId, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let rpc = self.next_id;
        self.send(id, json!({"id": rpc, "method": method, "params": params}))
            .await;
        loop {
            let v = self.recv(id).await;
            if v["id"] == rpc {
                assert!(v.get("error").is_none(), "{method} failed: {v}");
                return v["result"].clone();
            }
        }
    }

    pub(crate) async fn initialize(&mut self, id: &StreamId, resume: Option<&str>) -> String {
        let mut p = json!({"clientName": "remote-test"});
        if let Some(r) = resume {
            p["resumeSessionId"] = json!(r);
        }
        let r = self.call(id, "initialize", p).await;
        self.send(id, json!({"method": "initialized"})).await;
        r["sessionId"].as_str().expect("sessionId").to_string()
    }

    /// Output of `pid` until it exited, read with `process/read`.
    pub(crate) async fn read_all(&mut self, id: &StreamId, pid: &str) -> (Vec<u8>, Value) {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let r = self
                .call(
                    id,
                    "process/read",
                    json!({"processId": pid, "afterSeq": after, "waitMs": 2000}),
                )
                .await;
            for c in r["chunks"].as_array().expect("chunks") {
                out.extend(unb64(c["chunk"].as_str().expect("chunk")));
            }
            after = r["nextSeq"].as_u64().expect("nextSeq").saturating_sub(1);
            if r["exited"] == true && r["closed"] == true {
                return (out, r);
            }
        }
    }
}

pub(crate) fn start_params(pid: &str, argv: &[&str]) -> Value {
    json!({
        "processId": pid, "argv": argv, "cwd": "file:///tmp",
        "env": {"PATH": "/usr/local/bin:/usr/bin:/bin"}, "tty": false,
    })
}

#[tokio::test]
async fn remote_registers_and_serves_json_rpc_through_the_noise_channel() {
    let mut world = start().await;
    let mut h = world.accept().await;
    {
        let seen = world.seen.lock().expect("lock");
        assert_eq!(seen.registrations, 1);
        assert!(seen.bad_requests.is_empty(), "{:?}", seen.bad_requests);
        let (request_id, authorized) = &seen.dials[0];
        assert!(
            !authorized,
            "no Authorization header on the rendezvous dial"
        );
        let hex = request_id.strip_prefix("req_").expect("req_ prefix");
        assert!(
            hex.len() == 32
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{request_id}"
        );
    }
    let s = h.open(GOOD_AUTH).await;
    assert!(h.streams[&s].is_established());
    assert_eq!(
        world.seen.lock().expect("lock").validations,
        [(s.to_string(), GOOD_AUTH.to_string())]
    );
    let sid = h.initialize(&s, None).await;
    assert!(!sid.is_empty());
    let started = h
        .call(&s, "process/start", start_params("p1", &["echo", "hi"]))
        .await;
    assert_eq!(started["processId"], "p1", "{started}");
    let (out, last) = h.read_all(&s, "p1").await;
    assert_eq!(out, b"hi\n");
    assert_eq!(last["exitCode"], 0);
}

#[tokio::test]
async fn a_refused_harness_key_resets_only_its_stream() {
    let mut world = start().await;
    let mut h = world.accept().await;
    let good = h.open(GOOD_AUTH).await;
    h.initialize(&good, None).await;
    let bad = h.open("auth-forged").await;
    assert!(h.resets.contains(&bad), "refused stream is reset");
    // Data on the refused stream is reset again and reaches nothing.
    h.send_frames(vec![Frame::new(
        bad.clone(),
        FrameBody::Data {
            seq: 0,
            payload: vec![7; 40],
        },
    )])
    .await;
    // The good stream still works, on the same socket.
    let r = h
        .call(
            &good,
            "process/start",
            start_params("ok", &["echo", "still"]),
        )
        .await;
    assert_eq!(r["processId"], "ok");
    let (out, _) = h.read_all(&good, "ok").await;
    assert_eq!(out, b"still\n");
    let validations = world.seen.lock().expect("lock").validations.clone();
    assert_eq!(validations.len(), 2);
    assert_eq!(validations[1], (bad.to_string(), "auth-forged".to_string()));
}

#[tokio::test]
async fn a_dropped_socket_is_redialled_without_registering_and_the_session_resumes() {
    let mut world = start().await;
    let mut h = world.accept().await;
    let s = h.open(GOOD_AUTH).await;
    let sid = h.initialize(&s, None).await;
    h.call(
        &s,
        "process/start",
        start_params("bg", &["/bin/sh", "-c", "echo before; sleep 1; echo after"]),
    )
    .await;
    // The rendezvous goes away: the executor's streams end, its session detaches.
    let _ = h.ws.send(AxMessage::Close(None)).await;
    drop(h);
    let started = std::time::Instant::now();
    let mut h = world.accept().await;
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "redialled after {waited:?}"
    );
    {
        let seen = world.seen.lock().expect("lock");
        assert_eq!(seen.registrations, 1, "no second registration");
        assert_eq!(seen.dials.len(), 2);
        assert_ne!(
            seen.dials[0].0, seen.dials[1].0,
            "a fresh request id per dial"
        );
    }
    let s2 = h.open(GOOD_AUTH).await;
    let resumed = h.initialize(&s2, Some(&sid)).await;
    assert_eq!(resumed, sid);
    let (out, last) = h.read_all(&s2, "bg").await;
    assert_eq!(out, b"before\nafter\n");
    assert_eq!(last["exitCode"], 0);
}

#[tokio::test]
async fn forward_relays_each_stream_to_an_existing_exec_server() {
    let server = crate::support::Server::start(&[]);
    let mut world = start_with(&["forward", "--connect", &server.url]).await;
    let mut h = world.accept().await;
    assert_eq!(world.seen.lock().expect("lock").registrations, 1);
    let a = h.open(GOOD_AUTH).await;
    let b = h.open(GOOD_AUTH).await;
    let sid_a = h.initialize(&a, None).await;
    let sid_b = h.initialize(&b, None).await;
    assert_ne!(
        sid_a, sid_b,
        "each stream is its own connection to the server"
    );
    h.call(
        &a,
        "process/start",
        start_params("fa", &["/bin/sh", "-c", "echo $PPID"]),
    )
    .await;
    let (out, last) = h.read_all(&a, "fa").await;
    assert_eq!(last["exitCode"], 0);
    assert_eq!(
        String::from_utf8_lossy(&out).trim(),
        server.pid().to_string(),
        "the process ran on the forwarded-to server"
    );
}

#[tokio::test]
async fn a_refused_registration_exits_1_with_upstreams_message() {
    let mut world = start_full(&[], "wrong-bearer").await;
    let mut stderr = world.child.stderr.take().expect("stderr");
    let status = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let text = tokio::time::timeout(Duration::from_secs(20), status)
        .await
        .expect("exits in time")
        .expect("stderr");
    let code = world.child.wait().expect("wait").code();
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(
            "environment registry authentication failed (401 Unauthorized): response body omitted"
        ),
        "{text}"
    );
    assert!(
        world.seen.lock().expect("lock").dials.is_empty(),
        "no rendezvous dial"
    );
}
