//! Test support: start the real binary on a free port and talk JSON-RPC to it over a real
//! WebSocket.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const BIN: &str = env!("CARGO_BIN_EXE_exec-server");

/// A running server; killed on drop.
pub struct Server {
    child: Child,
    pub url: String,
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        #[allow(clippy::disallowed_methods)]
        let mut child = Command::new(BIN)
            .args(["--listen", "ws://127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .env("ES_TEST_MARKER", "visible")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start exec-server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read url");
        let url = line.trim().to_string();
        assert!(
            url.starts_with("ws://127.0.0.1:"),
            "first stdout line: {url:?}"
        );
        Server { child, url }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn connect(&self) -> Client {
        Client::connect(&self.url).await
    }

    pub async fn session(&self) -> (Client, String) {
        let mut c = self.connect().await;
        let sid = c.handshake(None).await;
        (c, sid)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A minimal JSON-RPC client: sends requests, collects notifications.
pub struct Client {
    pub ws: Ws,
    next_id: i64,
    pub notes: Vec<Value>,
    pub responses: HashMap<String, Value>,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        Client {
            ws,
            next_id: 1,
            notes: Vec::new(),
            responses: HashMap::new(),
        }
    }

    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("send");
    }

    /// Sends a text frame as it is (which need not be JSON).
    pub async fn send_text(&mut self, text: String) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    /// Sends a request and returns its id.
    pub async fn request_async(&mut self, method: &str, params: Value) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({"id": id, "method": method, "params": params}))
            .await;
        id
    }

    /// Receives one message (None when the connection closed).
    pub async fn recv(&mut self) -> Option<Value> {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .expect("no message within 30 s")?;
            match msg {
                Ok(Message::Text(t)) => return Some(serde_json::from_str(&t).expect("json")),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    fn absorb(&mut self, v: Value) -> Option<Value> {
        if v.get("method").is_some() && v.get("id").is_none() {
            self.notes.push(v);
            None
        } else {
            Some(v)
        }
    }

    /// Waits for the response with this id, collecting notifications on the way.
    pub async fn response(&mut self, id: i64) -> Value {
        let key = id.to_string();
        loop {
            if let Some(v) = self.responses.remove(&key) {
                return v;
            }
            let v = self.recv().await.expect("connection closed");
            if let Some(resp) = self.absorb(v) {
                let k = resp["id"].to_string();
                self.responses.insert(k, resp);
            }
        }
    }

    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.request_async(method, params).await;
        self.response(id).await
    }

    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let r = self.request(method, params).await;
        assert!(r.get("error").is_none(), "{method} failed: {r}");
        r["result"].clone()
    }

    pub async fn error_code(&mut self, method: &str, params: Value) -> i64 {
        let r = self.request(method, params).await;
        r["error"]["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("expected an error: {r}"))
    }

    pub async fn handshake(&mut self, resume: Option<&str>) -> String {
        let mut p = json!({"clientName": "it"});
        if let Some(r) = resume {
            p["resumeSessionId"] = json!(r);
        }
        let res = self.call("initialize", p).await;
        self.send(json!({"method": "initialized"})).await;
        res["sessionId"].as_str().expect("sessionId").to_string()
    }

    /// Waits for a notification matching `pred`.
    pub async fn wait_note(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(v) = self.notes.iter().find(|n| pred(n)) {
            return v.clone();
        }
        loop {
            let v = self.recv().await.expect("connection closed");
            if let Some(resp) = self.absorb(v) {
                let k = resp["id"].to_string();
                self.responses.insert(k, resp);
                continue;
            }
            let last = self.notes.last().cloned().expect("note");
            if pred(&last) {
                return last;
            }
        }
    }

    pub async fn wait_event(&mut self, method: &str, pid: &str) -> Value {
        let (m, p) = (method.to_string(), pid.to_string());
        self.wait_note(move |n| n["method"] == m.as_str() && n["params"]["processId"] == p.as_str())
            .await
    }

    /// Receives until at least `len` output bytes of `pid` arrived by notification.
    pub async fn wait_output(&mut self, pid: &str, len: usize) {
        while self.output(pid).len() < len {
            let v = self.recv().await.expect("connection closed");
            if let Some(resp) = self.absorb(v) {
                let k = resp["id"].to_string();
                self.responses.insert(k, resp);
            }
        }
    }

    /// Output bytes received by notification for a process.
    pub fn output(&self, pid: &str) -> Vec<u8> {
        self.notes
            .iter()
            .filter(|n| n["method"] == "process/output" && n["params"]["processId"] == pid)
            .flat_map(|n| unb64(n["params"]["chunk"].as_str().unwrap_or("")))
            .collect()
    }

    pub async fn sh(&mut self, pid: &str, script: &str, extra: Value) -> Value {
        let mut p = json!({
            "processId": pid, "argv": ["/bin/sh", "-c", script], "cwd": "file:///tmp",
            "env": {"PATH": "/usr/local/bin:/usr/bin:/bin"}, "tty": false,
        });
        if let (Some(obj), Some(extra)) = (p.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                obj.insert(k.clone(), v.clone());
            }
        }
        self.request("process/start", p).await
    }
}

pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

pub fn unb64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64")
}

pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, r)| !r.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

pub async fn wait_until(mut pred: impl FnMut() -> bool, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if pred() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    pred()
}

/// `process/start` params of `/bin/sh -c SCRIPT` in /tmp with a plain PATH, for the typed
/// client.
pub fn sh(id: &str, script: &str) -> exec_server_protocol::process::StartParams {
    exec_server_protocol::process::StartParams {
        process_id: id.into(),
        metadata: None,
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        cwd: exec_server_protocol::PathUri::parse("file:///tmp").expect("uri"),
        env_policy: None,
        shell_snapshot: None,
        env: [(
            "PATH".to_string(),
            "/usr/local/bin:/usr/bin:/bin".to_string(),
        )]
        .into(),
        tty: false,
        pipe_stdin: false,
        arg0: None,
        sandbox: None,
        enforce_managed_network: false,
        managed_network: None,
        network_proxy: None,
        if_exists: None,
        timeout_ms: None,
        kill_grace_ms: None,
    }
}
