//! The client commands of the binary against a real server: `run` (streams, exit codes),
//! `info`, `cp` (round trip, modes, sizes), and `shell` in a real terminal under tmux.

use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::support::{Server, BIN};

fn exec(args: &[&str]) -> Output {
    #[allow(clippy::disallowed_methods)] // the binary under test
    Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run exec-server")
}

#[test]
fn run_sends_streams_to_the_right_place_and_exits_with_the_remote_code() {
    let server = Server::start(&[]);
    let out = exec(&[
        "run",
        &server.url,
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert_eq!(out.status.code(), Some(7));

    let out = exec(&["run", &server.url, "--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(out.status.code(), Some(137), "killed by SIGKILL is 128 + 9");

    let out = exec(&[
        "run",
        &server.url,
        "--cwd",
        "/tmp",
        "--env",
        "GREETING=hi there",
        "--",
        "sh",
        "-c",
        "printf '%s %s' \"$GREETING\" \"$PWD\"",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi there /tmp");
    assert_eq!(out.status.code(), Some(0));

    let out = exec(&["run", &server.url, "--", "/definitely/not/here"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot start `/definitely/not/here`"), "{err}");
}

#[test]
fn run_forwards_stdin() {
    let server = Server::start(&[]);
    #[allow(clippy::disallowed_methods)] // the binary under test
    let mut child = Command::new(BIN)
        .args(["run", &server.url, "--", "head", "-c", "11"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"hello world and more").expect("write");
    }
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.stdout, b"hello world");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn run_passes_end_of_input_on() {
    let server = Server::start(&[]);
    #[allow(clippy::disallowed_methods)] // the binary under test
    let mut child = Command::new(BIN)
        .args(["run", &server.url, "--", "wc", "-c"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"twelve bytes").expect("write");
    }
    let out = child.wait_with_output().expect("wait");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "12");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn connection_errors_say_what_to_do() {
    let out = exec(&["info", "ws://127.0.0.1:9"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to ws://127.0.0.1:9"), "{err}");
    assert!(err.contains("check that the server is running"), "{err}");
}

#[test]
fn info_prints_environment_info() {
    let server = Server::start(&[]);
    let out = exec(&["info", &server.url]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["platformOs"], "linux");
}

#[test]
fn cp_round_trips_files_and_directories_with_modes() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("big.bin");
    let data: Vec<u8> = (0..5_000_003u32).map(|i| (i ^ (i >> 9)) as u8).collect();
    std::fs::write(&src, &data).expect("write");
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o751)).expect("chmod");
    let up = dir.path().join("up.bin");
    let down = dir.path().join("down.bin");
    let s = |p: &std::path::Path| p.to_string_lossy().into_owned();

    let out = exec(&["cp", &server.url, &s(&src), &format!(":{}", s(&up))]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = exec(&["cp", &server.url, &format!(":{}", s(&up)), &s(&down)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read(&down).expect("read") == data);
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!((mode(&up), mode(&down)), (0o751, 0o751));

    // A tree, into an existing directory.
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).expect("mkdir");
    std::fs::write(tree.join("sub/secret"), b"s").expect("write");
    std::fs::set_permissions(
        tree.join("sub/secret"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    std::fs::write(tree.join("empty"), b"").expect("write");
    let remote = dir.path().join("remote");
    std::fs::create_dir(&remote).expect("mkdir");
    let out = exec(&[
        "cp",
        "-r",
        &server.url,
        &s(&tree),
        &format!(":{}", s(&remote)),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&remote.join("tree/sub/secret")), 0o600);
    let back = dir.path().join("back");
    let out = exec(&[
        "cp",
        "-r",
        &server.url,
        &format!(":{}", s(&remote.join("tree"))),
        &s(&back),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(back.join("sub/secret")).expect("read"), b"s");
    assert_eq!(std::fs::read(back.join("empty")).expect("read"), b"");
    assert_eq!(mode(&back.join("sub/secret")), 0o600);

    // Ambiguous or wrong syntax is refused with a hint.
    let out = exec(&["cp", &server.url, "a", "b"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("starting with `:`"));
    let out = exec(&["cp", &server.url, &s(&tree), ":/tmp/x"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass -r"));
}

fn tmux(args: &[&str]) -> Output {
    #[allow(clippy::disallowed_methods)] // driving a real terminal
    Command::new("tmux").args(args).output().expect("run tmux")
}

fn capture(session: &str) -> String {
    String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", session]).stdout).into_owned()
}

fn wait_for(session: &str, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let screen = capture(session);
        if screen.contains(needle) || std::time::Instant::now() > deadline {
            return screen;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn shell_works_in_a_real_terminal_with_resize() {
    if tmux(&["-V"]).status.code() != Some(0) {
        eprintln!("SKIP: tmux is not installed (.ci/run installs it)");
        return;
    }
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let after = dir.path().join("stty-after");
    let session = format!("es-shell-{}", std::process::id());
    let script = format!(
        "stty -a > {before}; RUST_LOG=warn {BIN} shell {url} --shell /bin/sh; \
         echo \"exit=$?\" > {code}; stty -a > {after}; sleep 30",
        before = dir.path().join("stty-before").display(),
        url = server.url,
        code = dir.path().join("code").display(),
        after = after.display(),
    );
    let started = tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "80",
        "-y",
        "24",
        "sh",
        "-c",
        &script,
    ]);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let kill = scopeguard(session.clone());
    tmux(&["send-keys", "-t", &session, "echo $((6*7))", "Enter"]);
    let screen = wait_for(&session, "42");
    assert!(screen.contains("42"), "{screen}");
    tmux(&["send-keys", "-t", &session, "stty size", "Enter"]);
    let screen = wait_for(&session, "24 80");
    assert!(screen.contains("24 80"), "initial size: {screen}");
    tmux(&["resize-window", "-t", &session, "-x", "100", "-y", "30"]);
    std::thread::sleep(Duration::from_millis(500));
    tmux(&["send-keys", "-t", &session, "clear; stty size", "Enter"]);
    let screen = wait_for(&session, "30 100");
    assert!(screen.contains("30 100"), "after resize: {screen}");
    tmux(&["send-keys", "-t", &session, "exit 3", "Enter"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !after.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(200));
    let code = std::fs::read_to_string(dir.path().join("code")).expect("exit code written");
    assert_eq!(code.trim(), "exit=3");
    let before = std::fs::read_to_string(dir.path().join("stty-before")).expect("before");
    let after = std::fs::read_to_string(&after).expect("after");
    let modes = |s: &str| -> Vec<String> {
        s.split_whitespace()
            .filter(|w| ["icanon", "-icanon", "echo", "-echo", "isig", "-isig"].contains(w))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(modes(&before), modes(&after), "terminal restored");
    assert!(modes(&after).contains(&"icanon".to_string()));
    drop(kill);
}

/// Kills the tmux session when dropped, so a failed test leaves nothing behind.
struct KillSession(String);

fn scopeguard(session: String) -> KillSession {
    KillSession(session)
}

impl Drop for KillSession {
    fn drop(&mut self) {
        tmux(&["kill-session", "-t", &self.0]);
    }
}

#[test]
fn ctrl_c_interrupts_the_remote_process() {
    let server = Server::start(&[]);
    #[allow(clippy::disallowed_methods)] // the binary under test
    let child = Command::new(BIN)
        .args([
            "run",
            &server.url,
            "--",
            "sh",
            "-c",
            "echo ready; exec sleep 30",
        ])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id() as i32;
    let mut child = child;
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).expect("ready line");
    assert_eq!(line, "ready\n");
    #[allow(clippy::disallowed_methods)] // send SIGINT as a terminal's Ctrl-C would
    let killed = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(130), "SIGINT is 128 + 2");
}

#[test]
fn the_token_options_authenticate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "open-sesame\n").expect("write");
    let token = token.to_string_lossy().into_owned();
    let server = Server::start(&["--ws-auth", "capability-token", "--ws-token-file", &token]);
    let out = exec(&["info", &server.url]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pass --token"), "{err}");
    let out = exec(&["info", "--token-file", &token, &server.url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = exec(&["run", "--token", "open-sesame", &server.url, "--", "true"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
