//! Transports: /readyz, Origin refusal, close codes, stdio framing.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

use crate::support::{b64, Server, BIN};

async fn http_get(server: &Server, path: &str, extra: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = server.url.trim_start_matches("ws://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn readyz_and_routes() {
    let server = Server::start(&[]);
    assert!(http_get(&server, "/readyz", "")
        .await
        .starts_with("HTTP/1.1 200"));
    assert!(http_get(&server, "/nope", "")
        .await
        .starts_with("HTTP/1.1 404"));
    assert!(http_get(&server, "/", "").await.starts_with("HTTP/1.1 4"));
}

#[tokio::test]
async fn upgrade_with_origin_is_refused() {
    let server = Server::start(&[]);
    let mut req = server.url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("Origin", "http://evil.example".parse().unwrap());
    let err = tokio_tungstenite::connect_async(req).await.unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
}

#[tokio::test]
async fn oversized_message_gets_close_1009_and_others_survive() {
    let server = Server::start(&["--max-message-bytes", "1048576"]);
    let (mut good, _) = server.session().await;
    let (mut c, _) = server.session().await;
    let data = vec![7u8; 2 << 20];
    let msg = json!({"id": 9, "method": "fs/writeFile",
                     "params": {"path": "file:///tmp/never", "dataBase64": b64(&data)}});
    let _ = c.ws.send(Message::Text(msg.to_string().into())).await;
    let mut code = None;
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(10), c.ws.next()).await {
        match m {
            Ok(Message::Close(Some(f))) => {
                code = Some(u16::from(f.code));
                break;
            }
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    assert_eq!(code, Some(1009));
    assert!(good.call("environment/info", json!({})).await["shell"].is_object());
}

#[tokio::test]
async fn protocol_violation_closes_with_a_close_frame() {
    let server = Server::start(&[]);
    let (mut c, _) = server.session().await;
    c.send(json!({"method": "bogus"})).await;
    let mut code = None;
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(10), c.ws.next()).await {
        if let Ok(Message::Close(Some(f))) = m {
            code = Some(u16::from(f.code));
            break;
        }
    }
    assert_eq!(code, Some(1008));
}

#[test]
fn stdio_framing_and_flush_on_eof() {
    #[allow(clippy::disallowed_methods)]
    let mut child = Command::new(BIN)
        .args(["--listen", "stdio"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let lines = [
        json!({"id": 1, "method": "initialize", "params": {"clientName": "s"}}),
        json!({"method": "initialized"}),
        json!({"id": 2, "method": "process/read", "params": {"processId": "x"}}),
        json!({"id": 3, "method": "environment/info"}),
    ];
    for l in &lines {
        writeln!(stdin, "{l}").unwrap();
    }
    writeln!(stdin).unwrap(); // blank lines are skipped
    writeln!(stdin, "{{broken").unwrap();
    drop(stdin);
    let out: Vec<Value> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).expect("every stdout line is JSON"))
        .collect();
    assert!(child.wait().unwrap().success());
    let ids: Vec<i64> = out.iter().filter_map(|v| v["id"].as_i64()).collect();
    for want in [1, 2, 3, -1] {
        assert!(ids.contains(&want), "missing reply {want}: {out:?}");
    }
}

/// Opens a raw WebSocket (hand-written upgrade) so the test can send invalid frames.
async fn raw_ws(server: &Server) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = server.url.trim_start_matches("ws://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    s
}

/// Reads frames until a close frame and returns its code.
async fn close_code(s: &mut tokio::net::TcpStream) -> Option<u16> {
    use tokio::io::AsyncReadExt;
    loop {
        let mut h = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut h))
            .await
            .ok()?
            .ok()?;
        let mut len = (h[1] & 0x7f) as usize;
        if len == 126 {
            let mut l = [0u8; 2];
            s.read_exact(&mut l).await.ok()?;
            len = u16::from_be_bytes(l) as usize;
        } else if len == 127 {
            let mut l = [0u8; 8];
            s.read_exact(&mut l).await.ok()?;
            len = u64::from_be_bytes(l) as usize;
        }
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await.ok()?;
        if h[0] & 0x0f == 0x8 {
            return payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
        }
    }
}

fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let key = [1u8, 2, 3, 4];
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

#[tokio::test]
async fn invalid_utf8_text_frame_closes_with_1007() {
    use tokio::io::AsyncWriteExt;
    let server = Server::start(&[]);
    let mut s = raw_ws(&server).await;
    s.write_all(&masked(0x1, b"\xff\xfe{}")).await.unwrap();
    assert_eq!(close_code(&mut s).await, Some(1007));
}

#[tokio::test]
async fn unmasked_client_frame_closes_with_1002() {
    use tokio::io::AsyncWriteExt;
    let server = Server::start(&[]);
    let mut s = raw_ws(&server).await;
    s.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap();
    assert_eq!(close_code(&mut s).await, Some(1002));
}

#[tokio::test]
async fn deeply_nested_json_is_a_parse_error() {
    let server = Server::start(&[]);
    let (mut c, _) = server.session().await;
    let deep = "[".repeat(100_000) + &"]".repeat(100_000);
    c.ws.send(Message::Text(deep.into())).await.unwrap();
    let v = c.recv().await.expect("still open");
    assert_eq!(
        (v["id"].as_i64(), v["error"]["code"].as_i64()),
        (Some(-1), Some(-32600))
    );
    let nested = format!(
        r#"{{"id":5,"method":"environment/info","params":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    c.ws.send(Message::Text(nested.into())).await.unwrap();
    let v = c.recv().await.expect("still open");
    assert!(v["error"]["code"].as_i64().is_some(), "{v}");
    assert!(c.call("environment/info", json!({})).await["shell"].is_object());
}

#[tokio::test]
async fn a_ping_is_answered_while_the_connection_is_idle() {
    let server = Server::start(&[]);
    let (mut c, _) = server.session().await;
    c.ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match c.ws.next().await {
                Some(Ok(Message::Pong(p))) => return p,
                Some(Ok(_)) => continue,
                other => panic!("connection ended: {other:?}"),
            }
        }
    })
    .await
    .expect("a pong within 5 s, with nothing else to send");
    assert_eq!(&pong[..], b"are you there");
    // The connection still serves requests after the pong.
    assert!(c.call("environment/info", json!({})).await["shell"].is_object());
}

#[tokio::test]
async fn a_large_file_reply_arrives_whole_between_other_messages() {
    let server = Server::start(&[]);
    let (mut c, _) = server.session().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.bin");
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let uri = format!("file://{}", path.display());
    for _ in 0..2 {
        let r = c.call("fs/readFile", json!({"path": uri})).await;
        let got = crate::support::unb64(r["dataBase64"].as_str().expect("dataBase64"));
        assert_eq!(got, data);
        assert!(c.call("environment/info", json!({})).await["shell"].is_object());
    }
}

#[tokio::test]
async fn a_close_from_the_client_is_answered_with_a_close() {
    let server = Server::start(&[]);
    let (mut c, _) = server.session().await;
    c.ws.send(Message::Close(None)).await.unwrap();
    let answered = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(m) = c.ws.next().await {
            if let Ok(Message::Close(_)) = m {
                return true;
            }
        }
        false
    })
    .await
    .expect("the server answers within 5 s");
    assert!(answered, "a close frame came back");
}
