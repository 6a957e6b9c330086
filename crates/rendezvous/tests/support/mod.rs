//! Helpers for the over-the-wire tests: a rendezvous on `127.0.0.1:0`, a minimal HTTP/1.1
//! client for the registry calls, and WebSocket helpers speaking relay frames.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use exec_server_relay::frame::{Frame, FrameBody, StreamId};
use exec_server_relay::noise::{PublicKey, StaticIdentity};
use exec_server_relay::registry::{ConnectResponse, RegisterResponse};
use exec_server_rendezvous::{Config, Limits, Options, Rendezvous};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const EXEC_TOKEN: &str = "exec-secret";
pub const HARNESS_TOKEN: &str = "harness-secret";
/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(5);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Server {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn config() -> Config {
    Config::parse(
        "[environments.e2e]\n\
         executor_tokens = [\"exec-secret\"]\n\
         harness_tokens = [\"harness-secret\"]\n\
         [environments.other]\n\
         executor_tokens = [\"other-exec\"]\n\
         harness_tokens = [\"other-harness\"]\n",
    )
    .unwrap()
}

pub async fn start() -> Server {
    start_with(Limits::default(), None).await
}

pub async fn start_with(limits: Limits, public_url: Option<&str>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let rendezvous = Rendezvous::new(
        config(),
        Options {
            public_url: public_url.map(str::to_string),
            limits,
        },
    )
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel();
    tokio::spawn(rendezvous.serve(listener, async {
        let _ = stopped.await;
    }));
    Server {
        addr,
        stop: Some(stop),
    }
}

/// An HTTP answer: status, lower-cased headers and the JSON body (`Null` when not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Answer {
    pub fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

/// `POST path` with an optional bearer and extra headers; `Connection: close`.
pub async fn post(
    addr: SocketAddr,
    path: &str,
    bearer: Option<&str>,
    extra: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    if let Some(b) = bearer {
        request.push_str(&format!("authorization: Bearer {b}\r\n"));
    }
    for (k, v) in extra {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut raw))
        .await
        .expect("registry answered in time")
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: serde_json::from_str(body).unwrap_or(Value::Null),
    }
}

pub fn key_json(key: &PublicKey) -> Value {
    serde_json::to_value(key).unwrap()
}

pub async fn register_raw(
    addr: SocketAddr,
    env: &str,
    bearer: Option<&str>,
    key: &PublicKey,
) -> Answer {
    let body =
        json!({"security_profile": "noise_hybrid_ik_v1", "executor_public_key": key_json(key)});
    post(
        addr,
        &format!("/cloud/environment/{env}/register"),
        bearer,
        &[],
        &body.to_string(),
    )
    .await
}

pub async fn register(addr: SocketAddr, key: &PublicKey) -> RegisterResponse {
    let answer = register_raw(addr, "e2e", Some(EXEC_TOKEN), key).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    serde_json::from_value(answer.body).unwrap()
}

pub async fn connect_raw(
    addr: SocketAddr,
    env: &str,
    bearer: Option<&str>,
    key: &PublicKey,
) -> Answer {
    let body = json!({"harness_public_key": key_json(key)});
    post(
        addr,
        &format!("/cloud/environment/{env}/connect"),
        bearer,
        &[],
        &body.to_string(),
    )
    .await
}

pub async fn connect(addr: SocketAddr, key: &PublicKey) -> ConnectResponse {
    let answer = connect_raw(addr, "e2e", Some(HARNESS_TOKEN), key).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    serde_json::from_value(answer.body).unwrap()
}

pub async fn validate_raw(
    addr: SocketAddr,
    bearer: Option<&str>,
    stream_id: Option<&str>,
    registration_id: &str,
    key: &PublicKey,
    authorization: &str,
) -> Answer {
    let body = json!({
        "executor_registration_id": registration_id,
        "harness_public_key": key_json(key),
        "harness_key_authorization": authorization,
    });
    let headers: Vec<(&str, &str)> = stream_id
        .map(|s| vec![("x-codex-noise-stream-id", s)])
        .unwrap_or_default();
    post(
        addr,
        "/cloud/environment/e2e/validate",
        bearer,
        &headers,
        &body.to_string(),
    )
    .await
}

/// `validate` with the executor bearer; returns `valid`.
pub async fn validate(
    addr: SocketAddr,
    stream_id: &str,
    registration_id: &str,
    key: &PublicKey,
    authorization: &str,
) -> bool {
    let a = validate_raw(
        addr,
        Some(EXEC_TOKEN),
        Some(stream_id),
        registration_id,
        key,
        authorization,
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    a.body["valid"].as_bool().unwrap()
}

pub async fn ws(url: &str) -> Ws {
    tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("websocket connected in time")
        .unwrap_or_else(|e| panic!("{url}: {e}"))
        .0
}

/// A refused upgrade: status and `x-codex-rendezvous-rejection-reason`.
pub async fn ws_refused(url: &str) -> (u16, String) {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => panic!("{url}: upgrade accepted"),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => (
            response.status().as_u16(),
            response
                .headers()
                .get("x-codex-rendezvous-rejection-reason")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
        ),
        Err(e) => panic!("{url}: {e}"),
    }
}

pub async fn send(ws: &mut Ws, frame: &Frame) {
    ws.send(Message::Binary(frame.encode().unwrap().into()))
        .await
        .unwrap();
}

pub async fn send_raw(ws: &mut Ws, bytes: Vec<u8>) {
    ws.send(Message::Binary(bytes.into())).await.unwrap();
}

/// The next binary message, within [`WAIT`]; `None` when the socket ended.
pub async fn recv_bytes(ws: &mut Ws) -> Option<Vec<u8>> {
    loop {
        let next = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time");
        match next {
            Some(Ok(Message::Binary(b))) => return Some(b.to_vec()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

pub async fn recv(ws: &mut Ws) -> Frame {
    let bytes = recv_bytes(ws).await.expect("socket open");
    Frame::decode(&bytes).unwrap()
}

/// Asserts nothing (binary) arrives for `ms` milliseconds.
pub async fn silent(ws: &mut Ws, ms: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return,
            Ok(Some(Ok(Message::Binary(b)))) => {
                panic!("unexpected frame {:?}", Frame::decode(&b))
            }
            Ok(Some(Ok(_))) => continue,
            Ok(other) => panic!("socket ended: {other:?}"),
        }
    }
}

pub fn sid(s: &str) -> StreamId {
    StreamId::new(s).unwrap()
}

pub fn frame(stream: &str, body: FrameBody) -> Frame {
    Frame::new(sid(stream), body)
}

pub fn data(stream: &str, seq: u32, payload: &[u8]) -> Frame {
    frame(
        stream,
        FrameBody::Data {
            seq,
            payload: payload.to_vec(),
        },
    )
}

pub fn key() -> PublicKey {
    StaticIdentity::generate().unwrap().public_key().clone()
}

/// A registered executor with its socket attached.
pub struct Executor {
    pub registration: RegisterResponse,
    pub ws: Ws,
}

pub async fn executor(server: &Server, key: &PublicKey) -> Executor {
    let registration = register(server.addr, key).await;
    let ws = ws(&registration.url).await;
    // The socket attaches right after the upgrade; wait until connect sees it.
    wait_until_connectable(server.addr).await;
    Executor { registration, ws }
}

/// Polls `connect` until an executor socket is attached (each poll issues a bundle that is
/// then left to expire).
pub async fn wait_until_connectable(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let a = connect_raw(addr, "e2e", Some(HARNESS_TOKEN), &key()).await;
        if a.status == 200 {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{a:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A harness socket opened through a fresh connect bundle.
pub async fn harness(server: &Server, key: &PublicKey) -> (ConnectResponse, Ws) {
    let bundle = connect(server.addr, key).await;
    let ws = ws(&bundle.url).await;
    (bundle, ws)
}
