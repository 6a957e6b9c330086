//! `mcp-exec`: what it costs the MCP shell tool to check every exec.
//!
//! One `shell` tool call runs `for i in $(seq 1000); do /bin/true; done` (`login: false`) over
//! MCP stdio; the same loop run by `bash -c` straight from the bench is the baseline. Three
//! variants per server, interleaved call by call after one warm-up each so that they see the
//! same machine state: the baseline, the server without rules, and the server with
//! [`rules_text`] (20 rules that do not match the loop's programs plus `rm` forbidden). Each
//! is timed client-side, from the request sent to its reply received.
//!
//! Servers are started by the bench, one process per variant, through `sh -c "exec CMD"` in
//! their own process group; stderr goes to the log directory. Our `mcp-serve` gets its rules
//! with `--rules FILE`; upstream's `codex-shell-tool-mcp` reads `$CODEX_HOME/rules/*.rules`
//! (the bench gives each variant its own `CODEX_HOME`). A server that advertises the
//! `codex/sandbox-state` capability (upstream) is sent the `codex/sandbox-state/update`
//! request it needs before it runs anything (danger-full-access: the rules alone decide), and
//! its `{}` is awaited before the first call. The client is a plain blocking one: newline-
//! delimited JSON-RPC on the child's stdin/stdout, a reader thread feeding a channel so that
//! every wait has a limit. A request from the server is answered: an elicitation is declined
//! (and fails the measurement, since no program of the loop may need an approval), `ping`
//! gets `{}`, anything else "method not found".

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use crate::measures::{fig, Better, Figure, Figures};
use crate::report::TargetResults;
use crate::server;

/// The measurement's name (`--only mcp-exec`).
pub(crate) const NAME: &str = "mcp-exec";

/// Execs of `/bin/true` per call (plus one of `seq` and the shell's own).
pub(crate) const EXECS: u32 = 1000;

/// The script every variant runs.
pub(crate) const LOOP: &str = "for i in $(seq 1000); do /bin/true; done";

/// How long the bench waits for any one reply (the call's own `timeout_ms` plus a margin).
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(660);

/// The figures, in table order. With 1000 execs per call, a call's milliseconds are also its
/// microseconds per exec.
pub(crate) const FIGURES: &[Figure] = &[
    fig(
        "mcp_direct_ms",
        "mcp-exec: 1000 × /bin/true, bash -c without MCP (ms per call = µs per exec)",
        Better::Lower,
    ),
    fig(
        "mcp_norules_ms",
        "mcp-exec: shell tool call, no rules (ms per call = µs per exec)",
        Better::Lower,
    ),
    fig(
        "mcp_rules_ms",
        "mcp-exec: shell tool call, 21 rules (ms per call = µs per exec)",
        Better::Lower,
    ),
    fig(
        "mcp_norules_overhead_us",
        "mcp-exec: cost per exec over bash -c, no rules (µs)",
        Better::Lower,
    ),
    fig(
        "mcp_rules_overhead_us",
        "mcp-exec: cost per exec over bash -c, 21 rules (µs)",
        Better::Lower,
    ),
];

/// True for the measurements run by this module instead of against the WebSocket server.
pub(crate) fn is_mcp(name: &str) -> bool {
    name == NAME
}

/// How a server under test takes its rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// Ours: `--rules FILE` appended to the command.
    Ours,
    /// Upstream's `codex-shell-tool-mcp`: `$CODEX_HOME/rules/*.rules`.
    Codex,
}

/// An MCP shell tool to measure: the stdio launch command and how it takes rules.
#[derive(Clone, Debug)]
pub(crate) struct McpServer {
    pub(crate) command: String,
    pub(crate) flavor: Flavor,
}

/// Our MCP server: `--ours-mcp`, else the program of `--ours` with `mcp-serve --stdio`.
pub(crate) fn ours(ours_mcp: Option<&str>, ours: Option<&str>) -> Result<McpServer, String> {
    let command = match (ours_mcp, ours) {
        (Some(command), _) => command.to_string(),
        (None, Some(template)) => format!("{} mcp-serve --stdio", server::program(template)),
        (None, None) => return Err("no --ours-mcp (or --ours) command".into()),
    };
    Ok(McpServer {
        command,
        flavor: Flavor::Ours,
    })
}

/// Upstream's MCP server: `--upstream-mcp` only (it is another package than `--upstream`).
pub(crate) fn upstream(upstream_mcp: Option<&str>) -> Result<McpServer, String> {
    upstream_mcp
        .map(|command| McpServer {
            command: command.to_string(),
            flavor: Flavor::Codex,
        })
        .ok_or_else(|| "no --upstream-mcp command given".to_string())
}

/// The rules of the variant with rules: 20 rules that match nothing the loop runs (`bash`,
/// `seq`, `true`), then `rm` forbidden (which the bench checks is enforced).
pub(crate) fn rules_text() -> String {
    const OTHERS: [(&str, &str); 20] = [
        (r#"["git", ["push", "reset"]]"#, "prompt"),
        (r#"["curl"]"#, "prompt"),
        (r#"["wget"]"#, "prompt"),
        (r#"["ssh"]"#, "prompt"),
        (r#"["scp"]"#, "prompt"),
        (r#"["sudo"]"#, "forbidden"),
        (r#"["dd"]"#, "prompt"),
        (r#"["mkfs"]"#, "forbidden"),
        (r#"["shutdown"]"#, "forbidden"),
        (r#"["reboot"]"#, "forbidden"),
        (r#"["chmod", "-R"]"#, "prompt"),
        (r#"["chown"]"#, "prompt"),
        (r#"["kill", "-9"]"#, "prompt"),
        (r#"["docker"]"#, "prompt"),
        (r#"["npm", "publish"]"#, "forbidden"),
        (r#"["pip", "install"]"#, "prompt"),
        (r#"["apt-get"]"#, "prompt"),
        (r#"["systemctl"]"#, "prompt"),
        (r#"["mount"]"#, "forbidden"),
        (r#"["nc"]"#, "prompt"),
    ];
    let mut text = String::new();
    for (pattern, decision) in OTHERS {
        text.push_str(&format!(
            "prefix_rule(pattern={pattern}, decision=\"{decision}\")\n"
        ));
    }
    text.push_str("prefix_rule(pattern=[\"rm\"], decision=\"forbidden\")\n");
    text
}

/// `command` with `--rules PATH` appended (the path single-quoted for `sh`).
fn with_rules_flag(command: &str, rules: &Path) -> String {
    let path = rules.to_string_lossy().replace('\'', r"'\''");
    format!("{command} --rules '{path}'")
}

/// Runs `mcp-exec` for one server in one round and records its figures. `server` is `Err`
/// with the reason when this target has no MCP command: the measurement is skipped with a
/// note (nothing recorded, so the table shows `–`).
pub(crate) async fn run_round(
    label: &str,
    server: &Result<McpServer, String>,
    round: usize,
    calls: usize,
    log_dir: &Path,
    result: &mut TargetResults,
) {
    let server = match server {
        Ok(server) => server.clone(),
        Err(why) => {
            eprintln!("   {NAME:<14} skipped: {why}");
            return;
        }
    };
    let started = Instant::now();
    let cpu_before = server::own_cpu_secs();
    let (log_dir, stem) = (log_dir.to_path_buf(), format!("{label}-round{round}-mcp"));
    let outcome = tokio::task::spawn_blocking(move || measure(&server, calls, &log_dir, &stem))
        .await
        .map_err(|e| format!("{NAME} panicked: {e}"))
        .and_then(|r| r.map_err(|e| format!("{e:#}")));
    let summary = crate::summary(&outcome);
    eprintln!(
        "   {NAME:<14} {:>6.1}s (cpu: bench {:.1}s)  {summary}",
        started.elapsed().as_secs_f64(),
        server::own_cpu_secs() - cpu_before
    );
    for figure in FIGURES {
        let value = match &outcome {
            Ok(figures) => figures
                .iter()
                .find(|(k, _)| *k == figure.key)
                .map(|(_, v)| *v)
                .ok_or_else(|| format!("measurement did not report {}", figure.key)),
            Err(e) => Err(e.clone()),
        };
        result.record(figure.key, value);
    }
}

/// The scratch directory of one run: the workdir, the rules file and the `CODEX_HOME`s.
/// Removed when dropped.
struct Scratch {
    root: PathBuf,
}

impl Scratch {
    fn new(stem: &str) -> Result<Self> {
        let root = std::env::temp_dir().join(format!("bench-{stem}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let scratch = Self { root };
        std::fs::create_dir_all(scratch.workdir())?;
        std::fs::create_dir_all(scratch.codex_home(false))?;
        std::fs::create_dir_all(scratch.codex_home(true).join("rules"))?;
        std::fs::write(scratch.rules_file(), rules_text())?;
        std::fs::write(
            scratch.codex_home(true).join("rules").join("bench.rules"),
            rules_text(),
        )?;
        Ok(scratch)
    }

    fn workdir(&self) -> PathBuf {
        self.root.join("work")
    }

    fn rules_file(&self) -> PathBuf {
        self.root.join("bench.rules")
    }

    fn codex_home(&self, rules: bool) -> PathBuf {
        self.root.join(if rules {
            "codex-home-rules"
        } else {
            "codex-home"
        })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The blocking part: both servers started, warm-up, `calls` interleaved rounds of the three
/// variants (the baseline first, then the two servers in alternating order), the `rm` check,
/// medians.
fn measure(server: &McpServer, calls: usize, log_dir: &Path, stem: &str) -> Result<Figures> {
    ensure!(calls > 0, "--mcp-calls must be at least 1");
    let scratch = Scratch::new(stem)?;
    let workdir = scratch.workdir();
    let mut plain = Session::start(
        server,
        false,
        &scratch,
        &log_dir.join(format!("{stem}-norules.log")),
    )
    .context("server without rules")?;
    let mut ruled = Session::start(
        server,
        true,
        &scratch,
        &log_dir.join(format!("{stem}-rules.log")),
    )
    .context("server with rules")?;

    direct(&workdir).context("warm-up, bash -c")?;
    plain.time_loop(&workdir).context("warm-up, no rules")?;
    ruled.time_loop(&workdir).context("warm-up, with rules")?;
    let (mut direct_ms, mut plain_ms, mut ruled_ms) = (Vec::new(), Vec::new(), Vec::new());
    for call in 0..calls {
        direct_ms.push(ms(direct(&workdir).context("bash -c")?));
        // The two servers take turns going first, so neither always follows the baseline.
        let mut servers = [
            (&mut plain, &mut plain_ms, "no rules"),
            (&mut ruled, &mut ruled_ms, "with rules"),
        ];
        if call % 2 == 1 {
            servers.reverse();
        }
        for (session, times, what) in servers {
            times.push(ms(session.time_loop(&workdir).context(what)?));
        }
    }
    ruled.check_rm_denied(&workdir)?;
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    eprintln!(
        "   {NAME:<14} calls (ms): bash -c {} | no rules {} | rules {}",
        list(&direct_ms),
        list(&plain_ms),
        list(&ruled_ms)
    );

    let (direct, plain, ruled) = (median(direct_ms), median(plain_ms), median(ruled_ms));
    let per_exec_us = |call_ms: f64| (call_ms - direct) * 1000.0 / f64::from(EXECS);
    Ok(vec![
        ("mcp_direct_ms", direct),
        ("mcp_norules_ms", plain),
        ("mcp_rules_ms", ruled),
        ("mcp_norules_overhead_us", per_exec_us(plain)),
        ("mcp_rules_overhead_us", per_exec_us(ruled)),
    ])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median (mean of the middle two for an even count); NaN when empty.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The baseline: [`LOOP`] by `bash -c` in `workdir`, spawned by the bench; spawn to exit.
fn direct(workdir: &Path) -> Result<Duration> {
    let started = Instant::now();
    // The bench is a client, not the server: this is its own baseline process.
    #[allow(clippy::disallowed_methods)]
    let status = std::process::Command::new("bash")
        .arg("-c")
        .arg(LOOP)
        .current_dir(workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running bash -c")?;
    let elapsed = started.elapsed();
    ensure!(status.success(), "bash -c {LOOP:?}: {status}");
    Ok(elapsed)
}

/// What the server sent, as far as the client cares.
#[derive(Debug, PartialEq)]
enum Incoming {
    /// A reply: its id and its `result`, or the error's text.
    Response {
        id: Value,
        outcome: Result<Value, String>,
    },
    /// A request the client must answer.
    Request { id: Value, method: String },
    /// Anything else (notifications: logging, progress).
    Notification,
}

fn classify(line: &str) -> Result<Incoming> {
    let message: Value = serde_json::from_str(line)
        .with_context(|| format!("not JSON from the server: {:?}", clip(line)))?;
    let id = message.get("id").cloned().filter(|id| !id.is_null());
    let method = message.get("method").and_then(Value::as_str);
    Ok(match (id, method) {
        (Some(id), Some(method)) => Incoming::Request {
            id,
            method: method.to_string(),
        },
        (Some(id), None) => {
            let outcome = match (message.get("result"), message.get("error")) {
                (Some(result), _) => Ok(result.clone()),
                (None, Some(error)) => Err(error.to_string()),
                (None, None) => Err(format!("reply with neither result nor error: {message}")),
            };
            Incoming::Response { id, outcome }
        }
        (None, _) => Incoming::Notification,
    })
}

/// The client's answer to a server request: elicitations declined, `ping` answered.
fn reply_to(id: &Value, method: &str) -> Value {
    match method {
        "elicitation/create" => {
            json!({"jsonrpc": "2.0", "id": id, "result": {"action": "decline"}})
        }
        "ping" => json!({"jsonrpc": "2.0", "id": id, "result": {}}),
        _ => json!({"jsonrpc": "2.0", "id": id,
                    "error": {"code": -32601, "message": format!("method not found: {method}")}}),
    }
}

/// The parts of a `shell` tool result the bench checks.
#[derive(Debug, PartialEq)]
struct ShellResult {
    exit_code: i64,
    output: String,
    timed_out: bool,
}

/// Reads a `tools/call` result of `shell`: one text content item holding
/// `{"exit_code", "output", "duration", "timed_out"}` (ours and upstream alike).
fn shell_result(result: &Value) -> Result<ShellResult> {
    let text = result
        .get("content")
        .and_then(|c| c.get(0))
        .and_then(|c| c.get("text"))
        .and_then(Value::as_str)
        .with_context(|| format!("no text content in {}", clip(&result.to_string())))?;
    if result.get("isError").and_then(Value::as_bool) == Some(true) {
        bail!("tool error: {}", clip(text));
    }
    let body: Value = serde_json::from_str(text)
        .with_context(|| format!("tool result is not JSON: {:?}", clip(text)))?;
    Ok(ShellResult {
        exit_code: body
            .get("exit_code")
            .and_then(Value::as_i64)
            .with_context(|| format!("no exit_code in {}", clip(text)))?,
        output: body
            .get("output")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        timed_out: body
            .get("timed_out")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

/// The first 300 characters of `text`, for error messages.
fn clip(text: &str) -> String {
    let mut clipped: String = text.chars().take(300).collect();
    if clipped.len() < text.len() {
        clipped.push('…');
    }
    clipped
}

/// One MCP server process and the client's end of its stdio.
struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<std::io::Result<String>>,
    next_id: u64,
    log: PathBuf,
    /// Elicitations the server sent (each declined).
    elicitations: usize,
}

impl Session {
    /// Starts the server (with the rules of `scratch` if `rules`), `initialize`,
    /// `notifications/initialized`, and the sandbox-state update if the server wants one.
    fn start(server: &McpServer, rules: bool, scratch: &Scratch, log: &Path) -> Result<Self> {
        let command = match server.flavor {
            Flavor::Ours if rules => with_rules_flag(&server.command, &scratch.rules_file()),
            _ => server.command.clone(),
        };
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        // The bench is a client, not the server: launching the servers under test is its job.
        #[allow(clippy::disallowed_methods)]
        let mut launch = std::process::Command::new("sh");
        launch
            .arg("-c")
            .arg(server::exec_line(&command))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .process_group(0);
        if server.flavor == Flavor::Codex {
            launch.env("CODEX_HOME", scratch.codex_home(rules));
        }
        let mut child = launch
            .spawn()
            .with_context(|| format!("spawning sh -c {command:?}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let (tx, lines) = mpsc::channel();
        std::thread::Builder::new()
            .name("mcp-reader".into())
            .spawn(move || {
                let mut reader = BufReader::new(stdout);
                loop {
                    let mut line = String::new();
                    match reader.read_line(&mut line) {
                        Ok(0) => return,
                        Ok(_) => {
                            if tx.send(Ok(line)).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                }
            })?;
        let mut session = Self {
            child,
            stdin,
            lines,
            next_id: 1,
            log: log.to_path_buf(),
            elicitations: 0,
        };
        let (init, _) = session
            .request(
                "initialize",
                json!({
                    "protocolVersion": "2025-06-18",
                    "capabilities": {"elicitation": {}},
                    "clientInfo": {"name": "bench", "version": env!("CARGO_PKG_VERSION")},
                }),
            )
            .with_context(|| format!("initialize ({command})"))?;
        session.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))?;
        let wants_sandbox_state = init
            .pointer("/capabilities/experimental")
            .and_then(|e| e.get("codex/sandbox-state"))
            .is_some();
        if wants_sandbox_state {
            session
                .request(
                    "codex/sandbox-state/update",
                    json!({
                        "sandboxPolicy": {"type": "danger-full-access"},
                        "sandboxCwd": scratch.workdir(),
                    }),
                )
                .context("codex/sandbox-state/update")?;
        }
        Ok(session)
    }

    fn send(&mut self, message: &Value) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin closed")?;
        let mut text = message.to_string();
        text.push('\n');
        stdin
            .write_all(text.as_bytes())
            .and_then(|()| stdin.flush())
            .with_context(|| format!("writing to the server (log: {})", self.log.display()))
    }

    fn next_line(&mut self) -> Result<String> {
        match self.lines.recv_timeout(CALL_TIMEOUT) {
            Ok(Ok(line)) => Ok(line),
            Ok(Err(e)) => Err(e).context("reading the server's stdout"),
            Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                "no reply within {}s (log: {})",
                CALL_TIMEOUT.as_secs(),
                self.log.display()
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self
                    .child
                    .try_wait()
                    .ok()
                    .flatten()
                    .map_or("still running".to_string(), |s| s.to_string());
                bail!(
                    "the server closed its stdout ({status}; log: {})",
                    self.log.display()
                )
            }
        }
    }

    /// Sends a request and waits for its reply, answering server requests meanwhile. Returns
    /// the result and the time from sending to the reply's arrival.
    fn request(&mut self, method: &str, params: Value) -> Result<(Value, Duration)> {
        let id = self.next_id;
        self.next_id += 1;
        let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let started = Instant::now();
        self.send(&message)?;
        loop {
            let line = self.next_line()?;
            let arrived = started.elapsed();
            if line.trim().is_empty() {
                continue;
            }
            match classify(&line)? {
                Incoming::Response {
                    id: got,
                    outcome: Ok(result),
                } if got == json!(id) => return Ok((result, arrived)),
                Incoming::Response {
                    id: got,
                    outcome: Err(error),
                } if got == json!(id) => bail!("{method}: error {error}"),
                Incoming::Response { .. } | Incoming::Notification => {}
                Incoming::Request { id, method } => {
                    if method == "elicitation/create" {
                        self.elicitations += 1;
                    }
                    self.send(&reply_to(&id, &method))?;
                }
            }
        }
    }

    fn shell(&mut self, command: &str, workdir: &Path) -> Result<(ShellResult, Duration)> {
        let (result, took) = self.request(
            "tools/call",
            json!({"name": "shell", "arguments": {
                "command": command,
                "workdir": workdir,
                "login": false,
                "timeout_ms": 600_000,
            }}),
        )?;
        Ok((shell_result(&result)?, took))
    }

    /// One timed call of [`LOOP`], checked: exit 0, no output, no approval asked.
    fn time_loop(&mut self, workdir: &Path) -> Result<Duration> {
        let (result, took) = self.shell(LOOP, workdir)?;
        ensure!(
            result.exit_code == 0 && !result.timed_out && result.output.is_empty(),
            "the loop did not run cleanly: {result:?}"
        );
        ensure!(
            self.elicitations == 0,
            "the server asked for approval during the loop"
        );
        Ok(took)
    }

    /// The rules are in force: `rm` of a file that does not exist is refused.
    fn check_rm_denied(&mut self, workdir: &Path) -> Result<()> {
        let (result, _) = self.shell("rm bench-no-such-file", workdir)?;
        ensure!(
            result.output.contains("Execution denied"),
            "rules not in force: `rm` was not refused ({result:?})"
        );
        Ok(())
    }
}

impl Drop for Session {
    /// Closes stdin (the end of the session), then SIGKILLs the process group after 2 s.
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Node forwards to a child of its own: the whole group goes.
        // The bench signals its own launched server's process group.
        #[allow(clippy::disallowed_methods)]
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ours_is_derived_from_the_exec_server_template() {
        let derived = ours(
            None,
            Some("RUST_LOG=warn target/release/exec-server --listen {listen}"),
        )
        .unwrap();
        assert_eq!(
            derived.command,
            "target/release/exec-server mcp-serve --stdio"
        );
        assert_eq!(derived.flavor, Flavor::Ours);
        let given = ours(Some("/x/exec-server mcp-serve --stdio"), Some("y")).unwrap();
        assert_eq!(given.command, "/x/exec-server mcp-serve --stdio");
        assert!(ours(None, None).is_err());
        assert_eq!(upstream(Some("node a.js")).unwrap().flavor, Flavor::Codex);
        assert!(upstream(None).is_err());
    }

    #[test]
    fn rules_are_appended_quoted() {
        assert_eq!(
            with_rules_flag("srv mcp-serve --stdio", Path::new("/tmp/a b/it's.rules")),
            r"srv mcp-serve --stdio --rules '/tmp/a b/it'\''s.rules'"
        );
    }

    #[test]
    fn rules_do_not_touch_the_loop() {
        let text = rules_text();
        let rules: Vec<&str> = text.lines().collect();
        assert_eq!(rules.len(), 21);
        assert!(rules.iter().all(|r| r.starts_with("prefix_rule(pattern=[")));
        assert_eq!(
            rules[20],
            r#"prefix_rule(pattern=["rm"], decision="forbidden")"#
        );
        for program in ["bash", "seq", "true"] {
            assert!(!text.contains(&format!("[\"{program}\"")), "{program}");
        }
    }

    #[test]
    fn classifies_what_the_server_sends() {
        assert_eq!(
            classify(r#"{"jsonrpc":"2.0","id":3,"result":{"a":1}}"#).unwrap(),
            Incoming::Response {
                id: json!(3),
                outcome: Ok(json!({"a": 1}))
            }
        );
        let Incoming::Response {
            outcome: Err(error),
            ..
        } = classify(r#"{"jsonrpc":"2.0","id":4,"error":{"code":-32603,"message":"x"}}"#).unwrap()
        else {
            panic!("not an error reply");
        };
        assert!(error.contains("-32603"));
        assert_eq!(
            classify(r#"{"jsonrpc":"2.0","id":0,"method":"elicitation/create","params":{}}"#)
                .unwrap(),
            Incoming::Request {
                id: json!(0),
                method: "elicitation/create".into()
            }
        );
        assert_eq!(
            classify(r#"{"jsonrpc":"2.0","method":"notifications/message","params":{}}"#).unwrap(),
            Incoming::Notification
        );
        assert!(classify("Error: not json").is_err());
    }

    #[test]
    fn answers_server_requests() {
        assert_eq!(
            reply_to(&json!(7), "elicitation/create"),
            json!({"jsonrpc": "2.0", "id": 7, "result": {"action": "decline"}})
        );
        assert_eq!(reply_to(&json!("p"), "ping")["result"], json!({}));
        assert_eq!(reply_to(&json!(1), "roots/list")["error"]["code"], -32601);
    }

    #[test]
    fn reads_shell_results_of_both_servers() {
        // Ours (keys sorted) and upstream's (0.97.0) shapes.
        for text in [
            r#"{"duration":{"nanos":702094183,"secs":1},"exit_code":0,"output":"","timed_out":false}"#,
            r#"{"exit_code":0,"output":"","duration":{"secs":6,"nanos":755687469},"timed_out":false}"#,
        ] {
            let result = json!({"content": [{"type": "text", "text": text}], "isError": false});
            assert_eq!(
                shell_result(&result).unwrap(),
                ShellResult {
                    exit_code: 0,
                    output: String::new(),
                    timed_out: false
                }
            );
        }
        let denied = json!({"content": [{"type": "text", "text":
            r#"{"exit_code":1,"output":"Execution denied: Execution forbidden by policy\n","timed_out":false}"#}]});
        let denied = shell_result(&denied).unwrap();
        assert_eq!(denied.exit_code, 1);
        assert!(denied.output.contains("Execution denied"));
        let error = json!({"content": [{"type": "text", "text": "boom"}], "isError": true});
        assert!(shell_result(&error)
            .unwrap_err()
            .to_string()
            .contains("boom"));
        assert!(shell_result(&json!({"content": []})).is_err());
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }
}
