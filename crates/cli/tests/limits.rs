//! Limits: connections, initialize deadline, dead peers, header timeout, running processes,
//! stdin queue. Each is reached and answered as documented while other connections work.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncReadExt;

use crate::support::{b64, Server};

#[tokio::test]
async fn connection_cap_refuses_and_others_keep_working() {
    let server = Server::start(&["--max-connections", "2"]);
    let (mut a, _) = server.session().await;
    let (_b, _) = server.session().await;
    let err = tokio_tungstenite::connect_async(server.url.as_str())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
    assert!(a.call("environment/info", json!({})).await["shell"].is_object());
}

#[tokio::test]
async fn initialize_deadline_closes_idle_connections() {
    let server = Server::start(&["--initialize-timeout", "1"]);
    let mut idle = server.connect().await;
    let (mut ok, _) = server.session().await;
    let t0 = Instant::now();
    assert!(idle.recv().await.is_none(), "closed");
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(ok.call("environment/info", json!({})).await["shell"].is_object());
}

#[tokio::test]
async fn dead_peer_is_dropped_and_its_session_detached() {
    let server = Server::start(&["--ping-interval", "1"]);
    let (silent, sid) = server.session().await;
    // Never read: pings go unanswered.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut b = server.connect().await;
    assert_eq!(
        b.handshake(Some(&sid)).await,
        sid,
        "the session was detached"
    );
    drop(silent);
}

#[tokio::test]
async fn header_read_timeout_closes_silent_sockets() {
    let server = Server::start(&["--header-read-timeout", "1"]);
    let addr = server.url.trim_start_matches("ws://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut buf = [0u8; 64];
    let t0 = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    let _ = n;
    assert!(t0.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn running_process_cap_per_session() {
    let server = Server::start(&["--max-processes-per-session", "2"]);
    let (mut c, _) = server.session().await;
    c.sh("a", "sleep 30", json!({})).await;
    c.sh("b", "sleep 30", json!({})).await;
    let r = c.sh("c", "sleep 30", json!({})).await;
    assert_eq!(r["error"]["code"], -32600, "{r}");
    assert!(r["error"]["message"]
        .as_str()
        .unwrap()
        .contains("running processes"));
    // Another session has its own budget.
    let (mut d, _) = server.session().await;
    assert!(d.sh("x", "true", json!({})).await.get("result").is_some());
    c.call("process/terminate", json!({"processId": "a"})).await;
    c.wait_event("process/exited", "a").await;
    assert!(c.sh("c", "true", json!({})).await.get("result").is_some());
}

#[tokio::test]
async fn stdin_queue_is_bounded() {
    let server = Server::start(&[]);
    let (mut c, _) = server.session().await;
    c.sh("sink", "sleep 30", json!({"pipeStdin": true})).await;
    let mib = vec![b'x'; 1 << 20];
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(
            c.request_async(
                "process/write",
                json!({"processId": "sink", "chunk": b64(&mib), "writeId": i.to_string()}),
            )
            .await,
        );
    }
    // The writes that fit wait for the pipe; those past 8 MiB are refused at once.
    let last = c.response(*ids.last().unwrap()).await;
    assert_eq!(last["error"]["code"], -32600, "{last}");
    assert!(last["error"]["message"]
        .as_str()
        .unwrap()
        .contains("stdin queue is full"));
    c.call("process/terminate", json!({"processId": "sink"}))
        .await;
}

#[tokio::test]
async fn pending_connection_cap_closes_extra_silent_sockets() {
    let server = Server::start(&["--max-pending-connections", "2"]);
    let addr = server.url.trim_start_matches("ws://").to_string();
    let silent: Vec<_> =
        futures::future::join_all((0..2).map(|_| tokio::net::TcpStream::connect(addr.clone())))
            .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf))
        .await
        .expect("the extra socket is closed at once");
    assert!(matches!(n, Ok(0) | Err(_)));
    drop(silent);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut c, _) = server.session().await;
    assert!(c.call("environment/info", json!({})).await["shell"].is_object());
}

#[tokio::test]
async fn descriptor_exhaustion_gets_clear_errors_and_the_listener_recovers() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    // A server with few descriptors: connections use them up, spawns then fail clearly, and
    // the listener accepts again once descriptors are free.
    #[allow(clippy::disallowed_methods)]
    let mut child = Command::new("sh")
        .args([
            "-c",
            &format!(
                "ulimit -n 40; exec {} --listen ws://127.0.0.1:0",
                crate::support::BIN
            ),
        ])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().to_string();
    let (mut c, _) = {
        let mut c = crate::support::Client::connect(&url).await;
        let sid = c.handshake(None).await;
        (c, sid)
    };
    let addr = url.trim_start_matches("ws://").to_string();
    let mut hogs = Vec::new();
    for _ in 0..60 {
        if let Ok(s) = tokio::net::TcpStream::connect(&addr).await {
            hogs.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = c.sh("p", "true", json!({})).await;
    let msg = r["error"]["message"].as_str().unwrap_or("").to_string();
    assert!(msg.contains("Too many open files"), "{r}");
    drop(hogs);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut d = crate::support::Client::connect(&url).await;
    d.handshake(None).await;
    assert!(d.sh("q", "true", json!({})).await.get("result").is_some());
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn running_process_cap_per_server() {
    let server = Server::start(&["--max-processes", "2"]);
    let (mut a, _) = server.session().await;
    let (mut b, _) = server.session().await;
    a.sh("a1", "sleep 30", json!({})).await;
    b.sh("b1", "sleep 30", json!({})).await;
    let r = b.sh("b2", "sleep 30", json!({})).await;
    assert_eq!(r["error"]["code"], -32600, "{r}");
    assert!(r["error"]["message"]
        .as_str()
        .unwrap()
        .contains("per server"));
    a.call("process/terminate", json!({"processId": "a1"}))
        .await;
    a.wait_event("process/exited", "a1").await;
    assert!(b.sh("b2", "true", json!({})).await.get("result").is_some());
    b.call("process/terminate", json!({"processId": "b1"}))
        .await;
}
