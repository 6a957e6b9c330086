//! Durable, retry-safe execution over the wire (issue 10): the client library and `run`
//! against the real server through a fault-injecting proxy (lost replies, lost requests,
//! connections cut mid-stream) and across a server frozen with SIGSTOP.

use std::time::{Duration, Instant};

use exec_server_client::{Client, ProcessEvent};
use exec_server_protocol::process::{ProcessSignal, Stream};
use sha2::{Digest, Sha256};

use crate::proxy::{Proxy, Rule};
use crate::support::{sh, Server, BIN};

/// No test waits longer than this for one event: a stall fails the test instead of hanging.
const STALL: Duration = Duration::from_secs(60);

async fn connect(url: &str) -> Client {
    Client::connect_ws(url, None).await.expect("connect")
}

/// Collects a process's output until its close, failing on a stall or any error event.
async fn collect(events: &mut exec_server_client::ProcessEvents) -> (Vec<u8>, Vec<u8>, i32) {
    tokio::time::timeout(STALL, events.collect_output())
        .await
        .expect("the process closed in time")
        .map(|(o, e, c)| (o, e, c.expect("an exit code")))
        .expect("no error event")
}

#[tokio::test]
async fn a_lost_start_reply_is_retried_and_the_command_runs_once() {
    let server = Server::start(&[]);
    let proxy = Proxy::start(&server.url).await;
    let client = connect(&proxy.url).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("runs");
    proxy.push(Rule::DropReply("process/start".into()));
    let script = format!("echo ran >> '{}'; echo done", file.display());
    let mut p = client
        .start_process(sh("once", &script))
        .await
        .expect("start");
    let (out, _, code) = collect(p.events()).await;
    assert_eq!((out.as_slice(), code), (&b"done\n"[..], 0));
    assert_eq!(
        std::fs::read_to_string(&file).expect("the command ran"),
        "ran\n",
        "the command ran exactly once"
    );
    assert!(
        p.attached(),
        "the handle is the process the lost start began"
    );
    assert_eq!(proxy.cuts(), 1, "the proxy swallowed the reply and cut");
    let starts = proxy.requests("process/start");
    assert_eq!(starts.len(), 2, "{starts:?}");
    assert!(starts[0].dropped && starts[0].params.get("ifExists").is_none());
    assert_eq!(starts[1].params["ifExists"], "attach");
    assert_eq!(
        starts[1].params["argv"], starts[0].params["argv"],
        "the retry is the same request"
    );
    // The first status is the question after the drop (a later one may ask, after the
    // catch-up read found the exit, whether the deadline caused it).
    let status = proxy.requests("process/status");
    assert!(
        !status.is_empty(),
        "the client asked what became of the start"
    );
    let state = &status[0].reply.as_ref().expect("status answered")["result"]["state"];
    assert!(state == "running" || state == "exited", "{state}");
    // The server answered the retry with the existing process (issue 10, point 1).
    let reply = starts[1].reply.as_ref().expect("the retry was answered");
    assert_eq!(reply["result"]["attached"], true, "{reply}");
}

#[tokio::test]
async fn a_start_request_lost_on_the_way_is_sent_again_and_runs_once() {
    let server = Server::start(&[]);
    let proxy = Proxy::start(&server.url).await;
    let client = connect(&proxy.url).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("runs");
    proxy.push(Rule::DropRequest("process/start".into()));
    let script = format!("echo ran >> '{}'; echo done", file.display());
    let mut p = client
        .start_process(sh("lost", &script))
        .await
        .expect("start");
    let (out, _, code) = collect(p.events()).await;
    assert_eq!((out.as_slice(), code), (&b"done\n"[..], 0));
    assert_eq!(std::fs::read_to_string(&file).expect("ran"), "ran\n");
    assert!(!p.attached(), "the server never saw the first start");
    let status = proxy.requests("process/status");
    assert!(!status.is_empty());
    assert_eq!(
        status[0].reply.as_ref().expect("answered")["result"]["state"],
        "notStarted"
    );
    let starts = proxy.requests("process/start");
    assert_eq!(starts.len(), 2, "{starts:?}");
    assert!(starts[0].dropped && starts[0].reply.is_none());
    assert_eq!(starts[1].params["ifExists"], "attach");
}

#[tokio::test]
async fn a_signal_retried_after_a_lost_reply_keeps_its_op_id() {
    let server = Server::start(&[]);
    let proxy = Proxy::start(&server.url).await;
    let client = connect(&proxy.url).await;
    let mut params = sh(
        "sig",
        "trap 'echo got-usr1; exit 0' USR1; echo ready; read never",
    );
    params.pipe_stdin = true;
    let p = client.start_process(params).await.expect("start");
    let (control, mut events) = p.split();
    match tokio::time::timeout(STALL, events.next_event()).await {
        Ok(Some(Ok(ProcessEvent::Output { data, .. }))) => assert_eq!(&data[..], b"ready\n"),
        other => panic!("expected the ready line: {other:?}"),
    }
    proxy.push(Rule::DropReply("process/signal".into()));
    control
        .signal(ProcessSignal::User1)
        .await
        .expect("the signal call succeeds after the retry");
    let (out, _, code) = collect(&mut events).await;
    assert_eq!((out.as_slice(), code), (&b"got-usr1\n"[..], 0));
    let sent = proxy.requests("process/signal");
    assert_eq!(sent.len(), 2, "{sent:?}");
    let op = &sent[0].params["opId"];
    assert!(
        op.is_string(),
        "the call carries an opId: {:?}",
        sent[0].params
    );
    assert_eq!(&sent[1].params["opId"], op, "the retry reuses it");
    assert!(sent[0].dropped && !sent[1].dropped);
}

/// A process writes `total` random bytes (and a copy to a file) once told to; the proxy cuts
/// the connection after `cut_at` server→client bytes of that stream. The client must resume
/// from its last seq and get every byte, in order, without stalling.
async fn cut_mid_stream(total: u64, cut_at: u64) -> Duration {
    let server = Server::start(&[]);
    let proxy = Proxy::start(&server.url).await;
    let client = connect(&proxy.url).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("produced");
    let script = format!(
        "read go; head -c {total} /dev/urandom | tee '{}'",
        file.display()
    );
    let mut params = sh("stream", &script);
    params.pipe_stdin = true;
    let p = client.start_process(params).await.expect("start");
    let (control, mut events) = p.split();
    proxy.push(Rule::CutAfter(cut_at));
    let started = Instant::now();
    control.write(b"go\n").await.expect("write");
    let mut hasher = Sha256::new();
    let (mut got, mut code, mut last_seq) = (0u64, None, 0);
    loop {
        let ev = tokio::time::timeout(STALL, events.next_event())
            .await
            .unwrap_or_else(|_| panic!("stalled after {got} bytes"))
            .expect("the stream ended before the close")
            .expect("no output lost");
        match ev {
            ProcessEvent::Output { seq, stream, data } => {
                assert_eq!(stream, Stream::Stdout);
                assert!(seq > last_seq, "seq {seq} after {last_seq}");
                last_seq = seq;
                hasher.update(&data);
                got += data.len() as u64;
            }
            ProcessEvent::Exited { exit_code, .. } => code = Some(exit_code),
            ProcessEvent::Closed { .. } => break,
        }
    }
    let took = started.elapsed();
    assert_eq!(proxy.cuts(), 1, "the proxy cut the stream");
    assert!(proxy.connections() >= 2, "the client reconnected");
    assert_eq!(code, Some(0));
    assert_eq!(got, total, "byte count");
    assert_eq!(hasher.finalize(), file_sha256(&file), "the bytes differ");
    took
}

fn file_sha256(path: &std::path::Path) -> sha2::digest::Output<Sha256> {
    use std::io::Read as _;
    let mut f = std::fs::File::open(path).expect("open");
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf).expect("read") {
            0 => return hasher.finalize(),
            n => hasher.update(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn a_cut_after_an_8k_burst_loses_nothing() {
    // The burst is one ~11 KB notification: the cut lands in its middle.
    let took = cut_mid_stream(8 << 10, 4 << 10).await;
    eprintln!("8 KiB burst with a cut: {took:?}");
}

#[tokio::test]
async fn a_cut_after_a_256_mib_stream_loses_nothing() {
    // 256 MiB is ~342 MiB of base64 on the wire; the cut comes after 200 MiB of it.
    let took = cut_mid_stream(256 << 20, 200 << 20).await;
    eprintln!("256 MiB stream with a cut: {took:?}");
}

/// `kill -SIG pid`.
fn signal(sig: &str, pid: u32) {
    #[allow(clippy::disallowed_methods)]
    let status = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {pid}");
}

/// What a stream reader task collected: the output, when each chunk arrived, the exit code.
type Collected = (Vec<u8>, Vec<Instant>, Option<i32>);

/// Reads a process's events to its close in a task of its own.
fn spawn_reader(
    mut events: exec_server_client::ProcessEvents,
) -> tokio::task::JoinHandle<Collected> {
    tokio::spawn(async move {
        let (mut out, mut arrivals, mut code) = (Vec::new(), Vec::new(), None);
        while let Some(ev) = events.next_event().await {
            match ev.expect("no error event") {
                ProcessEvent::Output { data, .. } => {
                    out.extend_from_slice(&data);
                    arrivals.push(Instant::now());
                }
                ProcessEvent::Exited { exit_code, .. } => code = Some(exit_code),
                ProcessEvent::Closed { .. } => break,
            }
        }
        (out, arrivals, code)
    })
}

#[tokio::test]
async fn a_frozen_server_resumes_the_stream_and_fires_a_passed_deadline() {
    const FREEZE: Duration = Duration::from_secs(30);
    let server = Server::start(&[]);
    // Two clients: one keeps its link through the freeze (nothing on it times out); the other
    // watches heartbeats (every 200 ms), so it takes the silent link for dead, reconnects
    // (through a proxy that counts connections) and resumes once the server answers again.
    let client = connect(&server.url).await;
    let proxy = Proxy::start(&server.url).await;
    let watching = Client::connect(
        exec_server_client::Connector::WebSocket(exec_server_client::WebSocketTarget::new(
            proxy.url.clone(),
        )),
        exec_server_client::ConnectOptions {
            heartbeat: Some(Duration::from_millis(200)),
            ..Default::default()
        },
    )
    .await
    .expect("connect with heartbeats");
    // A paced stream that runs through the freeze (the child is not frozen, only the server).
    let lines = 1500;
    let script = format!(
        "i=0; while [ $i -lt {lines} ]; do echo \"line $i of a stream across a frozen server\"; \
         i=$((i+1)); sleep 0.02; done"
    );
    let mut expected = Vec::new();
    for i in 0..lines {
        expected
            .extend_from_slice(format!("line {i} of a stream across a frozen server\n").as_bytes());
    }
    let kept = client
        .start_process(sh("stream", &script))
        .await
        .expect("start the stream");
    let watched = watching
        .start_process(sh("stream", &script))
        .await
        .expect("start the watched stream");
    // A process whose deadline passes while the server is frozen.
    let mut params = sh("deadline", "exec sleep 120");
    params.timeout_ms = Some(3000);
    params.kill_grace_ms = Some(1000);
    let started = Instant::now();
    let mut deadline = client
        .start_process(params)
        .await
        .expect("start the sleeper");
    let sleeper = tokio::spawn(async move {
        loop {
            match deadline.events().next_event().await {
                Some(Ok(ProcessEvent::Exited {
                    exit_code,
                    timed_out,
                    ..
                })) => return (Instant::now(), exit_code, timed_out),
                Some(Ok(_)) => continue,
                other => panic!("the sleeper's stream ended without an exit: {other:?}"),
            }
        }
    });
    let (_, mut kept_events) = kept.split();
    let (_, mut watched_events) = watched.split();
    // Freeze once both streams flow and the watching client has had heartbeats (25 lines take
    // at least 500 ms: two intervals).
    let mut first = Vec::new();
    while first.len() < 25 * 45 {
        match tokio::time::timeout(STALL, watched_events.next_event()).await {
            Ok(Some(Ok(ProcessEvent::Output { data, .. }))) => first.extend_from_slice(&data),
            other => panic!("expected output: {other:?}"),
        }
    }
    let mut kept_first = Vec::new();
    match tokio::time::timeout(STALL, kept_events.next_event()).await {
        Ok(Some(Ok(ProcessEvent::Output { data, .. }))) => kept_first.extend_from_slice(&data),
        other => panic!("expected output: {other:?}"),
    }
    let kept_reader = spawn_reader(kept_events);
    let watched_reader = spawn_reader(watched_events);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "the freeze must begin before the 3 s deadline"
    );
    assert_eq!(proxy.connections(), 1);

    signal("STOP", server.pid());
    let frozen_at = Instant::now();
    tokio::time::sleep(FREEZE).await;
    signal("CONT", server.pid());
    let thawed_at = Instant::now();

    let (exited_at, exit_code, timed_out) = tokio::time::timeout(STALL, sleeper)
        .await
        .expect("the deadline fired after the thaw")
        .expect("sleeper task");
    assert!(timed_out, "process/exited says timedOut");
    assert_eq!(exit_code, 128 + 15, "SIGTERM ended it");
    assert!(exited_at > thawed_at, "no event while frozen");
    let late = exited_at - thawed_at;
    eprintln!("the passed deadline fired {late:?} after the thaw");
    assert!(
        late < Duration::from_secs(5),
        "the passed deadline fired {late:?} after the thaw"
    );

    for (name, reader, mut out) in [
        ("kept link", kept_reader, kept_first),
        ("reconnected", watched_reader, first),
    ] {
        let (rest, arrivals, code) = tokio::time::timeout(STALL + FREEZE, reader)
            .await
            .expect("the stream finished")
            .expect("reader task");
        out.extend_from_slice(&rest);
        assert_eq!(code, Some(0), "{name}");
        assert_eq!(out.len(), expected.len(), "{name}: byte count");
        assert!(out == expected, "{name}: the stream's bytes differ");
        assert!(
            arrivals.iter().any(|t| *t > thawed_at),
            "{name}: output flowed again after the thaw"
        );
        assert!(
            !arrivals
                .iter()
                .any(|t| *t > frozen_at + Duration::from_millis(500) && *t < thawed_at),
            "{name}: nothing arrived from a frozen server"
        );
    }
    assert!(
        proxy.connections() >= 2,
        "the watching client took the silent link for dead and reconnected"
    );
}

#[tokio::test]
async fn run_survives_cuts_with_identical_stdout_and_exit_code() {
    let server = Server::start(&[]);
    let proxy = Proxy::start(&server.url).await;
    // Two cuts mid-stream: ~2.7 MB of stdout is ~3.7 MB on the wire.
    proxy.push(Rule::CutAfter(300_000));
    proxy.push(Rule::CutAfter(1_000_000));
    #[allow(clippy::disallowed_methods)]
    let child = tokio::process::Command::new(BIN)
        .args(["run", "-n", &proxy.url, "--"])
        .args(["sh", "-c", "seq 1 400000; echo to-stderr >&2; exit 7"])
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn run");
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("run finished in time")
        .expect("run");
    let mut expected = Vec::new();
    for i in 1..=400_000 {
        expected.extend_from_slice(format!("{i}\n").as_bytes());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(proxy.cuts(), 2, "both cuts happened; stderr: {stderr}");
    assert!(proxy.connections() >= 3, "run reconnected after each cut");
    assert_eq!(output.status.code(), Some(7), "stderr: {stderr}");
    assert_eq!(output.stdout.len(), expected.len(), "stdout length");
    assert!(output.stdout == expected, "stdout differs");
    assert!(stderr.contains("to-stderr"), "stderr: {stderr}");
}
