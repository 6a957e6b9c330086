//! `fs/watchMissing` and `fs/missingChanged` over the wire (spec §5.11).

use std::time::Duration;

use serde_json::json;

use crate::support::Server;

fn uri(p: &std::path::Path) -> String {
    format!("file://{}", p.display())
}

#[tokio::test]
async fn watch_fires_once_when_a_missing_path_appears() {
    let server = Server::start(&[]);
    let (mut c, _) = server.session().await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("a/b/c.txt");
    let r = c
        .call(
            "fs/watchMissing",
            json!({"watchId": 1, "missing": [uri(&target), uri(&dir.path().join("other"))]}),
        )
        .await;
    assert_eq!(r, json!({"watching": true}));
    // Re-using a live id and an empty list are not errors, they just do not watch.
    let again = json!({"watchId": 1, "missing": [uri(&target)]});
    assert_eq!(
        c.call("fs/watchMissing", again).await,
        json!({"watching": false})
    );
    let empty = json!({"watchId": 2, "missing": []});
    assert_eq!(
        c.call("fs/watchMissing", empty).await,
        json!({"watching": false})
    );
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::write(&target, b"x").unwrap();
    let note = c.wait_note(|n| n["method"] == "fs/missingChanged").await;
    assert_eq!(note["params"], json!({"watchId": 1}));
    // The watch is over: its id can be used again and nothing else fires for it.
    std::fs::write(dir.path().join("other"), b"y").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = c
        .call(
            "fs/watchMissing",
            json!({"watchId": 1, "missing": [uri(&dir.path().join("third"))]}),
        )
        .await;
    assert_eq!(r, json!({"watching": true}));
    let fired = c
        .notes
        .iter()
        .filter(|n| n["method"] == "fs/missingChanged")
        .count();
    assert_eq!(fired, 1);
}

#[tokio::test]
async fn an_existing_path_fires_right_after_the_reply() {
    let server = Server::start(&[]);
    let (mut c, _) = server.session().await;
    let dir = tempfile::tempdir().unwrap();
    let id = c
        .request_async(
            "fs/watchMissing",
            json!({"watchId": 42, "missing": [uri(dir.path())]}),
        )
        .await;
    let first = c.recv().await.expect("reply");
    assert_eq!(first["id"], json!(id), "the reply comes first: {first}");
    assert_eq!(first["result"], json!({"watching": true}));
    let second = c.recv().await.expect("notification");
    assert_eq!(
        second,
        json!({"method": "fs/missingChanged", "params": {"watchId": 42}})
    );
}

#[tokio::test]
async fn bad_paths_and_limits_are_errors() {
    let server = Server::start(&[]);
    let (mut c, _) = server.session().await;
    let code = c
        .error_code(
            "fs/watchMissing",
            json!({"watchId": 1, "missing": ["relative/path"]}),
        )
        .await;
    assert_eq!(code, -32602);
    for id in 0..64 {
        let r = c
            .call(
                "fs/watchMissing",
                json!({"watchId": id, "missing": [format!("file:///nonexistent-es/{id}")]}),
            )
            .await;
        assert_eq!(r, json!({"watching": true}));
    }
    let code = c
        .error_code(
            "fs/watchMissing",
            json!({"watchId": 64, "missing": ["file:///nonexistent-es/64"]}),
        )
        .await;
    assert_eq!(code, -32600);
    // Watches belong to the connection: a new connection starts with none.
    drop(c);
    let (mut c2, _) = server.session().await;
    let r = c2
        .call(
            "fs/watchMissing",
            json!({"watchId": 0, "missing": ["file:///nonexistent-es/0"]}),
        )
        .await;
    assert_eq!(r, json!({"watching": true}));
}

#[tokio::test]
async fn capability_is_announced() {
    let server = Server::start(&[]);
    let mut c = server.connect().await;
    let r = c.call("initialize", json!({"clientName": "it"})).await;
    assert_eq!(
        r["environmentInfo"]["capabilities"]["fsWatchMissing"],
        json!(true),
        "{r}"
    );
}
