//! Output retention: back-pressure instead of loss, explicit gaps for evicted output.

use std::time::Duration;

use serde_json::json;

use crate::support::{unb64, Server};

const MIB: usize = 1 << 20;

#[tokio::test]
async fn undelivered_output_is_never_dropped() {
    // 1 MiB of retention, 24 MiB of output produced while no connection is attached: the
    // child must wait for a reader instead of losing output.
    let server = Server::start(&["--retention-per-process", "1048576"]);
    let (mut a, sid) = server.session().await;
    a.sh("big", "sleep 1; head -c 25165824 /dev/zero", json!({}))
        .await;
    drop(a);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut b = server.connect().await;
    b.handshake(Some(&sid)).await;
    let first = b
        .call("process/read", json!({"processId": "big", "maxBytes": 1}))
        .await;
    assert_eq!(
        first["exited"], false,
        "the child was held back, not drained"
    );
    b.wait_event("process/closed", "big").await;
    let mut got = std::collections::BTreeMap::new();
    // What the read returned is delivered too (notifications skip what reads carried).
    for ch in first["chunks"].as_array().unwrap() {
        got.insert(
            ch["seq"].as_u64().unwrap(),
            unb64(ch["chunk"].as_str().unwrap()).len(),
        );
    }
    for n in b.notes.iter().filter(|n| n["method"] == "process/output") {
        let len = unb64(n["params"]["chunk"].as_str().unwrap()).len();
        got.insert(n["params"]["seq"].as_u64().unwrap(), len);
    }
    assert_eq!(
        got.values().sum::<usize>(),
        24 * MIB,
        "every byte was pushed"
    );
    // Only the exit event may sit between output seqs: at most one seq without bytes.
    let last = *got.keys().last().unwrap();
    assert!(got.len() as u64 + 1 >= last, "some seq was never delivered");
}

#[tokio::test]
async fn evicted_output_is_reported_as_a_gap() {
    let server = Server::start(&["--retention-per-process", "1048576"]);
    let (mut c, _) = server.session().await;
    c.sh("big", "head -c 8388608 /dev/zero", json!({})).await;
    c.wait_event("process/closed", "big").await;
    assert_eq!(c.output("big").len(), 8 * MIB);
    let r = c.call("process/read", json!({"processId": "big"})).await;
    let gap = &r["gap"];
    assert_eq!(gap["fromSeq"], 1);
    let first = r["chunks"][0]["seq"].as_u64().unwrap();
    // The gap ends right before the first retained event (which may be the exit event).
    assert!(gap["toSeq"].as_u64().unwrap() < first);
    let retained: usize = r["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| unb64(c["chunk"].as_str().unwrap()).len())
        .sum();
    assert_eq!(gap["bytes"].as_u64().unwrap() as usize + retained, 8 * MIB);
}

#[tokio::test]
async fn a_client_streaming_with_reads_alone_loses_nothing() {
    // Notifications are pushed too, but while a client keeps reading, only what the reads
    // returned counts as delivered: with 1 MiB of retention, 48 MiB arrive through reads.
    let server = Server::start(&["--retention-per-process", "1048576"]);
    let (mut c, _) = server.session().await;
    // The child waits for a line on stdin, so the first read (which puts the process in
    // reader mode) comes before any output: pushed output that no read asked for may be
    // evicted, which is what the other tests check.
    c.sh(
        "big",
        "read go; head -c 50331648 /dev/zero",
        json!({"pipeStdin": true}),
    )
    .await;
    let r = c
        .call(
            "process/read",
            json!({"processId": "big", "afterSeq": 0, "waitMs": 1}),
        )
        .await;
    assert!(r.get("gap").is_none());
    c.call(
        "process/write",
        json!({"processId": "big", "chunk": "Z28K", "writeId": "go"}),
    )
    .await;
    let mut after = 0u64;
    let mut total = 0usize;
    loop {
        let r = c
            .call(
                "process/read",
                json!({"processId": "big", "afterSeq": after, "waitMs": 1000}),
            )
            .await;
        assert!(r.get("gap").is_none(), "lost output at cursor {after}");
        for ch in r["chunks"].as_array().unwrap() {
            total += unb64(ch["chunk"].as_str().unwrap()).len();
        }
        after = r["nextSeq"].as_u64().unwrap() - 1;
        c.notes.clear();
        if r["closed"] == true {
            break;
        }
    }
    assert_eq!(total, 48 * MIB);
}
