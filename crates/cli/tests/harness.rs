//! Remote mode, harness side (spec §10.7) over the wire: the real `exec-server rendezvous`, the
//! real executor registered with it (`--remote … --registration-bearer-stdin`), and the client
//! reaching that executor through the rendezvous: the library's `Connector::Noise`, and the
//! `run` and `cp` commands through the `CODEX_EXEC_SERVER_NOISE_*` variables and an
//! environments.toml `registry_url` entry. A cutting TCP proxy between the client and the
//! rendezvous drops the harness's relay socket mid-stream; the client reconnects with a fresh
//! connect bundle (tickets and authorizations are single-use, so reusing one would fail) and
//! resumes its session with nothing lost.

// durable.rs keeps its copy private; a second instance is cheaper than moving the file.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use exec_server_client::transport::NoiseConnectError;
use exec_server_client::{
    AuthToken, Client, ClientError, ConnectOptions, Connector, NoiseTarget, ProcessEvent,
};
use exec_server_protocol::fs::ReadFileParams;
use exec_server_protocol::PathUri;

use crate::proxy::Proxy;
use crate::support::{sh, BIN};

const ENV_ID: &str = "e2e";
const EXEC_TOKEN: &str = "exec-secret";
const HARNESS_TOKEN: &str = "harness-secret";
/// No test waits longer than this for one step: a stall fails the test instead of hanging.
const STALL: Duration = Duration::from_secs(60);

/// `exec-server rendezvous` on a free port; killed on drop.
struct Rendezvous {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    url: String,
    _dir: tempfile::TempDir,
}

impl Rendezvous {
    /// The default rendezvous: one thread (a current-thread runtime).
    fn start() -> Rendezvous {
        Rendezvous::start_with(&[])
    }

    /// A rendezvous with `extra` flags.
    fn start_with(extra: &[&str]) -> Rendezvous {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("rendezvous.toml");
        std::fs::write(
            &config,
            format!(
                "[environments.{ENV_ID}]\nexecutor_tokens = [\"{EXEC_TOKEN}\"]\n\
                 harness_tokens = [\"{HARNESS_TOKEN}\"]\n"
            ),
        )
        .expect("write config");
        #[allow(clippy::disallowed_methods)]
        let mut child = Command::new(BIN)
            .args(["rendezvous", "--listen", "http://127.0.0.1:0", "--config"])
            .arg(&config)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the rendezvous");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the url");
        let url = line.trim().to_string();
        assert!(url.starts_with("http://127.0.0.1:"), "first line: {url:?}");
        Rendezvous {
            child,
            url,
            _dir: dir,
        }
    }
}

impl Drop for Rendezvous {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `exec-server --remote URL --environment-id e2e --registration-bearer-stdin`; killed on drop.
struct Executor(Child);

impl Executor {
    fn start(registry: &str) -> Executor {
        #[allow(clippy::disallowed_methods)]
        let mut child = Command::new(BIN)
            .args(["--remote", registry, "--environment-id", ENV_ID])
            .arg("--registration-bearer-stdin")
            .env("RUST_LOG", "error")
            .env_remove("CODEX_API_KEY")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the executor");
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(stdin, "{EXEC_TOKEN}").expect("write the bearer");
        Executor(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A rendezvous and an executor attached to it.
struct World {
    rendezvous: Rendezvous,
    executor: Executor,
}

impl World {
    async fn start() -> World {
        World::start_with(Rendezvous::start()).await
    }

    /// The executor registered with `rendezvous`.
    async fn start_with(rendezvous: Rendezvous) -> World {
        let executor = Executor::start(&rendezvous.url);
        let world = World {
            rendezvous,
            executor,
        };
        // Attached once a client gets through (connect answers 503 until then; each open
        // retries it for a few seconds, and a loaded machine may need more).
        let deadline = Instant::now() + STALL;
        loop {
            let connector = Connector::Noise(world.target(&world.rendezvous.url));
            match Client::connect(connector, ConnectOptions::default()).await {
                Ok(client) => {
                    client.close();
                    return world;
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("executor not attached yet: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("the executor never attached: {e}"),
            }
        }
    }

    fn target(&self, registry: &str) -> NoiseTarget {
        NoiseTarget::new(registry, ENV_ID, AuthToken::Value(HARNESS_TOKEN.into()))
    }

    async fn client(&self, registry: &str) -> Client {
        let options = ConnectOptions {
            client_name: "harness-test".into(),
            recovery_timeout: STALL,
            ..ConnectOptions::default()
        };
        tokio::time::timeout(
            STALL,
            Client::connect(Connector::Noise(self.target(registry)), options),
        )
        .await
        .expect("connected in time")
        .expect("connect through the rendezvous")
    }
}

/// Runs the binary with a scrubbed client environment plus `vars`, stdin closed.
async fn exec(args: &[&str], vars: &[(&str, &str)]) -> Output {
    #[allow(clippy::disallowed_methods)]
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for name in [
        "CODEX_HOME",
        "CODEX_EXEC_SERVER_URL",
        "CODEX_EXEC_SERVER_NOISE_REGISTRY_URL",
        "CODEX_EXEC_SERVER_NOISE_ENVIRONMENT_ID",
        "CODEX_EXEC_SERVER_NOISE_AUTH_TOKEN",
        "CODEX_EXEC_SERVER_NOISE_CHATGPT_ACCOUNT_ID",
        "EXEC_SERVER_TOKEN",
    ] {
        cmd.env_remove(name);
    }
    cmd.envs(vars.iter().copied());
    tokio::time::timeout(STALL, cmd.output())
        .await
        .expect("the command ended in time")
        .expect("run exec-server")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn a_client_runs_commands_and_reads_files_through_the_rendezvous() {
    let world = World::start().await;
    let client = world.client(&world.rendezvous.url).await;
    let mut p = client
        .start_process(sh(
            &client.new_process_id(),
            "echo out; echo err >&2; exit 3",
        ))
        .await
        .expect("start");
    let (out, err, code) = tokio::time::timeout(STALL, p.events().collect_output())
        .await
        .expect("closed in time")
        .expect("no error event");
    assert_eq!(
        (text(&out), text(&err), code),
        ("out\n".into(), "err\n".into(), Some(3))
    );
    // The executor behind the rendezvous is the one we started.
    let mut p = client
        .start_process(sh(&client.new_process_id(), "echo $PPID"))
        .await
        .expect("start");
    let (out, _, _) = p.events().collect_output().await.expect("ppid");
    assert_eq!(text(&out).trim(), world.executor.pid().to_string());

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("data.bin");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &data).expect("write");
    let read = client
        .call::<exec_server_protocol::fs::ReadFile>(ReadFileParams {
            path: PathUri::from_path(&file).expect("uri"),
            follow_symlinks: true,
            sandbox: None,
        })
        .await
        .expect("fs/readFile");
    assert!(
        read.data_base64.decode().expect("base64") == data,
        "a 300 KB file crosses many relay records intact"
    );
}

#[tokio::test]
async fn run_remote_uses_the_noise_variables_and_propagates_the_exit_code() {
    // A multi-thread rendezvous here (`--threads 3`); the other tests use the default (1).
    let world = World::start_with(Rendezvous::start_with(&["--threads", "3"])).await;
    let home = tempfile::tempdir().expect("tempdir");
    let home = home.path().to_str().expect("utf-8 path");
    let vars = [
        ("CODEX_HOME", home),
        (
            "CODEX_EXEC_SERVER_NOISE_REGISTRY_URL",
            world.rendezvous.url.as_str(),
        ),
        ("CODEX_EXEC_SERVER_NOISE_ENVIRONMENT_ID", ENV_ID),
        ("CODEX_EXEC_SERVER_NOISE_AUTH_TOKEN", HARNESS_TOKEN),
    ];
    let o = exec(&["run", "remote", "--", "sh", "-c", "echo hi"], &vars).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "hi\n");
    let o = exec(
        &[
            "run",
            "remote",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 7",
        ],
        &vars,
    )
    .await;
    assert_eq!(o.status.code(), Some(7), "{}", text(&o.stderr));
    assert_eq!(
        (text(&o.stdout), text(&o.stderr)),
        ("out\n".into(), "err\n".into())
    );
}

#[tokio::test]
async fn cp_goes_through_an_environments_toml_registry_entry() {
    let world = World::start().await;
    let home = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        home.path().join("environments.toml"),
        format!(
            "[[environments]]\nid = \"relay\"\nregistry_url = \"{}\"\n\
             environment_id = \"{ENV_ID}\"\nauth_token_env = \"RELAY_HARNESS_TOKEN\"\n",
            world.rendezvous.url
        ),
    )
    .expect("write environments.toml");
    let work = tempfile::tempdir().expect("tempdir");
    let local = work.path().join("up.bin");
    let remote = work.path().join("remote.bin");
    let back = work.path().join("back.bin");
    // Three 1 MiB blocks and a tail: several blocks in flight, each many relay records.
    let data: Vec<u8> = (0..3_300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&local, &data).expect("write");
    let home = home.path().to_str().expect("utf-8");
    let vars = [("CODEX_HOME", home), ("RELAY_HARNESS_TOKEN", HARNESS_TOKEN)];
    let remote_arg = format!(":{}", remote.display());
    let o = exec(
        &[
            "cp",
            "-q",
            "relay",
            local.to_str().expect("utf-8"),
            &remote_arg,
        ],
        &vars,
    )
    .await;
    assert!(o.status.success(), "upload: {}", text(&o.stderr));
    let o = exec(
        &[
            "cp",
            "-q",
            "relay",
            &remote_arg,
            back.to_str().expect("utf-8"),
        ],
        &vars,
    )
    .await;
    assert!(o.status.success(), "download: {}", text(&o.stderr));
    assert!(std::fs::read(&remote).expect("uploaded") == data);
    assert!(std::fs::read(&back).expect("downloaded") == data);
    // Without the variable the entry names, the error says so.
    let o = exec(
        &[
            "cp",
            "-q",
            "relay",
            &remote_arg,
            back.to_str().expect("utf-8"),
        ],
        &[("CODEX_HOME", home)],
    )
    .await;
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("the auth token variable `RELAY_HARNESS_TOKEN` is not set"),
        "{}",
        text(&o.stderr)
    );
}

#[tokio::test]
async fn a_dropped_relay_socket_is_reopened_and_the_output_resumes_intact() {
    let world = World::start().await;
    let proxy = Proxy::start(&world.rendezvous.url.replace("http://", "ws://")).await;
    // The registry hands out socket URLs built from the Host it was asked at: the proxy's, so
    // the relay socket goes through the proxy too.
    let client = world.client(&proxy.url.replace("ws://", "http://")).await;
    let session = client.session_id();
    let script = "i=0; while [ $i -lt 40 ]; do seq $((i*500+1)) $((i*500+500)); \
                  i=$((i+1)); sleep 0.05; done";
    let expected: String = (1..=20_000).map(|n| format!("{n}\n")).collect();
    let mut p = client
        .start_process(sh(&client.new_process_id(), script))
        .await
        .expect("start");
    let mut out = Vec::new();
    let mut code = None;
    let mut cuts = 0;
    let started = Instant::now();
    loop {
        let event = tokio::time::timeout(STALL, p.events().next_event())
            .await
            .expect("an event in time")
            .expect("events until the close")
            .expect("no error event");
        match event {
            ProcessEvent::Output { data, .. } => out.extend_from_slice(&data),
            ProcessEvent::Exited { exit_code, .. } => code = Some(exit_code),
            ProcessEvent::Closed { .. } => break,
        }
        // Cut the relay socket twice, at a third and at two thirds of the output.
        if cuts < 2 && out.len() > (cuts + 1) * expected.len() / 3 {
            let before = proxy.connections();
            proxy.cut();
            cuts += 1;
            assert!(
                crate::support::wait_until(|| proxy.connections() > before, STALL).await,
                "the client reconnected"
            );
        }
    }
    assert_eq!(
        cuts,
        2,
        "the process outlived both cuts ({:?})",
        started.elapsed()
    );
    assert!(
        out == expected.as_bytes(),
        "output byte-identical across the cuts"
    );
    assert_eq!(code, Some(0));
    assert_eq!(client.session_id(), session, "the same session, resumed");
    // The client still works on the new relay stream.
    let mut p = client
        .start_process(sh(&client.new_process_id(), "echo after"))
        .await
        .expect("start");
    let (out, _, _) = p.events().collect_output().await.expect("after");
    assert_eq!(text(&out), "after\n");
}

#[tokio::test]
async fn a_wrong_harness_token_fails_fast_with_a_clear_error() {
    let world = World::start().await;
    let mut target = world.target(&world.rendezvous.url);
    target.auth_token = AuthToken::Value("not-the-token".into());
    let started = Instant::now();
    let err = Client::connect(Connector::Noise(target), ConnectOptions::default())
        .await
        .expect_err("refused");
    assert!(started.elapsed() < Duration::from_secs(5), "not retried");
    assert!(
        matches!(
            &err,
            ClientError::Noise {
                error: NoiseConnectError::Unauthorized { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("environment registry refused the auth token (401 Unauthorized)"),
        "{err}"
    );
    assert!(!err.to_string().contains("not-the-token"), "{err}");

    // The same through `run`, and an environment id the registry does not know.
    let home = tempfile::tempdir().expect("tempdir");
    let home = home.path().to_str().expect("utf-8");
    let url = world.rendezvous.url.as_str();
    let o = exec(
        &["run", "remote", "--", "echo", "hi"],
        &[
            ("CODEX_HOME", home),
            ("CODEX_EXEC_SERVER_NOISE_REGISTRY_URL", url),
            ("CODEX_EXEC_SERVER_NOISE_ENVIRONMENT_ID", ENV_ID),
            ("CODEX_EXEC_SERVER_NOISE_AUTH_TOKEN", "not-the-token"),
        ],
    )
    .await;
    assert_eq!(o.status.code(), Some(1));
    let stderr = text(&o.stderr);
    assert!(
        stderr.contains("cannot connect to noise environment `e2e`")
            && stderr.contains("refused the auth token (401 Unauthorized)"),
        "{stderr}"
    );
    assert!(o.stdout.is_empty());
    let o = exec(
        &["run", "remote", "--", "echo", "hi"],
        &[
            ("CODEX_HOME", home),
            ("CODEX_EXEC_SERVER_NOISE_REGISTRY_URL", url),
            ("CODEX_EXEC_SERVER_NOISE_ENVIRONMENT_ID", "nope"),
            ("CODEX_EXEC_SERVER_NOISE_AUTH_TOKEN", HARNESS_TOKEN),
        ],
    )
    .await;
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("(404 Not Found): unknown_environment"),
        "{}",
        text(&o.stderr)
    );
}

#[tokio::test]
async fn an_executor_back_with_a_new_key_ends_the_session() {
    let mut world = World::start().await;
    let client = world.client(&world.rendezvous.url).await;
    // Ends by itself once its output pipe breaks (the executor is gone).
    let mut p = client
        .start_process(sh(
            &client.new_process_id(),
            "while echo tick; do sleep 0.2; done",
        ))
        .await
        .expect("start");
    match tokio::time::timeout(STALL, p.events().next_event()).await {
        Ok(Some(Ok(ProcessEvent::Output { .. }))) => {}
        other => panic!("first tick: {other:?}"),
    }
    // The executor restarts: a new process registers the same environment with a new key.
    world.executor = Executor::start(&world.rendezvous.url);
    let err = loop {
        match tokio::time::timeout(STALL, p.events().next_event())
            .await
            .expect("the session ends in time")
        {
            Some(Ok(_)) => continue,
            Some(Err(e)) => break e,
            None => panic!("the events ended without an error"),
        }
    };
    assert!(matches!(err, ClientError::SessionLost(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("executor key changed during session recovery"),
        "{err}"
    );
    // Later calls fail the same way, at once.
    let started = Instant::now();
    let again = client
        .start_process(sh(&client.new_process_id(), "true"))
        .await
        .expect_err("closed");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        again.to_string().contains("executor key changed"),
        "{again}"
    );
}
