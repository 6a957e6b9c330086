//! The filter and the supervisor on a real process tree: a shell started with the filter
//! installed in a `pre_exec` hook, its execs received, recorded and decided here.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::Duration;

use exec_server_execguard::{filter, supervise, ExecRequest, Triage};

/// Runs `script` under `sh -c` with the guard; `decide` answers every exec but the first.
/// Returns the programs of the execs seen (after the first) and the shell's output.
async fn guarded(script: &str, deny: &'static str) -> (Vec<PathBuf>, String) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let prog = filter::exec_filter();
    #[allow(clippy::disallowed_methods)]
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.args(["-c", script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let fd = theirs.as_raw_fd();
    // SAFETY: the hook only makes system calls and touches no lock or allocation.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            let listener = filter::install_program(&prog)?;
            exec_server_sandbox::fdpass::send_fd(fd, Some(&listener))
        });
    }
    let (rx_tx, rx_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let listener = exec_server_sandbox::fdpass::recv_fd(ours.as_raw_fd())
            .unwrap()
            .unwrap();
        let _ = rx_tx.send(supervise(listener, |_, _| Triage::Ask).unwrap());
    });
    let child = std::thread::spawn(move || cmd.spawn().unwrap().wait_with_output().unwrap());
    let mut rx = rx_rx.await.unwrap();
    let mut seen = Vec::new();
    while let Some(req) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no hang")
    {
        let req: ExecRequest = req;
        if req.initial {
            req.allow().unwrap();
            continue;
        }
        seen.push(req.exec.program.clone());
        let refuse = req
            .exec
            .subjects
            .iter()
            .any(|s| s.program.file_name().is_some_and(|n| n == deny));
        if refuse {
            req.deny(libc::EPERM).unwrap();
        } else {
            req.allow().unwrap();
        }
    }
    let out = tokio::task::spawn_blocking(move || child.join().unwrap())
        .await
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (seen, text)
}

#[tokio::test(flavor = "multi_thread")]
async fn nested_execs_are_all_seen_and_a_denied_one_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "x").unwrap();
    let script = format!(
        "/bin/echo one; sh -c 'rm {v}'; env rm {v}; echo {v} | xargs rm; echo after",
        v = victim.display()
    );
    let (seen, out) = guarded(&script, "rm").await;
    assert!(victim.exists(), "rm was denied every time: {out}");
    assert!(out.contains("one") && out.contains("after"), "{out}");
    let names: Vec<String> = seen
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in ["echo", "sh", "rm", "env", "xargs"] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} not seen in {names:?}"
        );
    }
    assert!(
        names.iter().filter(|n| *n == "rm").count() >= 3,
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_script_is_checked_under_its_interpreter_and_a_setsid_child_is_still_caught() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "x").unwrap();
    let script_path = dir.path().join("job");
    std::fs::write(
        &script_path,
        format!("#!/bin/sh\nrm {}\n", victim.display()),
    )
    .unwrap();
    std::fs::set_permissions(
        &script_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let script = format!(
        "{s}; setsid sh -c 'rm {v}'; echo done",
        s = script_path.display(),
        v = victim.display()
    );
    let (seen, out) = guarded(&script, "rm").await;
    assert!(victim.exists(), "{out}");
    assert!(seen.contains(&script_path), "{seen:?}");
    assert!(out.contains("done"), "{out}");
}
