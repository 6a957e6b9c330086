//! Sessions: detach, resume, attached refusal, TTL expiry, writeIds across resume.

use std::time::Duration;

use serde_json::json;

use crate::support::{b64, pid_alive, unb64, wait_until, Server};

#[tokio::test]
async fn resume_keeps_processes_and_refuses_a_second_attach() {
    let server = Server::start(&[]);
    let (mut a, sid) = server.session().await;
    a.sh("cat", "cat", json!({"pipeStdin": true})).await;
    a.call(
        "process/write",
        json!({"processId": "cat", "chunk": b64(b"one\n"), "writeId": "w1"}),
    )
    .await;
    let mut b = server.connect().await;
    let r = b
        .request(
            "initialize",
            json!({"clientName": "b", "resumeSessionId": sid}),
        )
        .await;
    assert_eq!(r["error"]["code"], -32010);
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(b.handshake(Some(&sid)).await, sid);
    // The write id accepted on the first connection is remembered.
    b.call(
        "process/write",
        json!({"processId": "cat", "chunk": b64(b"one\n"), "writeId": "w1"}),
    )
    .await;
    b.call(
        "process/write",
        json!({"processId": "cat", "chunk": b64(b"two\n"), "writeId": "w2"}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = b.call("process/read", json!({"processId": "cat"})).await;
    let all: Vec<u8> = r["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| unb64(c["chunk"].as_str().unwrap()))
        .collect();
    assert_eq!(all, b"one\ntwo\n");
    let mut c = server.connect().await;
    let r = c
        .request(
            "initialize",
            json!({"clientName": "c", "resumeSessionId": "nope"}),
        )
        .await;
    assert_eq!(r["error"]["code"], -32600);
}

#[tokio::test]
async fn detached_session_expires_and_its_processes_die() {
    let server = Server::start(&["--session-ttl", "1"]);
    let (mut a, sid) = server.session().await;
    a.sh("run", "echo $$; exec sleep 300", json!({})).await;
    let n = a.wait_event("process/output", "run").await;
    let pid: i32 = String::from_utf8(unb64(n["params"]["chunk"].as_str().unwrap()))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    drop(a);
    assert!(wait_until(|| !pid_alive(pid), Duration::from_secs(6)).await);
    let mut b = server.connect().await;
    let r = b
        .request(
            "initialize",
            json!({"clientName": "b", "resumeSessionId": sid}),
        )
        .await;
    assert_eq!(r["error"]["code"], -32600);
}

#[tokio::test]
async fn output_produced_while_detached_is_pushed_after_resume() {
    let server = Server::start(&[]);
    let (mut a, sid) = server.session().await;
    a.sh("late", "sleep 0.5; echo while-detached", json!({}))
        .await;
    drop(a);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut b = server.connect().await;
    b.handshake(Some(&sid)).await;
    b.wait_event("process/closed", "late").await;
    assert_eq!(b.output("late"), b"while-detached\n");
}

#[tokio::test]
async fn server_shutdown_kills_processes() {
    let server = Server::start(&[]);
    let (mut a, _) = server.session().await;
    a.sh("run", "echo $$; exec sleep 300", json!({})).await;
    let n = a.wait_event("process/output", "run").await;
    let pid: i32 = String::from_utf8(unb64(n["params"]["chunk"].as_str().unwrap()))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix_kill_term(server.pid());
    assert!(wait_until(|| !pid_alive(pid), Duration::from_secs(5)).await);
}

fn nix_kill_term(pid: u32) {
    #[allow(clippy::disallowed_methods)]
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}
