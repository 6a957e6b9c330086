//! Observability of the real binary: OTLP export to a collector stub (a tiny HTTP server on
//! 127.0.0.1 that takes the protobuf POSTs), and logs that never hold tokens, secrets or
//! request bodies, even at `RUST_LOG=trace`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::json;

use crate::support::BIN;

/// One request the stub received.
struct Post {
    path: String,
    content_type: String,
    body: Vec<u8>,
}

/// Answers every HTTP request with 200 and sends what it got on the returned channel.
fn collector_stub() -> (String, mpsc::Receiver<Post>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the stub");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || serve_stub_conn(conn, tx));
        }
    });
    (url, rx)
}

fn serve_stub_conn(conn: std::net::TcpStream, tx: mpsc::Sender<Post>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(20)));
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let (mut len, mut content_type) = (0usize, String::new());
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (name, value) = h.split_once(':').unwrap_or((h, ""));
            match name.to_ascii_lowercase().as_str() {
                "content-length" => len = value.trim().parse().unwrap_or(0),
                "content-type" => content_type = value.trim().to_string(),
                _ => {}
            }
        }
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let _ = writer.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
        );
        let _ = tx.send(Post {
            path,
            content_type,
            body,
        });
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

const SECRETS: &[&str] = &[
    "sekrit-argv-4711",
    "sekrit-env-4712",
    "c2Vrcml0LWRhdGEtNDcxMw",
];

#[test]
fn otlp_export_reaches_a_collector_stub_and_logs_hold_no_bodies() {
    let (endpoint, posts) = collector_stub();
    let dir = tempfile::tempdir().expect("tempdir");
    let cwd = format!("file://{}", dir.path().display());
    let file = format!("file://{}/f", dir.path().display());
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let trace = json!({"traceparent": format!("00-{trace_id}-00f067aa0ba902b7-01")});
    let lines = [
        json!({"id": 1, "method": "initialize", "params": {"clientName": "otlp-test"}}),
        json!({"method": "initialized"}),
        json!({"id": 2, "method": "environment/info", "trace": trace}),
        json!({"id": 3, "method": "process/start", "trace": trace, "params": {
            "processId": "p1", "argv": ["sh", "-c", "echo sekrit-argv-4711 >/dev/null"],
            "cwd": cwd, "env": {"PATH": "/usr/bin:/bin", "TOKEN": "sekrit-env-4712"},
            "tty": false}}),
        json!({"id": 4, "method": "fs/writeFile", "params": {
            "path": file, "dataBase64": "c2Vrcml0LWRhdGEtNDcxMw=="}}),
        json!({"id": 5, "method": "no/such/method", "params": {"password": "sekrit-argv-4711"}}),
    ];
    #[allow(clippy::disallowed_methods)]
    let mut child = Command::new(BIN)
        .args(["--listen", "stdio", "--log-format", "json"])
        .env("RUST_LOG", "trace")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_METRIC_EXPORT_INTERVAL", "600000")
        .env_remove("OTEL_SDK_DISABLED")
        .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start exec-server");
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut out = BufReader::new(stdout);
    let mut replies = 0;
    for line in &lines {
        writeln!(stdin, "{line}").expect("write a request");
        if line.get("id").is_none() {
            continue;
        }
        // One reply per request (process notifications may come in between).
        loop {
            let mut reply = String::new();
            assert!(out.read_line(&mut reply).expect("read") > 0, "stdout ended");
            let v: serde_json::Value = serde_json::from_str(&reply).expect("json reply");
            if v.get("id").is_some() {
                replies += 1;
                break;
            }
        }
    }
    assert_eq!(replies, 5);
    // The process runs a moment; let it finish so the output and exit are streamed.
    std::thread::sleep(Duration::from_millis(300));
    drop(stdin);
    let mut rest = String::new();
    let _ = out.read_to_string(&mut rest);
    let status = child.wait().expect("exit");
    assert!(status.success(), "{status}");
    let logs = err_reader.join().expect("stderr");

    // Everything was flushed at exit; collect what the stub got.
    let mut traces = Vec::new();
    let mut metrics = Vec::new();
    while let Ok(p) = posts.recv_timeout(Duration::from_secs(5)) {
        assert_eq!(p.content_type, "application/x-protobuf", "{}", p.path);
        match p.path.as_str() {
            "/v1/traces" => traces.push(p.body),
            "/v1/metrics" => metrics.push(p.body),
            other => panic!("unexpected POST to {other}"),
        }
        if !traces.is_empty() && !metrics.is_empty() {
            break;
        }
    }
    let traces = traces.concat();
    assert!(contains(&traces, b"environment/info"), "no request span");
    assert!(contains(&traces, b"process/start"));
    assert!(
        contains(&traces, &hex_bytes(trace_id)),
        "the client's trace id is not the parent"
    );
    assert!(contains(&traces, b"exec-server"), "no service name");
    let metrics = metrics.concat();
    for name in [
        "exec_server_requests_total",
        "exec_server_request_duration_seconds",
        "exec_server_connections_total",
        "exec_server_sessions_total",
    ] {
        assert!(contains(&metrics, name.as_bytes()), "no metric {name}");
    }
    for s in SECRETS {
        assert!(!contains(&traces, s.as_bytes()), "{s} exported in a span");
    }

    // The logs are JSON lines and hold none of the secrets.
    assert!(
        logs.contains("OpenTelemetry export over OTLP enabled"),
        "{logs}"
    );
    for line in logs.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not a JSON log line: {line}"
        );
    }
    for s in SECRETS {
        assert!(!logs.contains(s), "{s} in the logs:\n{logs}");
    }
}

#[tokio::test]
async fn tokens_never_reach_the_logs() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "right-sekrit-token-0815\n").expect("token file");
    #[allow(clippy::disallowed_methods)]
    let mut child = Command::new(BIN)
        .args(["--listen", "ws://127.0.0.1:0", "--log-format", "json"])
        .args(["--ws-auth", "capability-token", "--ws-token-file"])
        .arg(&token_file)
        .env("RUST_LOG", "trace")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start exec-server");
    let mut stderr = child.stderr.take().expect("stderr");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut url = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut url)
        .expect("url");
    let addr = url.trim().trim_start_matches("ws://").to_string();
    for token in ["wrong-sekrit-token-0816", "right-sekrit-token-0815"] {
        let mut s = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let req = format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Authorization: Bearer {token}\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.expect("write");
        let mut buf = vec![0; 512];
        let n = s.read(&mut buf).await.expect("read");
        let head = String::from_utf8_lossy(&buf[..n]).to_string();
        let want = if token.starts_with("wrong") {
            "HTTP/1.1 401"
        } else {
            "HTTP/1.1 101"
        };
        assert!(head.starts_with(want), "{token}: {head}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = child.kill();
    let _ = child.wait();
    let logs = err_reader.join().expect("stderr");
    assert!(logs.contains("authentication failed"), "{logs}");
    for secret in ["wrong-sekrit-token-0816", "right-sekrit-token-0815"] {
        assert!(!logs.contains(secret), "{secret} in the logs:\n{logs}");
    }
}
