//! The connection engine over a real socket: pipelining, concurrency, ordering, error codes.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{b64, Server};

#[tokio::test]
async fn ten_thousand_pipelined_requests_and_a_timely_ping() {
    let server = Server::start(&[]);
    let (c, _) = server.session().await;
    let (mut sink, mut stream) = c.ws.split();
    let n = 10_000;
    let sender = tokio::spawn(async move {
        for i in 0..n {
            let m = json!({"id": 100 + i, "method": "environment/status"});
            sink.feed(Message::Text(m.to_string().into()))
                .await
                .unwrap();
            if i == n / 2 {
                sink.feed(Message::Ping(b"p".to_vec().into()))
                    .await
                    .unwrap();
            }
        }
        sink.flush().await.unwrap();
        sink
    });
    let start = Instant::now();
    let mut answered = 0;
    let mut pong_after = None;
    while answered < n {
        let m = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("stalled")
            .expect("closed")
            .expect("ws error");
        match m {
            Message::Text(_) => answered += 1,
            Message::Pong(_) => pong_after = Some(start.elapsed()),
            _ => {}
        }
    }
    let _sink = sender.await.unwrap();
    let pong = pong_after.expect("ping answered");
    assert!(pong < Duration::from_secs(5), "pong after {pong:?}");
}

#[tokio::test]
async fn long_poll_does_not_block_other_requests() {
    let server = Server::start(&[]);
    let (mut c, _) = server.session().await;
    c.sh("cat", "cat", json!({"pipeStdin": true})).await;
    let poll = c
        .request_async("process/read", json!({"processId": "cat", "waitMs": 5000}))
        .await;
    let t0 = Instant::now();
    let w = c
        .call(
            "process/write",
            json!({"processId": "cat", "chunk": b64(b"x\n"), "writeId": "1"}),
        )
        .await;
    assert_eq!(w["status"], "accepted");
    let r = c.response(poll).await;
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(r["result"]["chunks"][0]["chunk"], b64(b"x\n"));
}

#[tokio::test]
async fn stdin_writes_keep_arrival_order_under_concurrency() {
    let server = Server::start(&[]);
    let (mut c, _) = server.session().await;
    c.sh("cat", "cat", json!({"pipeStdin": true})).await;
    let mut expect = Vec::new();
    let mut ids = Vec::new();
    for i in 0..300 {
        let line = format!("line {i}\n");
        expect.extend_from_slice(line.as_bytes());
        ids.push(
            c.request_async(
                "process/write",
                json!({"processId": "cat", "chunk": b64(line.as_bytes()), "writeId": i.to_string()}),
            )
            .await,
        );
    }
    for id in ids {
        assert_eq!(c.response(id).await["result"]["status"], "accepted");
    }
    c.wait_output("cat", expect.len()).await;
    assert_eq!(c.output("cat"), expect);
}

#[tokio::test]
async fn error_codes_and_lifecycle() {
    let server = Server::start(&[]);
    let mut c = server.connect().await;
    assert_eq!(c.error_code("environment/info", json!({})).await, -32600);
    assert_eq!(c.error_code("nope/x", json!({})).await, -32601);
    assert_eq!(c.error_code("process/start", json!({})).await, -32602);
    c.send(json!({"id": null, "method": "environment/info"}))
        .await;
    let v = c.recv().await.unwrap();
    assert_eq!(
        (v["id"].as_i64(), v["error"]["code"].as_i64()),
        (Some(-1), Some(-32600))
    );
    c.ws.send(Message::Text("[1,2]".into())).await.unwrap();
    let v = c.recv().await.unwrap();
    assert_eq!(v["error"]["code"], -32600);
    c.handshake(None).await;
    assert_eq!(
        c.error_code("initialize", json!({"clientName": "again"}))
            .await,
        -32600
    );
    assert_eq!(c.error_code("environment/info", json!([])).await, -32602);
}

/// Writes big enough to be decoded off the reader keep the order of error precedence (params,
/// then lifecycle) and run concurrently with the requests after them.
#[tokio::test]
async fn big_writes_are_decoded_off_the_reader_with_the_same_errors() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.bin");
    let uri = format!("file://{}", path.display());
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let mut c = server.connect().await;
    // Invalid params win over the missing initialize, as for small requests.
    let bad = json!({"path": uri, "dataBase64": b64(&data), "followSymlinks": "yes"});
    assert_eq!(c.error_code("fs/writeFile", bad).await, -32602);
    let good = json!({"path": uri, "dataBase64": b64(&data)});
    assert_eq!(c.error_code("fs/writeFile", good.clone()).await, -32600);
    assert!(!path.exists());
    c.handshake(None).await;
    // Several at once, with small requests between them: all answered.
    for i in 0..4 {
        c.send(json!({"id": 100 + i, "method": "fs/writeFile", "params": good}))
            .await;
        c.send(json!({"id": 200 + i, "method": "environment/info"}))
            .await;
    }
    for i in 0..4 {
        assert!(c.response(200 + i).await["result"]["shell"].is_object());
        assert!(c.response(100 + i).await["result"].is_object());
    }
    assert_eq!(std::fs::read(&path).unwrap(), data);
    // A big frame that is not JSON inside its params (its envelope is read without scanning
    // them) is still answered as a malformed frame, and nothing is written.
    let other = dir.path().join("other.bin");
    let other_uri = format!("file://{}", other.display());
    let text = b64(&data);
    for params in [
        // A raw control character, then an escape JSON does not have.
        format!(
            "{{\"path\":\"{other_uri}\",\"dataBase64\":\"{}\u{1}{}\"}}",
            &text[..8],
            &text[8..]
        ),
        format!(
            r#"{{"path":"{other_uri}","dataBase64":"{}\q{}"}}"#,
            &text[..8],
            &text[8..]
        ),
        format!(r#"{{"path":"{other_uri}","dataBase64":"{text}",}}"#),
        format!(r#"{{"path":"{other_uri}","dataBase64":"{text}","x":[1,}}"#),
    ] {
        c.send_text(format!(
            r#"{{"id":300,"method":"fs/writeFile","params":{params}}}"#
        ))
        .await;
        let r = c.response(-1).await;
        assert_eq!(r["error"]["code"], -32600, "{r}");
        let message = r["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("failed to parse"), "{message}");
        assert!(!other.exists());
    }
    assert!(c.call("environment/info", json!({})).await["shell"].is_object());
}
