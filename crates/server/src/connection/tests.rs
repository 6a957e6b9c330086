//! Engine tests through the in-memory transport: no socket, the real engine.

use std::time::Duration;

use serde_json::{json, Value};

use crate::connection::{InFrame, OutFrame};
use crate::transport::memory::{self, Peer};
use crate::{ServeConfig, ServerState};

fn peer() -> Peer {
    memory::connect(ServerState::new(ServeConfig::default()), 8)
}

async fn send(p: &Peer, v: Value) {
    p.tx.send(InFrame::Message(v.to_string().into()))
        .await
        .expect("engine alive");
}

async fn recv(p: &mut Peer) -> Option<OutFrame> {
    tokio::time::timeout(Duration::from_secs(10), p.rx.recv())
        .await
        .expect("engine answered")
}

async fn reply(p: &mut Peer) -> Value {
    match recv(p).await {
        Some(OutFrame::Text(t)) => serde_json::from_str(&t).expect("json"),
        other => panic!("expected a reply, got {other:?}"),
    }
}

async fn handshake(p: &mut Peer) {
    send(
        p,
        json!({"id": 0, "method": "initialize", "params": {"clientName": "t"}}),
    )
    .await;
    assert!(reply(p).await["result"]["sessionId"].is_string());
    send(p, json!({"method": "initialized"})).await;
}

#[tokio::test]
async fn params_are_checked_before_the_lifecycle() {
    let mut p = peer();
    send(
        &p,
        json!({"id": 1, "method": "process/start", "params": {}}),
    )
    .await;
    assert_eq!(reply(&mut p).await["error"]["code"], -32602);
    send(&p, json!({"id": 2, "method": "environment/info"})).await;
    let r = reply(&mut p).await;
    assert_eq!(r["error"]["code"], -32600);
    assert_eq!(
        r["error"]["message"],
        "client must call initialize before using environment info methods"
    );
    send(
        &p,
        json!({"id": 3, "method": "initialize", "params": {"clientName": "t"}}),
    )
    .await;
    reply(&mut p).await;
    send(
        &p,
        json!({"id": 4, "method": "fs/close", "params": {"handleId": "h"}}),
    )
    .await;
    assert_eq!(
        reply(&mut p).await["error"]["message"],
        "client must send initialized before using filesystem methods"
    );
}

#[tokio::test]
async fn malformed_frames_get_id_minus_one_and_the_connection_lives() {
    let mut p = peer();
    handshake(&mut p).await;
    for raw in ["{oops", "[]", "7", ""] {
        p.tx.send(InFrame::Message(raw.to_string().into()))
            .await
            .unwrap();
        let r = reply(&mut p).await;
        assert_eq!(
            (r["id"].clone(), r["error"]["code"].clone()),
            (json!(-1), json!(-32600)),
            "{raw}"
        );
    }
    send(&p, json!({"id": "s", "method": "environment/status"})).await;
    assert_eq!(
        reply(&mut p).await,
        json!({"id": "s", "result": {"status": "ready"}})
    );
}

#[tokio::test]
async fn unknown_notification_closes_without_a_reply() {
    let mut p = peer();
    handshake(&mut p).await;
    send(&p, json!({"method": "nope"})).await;
    match recv(&mut p).await {
        Some(OutFrame::Close { code, .. }) => assert_eq!(code, 1008),
        other => panic!("expected a close, got {other:?}"),
    }
}

#[tokio::test]
async fn too_large_closes_with_1009() {
    let mut p = peer();
    p.tx.send(InFrame::TooLarge).await.unwrap();
    match recv(&mut p).await {
        Some(OutFrame::Close { code, .. }) => assert_eq!(code, 1009),
        other => panic!("expected a close, got {other:?}"),
    }
}

#[tokio::test]
async fn requests_in_flight_are_answered_after_input_ends() {
    let mut p = peer();
    handshake(&mut p).await;
    for i in 0..50 {
        send(&p, json!({"id": i + 10, "method": "environment/status"})).await;
    }
    let Peer { tx, mut rx } = p;
    drop(tx);
    let mut ids = Vec::new();
    while let Ok(Some(OutFrame::Text(t))) =
        tokio::time::timeout(Duration::from_secs(10), rx.recv()).await
    {
        let v: Value = serde_json::from_str(&t).unwrap();
        ids.push(v["id"].as_i64().unwrap());
    }
    ids.sort();
    assert_eq!(ids, (10..60).collect::<Vec<_>>());
}
