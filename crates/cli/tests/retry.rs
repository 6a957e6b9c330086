//! Retry-safe execution over the wire (issue 10): `ifExists: "attach"`, operation ids for
//! signals, deadlines, replay after a resume with explicit gaps, the session retention cap,
//! heartbeats.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{pid_alive, unb64, wait_until, Client, Server};

const KIB: usize = 1024;

fn start_params(pid: &str, script: &str) -> Value {
    json!({
        "processId": pid, "argv": ["/bin/sh", "-c", script], "cwd": "file:///tmp",
        "env": {"PATH": "/usr/local/bin:/usr/bin:/bin"}, "tty": false,
    })
}

fn with(mut v: Value, extra: Value) -> Value {
    if let (Some(obj), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
        for (k, val) in extra {
            obj.insert(k.clone(), val.clone());
        }
    }
    v
}

fn text_of(c: &Client, pid: &str) -> String {
    String::from_utf8_lossy(&c.output(pid)).into_owned()
}

/// Receives until the process's output (by notification) contains `needle`.
async fn wait_text(c: &mut Client, pid: &str, needle: &str) {
    while !text_of(c, pid).contains(needle) {
        let v = c.recv().await.expect("connection closed");
        if v.get("method").is_some() && v.get("id").is_none() {
            c.notes.push(v);
        } else {
            c.responses.insert(v["id"].to_string(), v);
        }
    }
}

#[tokio::test]
async fn a_retried_start_attaches_instead_of_running_twice() {
    let server = Server::start(&[]);
    let (mut c, _) = server.session().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ran");
    let script = format!("echo once >> {}; exec sleep 30", log.display());
    let params = with(start_params("job", &script), json!({"ifExists": "attach"}));
    let first = c.call("process/start", params.clone()).await;
    assert!(first.get("attached").is_none(), "a fresh start: {first}");
    assert!(wait_until(|| log.exists(), Duration::from_secs(10)).await);

    // The retry of the same request answers the running process; nothing runs again.
    let again = c.call("process/start", params.clone()).await;
    assert_eq!(again["attached"], true, "{again}");
    assert_eq!(again["processId"], "job");
    assert_eq!(again["sandboxType"], first["sandboxType"]);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "once\n");

    // A different request under the same id names the field that differs.
    for (change, field) in [
        (json!({"argv": ["/bin/sh", "-c", "true"]}), "argv"),
        (json!({"cwd": "file:///"}), "cwd"),
        (json!({"env": {"PATH": "/bin"}}), "env"),
        (json!({"tty": true}), "tty"),
    ] {
        let r = c
            .request("process/start", with(params.clone(), change))
            .await;
        assert_eq!(r["error"]["code"], -32600, "{r}");
        let msg = r["error"]["message"].as_str().unwrap();
        assert!(msg.contains(&format!("different {field}")), "{msg}");
    }
    // Without ifExists, a duplicate stays upstream's error.
    let r = c
        .request("process/start", start_params("job", &script))
        .await;
    assert_eq!(r["error"]["code"], -32600);
    assert_eq!(r["error"]["message"], "process job already exists");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "once\n");
}

#[tokio::test]
async fn attach_to_a_forgotten_id_refuses_to_run_it_again() {
    let server = Server::start(&["--process-retention", "1"]);
    let (mut c, _) = server.session().await;
    let params = with(
        start_params("short", "echo hi"),
        json!({"ifExists": "attach"}),
    );
    c.call("process/start", params.clone()).await;
    c.wait_event("process/closed", "short").await;
    let mut forgotten = false;
    for _ in 0..100 {
        let s = c
            .call("process/status", json!({"processId": "short"}))
            .await;
        if s["state"] == "unknown" {
            forgotten = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(forgotten, "the process was never forgotten");
    let r = c.request("process/start", params).await;
    assert_eq!(r["error"]["code"], -32600, "{r}");
    assert!(r["error"]["message"]
        .as_str()
        .unwrap()
        .contains("already ran and was forgotten"));
}

#[tokio::test]
async fn a_repeated_signal_op_id_is_applied_once() {
    let server = Server::start(&[]);
    let (mut c, _) = server.session().await;
    // USR1 counts, USR2 reports the count.
    let script = "n=0; trap 'n=$((n+1)); echo got$n' USR1; trap 'echo count$n' USR2; \
                  echo ready; while :; do sleep 0.05; done";
    c.sh("counter", script, json!({})).await;
    wait_text(&mut c, "counter", "ready").await;
    let sig =
        |op: &str, signal: &str| json!({"processId": "counter", "signal": signal, "opId": op});
    c.call("process/signal", sig("a", "user1")).await;
    wait_text(&mut c, "counter", "got1").await;
    // The retry of op a is answered and not applied; op b asks for the count.
    c.call("process/signal", sig("a", "user1")).await;
    c.call("process/signal", sig("b", "user2")).await;
    wait_text(&mut c, "counter", "count").await;
    let out = text_of(&c, "counter");
    assert!(out.contains("count1"), "one USR1 arrived: {out:?}");

    // terminate's op id: the retry gets the first answer.
    let t = json!({"processId": "counter", "opId": "t1"});
    let first = c.call("process/terminate", t.clone()).await;
    assert_eq!(first["running"], true);
    c.wait_event("process/exited", "counter").await;
    let retried = c.call("process/terminate", t).await;
    assert_eq!(retried["running"], true, "the first answer again");
    let fresh = c
        .call(
            "process/terminate",
            json!({"processId": "counter", "opId": "t2"}),
        )
        .await;
    assert_eq!(fresh["running"], false);
}

#[tokio::test]
async fn a_deadline_kills_a_tree_that_ignores_sigterm() {
    let server = Server::start(&[]);
    let (mut c, _) = server.session().await;
    // The shell and its background child both ignore SIGTERM.
    let script = "trap '' TERM; sleep 60 & echo $!; wait; wait";
    let started = std::time::Instant::now();
    c.sh(
        "stubborn",
        script,
        json!({"timeoutMs": 300, "killGraceMs": 700}),
    )
    .await;
    c.sh("polite", "exec sleep 60", json!({"timeoutMs": 300}))
        .await;
    c.sh("quick", "true", json!({"timeoutMs": 60000})).await;

    let polite = c.wait_event("process/exited", "polite").await;
    assert_eq!(polite["params"]["timedOut"], true, "{polite}");
    assert_eq!(polite["params"]["exitCode"], 128 + 15, "SIGTERM ended it");

    let exited = c.wait_event("process/exited", "stubborn").await;
    let took = started.elapsed();
    assert_eq!(exited["params"]["timedOut"], true, "{exited}");
    assert_eq!(
        exited["params"]["exitCode"],
        128 + 9,
        "SIGKILL after the grace"
    );
    assert!(
        took >= Duration::from_millis(1000),
        "the grace was kept: {took:?}"
    );
    let child: i32 = text_of(&c, "stubborn").trim().parse().expect("child pid");
    assert!(
        wait_until(|| !pid_alive(child), Duration::from_secs(5)).await,
        "the grandchild ignoring SIGTERM was killed too"
    );
    c.wait_event("process/closed", "stubborn").await;
    let status = c
        .call("process/status", json!({"processId": "stubborn"}))
        .await;
    assert_eq!(status["timedOut"], true, "{status}");

    let quick = c.wait_event("process/exited", "quick").await;
    assert!(quick["params"].get("timedOut").is_none(), "{quick}");

    let r = c
        .request(
            "process/start",
            with(start_params("zero", "true"), json!({"timeoutMs": 0})),
        )
        .await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
}

#[tokio::test]
async fn a_resume_replays_notifications_after_the_clients_cursor_with_a_gap_first() {
    let server = Server::start(&["--retention-per-process", "65536"]);
    let (mut c, sid) = server.session().await;
    // 1 MiB in 4 KiB lines.
    c.sh(
        "gen",
        "head -c 1048576 /dev/zero | tr '\\0' x | fold -w 4096",
        json!({}),
    )
    .await;
    c.wait_event("process/closed", "gen").await;
    let total = c.output("gen").len();
    assert!(total >= 1024 * KIB, "{total}");
    drop(c);

    // The client claims to have nothing: the evicted part comes as one gap, then the rest.
    // The server may not have seen the close yet: "already attached" is retried.
    let mut r = server.connect().await;
    let params = json!({"clientName": "it", "resumeSessionId": sid, "replayAfter": {"gen": 0}});
    let mut res = r.request("initialize", params.clone()).await;
    for _ in 0..100 {
        if res["error"]["code"] != -32010 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        r = server.connect().await;
        res = r.request("initialize", params.clone()).await;
    }
    assert_eq!(res["result"]["sessionId"], sid.as_str(), "{res}");
    r.send(json!({"method": "initialized"})).await;
    r.wait_event("process/closed", "gen").await;
    let notes: Vec<&Value> = r
        .notes
        .iter()
        .filter(|n| n["params"]["processId"] == "gen")
        .collect();
    assert_eq!(notes[0]["method"], "process/gap", "{}", notes[0]);
    let gap = &notes[0]["params"];
    assert_eq!(gap["fromSeq"], 1);
    let first_seq = notes[1]["params"]["seq"].as_u64().unwrap();
    assert_eq!(gap["toSeq"].as_u64().unwrap() + 1, first_seq, "{gap}");
    let mut seq = first_seq - 1;
    for n in &notes[1..] {
        let s = n["params"]["seq"].as_u64().unwrap();
        assert_eq!(s, seq + 1, "replayed in order without holes");
        seq = s;
    }
    let replayed = r.output("gen").len();
    assert!(replayed <= 64 * KIB + 4 * KIB, "{replayed}");
    assert_eq!(gap["bytes"].as_u64().unwrap() as usize + replayed, total);
}

#[tokio::test]
async fn the_session_cap_evicts_delivered_output_of_other_processes() {
    let server = Server::start(&[
        "--retention-per-process",
        "1048576",
        "--retention-per-session",
        "1048576",
    ]);
    let (mut c, _) = server.session().await;
    c.sh("first", "head -c 786432 /dev/zero", json!({})).await;
    c.wait_event("process/closed", "first").await;
    let r = c.call("process/read", json!({"processId": "first"})).await;
    assert!(r.get("gap").is_none(), "all retained while under the cap");
    c.sh("second", "head -c 786432 /dev/zero", json!({})).await;
    c.wait_event("process/closed", "second").await;
    let r = c.call("process/read", json!({"processId": "first"})).await;
    let gap = r
        .get("gap")
        .unwrap_or_else(|| panic!("first was trimmed: {r}"));
    let kept: usize = r["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ch| unb64(ch["chunk"].as_str().unwrap()).len())
        .sum();
    assert_eq!(gap["bytes"].as_u64().unwrap() as usize + kept, 786432);
    let second = c.call("process/read", json!({"processId": "second"})).await;
    let kept2: usize = second["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ch| unb64(ch["chunk"].as_str().unwrap()).len())
        .sum();
    assert!(kept + kept2 <= 1048576, "{kept} + {kept2} over the cap");
}

#[tokio::test]
async fn heartbeats_carry_the_last_seq_of_running_processes() {
    let server = Server::start(&[]);
    let mut c = server.connect().await;
    let bad = c
        .request("initialize", json!({"clientName": "it", "heartbeatMs": 5}))
        .await;
    assert_eq!(bad["error"]["code"], -32602, "{bad}");
    let bad = c
        .request(
            "initialize",
            json!({"clientName": "it", "replayAfter": {"p": 1}}),
        )
        .await;
    assert_eq!(bad["error"]["code"], -32602, "{bad}");
    c.call(
        "initialize",
        json!({"clientName": "it", "heartbeatMs": 200}),
    )
    .await;
    c.send(json!({"method": "initialized"})).await;
    c.sh("beat", "echo one; echo two; exec sleep 30", json!({}))
        .await;
    c.sh("done", "true", json!({})).await;
    c.wait_event("process/closed", "done").await;
    wait_text(&mut c, "beat", "two").await;
    c.notes.clear();
    let hb = c
        .wait_note(|n| {
            n["method"] == "process/heartbeat"
                && n["params"]["processes"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|p| p["processId"] == "beat"))
        })
        .await;
    let procs = hb["params"]["processes"].as_array().unwrap();
    assert!(
        procs.iter().all(|p| p["processId"] != "done"),
        "only running processes: {hb}"
    );
    let beat = procs.iter().find(|p| p["processId"] == "beat").unwrap();
    let status = c.call("process/status", json!({"processId": "beat"})).await;
    assert_eq!(beat["lastSeq"], status["lastSeq"], "{hb} vs {status}");
}

#[tokio::test]
async fn the_admin_token_lists_every_sessions_processes() {
    let token_file = std::env::temp_dir().join(format!("admin-token-{}", std::process::id()));
    std::fs::write(&token_file, "let-me-see\n").unwrap();
    let server = Server::start(&["--admin-token-file", token_file.to_str().unwrap()]);
    let (mut a, sid_a) = server.session().await;
    let (mut b, sid_b) = server.session().await;
    a.sh("a1", "sleep 30", json!({})).await;
    b.sh("b1", "sleep 30", json!({})).await;

    // Without the flag's token: refused, and a session's own list stays its own.
    let r = a
        .request("process/list", json!({"allSessions": true}))
        .await;
    assert_eq!(r["error"]["code"], -32600, "{r}");
    assert!(r["error"]["message"]
        .as_str()
        .unwrap()
        .contains("adminToken"));
    let r = a
        .request(
            "process/list",
            json!({"allSessions": true, "adminToken": "guess"}),
        )
        .await;
    assert_eq!(r["error"]["message"], "invalid adminToken", "{r}");
    let own = a.call("process/list", json!({})).await;
    assert_eq!(own["processes"].as_array().unwrap().len(), 1, "{own}");
    assert!(own["processes"][0].get("sessionId").is_none());

    let all = a
        .call(
            "process/list",
            json!({"allSessions": true, "adminToken": "let-me-see"}),
        )
        .await;
    let mut seen: Vec<(String, String)> = all["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["sessionId"].as_str().unwrap().to_string(),
                p["processId"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    let mut want = vec![(sid_a, "a1".to_string()), (sid_b, "b1".to_string())];
    want.sort();
    assert_eq!(seen, want);
    for (c, id) in [(&mut a, "a1"), (&mut b, "b1")] {
        c.call("process/terminate", json!({"processId": id})).await;
    }
    let _ = std::fs::remove_file(token_file);
}

#[tokio::test]
async fn without_an_admin_token_all_sessions_is_refused() {
    let server = Server::start(&[]);
    let (mut c, _) = server.session().await;
    let r = c
        .request(
            "process/list",
            json!({"allSessions": true, "adminToken": "x"}),
        )
        .await;
    assert_eq!(r["error"]["code"], -32600, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--admin-token-file"),
        "{r}"
    );
}
