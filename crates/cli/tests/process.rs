//! Processes: env policy, arg0, PTY resize, signals, tree termination, exit codes, ordering.

use std::time::Duration;

use serde_json::json;

use crate::support::{b64, pid_alive, unb64, wait_until, Server};

#[tokio::test]
async fn env_policy_and_arg0() {
    let server = Server::start(&[]);
    let (mut c, _) = server.session().await;
    let policy = json!({"inherit": "all", "ignoreDefaultExcludes": false, "exclude": ["*PATH*"],
                        "set": {"FROM_SET": "s", "OVER": "set"}, "includeOnly": []});
    let r = c
        .request(
            "process/start",
            json!({"processId": "env", "argv": ["/usr/bin/env"], "cwd": "file:///tmp",
                   "env": {"OVER": "env", "MY_TOKEN": "t"}, "envPolicy": policy, "tty": false}),
        )
        .await;
    assert!(r.get("result").is_some(), "{r}");
    c.wait_event("process/closed", "env").await;
    let out = String::from_utf8(c.output("env")).unwrap();
    assert!(out.contains("ES_TEST_MARKER=visible"), "{out}");
    assert!(out.contains("FROM_SET=s") && out.contains("OVER=env") && out.contains("MY_TOKEN=t"));
    assert!(!out.contains("PATH="), "{out}");
    c.request(
        "process/start",
        json!({"processId": "a0", "argv": ["/bin/sh", "-c", "echo $0"], "arg0": "renamed",
               "cwd": "file:///tmp", "env": {}, "tty": false}),
    )
    .await;
    c.wait_event("process/closed", "a0").await;
    assert_eq!(c.output("a0"), b"renamed\n");
}

#[tokio::test]
async fn pty_resize_extension() {
    let server = Server::start(&[]);
    let (mut c, _) = server.session().await;
    c.sh("t", "read x; stty size", json!({"tty": true})).await;
    c.call(
        "process/resize",
        json!({"processId": "t", "rows": 40, "cols": 120}),
    )
    .await;
    c.call(
        "process/write",
        json!({"processId": "t", "chunk": b64(b"go\n"), "writeId": "1"}),
    )
    .await;
    c.wait_event("process/closed", "t").await;
    let out = String::from_utf8_lossy(&c.output("t")).to_string();
    assert!(out.contains("40 120"), "{out}");
    c.sh("p", "true", json!({})).await;
    assert_eq!(
        c.error_code(
            "process/resize",
            json!({"processId": "p", "rows": 1, "cols": 1})
        )
        .await,
        -32600
    );
}

#[tokio::test]
async fn extension_signals_are_delivered() {
    let server = Server::start(&[]);
    let (mut c, _) = server.session().await;
    c.sh(
        "s",
        "trap 'echo got-usr1' USR1; trap 'echo got-hup; exit 3' HUP; echo ready; while :; do sleep 0.05; done",
        json!({}),
    )
    .await;
    c.wait_event("process/output", "s").await;
    c.call(
        "process/signal",
        json!({"processId": "s", "signal": "user1"}),
    )
    .await;
    c.wait_note(|n| {
        n["method"] == "process/output"
            && unb64(n["params"]["chunk"].as_str().unwrap_or("")).starts_with(b"got-usr1")
    })
    .await;
    c.call(
        "process/signal",
        json!({"processId": "s", "signal": "hangup"}),
    )
    .await;
    let ex = c.wait_event("process/exited", "s").await;
    assert_eq!(ex["params"]["exitCode"], 3);
    c.wait_event("process/closed", "s").await;
    let out = String::from_utf8(c.output("s")).unwrap();
    assert!(out.contains("got-usr1") && out.contains("got-hup"), "{out}");
    assert_eq!(
        c.error_code(
            "process/signal",
            json!({"processId": "s", "signal": "kill"})
        )
        .await,
        -32602
    );
}

#[tokio::test]
async fn terminate_kills_descendants_that_left_the_group() {
    let server = Server::start(&[]);
    let (mut c, _) = server.session().await;
    // The grandchild calls setsid: it is in neither the child's group nor its session.
    c.sh(
        "tree",
        "setsid sh -c 'echo $$; exec sleep 300' & wait",
        json!({}),
    )
    .await;
    let n = c.wait_event("process/output", "tree").await;
    let escaped: i32 = String::from_utf8(unb64(n["params"]["chunk"].as_str().unwrap()))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pid_alive(escaped));
    let r = c
        .call("process/terminate", json!({"processId": "tree"}))
        .await;
    assert_eq!(r["running"], true);
    assert!(wait_until(|| !pid_alive(escaped), Duration::from_secs(5)).await);
    let ex = c.wait_event("process/exited", "tree").await;
    assert_eq!(ex["params"]["exitCode"], 137);
}

#[tokio::test]
async fn signal_deaths_report_128_plus_signal_with_or_without_tty() {
    let server = Server::start(&[]);
    let (mut c, _) = server.session().await;
    for tty in [false, true] {
        let id = format!("k{tty}");
        c.sh(&id, "kill -TERM $$", json!({"tty": tty})).await;
        let ex = c.wait_event("process/exited", &id).await;
        assert_eq!(ex["params"]["exitCode"], 143, "tty={tty}");
    }
}

#[tokio::test]
async fn events_of_a_process_arrive_in_seq_order() {
    let server = Server::start(&[]);
    let (mut c, _) = server.session().await;
    for i in 0..10 {
        c.sh(
            &format!("o{i}"),
            "head -c 500000 /dev/zero; echo e >&2; echo o",
            json!({}),
        )
        .await;
    }
    for i in 0..10 {
        c.wait_event("process/closed", &format!("o{i}")).await;
    }
    for i in 0..10 {
        let id = format!("o{i}");
        let seqs: Vec<u64> = c
            .notes
            .iter()
            .filter(|n| n["params"]["processId"] == id.as_str())
            .map(|n| n["params"]["seq"].as_u64().unwrap())
            .collect();
        let want: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, want, "{id}");
    }
}

#[tokio::test]
async fn start_failures_are_typed_and_release_the_id() {
    let server = Server::start(&[]);
    let (mut c, _) = server.session().await;
    let r = c
        .request(
            "process/start",
            json!({"processId": "x", "argv": ["/nonexistent"], "cwd": "file:///tmp", "env": {}, "tty": false}),
        )
        .await;
    assert_eq!(r["error"]["code"], -32603);
    assert_eq!(r["error"]["data"]["kind"], "spawnNotFound");
    let r = c.sh("x", "true", json!({})).await;
    assert_eq!(r["result"]["processId"], "x");
    assert_eq!(c.sh("x", "true", json!({})).await["error"]["code"], -32600);
}

#[tokio::test]
async fn close_stdin_extension_ends_input_after_earlier_writes() {
    let server = Server::start(&[]);
    let (mut c, _) = server.session().await;
    c.sh("wc", "wc -c", json!({"pipeStdin": true})).await;
    let w = c
        .request_async(
            "process/write",
            json!({"processId": "wc", "chunk": b64(b"12345"), "writeId": "1"}),
        )
        .await;
    let close = c
        .request_async("process/closeStdin", json!({"processId": "wc"}))
        .await;
    assert_eq!(c.response(w).await["result"]["status"], "accepted");
    assert_eq!(c.response(close).await["result"]["status"], "accepted");
    c.wait_event("process/closed", "wc").await;
    assert_eq!(String::from_utf8(c.output("wc")).unwrap().trim(), "5");
    let r = c
        .call("process/closeStdin", json!({"processId": "wc"}))
        .await;
    assert_eq!(r["status"], "stdinClosed");
    let r = c
        .call("process/closeStdin", json!({"processId": "ghost"}))
        .await;
    assert_eq!(r["status"], "unknownProcess");
}

#[tokio::test]
async fn status_and_list_say_what_became_of_each_process() {
    let server = Server::start(&["--process-retention", "1"]);
    let (mut c, _) = server.session().await;
    let never = c.call("process/status", json!({"processId": "nope"})).await;
    assert_eq!(never, json!({"state": "notStarted", "lastSeq": 0}));
    c.sh("sleeper", "echo up; exec sleep 30", json!({})).await;
    c.sh("killed", "kill -USR1 $$", json!({"tty": true})).await;
    c.sh("ok", "echo done; exit 3", json!({})).await;
    c.wait_event("process/closed", "killed").await;
    c.wait_event("process/closed", "ok").await;
    c.wait_event("process/output", "sleeper").await;

    let ok = c.call("process/status", json!({"processId": "ok"})).await;
    assert_eq!(ok["state"], "exited", "{ok}");
    assert_eq!(ok["exitCode"], 3);
    assert!(ok.get("signal").is_none(), "{ok}");
    // Output, exited, closed: three events, all retained.
    assert_eq!(ok["lastSeq"], 3, "{ok}");
    assert_eq!(ok["retained"], json!({"fromSeq": 1, "toSeq": 3}));
    let killed = c
        .call("process/status", json!({"processId": "killed"}))
        .await;
    assert_eq!(killed["state"], "exited");
    assert_eq!(killed["exitCode"], 128 + 10);
    assert_eq!(killed["signal"], 10, "{killed}");
    let sleeper = c
        .call("process/status", json!({"processId": "sleeper"}))
        .await;
    assert_eq!(sleeper["state"], "running");
    assert!(sleeper.get("exitCode").is_none());
    assert_eq!(sleeper["lastSeq"], 1);

    let list = c.call("process/list", json!({})).await;
    let procs = list["processes"].as_array().unwrap();
    let ids: Vec<&str> = procs
        .iter()
        .map(|p| p["processId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{list}");
    for id in ["sleeper", "killed", "ok"] {
        assert!(ids.contains(&id), "{list}");
    }
    let s = procs.iter().find(|p| p["processId"] == "sleeper").unwrap();
    assert_eq!(s["state"], "running");
    assert_eq!(s["tty"], false);
    assert_eq!(s["argv"][0], "/bin/sh");
    assert!(s["pid"].as_i64().unwrap() > 1);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let started = s["startedAt"].as_u64().unwrap();
    assert!(started <= now_ms && now_ms - started < 60_000, "{s}");
    let k = procs.iter().find(|p| p["processId"] == "killed").unwrap();
    assert_eq!(
        (k["state"].as_str(), k["tty"].as_bool()),
        (Some("exited"), Some(true))
    );

    // Past its retention a process is forgotten: its fate is then unknown, not "never ran".
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let st = c.call("process/status", json!({"processId": "ok"})).await;
        if st["state"] == "unknown" {
            assert_eq!(st, json!({"state": "unknown", "lastSeq": 0}));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never forgotten: {st}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let list = c.call("process/list", json!({})).await;
    assert_eq!(list["processes"].as_array().unwrap().len(), 1, "{list}");
    // Starting the id again makes it known again.
    let r = c.sh("ok", "exit 0", json!({})).await;
    assert!(r.get("error").is_none(), "{r}");
    let again = c.call("process/status", json!({"processId": "ok"})).await;
    assert!(
        ["running", "exited"].contains(&again["state"].as_str().unwrap()),
        "{again}"
    );
    c.call("process/terminate", json!({"processId": "sleeper"}))
        .await;
}
