//! Escape tests over the wire: a workspace-write-like policy (root readable, one writable
//! workspace, one denied file, network restricted) through `fs/*` and `process/start`, with
//! every path spelling we know of. Nothing may land outside the workspace, and denied reads
//! stay denied. Also the managed network of `process/start` (`enforceManagedNetwork`).

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{b64, unb64, Client, Server};

const SECRET: &str = "TOPSECRET-4217";

/// A base directory holding the workspace and what lies outside it.
struct Fixture {
    _dir: tempfile::TempDir,
    ws: PathBuf,
    outside: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        let ws = base.join("ws");
        let outside = base.join("outside");
        std::fs::create_dir_all(&ws).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("victim.txt"), "orig").unwrap();
        std::fs::write(outside.join("secret.txt"), SECRET).unwrap();
        std::fs::write(ws.join("file.txt"), "inside").unwrap();
        symlink(&outside, ws.join("out")).unwrap();
        symlink(outside.join("new.txt"), ws.join("dangling")).unwrap();
        symlink(outside.join("secret.txt"), ws.join("secret_link")).unwrap();
        std::fs::hard_link(outside.join("victim.txt"), ws.join("hl")).unwrap();
        Fixture {
            _dir: dir,
            ws,
            outside,
        }
    }

    /// A workspace-write-like sandbox.
    fn sandbox(&self) -> Value {
        json!({
            "permissions": {"type": "managed", "network": "restricted", "file_system": {
                "type": "restricted", "entries": [
                    {"path": {"type": "special", "value": {"kind": "root"}}, "access": "read"},
                    {"path": {"type": "path", "path": uri(&self.ws)}, "access": "write"},
                    {"path": {"type": "path", "path": uri(&self.outside.join("secret.txt"))},
                     "access": "deny"},
                ]}},
            "windowsSandboxLevel": "disabled",
        })
    }

    fn outside_names(&self) -> BTreeSet<String> {
        std::fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Nothing was added to, removed from or changed outside the workspace.
    fn assert_outside_untouched(&self) {
        let expected: BTreeSet<String> = ["victim.txt", "secret.txt"]
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(self.outside_names(), expected);
        let victim = std::fs::read_to_string(self.outside.join("victim.txt")).unwrap();
        assert_eq!(victim, "orig");
        let secret = std::fs::read_to_string(self.outside.join("secret.txt")).unwrap();
        assert_eq!(secret, SECRET);
    }
}

fn uri(p: &Path) -> String {
    format!("file://{}", p.display())
}

/// Spellings of paths outside the workspace, written relative to it.
fn spellings(ws: &Path, name: &str) -> Vec<String> {
    let w = ws.display();
    vec![
        format!("file://{w}/../outside/{name}"),
        format!("file://{w}//..//outside//{name}"),
        format!("file://{w}/./../outside/{name}"),
        format!("file://{w}/%2e%2e/outside/{name}"),
        format!("file://{w}/%2E%2E/outside/{name}"),
        format!("file://{w}/.%2e/outside/{name}"),
        format!("file://{w}/../outside/{name}."),
        format!("file://{w}/../outside/{name}/."),
        format!("file://{w}/sub/../../outside/{name}"),
        format!("file://{w}/out/{name}"),
        format!("file://{w}/out/./{name}"),
        format!("file://{w}/out/../outside/{name}"),
    ]
}

async fn session(server: &Server) -> Client {
    server.session().await.0
}

fn is_error(r: &Value) -> bool {
    r.get("error").is_some()
}

#[tokio::test]
async fn fs_writes_never_land_outside_the_workspace() {
    let f = Fixture::new();
    let server = Server::start(&[]);
    let mut c = session(&server).await;
    let sb = f.sandbox();
    // The sandbox is not simply refusing everything.
    let ok = c
        .request(
            "fs/writeFile",
            json!({"path": uri(&f.ws.join("ok.txt")), "dataBase64": b64(b"ok"), "sandbox": sb}),
        )
        .await;
    assert!(!is_error(&ok), "{ok}");
    // Some spellings resolve inside the workspace (`ws//..//x` is `ws/x` for a URI), and
    // those may succeed; what matters is that nothing lands outside.
    for target in spellings(&f.ws, "evil") {
        let through_link = target.contains("/out/") && !target.contains("..");
        let w = c
            .request(
                "fs/writeFile",
                json!({"path": target, "dataBase64": b64(b"pwned"), "sandbox": sb}),
            )
            .await;
        assert!(!through_link || is_error(&w), "writeFile {target}: {w}");
        f.assert_outside_untouched();
        for recursive in [false, true] {
            let m = c
                .request(
                    "fs/createDirectory",
                    json!({"path": target, "recursive": recursive, "sandbox": sb}),
                )
                .await;
            assert!(
                !through_link || is_error(&m),
                "createDirectory {target}: {m}"
            );
            f.assert_outside_untouched();
        }
        for recursive in [false, true] {
            let cp = c
                .request(
                    "fs/copy",
                    json!({"sourcePath": uri(&f.ws.join("file.txt")), "destinationPath": target,
                           "recursive": recursive, "sandbox": sb}),
                )
                .await;
            assert!(!through_link || is_error(&cp), "copy {target}: {cp}");
            f.assert_outside_untouched();
        }
    }
    // A dangling symlink to a path outside is not followed out.
    let d = c
        .request(
            "fs/writeFile",
            json!({"path": uri(&f.ws.join("dangling")), "dataBase64": b64(b"x"), "sandbox": sb}),
        )
        .await;
    assert!(is_error(&d), "{d}");
    let d = c
        .request(
            "fs/createDirectory",
            json!({"path": uri(&f.ws.join("dangling")), "recursive": true, "sandbox": sb}),
        )
        .await;
    assert!(is_error(&d), "{d}");
    f.assert_outside_untouched();
}

#[tokio::test]
async fn fs_removes_never_reach_outside_the_workspace() {
    let f = Fixture::new();
    let server = Server::start(&[]);
    let mut c = session(&server).await;
    let sb = f.sandbox();
    for target in spellings(&f.ws, "victim.txt") {
        for (recursive, force) in [(false, false), (true, true)] {
            let r = c
                .request(
                    "fs/remove",
                    json!({"path": target, "recursive": recursive, "force": force,
                           "sandbox": sb}),
                )
                .await;
            // `force` may hide a missing path; either way the victim must still be there.
            let _ = r;
            f.assert_outside_untouched();
        }
    }
    let r = c
        .request(
            "fs/remove",
            json!({"path": uri(&f.outside), "recursive": true, "force": true, "sandbox": sb}),
        )
        .await;
    assert!(is_error(&r), "{r}");
    // Removing the workspace's link to the outside removes the link only.
    let r = c
        .request(
            "fs/remove",
            json!({"path": uri(&f.ws.join("out")), "recursive": true, "sandbox": sb}),
        )
        .await;
    assert!(!is_error(&r), "{r}");
    assert!(f.ws.join("out").symlink_metadata().is_err());
    f.assert_outside_untouched();
}

#[tokio::test]
async fn a_hard_link_into_the_workspace_is_replaced_not_written_through() {
    let f = Fixture::new();
    let server = Server::start(&[]);
    let mut c = session(&server).await;
    let r = c
        .request(
            "fs/writeFile",
            json!({"path": uri(&f.ws.join("hl")), "dataBase64": b64(b"new"),
                   "sandbox": f.sandbox()}),
        )
        .await;
    assert!(!is_error(&r), "{r}");
    assert_eq!(std::fs::read_to_string(f.ws.join("hl")).unwrap(), "new");
    f.assert_outside_untouched();
}

#[tokio::test]
async fn a_symlink_swapped_during_writes_never_leads_out() {
    let f = Fixture::new();
    let server = Server::start(&[]);
    let mut c = session(&server).await;
    let swap = f.ws.join("swap");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (swap, outside, stop) = (swap.clone(), f.outside.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = std::fs::remove_dir_all(&swap);
                let _ = std::fs::create_dir(&swap);
                std::thread::sleep(Duration::from_micros(200));
                let _ = std::fs::remove_dir_all(&swap);
                let _ = symlink(&outside, &swap);
                std::thread::sleep(Duration::from_micros(200));
                let _ = std::fs::remove_file(&swap);
            }
        })
    };
    let sb = f.sandbox();
    for i in 0..60 {
        let name = format!("race{i}");
        let _ = c
            .request(
                "fs/writeFile",
                json!({"path": uri(&swap.join(&name)), "dataBase64": b64(b"x"), "sandbox": sb}),
            )
            .await;
        let _ = c
            .request(
                "fs/createDirectory",
                json!({"path": uri(&swap.join(format!("{name}d"))), "recursive": true,
                       "sandbox": sb}),
            )
            .await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    swapper.join().unwrap();
    f.assert_outside_untouched();
}

#[tokio::test]
async fn denied_reads_stay_denied_through_fs() {
    let f = Fixture::new();
    let server = Server::start(&[]);
    let mut c = session(&server).await;
    let sb = f.sandbox();
    let mut targets = spellings(&f.ws, "secret.txt");
    targets.push(uri(&f.outside.join("secret.txt")));
    targets.push(uri(&f.ws.join("secret_link")));
    for target in &targets {
        let r = c
            .request("fs/readFile", json!({"path": target, "sandbox": sb}))
            .await;
        let leaked = r["result"]["dataBase64"]
            .as_str()
            .is_some_and(|d| String::from_utf8_lossy(&unb64(d)).contains(SECRET));
        assert!(!leaked, "readFile {target}: {r}");
        let stolen = f.ws.join("stolen");
        let _ = c
            .request(
                "fs/copy",
                json!({"sourcePath": target, "destinationPath": uri(&stolen),
                       "recursive": false, "sandbox": sb}),
            )
            .await;
        // A copied symlink is a link, not the data; only a regular file could leak.
        let is_file = stolen.symlink_metadata().is_ok_and(|m| m.is_file());
        let copied = if is_file {
            std::fs::read_to_string(&stolen).unwrap_or_default()
        } else {
            String::new()
        };
        assert!(!copied.contains(SECRET), "copy {target}");
        let _ = std::fs::remove_file(&stolen);
    }
    // Streaming opens are confined the same way.
    let r = c
        .request(
            "fs/open",
            json!({"handleId": "h", "path": uri(&f.ws.join("secret_link")), "mode": "read",
                   "sandbox": sb}),
        )
        .await;
    if !is_error(&r) {
        let b = c
            .call(
                "fs/readBlock",
                json!({"handleId": "h", "offset": 0, "len": 1024}),
            )
            .await;
        let data = unb64(b["chunk"].as_str().unwrap_or(""));
        assert!(!String::from_utf8_lossy(&data).contains(SECRET));
    }
}

/// Runs `script` under the fixture's sandbox and returns (exit code, output).
async fn run_sandboxed(c: &mut Client, pid: &str, f: &Fixture, script: &str) -> (i64, String) {
    let r = c
        .request(
            "process/start",
            json!({"processId": pid, "argv": ["/bin/sh", "-c", script], "cwd": uri(&f.ws),
                   "env": {"PATH": "/usr/local/bin:/usr/bin:/bin"}, "tty": false,
                   "sandbox": f.sandbox()}),
        )
        .await;
    assert_eq!(r["result"]["sandboxType"], "linuxSeccomp", "{r}");
    let exited = c.wait_event("process/exited", pid).await;
    c.wait_event("process/closed", pid).await;
    let out = String::from_utf8_lossy(&c.output(pid)).into_owned();
    (exited["params"]["exitCode"].as_i64().unwrap_or(-1), out)
}

#[tokio::test]
async fn a_sandboxed_process_cannot_write_outside() {
    let f = Fixture::new();
    let server = Server::start(&[]);
    let mut c = session(&server).await;
    let o = f.outside.display();
    let script = format!(
        "echo ok > inside.txt; \
         echo x > {o}/p1; mkdir {o}/p2; cp file.txt {o}/p3; ln -s x {o}/p4; \
         touch out/p5; echo x > ../outside/p6; echo x > dangling; mkdir -p out/p7; \
         rm -f out/victim.txt; mv out/victim.txt p8; echo x >> out/victim.txt; \
         ln {o}/victim.txt hl2; ln {o}/secret.txt hl3; true"
    );
    let (_, out) = run_sandboxed(&mut c, "w", &f, &script).await;
    assert_eq!(
        std::fs::read_to_string(f.ws.join("inside.txt")).unwrap(),
        "ok\n",
        "{out}"
    );
    assert!(f.ws.join("hl2").symlink_metadata().is_err(), "{out}");
    assert!(f.ws.join("hl3").symlink_metadata().is_err(), "{out}");
    f.assert_outside_untouched();
}

#[tokio::test]
async fn a_sandboxed_process_cannot_read_denied_files() {
    let f = Fixture::new();
    let server = Server::start(&[]);
    let mut c = session(&server).await;
    let o = f.outside.display();
    let script = format!(
        "cat {o}/secret.txt; cat out/secret.txt; cat secret_link; cat ../outside/secret.txt; \
         cp {o}/secret.txt stolen; cat stolen; true"
    );
    let (_, out) = run_sandboxed(&mut c, "r", &f, &script).await;
    assert!(!out.contains(SECRET), "{out}");
}

#[tokio::test]
async fn a_nested_user_namespace_does_not_undo_the_sandbox() {
    if !Path::new("/usr/bin/unshare").exists() {
        eprintln!("skipped: no unshare(1) here");
        return;
    }
    let f = Fixture::new();
    let server = Server::start(&[]);
    let mut c = session(&server).await;
    let (o, w) = (f.outside.display(), f.ws.display());
    let script = format!(
        "unshare -Urm sh -c '\
           mount -o remount,bind,rw {o}; mount -o remount,rw /; \
           umount -l {o}/secret.txt; cat {o}/secret.txt; \
           echo pwned > {o}/nested1'; \
         unshare -Urm sh -c 'mount --bind {w} {o} && umount {o}; echo pwned > {o}/nested2'; \
         unshare -Ur sh -c 'echo pwned > {o}/nested3; cat {o}/secret.txt'; true"
    );
    let (_, out) = run_sandboxed(&mut c, "n", &f, &script).await;
    assert!(!out.contains(SECRET), "{out}");
    f.assert_outside_untouched();
}

#[tokio::test]
async fn a_sandboxed_process_cannot_connect_to_loopback_tcp() {
    let f = Fixture::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = Server::start(&[]);
    let mut c = session(&server).await;
    let script = format!(
        "bash -c 'echo hi > /dev/tcp/127.0.0.1/{port}' && echo CONNECTED; \
         bash -c 'echo hi > /dev/tcp/localhost/{port}' && echo CONNECTED; true"
    );
    let (_, out) = run_sandboxed(&mut c, "t", &f, &script).await;
    assert!(!out.contains("CONNECTED"), "{out}");
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the sandboxed process connected: {other:?} ({out})"),
    }
}

#[tokio::test]
async fn a_failed_sandboxed_write_is_reported_as_sandbox_denied() {
    let f = Fixture::new();
    let server = Server::start(&[]);
    let mut c = session(&server).await;
    let o = f.outside.display();
    let (code, out) = run_sandboxed(&mut c, "d", &f, &format!("echo x > {o}/denied")).await;
    assert_ne!(code, 0, "{out}");
    let exited = c.wait_event("process/exited", "d").await;
    assert_eq!(exited["params"]["sandboxDenied"], json!(true), "{exited}");
    let r = c.call("process/read", json!({"processId": "d"})).await;
    assert_eq!(r["sandboxDenied"], json!(true), "{r}");
    // A plain failure is not a denial.
    let (code, _) = run_sandboxed(&mut c, "e", &f, "exit 3").await;
    assert_eq!(code, 3);
    let r = c.call("process/read", json!({"processId": "e"})).await;
    assert_eq!(r["sandboxDenied"], json!(false), "{r}");
}

/// A proxy stand-in on the host's loopback: answers every connection with `proxy:` and what
/// it read.
fn start_proxy() -> (u16, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        for s in listener.incoming().take(4) {
            let Ok(mut s) = s else { return };
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).unwrap_or(0);
            let _ = s.write_all(b"proxy:");
            let _ = s.write_all(&buf[..n]);
        }
    });
    (port, handle)
}

async fn start_managed(c: &mut Client, pid: &str, script: &str, managed: Option<Value>) -> String {
    let mut p = json!({"processId": pid, "argv": ["/bin/bash", "-c", script],
                       "cwd": "file:///tmp", "env": {"PATH": "/usr/local/bin:/usr/bin:/bin"},
                       "tty": false, "enforceManagedNetwork": true});
    if let Some(m) = managed {
        p["managedNetwork"] = m;
    }
    let r = c.request("process/start", p).await;
    assert_eq!(r["result"]["sandboxType"], "linuxSeccomp", "{r}");
    c.wait_event("process/closed", pid).await;
    String::from_utf8_lossy(&c.output(pid)).into_owned()
}

#[tokio::test]
async fn managed_network_reaches_only_the_proxy_ports() {
    let (proxy, _h) = start_proxy();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    other.set_nonblocking(true).unwrap();
    let other_port = other.local_addr().unwrap().port();
    let server = Server::start(&[]);
    let (mut c, _) = server.session().await;
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{proxy} && echo -n hi >&3 && head -c 8 <&3; echo; \
         echo \"proxy=$HTTP_PROXY\"; \
         (echo x > /dev/tcp/127.0.0.1/{other_port}) 2>/dev/null && echo OTHER-CONNECTED; true"
    );
    let managed = json!({"loopbackPorts": [proxy]});
    let out = start_managed(&mut c, "m", &script, Some(managed)).await;
    assert!(out.contains("proxy:hi"), "{out}");
    assert!(
        out.contains(&format!("proxy=http://127.0.0.1:{proxy}")),
        "{out}"
    );
    assert!(!out.contains("OTHER-CONNECTED"), "{out}");
    assert!(matches!(other.accept(), Err(e) if e.kind() == ErrorKind::WouldBlock));
    // Without a context it fails closed: not even the proxy is reachable.
    let script =
        format!("(echo x > /dev/tcp/127.0.0.1/{proxy}) 2>/dev/null && echo CONNECTED; true");
    let out = start_managed(&mut c, "n", &script, None).await;
    assert!(!out.contains("CONNECTED"), "{out}");
    // A bad port is refused before anything runs.
    let r = c
        .request(
            "process/start",
            json!({"processId": "z", "argv": ["true"], "cwd": "file:///tmp", "env": {},
                   "tty": false, "enforceManagedNetwork": true,
                   "managedNetwork": {"loopbackPorts": [0]}}),
        )
        .await;
    assert_eq!(r["error"]["code"], json!(-32602), "{r}");
}
