//! The command line: flags, `--listen` parsing errors, the announced URL.

use std::process::Command;

use crate::support::{Server, BIN};

fn run(args: &[&str]) -> std::process::Output {
    #[allow(clippy::disallowed_methods)]
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run exec-server")
}

#[test]
fn listen_errors_use_upstream_messages() {
    let out = run(&["--listen", "ws://localhost:1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid websocket --listen URL `ws://localhost:1`; expected `ws://IP:PORT`"),
        "{err}"
    );
    let out = run(&["--listen", "tcp://1.2.3.4:5"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(
        "unsupported --listen URL `tcp://1.2.3.4:5`; expected `ws://IP:PORT` or `stdio`"
    ));
}

#[test]
fn listen_and_remote_conflict_as_upstream() {
    let out = run(&[
        "--listen",
        "ws://127.0.0.1:0",
        "--remote",
        "http://127.0.0.1:1",
        "--environment-id",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the argument '--listen <URL>' cannot be used with '--remote <URL>'"),
        "{err}"
    );
}

#[test]
fn rendezvous_threads_must_be_at_least_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("rv.toml");
    std::fs::write(&config, "").expect("config");
    let config = config.to_str().expect("utf-8");
    let out = run(&[
        "rendezvous",
        "--listen",
        "http://127.0.0.1:0",
        "--config",
        config,
        "--threads",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--threads"), "{err}");
}

#[test]
fn version_and_help_describe_the_flags() {
    let out = run(&["--version"]);
    assert!(out.status.success());
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(v.starts_with("exec-server "), "{v}");
    let help = String::from_utf8_lossy(&run(&["--help"]).stdout).to_string();
    for flag in [
        "--listen",
        "--concurrent-requests",
        "--session-ttl",
        "--retention-per-process",
    ] {
        assert!(help.contains(flag), "help lacks {flag}");
    }
}

#[tokio::test]
async fn port_zero_announces_the_bound_url_first() {
    let server = Server::start(&[]);
    let port: u16 = server.url.rsplit(':').next().unwrap().parse().unwrap();
    assert_ne!(port, 0);
    let mut c = server.connect().await;
    c.handshake(None).await;
}
