//! `exec-server mcp-serve` over the wire, driven by rmcp's own client: the real binary over
//! stdio (a child process) and over Streamable HTTP, with a client handler that answers the
//! server's elicitations as each test scripts it (accept, decline, cancel, accept after a
//! delay, accept once two are open at the same time). Effects are checked on the filesystem,
//! not only in the tool's output.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ElicitRequestParams,
    ElicitResult, ElicitationAction, ElicitationCapability, ErrorCode, ErrorData,
    FormElicitationCapability, Implementation, JsonObject,
};
use rmcp::service::{RequestContext, RunningService, ServiceError};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::Barrier;

use crate::support::{pid_alive, BIN};

/// The bound on every await that is not meant to take long.
const WAIT: Duration = Duration::from_secs(30);

/// A plain `PATH` for the server (and so for the commands), so programs resolve to
/// `/usr/bin/...` whatever the test runner's `PATH` holds.
const PATH: &str = "/usr/local/bin:/usr/bin:/bin";

const RM_FORBIDDEN: &str = r#"prefix_rule(pattern=["rm"], decision="forbidden")"#;
const TOUCH_PROMPT: &str = r#"prefix_rule(pattern=["touch"], decision="prompt")"#;

async fn within<F: Future>(what: &str, f: F) -> F::Output {
    within_for(WAIT, what, f).await
}

async fn within_for<F: Future>(limit: Duration, what: &str, f: F) -> F::Output {
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: not done within {limit:?}"),
    }
}

/// How the client answers an elicitation.
#[derive(Clone)]
enum Answer {
    Accept,
    /// Decline, with this `reason` in the content.
    Decline(&'static str),
    Cancel,
    /// Accept once this much time has passed.
    AcceptAfter(Duration),
    /// Accept once as many elicitations as the barrier counts are open at the same time;
    /// decline if that does not happen within 10 s.
    AcceptTogether(Arc<Barrier>),
}

/// The client handler: declares form elicitation, records every message, answers as told.
#[derive(Clone)]
struct Approver {
    answer: Answer,
    messages: Arc<Mutex<Vec<String>>>,
}

impl Approver {
    fn new(answer: Answer) -> Approver {
        Approver {
            answer,
            messages: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn messages(&self) -> Vec<String> {
        self.messages.lock().expect("messages").clone()
    }
}

impl ClientHandler for Approver {
    fn get_info(&self) -> ClientConfig {
        let mut capabilities = ClientCapabilities::default();
        capabilities.elicitation =
            Some(ElicitationCapability::new().with_form(FormElicitationCapability::new()));
        // rmcp's default protocol version: the client offers the latest and the server
        // settles on one with server-to-client requests, which elicitations need.
        ClientConfig::new(capabilities, Implementation::new("mcp-serve-it", "0"))
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let message = match &request {
            ElicitRequestParams::FormElicitationParams { message, .. } => message.clone(),
            other => format!("not a form elicitation: {other:?}"),
        };
        self.messages.lock().expect("messages").push(message);
        let accept =
            || ElicitResult::new(ElicitationAction::Accept).with_content(json!({"reason": "ok"}));
        Ok(match &self.answer {
            Answer::Accept => accept(),
            Answer::Decline(why) => {
                ElicitResult::new(ElicitationAction::Decline).with_content(json!({"reason": why}))
            }
            Answer::Cancel => ElicitResult::new(ElicitationAction::Cancel),
            Answer::AcceptAfter(d) => {
                tokio::time::sleep(*d).await;
                accept()
            }
            Answer::AcceptTogether(barrier) => {
                match tokio::time::timeout(Duration::from_secs(10), barrier.wait()).await {
                    Ok(_) => accept(),
                    Err(_) => ElicitResult::new(ElicitationAction::Decline)
                        .with_content(json!({"reason": "the other elicitation never came"})),
                }
            }
        })
    }
}

/// A rules file and an empty home directory, in their own temporary directory.
struct RulesFile {
    _dir: TempDir,
    path: PathBuf,
    home: PathBuf,
}

fn rules_file(text: &str) -> RulesFile {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("test.rules");
    std::fs::write(&path, text).expect("write rules");
    let home = dir.path().join("home");
    std::fs::create_dir(&home).expect("home");
    std::fs::write(home.join(".bash_profile"), "export FROM_PROFILE=yes\n").expect("profile");
    RulesFile {
        _dir: dir,
        path,
        home,
    }
}

/// The server's command. Its `HOME` is an empty directory, so a login shell reads only the
/// system profile: the user's `~/.bashrc` may run tools (pyenv) that take a lock and release
/// it with `rm`, which a test forbids, leaving a stale lock that stalls every later login
/// shell on the machine.
fn mcp_serve(rules: &RulesFile, transport: &[&str]) -> Command {
    // The binary under test, started as its users start it.
    #[allow(clippy::disallowed_methods)]
    let mut cmd = Command::new(BIN);
    cmd.arg("mcp-serve")
        .args(transport)
        .arg("--rules")
        .arg(&rules.path)
        .env("RUST_LOG", "warn")
        .env("PATH", PATH)
        .env("HOME", &rules.home)
        .kill_on_drop(true);
    cmd
}

/// A running `mcp-serve` and an rmcp client session with it; the server is killed on drop.
struct Mcp {
    client: RunningService<RoleClient, Approver>,
    approver: Approver,
    child: Child,
    _stdout: Option<BufReader<ChildStdout>>,
    _rules: RulesFile,
}

/// `mcp-serve --stdio` with these rules, and a session with it.
async fn stdio(rules: &str, answer: Answer) -> Mcp {
    stdio_with(rules, answer, &[]).await
}

/// `mcp-serve --stdio` with these rules and extra flags, and a session with it.
async fn stdio_with(rules: &str, answer: Answer, extra: &[&str]) -> Mcp {
    let rules = rules_file(rules);
    let mut flags = vec!["--stdio"];
    flags.extend_from_slice(extra);
    let mut child = mcp_serve(&rules, &flags)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start mcp-serve --stdio");
    let stdout = child.stdout.take().expect("stdout");
    let stdin = child.stdin.take().expect("stdin");
    let approver = Approver::new(answer);
    let client = within("initialize", approver.clone().serve((stdout, stdin)))
        .await
        .expect("initialize over stdio");
    Mcp {
        client,
        approver,
        child,
        _stdout: None,
        _rules: rules,
    }
}

/// `mcp-serve --listen http://127.0.0.1:0` with these rules: the child, its stdout (kept open)
/// and the URL it printed.
async fn start_http(rules: &RulesFile) -> (Child, BufReader<ChildStdout>, String) {
    // reqwest is built with `rustls-no-provider` here, and building any `reqwest::Client`
    // (even for a plain http:// URL) panics unless a rustls crypto provider is installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut child = mcp_serve(rules, &["--listen", "http://127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start mcp-serve --listen");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    within("the URL line", stdout.read_line(&mut line))
        .await
        .expect("read the URL line");
    let url = line.trim().to_string();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/mcp"),
        "first stdout line: {url:?}"
    );
    (child, stdout, url)
}

/// `mcp-serve --listen http://127.0.0.1:0` with these rules, and a session with it over
/// rmcp's Streamable HTTP client.
async fn http(rules: &str, answer: Answer) -> Mcp {
    let rules = rules_file(rules);
    let (child, stdout, url) = start_http(&rules).await;
    let approver = Approver::new(answer);
    let transport = StreamableHttpClientTransport::from_uri(url);
    let client = within("initialize", approver.clone().serve(transport))
        .await
        .expect("initialize over Streamable HTTP");
    Mcp {
        client,
        approver,
        child,
        _stdout: Some(stdout),
        _rules: rules,
    }
}

/// The JSON body of a `shell` result.
#[derive(Debug)]
struct ShellResult {
    exit_code: i64,
    output: String,
    duration: Duration,
    timed_out: bool,
}

fn args(v: Value) -> JsonObject {
    v.as_object().cloned().expect("arguments are an object")
}

fn text(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect()
}

fn dir_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// A temporary working directory, canonical (the server reports the resolved cwd).
fn workdir() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().canonicalize().expect("canonicalize");
    (dir, path)
}

impl Mcp {
    async fn call(&self, tool: &str, arguments: Value) -> Result<CallToolResult, ServiceError> {
        within(
            &format!("{tool} {arguments}"),
            self.client.call_tool(
                CallToolRequestParams::new(tool.to_string()).with_arguments(args(arguments)),
            ),
        )
        .await
    }

    /// A tool call that must succeed at the protocol level and not be a tool error.
    async fn ok(&self, tool: &str, arguments: Value) -> String {
        let r = self
            .call(tool, arguments.clone())
            .await
            .unwrap_or_else(|e| panic!("{tool} {arguments}: {e}"));
        let body = text(&r);
        assert_ne!(
            r.is_error,
            Some(true),
            "{tool} {arguments}: tool error {body}"
        );
        body
    }

    async fn shell_with(&self, arguments: Value) -> ShellResult {
        let body = self.ok("shell", arguments).await;
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        ShellResult {
            exit_code: v["exit_code"].as_i64().unwrap_or_else(|| panic!("{body}")),
            output: v["output"]
                .as_str()
                .unwrap_or_else(|| panic!("{body}"))
                .into(),
            // Upstream's shape: {"secs", "nanos"}.
            duration: Duration::new(
                v["duration"]["secs"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{body}")),
                v["duration"]["nanos"]
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| *n < 1_000_000_000)
                    .unwrap_or_else(|| panic!("{body}")),
            ),
            timed_out: v["timed_out"].as_bool().unwrap_or_else(|| panic!("{body}")),
        }
    }

    /// `shell` with `bash -c` (not a login shell) in `dir`.
    async fn shell(&self, command: &str, dir: &Path) -> ShellResult {
        self.shell_with(json!({"command": command, "workdir": dir_str(dir), "login": false}))
            .await
    }

    /// Closes the session (stdin EOF for stdio) and waits for the server to exit.
    async fn close(mut self) -> std::process::ExitStatus {
        let _ = within("closing the client", self.client.cancel()).await;
        within("the server exiting", self.child.wait())
            .await
            .expect("wait for mcp-serve")
    }
}

fn assert_denied(r: &ShellResult, what: &str) {
    assert!(
        r.output.contains("Execution denied"),
        "{what}: no denial line in {r:?}"
    );
}

#[tokio::test]
async fn mcp_serve_lists_its_tools() {
    let mcp = stdio("# no rules\n", Answer::Accept).await;
    let tools = within("tools/list", mcp.client.list_all_tools())
        .await
        .expect("tools/list");
    let mut names: Vec<&str> = tools.iter().map(|t| &*t.name).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["list_directory", "read_file", "shell", "write_file"],
        "{tools:?}"
    );
    let shell = tools.iter().find(|t| t.name == "shell").expect("shell");
    let schema = Value::Object((*shell.input_schema).clone());
    assert_eq!(schema["type"], "object", "{schema}");
    for (prop, ty) in [
        ("command", "string"),
        ("workdir", "string"),
        ("timeout_ms", "integer"),
        ("login", "boolean"),
    ] {
        assert_eq!(schema["properties"][prop]["type"], ty, "{prop}: {schema}");
    }
    let mut required: Vec<&str> = schema["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    required.sort_unstable();
    assert_eq!(required, ["command", "workdir"], "{schema}");
    for name in ["read_file", "list_directory", "write_file"] {
        let tool = tools.iter().find(|t| t.name == name).expect(name);
        let schema = Value::Object((*tool.input_schema).clone());
        assert!(
            schema["required"]
                .as_array()
                .is_some_and(|r| r.contains(&json!("path"))),
            "{name}: {schema}"
        );
    }
    // The stdio server ends when its client goes away.
    let status = mcp.close().await;
    assert!(status.success(), "mcp-serve --stdio exit: {status:?}");
}

#[tokio::test]
async fn mcp_serve_runs_an_allowed_command_and_a_login_shell() {
    let mcp = stdio(RM_FORBIDDEN, Answer::Accept).await;
    let (_dir, wd) = workdir();
    let r = mcp
        .shell("echo out; echo err >&2; echo made > f; exit 3", &wd)
        .await;
    assert_eq!(r.exit_code, 3, "{r:?}");
    assert!(
        r.output.contains("out") && r.output.contains("err"),
        "{r:?}"
    );
    assert!(!r.timed_out, "{r:?}");
    assert!(r.duration < WAIT, "{r:?}");
    assert_eq!(std::fs::read_to_string(wd.join("f")).expect("f"), "made\n");
    assert!(mcp.approver.messages().is_empty());

    // The default is a login shell (`bash -lc`), and it works.
    let r = mcp
        .shell_with(json!({
            "command": "shopt -q login_shell && echo LOGIN=yes; echo profile=$FROM_PROFILE; pwd > where",
            "workdir": dir_str(&wd),
        }))
        .await;
    assert!(r.output.contains("LOGIN=yes"), "{r:?}");
    assert!(r.output.contains("profile=yes"), "{r:?}");
    assert!(!r.timed_out, "{r:?}");
    assert_eq!(
        std::fs::read_to_string(wd.join("where")).expect("where"),
        format!("{}\n", wd.display())
    );
    // And `login: false` is not one.
    let r = mcp
        .shell(
            "shopt -q login_shell && echo LOGIN=yes || echo LOGIN=no; echo profile=$FROM_PROFILE.",
            &wd,
        )
        .await;
    assert!(r.output.contains("LOGIN=no"), "{r:?}");
    assert!(r.output.contains("profile=."), "{r:?}");
}

#[tokio::test]
async fn mcp_serve_refuses_a_forbidden_program_and_goes_on() {
    let mcp = stdio(RM_FORBIDDEN, Answer::Accept).await;
    let (_dir, wd) = workdir();
    std::fs::write(wd.join("x"), "keep").expect("x");
    let r = mcp.shell("rm x; echo after", &wd).await;
    assert!(wd.join("x").exists(), "x was removed: {r:?}");
    assert_denied(&r, "rm x");
    assert!(
        r.output.contains("Execution denied: /usr/bin/rm x: "),
        "{r:?}"
    );
    assert!(r.output.contains("after"), "{r:?}");
    assert_eq!(r.exit_code, 0, "{r:?}");
    assert!(!r.timed_out, "{r:?}");
    // No elicitation for a forbidden program.
    assert!(mcp.approver.messages().is_empty());
}

/// A `touch` under a prompt rule, answered `answer`: the messages the client saw and the result.
async fn prompted_touch(answer: Answer) -> (Vec<String>, ShellResult, bool, PathBuf) {
    let mcp = stdio(TOUCH_PROMPT, answer).await;
    let (_dir, wd) = workdir();
    let r = mcp.shell("touch made; echo after", &wd).await;
    let created = wd.join("made").exists();
    let messages = mcp.approver.messages();
    (messages, r, created, wd)
}

#[tokio::test]
async fn mcp_serve_prompt_accepted_runs_the_program() {
    let (messages, r, created, wd) = prompted_touch(Answer::Accept).await;
    assert!(created, "accepted, but the file is missing: {r:?}");
    assert_eq!(messages.len(), 1, "{messages:?}");
    let m = &messages[0];
    assert!(m.contains("/usr/bin/touch"), "{m}");
    assert!(m.contains("/usr/bin/touch made"), "{m}");
    assert!(m.contains(&wd.display().to_string()), "{m}");
    assert!(!r.output.contains("Execution denied"), "{r:?}");
    assert!(r.output.contains("after"), "{r:?}");
}

#[tokio::test]
async fn mcp_serve_prompt_declined_refuses_the_program() {
    let (messages, r, created, wd) = prompted_touch(Answer::Decline("not today")).await;
    assert!(!created, "declined, but the file exists: {r:?}");
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        messages[0].contains("/usr/bin/touch made")
            && messages[0].contains(&wd.display().to_string()),
        "{messages:?}"
    );
    assert!(
        r.output
            .contains("Execution denied: /usr/bin/touch made: declined by the user: not today"),
        "{r:?}"
    );
    assert!(r.output.contains("after"), "{r:?}");
}

#[tokio::test]
async fn mcp_serve_prompt_cancelled_refuses_the_program() {
    let (messages, r, created, _wd) = prompted_touch(Answer::Cancel).await;
    assert!(!created, "cancelled, but the file exists: {r:?}");
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        r.output
            .contains("Execution denied: /usr/bin/touch made: cancelled by the user"),
        "{r:?}"
    );
    assert!(r.output.contains("after"), "{r:?}");
}

/// Ways of running `rm x` from something the shell started.
const NESTED: &[&str] = &[
    "sh -c 'rm x'",
    "bash -lc 'rm x'",
    "./script",
    "env rm x",
    "echo x | xargs rm",
    r"find . -name x -exec rm {} \;",
    "setsid sh -c 'rm x'",
    "(setsid -f sh -c 'rm x'; sleep 0.5)",
];

/// One directory per case, each with `x` and an executable `#!/bin/sh` script that runs rm.
fn nested_cases(root: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    (0..NESTED.len())
        .map(|i| {
            let d = root.join(format!("case{i}"));
            std::fs::create_dir(&d).expect("case dir");
            std::fs::write(d.join("x"), "keep").expect("x");
            let script = d.join("script");
            std::fs::write(&script, "#!/bin/sh\nrm x\n").expect("script");
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
            d
        })
        .collect()
}

#[tokio::test]
async fn mcp_serve_catches_nested_execs() {
    let mcp = stdio(RM_FORBIDDEN, Answer::Accept).await;
    let (_dir, root) = workdir();
    let dirs = nested_cases(&root);
    for (command, d) in NESTED.iter().zip(&dirs) {
        let r = mcp.shell(command, d).await;
        assert!(d.join("x").exists(), "{command}: x was removed: {r:?}");
        assert_denied(&r, command);
        assert!(!r.timed_out, "{command}: {r:?}");
    }
}

#[tokio::test]
async fn mcp_serve_nested_execs_do_remove_without_the_rule() {
    // The control for the test above: the same commands do remove x when rm is allowed.
    let mcp = stdio(
        r#"prefix_rule(pattern=["dd"], decision="forbidden")"#,
        Answer::Accept,
    )
    .await;
    let (_dir, root) = workdir();
    let dirs = nested_cases(&root);
    for (command, d) in NESTED.iter().zip(&dirs) {
        let r = mcp.shell(command, d).await;
        assert!(!d.join("x").exists(), "{command}: x is still there: {r:?}");
        assert!(!r.output.contains("Execution denied"), "{command}: {r:?}");
    }
}

#[tokio::test]
async fn mcp_serve_timeout_does_not_count_the_approval_wait() {
    let mcp = stdio(TOUCH_PROMPT, Answer::AcceptAfter(Duration::from_secs(3))).await;
    let (_dir, wd) = workdir();
    let started = Instant::now();
    let r = mcp
        .shell_with(json!({
            "command": "touch y && sleep 1 && echo done",
            "workdir": dir_str(&wd),
            "timeout_ms": 2000,
            "login": false,
        }))
        .await;
    let elapsed = started.elapsed();
    assert!(wd.join("y").exists(), "{r:?}");
    assert!(r.output.contains("done"), "{r:?}");
    assert!(!r.timed_out, "{r:?}");
    assert_eq!(r.exit_code, 0, "{r:?}");
    assert_eq!(mcp.approver.messages().len(), 1);
    // The approval (3 s) and the sleep (1 s) both happened: more than the 2 s timeout in all.
    assert!(elapsed >= Duration::from_secs(4), "{elapsed:?}");
    assert!(r.duration >= Duration::from_secs(4), "{r:?}");
}

/// A script that starts, besides the shell itself (`shell.pid`), a subshell that execs
/// (`sub.pid`), a plain background job (`bg.pid`), a job in its own session (`sid.pid`) and a
/// double-forked one reparented away from the shell (`orphan.pid`), then sleeps for `sleep`.
fn tree_script(sleep: u32) -> String {
    format!(
        "echo $$ > shell.pid; \
         (echo $BASHPID > sub.pid; exec sleep 30) & \
         sleep 30 & echo $! > bg.pid; \
         setsid sh -c 'echo $$ > sid.pid; exec sleep 30' & \
         ( (sh -c 'echo $$ > orphan.pid; exec sleep 30' &) ); \
         sleep {sleep}"
    )
}

const TREE_PIDS: [&str; 5] = ["shell.pid", "sub.pid", "bg.pid", "sid.pid", "orphan.pid"];

fn read_pid(wd: &Path, file: &str) -> Option<i32> {
    std::fs::read_to_string(wd.join(file))
        .ok()
        .and_then(|t| t.trim().parse().ok())
}

/// Every process the tree script wrote a pid file for is gone (not even a zombie in /proc).
fn assert_tree_gone(wd: &Path) {
    for file in TREE_PIDS {
        let pid = read_pid(wd, file).unwrap_or_else(|| panic!("{file}: no pid written"));
        assert!(!pid_alive(pid), "{file}: pid {pid} survived the call");
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "{file}: pid {pid} is still in /proc after the call"
        );
    }
}

#[tokio::test]
async fn mcp_serve_timeout_kills_the_whole_tree() {
    let mcp = stdio(RM_FORBIDDEN, Answer::Accept).await;
    let (_dir, wd) = workdir();
    let started = Instant::now();
    let r = within_for(
        Duration::from_secs(10),
        "a call with timeout_ms 500",
        mcp.shell_with(json!({
            "command": tree_script(20),
            "workdir": dir_str(&wd),
            "timeout_ms": 500,
            "login": false,
        })),
    )
    .await;
    let elapsed = started.elapsed();
    assert!(r.timed_out, "{r:?}");
    assert!(r.duration >= Duration::from_millis(500), "{r:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_tree_gone(&wd);
    // The session goes on.
    let r = mcp.shell("echo again", &wd).await;
    assert!(r.output.contains("again") && !r.timed_out, "{r:?}");
}

#[tokio::test]
async fn mcp_serve_a_cancelled_call_kills_its_tree() {
    let mcp = stdio(RM_FORBIDDEN, Answer::Accept).await;
    let (_dir, wd) = workdir();
    let call = mcp.shell_with(json!({
        "command": tree_script(30),
        "workdir": dir_str(&wd),
        "login": false,
    }));
    // Drive the call until every process is up, then drop it: rmcp's client sends
    // `notifications/cancelled` for a call dropped before its answer.
    let all_up = async {
        while TREE_PIDS
            .iter()
            .any(|f| read_pid(&wd, f).is_none_or(|p| !pid_alive(p)))
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        r = call => panic!("the call ended by itself: {r:?}"),
        () = within("the tree starting", all_up) => {}
    }
    // Dead at once; reaped by init rather than by the guard's helper, which died with them
    // (so a zombie may stay in /proc for a moment, unlike after a timeout).
    let dead = crate::support::wait_until(
        || {
            TREE_PIDS
                .iter()
                .all(|f| read_pid(&wd, f).is_some_and(|p| !pid_alive(p)))
        },
        Duration::from_secs(5),
    )
    .await;
    assert!(dead, "the tree outlived the cancelled call");
    // The session goes on.
    let r = mcp.shell("echo again", &wd).await;
    assert!(r.output.contains("again") && !r.timed_out, "{r:?}");
}

#[tokio::test]
async fn mcp_serve_concurrent_elicitations_are_open_together() {
    let barrier = Arc::new(Barrier::new(2));
    let mcp = stdio(TOUCH_PROMPT, Answer::AcceptTogether(barrier)).await;
    let (_a, a) = workdir();
    let (_b, b) = workdir();
    let (ra, rb) = within(
        "two prompting calls",
        futures::future::join(mcp.shell("touch one", &a), mcp.shell("touch two", &b)),
    )
    .await;
    let messages = mcp.approver.messages();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(a.join("one").exists(), "{ra:?} {messages:?}");
    assert!(b.join("two").exists(), "{rb:?} {messages:?}");
    assert!(!ra.output.contains("Execution denied"), "{ra:?}");
    assert!(!rb.output.contains("Execution denied"), "{rb:?}");
    for (word, dir) in [("one", &a), ("two", &b)] {
        assert!(
            messages
                .iter()
                .any(|m| m.contains(&format!("/usr/bin/touch {word}")) && m.contains(dir_str(dir))),
            "{word}: {messages:?}"
        );
    }
}

#[tokio::test]
async fn mcp_serve_one_script_has_two_elicitations_open_together() {
    let barrier = Arc::new(Barrier::new(2));
    let mcp = stdio(TOUCH_PROMPT, Answer::AcceptTogether(barrier)).await;
    let (_dir, wd) = workdir();
    let r = mcp.shell("touch one & touch two & wait", &wd).await;
    let messages = mcp.approver.messages();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(
        wd.join("one").exists() && wd.join("two").exists(),
        "{r:?} {messages:?}"
    );
    assert!(!r.output.contains("Execution denied"), "{r:?}");
}

#[tokio::test]
async fn mcp_serve_file_tools() {
    let mcp = stdio(RM_FORBIDDEN, Answer::Accept).await;
    let (_dir, wd) = workdir();
    let file = wd.join("note.txt");
    let content = "héllo\nsecond line\n";
    let said = mcp
        .ok(
            "write_file",
            json!({"path": dir_str(&file), "content": content}),
        )
        .await;
    assert!(said.contains("wrote"), "{said}");
    assert_eq!(std::fs::read_to_string(&file).expect("on disk"), content);
    assert_eq!(
        mcp.ok("read_file", json!({"path": dir_str(&file)})).await,
        content
    );
    // Replacing works too.
    mcp.ok(
        "write_file",
        json!({"path": dir_str(&file), "content": "v2"}),
    )
    .await;
    assert_eq!(std::fs::read_to_string(&file).expect("on disk"), "v2");

    std::fs::create_dir(wd.join("sub")).expect("sub");
    let listing = mcp
        .ok("list_directory", json!({"path": dir_str(&wd)}))
        .await;
    let entries: Value = serde_json::from_str(&listing).expect("listing is JSON");
    let mut entries: Vec<(String, String)> = entries
        .as_array()
        .expect("an array")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or_default().to_string(),
                e["type"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        [
            ("note.txt".to_string(), "file".to_string()),
            ("sub".to_string(), "directory".to_string())
        ],
        "{listing}"
    );

    // A relative path is refused.
    for (tool, a) in [
        ("read_file", json!({"path": "note.txt"})),
        ("write_file", json!({"path": "rel.txt", "content": "x"})),
        ("list_directory", json!({"path": "."})),
    ] {
        match mcp.call(tool, a.clone()).await {
            Err(ServiceError::McpError(e)) => {
                assert_eq!(e.code, ErrorCode::INVALID_PARAMS, "{tool} {a}: {e:?}")
            }
            other => panic!("{tool} {a}: expected invalid params, got {other:?}"),
        }
    }
    assert!(!wd.join("rel.txt").exists());
    // A missing file is a tool error.
    let r = mcp
        .call("read_file", json!({"path": dir_str(&wd.join("missing"))}))
        .await
        .expect("read_file of a missing file");
    assert_eq!(r.is_error, Some(true), "{}", text(&r));
}

#[tokio::test]
async fn mcp_serve_over_streamable_http() {
    let rules = format!("{RM_FORBIDDEN}\n{TOUCH_PROMPT}\n");
    let mcp = http(&rules, Answer::Accept).await;
    let (_dir, wd) = workdir();
    std::fs::write(wd.join("x"), "keep").expect("x");

    let r = mcp.shell("echo hello > greeting; cat greeting", &wd).await;
    assert!(r.output.contains("hello"), "{r:?}");
    assert_eq!(r.exit_code, 0, "{r:?}");
    assert!(wd.join("greeting").exists());

    let r = mcp.shell("rm x; echo after", &wd).await;
    assert!(wd.join("x").exists(), "{r:?}");
    assert_denied(&r, "rm over HTTP");
    assert!(r.output.contains("after"), "{r:?}");

    // Elicitations travel over HTTP too.
    let r = mcp.shell("touch approved", &wd).await;
    assert!(wd.join("approved").exists(), "{r:?}");
    let messages = mcp.approver.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        messages[0].contains("/usr/bin/touch approved"),
        "{messages:?}"
    );
}

/// Runs `mcp-serve` with this rules text, expecting it to fail at once.
async fn bad_rules(rules: &str, transport: &[&str]) -> (String, PathBuf, RulesFile) {
    let file = rules_file(rules);
    let started = Instant::now();
    let out = within_for(
        Duration::from_secs(10),
        "mcp-serve with bad rules",
        mcp_serve(&file, transport)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output(),
    )
    .await
    .expect("run mcp-serve");
    assert!(!out.status.success(), "exit {:?}", out.status);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        out.stdout.is_empty(),
        "stdout: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    let path = file.path.clone();
    (
        String::from_utf8_lossy(&out.stderr).into_owned(),
        path,
        file,
    )
}

#[tokio::test]
async fn mcp_serve_refuses_to_start_with_bad_rules() {
    // A syntax error on line 2, column 28 (the stray `decision` without a comma before it).
    let text =
        "prefix_rule(pattern=[\"ls\"])\nprefix_rule(pattern=[\"rm\"] decision=\"forbidden\")\n";
    for transport in [&["--stdio"][..], &["--listen", "http://127.0.0.1:0"][..]] {
        let (stderr, path, _f) = bad_rules(text, transport).await;
        let at = format!("{}:2:28: ", path.display());
        assert!(stderr.contains(&at), "{transport:?}: no {at:?} in {stderr}");
    }

    // A rule whose `match` example does not match it.
    let text =
        "prefix_rule(pattern=[\"git\", \"push\"], decision=\"forbidden\", match=[\"git pull\"])\n";
    let (stderr, path, _f) = bad_rules(text, &["--stdio"]).await;
    let want = format!(
        r#"{}:1: rule ["git", "push"]: match example ["git", "pull"] does not match it"#,
        path.display()
    );
    assert!(stderr.contains(&want), "no {want:?} in {stderr}");
}

/// A JSON-RPC "invalid params" error whose message names `field`.
fn invalid_params(r: Result<CallToolResult, ServiceError>, what: &str, field: &str) {
    match r {
        Err(ServiceError::McpError(e)) => {
            assert_eq!(e.code, ErrorCode::INVALID_PARAMS, "{what}: {e:?}");
            assert!(e.message.contains(field), "{what}: {e:?}");
        }
        other => panic!("{what}: expected invalid params, got {other:?}"),
    }
}

#[tokio::test]
async fn mcp_serve_bad_input_is_an_error_and_the_session_goes_on() {
    let mcp = stdio(RM_FORBIDDEN, Answer::Accept).await;
    let (_dir, wd) = workdir();
    let w = dir_str(&wd);
    let cases = [
        (
            "relative workdir",
            "`workdir`",
            json!({"command": "touch bad", "workdir": ".", "login": false}),
        ),
        (
            "missing workdir",
            "`workdir`",
            json!({"command": "touch bad", "login": false}),
        ),
        (
            "missing command",
            "`command`",
            json!({"workdir": w, "login": false}),
        ),
        (
            "command not a string",
            "`command`",
            json!({"command": 1, "workdir": w, "login": false}),
        ),
        (
            "negative timeout_ms",
            "`timeout_ms`",
            json!({"command": "touch bad", "workdir": w, "timeout_ms": -1, "login": false}),
        ),
        (
            "zero timeout_ms",
            "`timeout_ms`",
            json!({"command": "touch bad", "workdir": w, "timeout_ms": 0, "login": false}),
        ),
        (
            "timeout_ms over 24 h",
            "`timeout_ms`",
            json!({"command": "touch bad", "workdir": w, "timeout_ms": 86_400_001u64, "login": false}),
        ),
        (
            "timeout_ms not an integer",
            "`timeout_ms`",
            json!({"command": "touch bad", "workdir": w, "timeout_ms": "500", "login": false}),
        ),
        (
            "login not a boolean",
            "`login`",
            json!({"command": "touch bad", "workdir": w, "login": "no"}),
        ),
    ];
    for (what, field, a) in cases {
        invalid_params(mcp.call("shell", a).await, what, field);
        assert!(!wd.join("bad").exists(), "{what}: the command ran");
        // The session still serves.
        let r = mcp.shell("echo still here", &wd).await;
        assert!(r.output.contains("still here"), "after {what}: {r:?}");
    }

    // A workdir that is absolute but not a directory: a tool error.
    let missing = wd.join("nope");
    let r = mcp
        .call(
            "shell",
            json!({"command": "touch bad", "workdir": dir_str(&missing), "login": false}),
        )
        .await
        .expect("a tool error, not a protocol error");
    assert_eq!(r.is_error, Some(true), "{r:?}");
    assert!(text(&r).contains("workdir"), "{}", text(&r));
    assert!(!missing.exists() && !wd.join("bad").exists());

    // An unknown tool.
    invalid_params(
        mcp.call("no_such_tool", json!({})).await,
        "unknown tool",
        "no_such_tool",
    );
    let r = mcp.shell("echo still here", &wd).await;
    assert!(r.output.contains("still here"), "{r:?}");
}

/// Over Streamable HTTP, a prompt's elicitation goes out on the `tools/call` POST's own event
/// stream: a client that never opens the optional GET stream still sees it (and the call does
/// not hang with its timeout paused).
#[tokio::test]
async fn mcp_serve_http_elicitation_rides_the_calls_own_stream() {
    let rules = rules_file(TOUCH_PROMPT);
    let (mut child, _stdout, url) = start_http(&rules).await;
    let (_dir, wd) = workdir();
    let http = reqwest::Client::new();
    let post = |body: Value, session: Option<&str>| {
        let mut req = http
            .post(&url)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json, text/event-stream")
            .body(body.to_string());
        if let Some(s) = session {
            req = req
                .header("Mcp-Session-Id", s)
                .header("MCP-Protocol-Version", "2025-06-18");
        }
        req.send()
    };
    let init = within(
        "initialize",
        post(
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {"elicitation": {}},
                "clientInfo": {"name": "raw", "version": "1"}}}),
            None,
        ),
    )
    .await
    .expect("initialize");
    let session = init
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .expect("a session id")
        .to_string();
    drop(init);
    within(
        "initialized",
        post(
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            Some(&session),
        ),
    )
    .await
    .expect("initialized");
    let mut call = within(
        "tools/call",
        post(
            json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
                "name": "shell", "arguments": {"command": "touch raw-approved",
                "workdir": dir_str(&wd), "login": false}}}),
            Some(&session),
        ),
    )
    .await
    .expect("tools/call");
    // Read the call's stream until the elicitation arrives on it.
    let mut seen = String::new();
    let elicitation: Value = loop {
        let chunk = within("the elicitation on the call's stream", call.chunk())
            .await
            .expect("read the stream")
            .expect("the stream ended before an elicitation");
        seen.push_str(&String::from_utf8_lossy(&chunk));
        let found = seen
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .find(|m| m["method"] == "elicitation/create");
        if let Some(m) = found {
            break m;
        }
    };
    let message = elicitation["params"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("/usr/bin/touch raw-approved"),
        "{elicitation}"
    );
    within(
        "the answer",
        post(
            json!({"jsonrpc": "2.0", "id": elicitation["id"].clone(),
                "result": {"action": "accept", "content": {}}}),
            Some(&session),
        ),
    )
    .await
    .expect("answer");
    // The call's result follows on the same stream.
    loop {
        if seen.contains("\"id\":2") && seen.contains("exit_code") {
            break;
        }
        let chunk = within("the call's result", call.chunk())
            .await
            .expect("read the stream")
            .expect("the stream ended before the result");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(wd.join("raw-approved").exists(), "{seen}");
    let _ = child.kill().await;
}

/// With `--sandbox` (a workspace-write policy) the guard runs inside the sandbox: a write
/// outside the workspace fails, a forbidden program is still refused, a prompted one still
/// asks, and the file tools are confined too.
#[tokio::test]
async fn mcp_serve_guard_and_sandbox_together() {
    let (_dir, root) = workdir();
    let ws = root.join("ws");
    let outside = root.join("outside");
    std::fs::create_dir(&ws).expect("ws");
    std::fs::create_dir(&outside).expect("outside");
    std::fs::write(ws.join("x"), "keep").expect("x");
    let sandbox = root.join("sandbox.json");
    let policy = json!({
        "permissions": {"type": "managed", "network": "restricted", "file_system": {
            "type": "restricted", "entries": [
                {"path": {"type": "special", "value": {"kind": "root"}}, "access": "read"},
                {"path": {"type": "path", "path": format!("file://{}", ws.display())},
                 "access": "write"}]}},
        "windowsSandboxLevel": "disabled",
    });
    std::fs::write(&sandbox, policy.to_string()).expect("sandbox file");
    let rules = format!("{RM_FORBIDDEN}\n{TOUCH_PROMPT}\n");
    let mcp = stdio_with(&rules, Answer::Accept, &["--sandbox", dir_str(&sandbox)]).await;
    let out = outside.join("escaped");
    let r = mcp
        .shell(
            &format!(
                "echo in > inside; echo out > {}; rm x; touch approved; echo done",
                out.display()
            ),
            &ws,
        )
        .await;
    assert!(ws.join("inside").exists(), "{r:?}");
    assert!(!out.exists(), "a write outside the workspace landed: {r:?}");
    assert!(ws.join("x").exists(), "{r:?}");
    assert_denied(&r, "rm in the sandbox");
    assert!(ws.join("approved").exists(), "{r:?}");
    assert!(r.output.contains("done"), "{r:?}");
    let messages = mcp.approver.messages();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("/usr/bin/touch approved")),
        "{messages:?}"
    );
    // The file tools run in the same sandbox.
    let r = mcp
        .call(
            "write_file",
            json!({"path": dir_str(&outside.join("tool")), "content": "no"}),
        )
        .await
        .expect("write_file answers");
    assert_eq!(r.is_error, Some(true), "{}", text(&r));
    assert!(!outside.join("tool").exists());
}

/// Programs named indirectly are judged by what runs: the dynamic loader running `rm`, and a
/// program executed from an in-memory file (which no rule can name, so it is asked about).
#[tokio::test]
async fn mcp_serve_catches_the_loader_and_an_in_memory_program() {
    let (_dir, wd) = workdir();
    std::fs::write(wd.join("x"), "keep").expect("x");
    let loader = ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("a dynamic loader");
    let mcp = stdio(RM_FORBIDDEN, Answer::Decline("not from memory")).await;
    let r = mcp
        .shell(&format!("{loader} /bin/rm x; echo after"), &wd)
        .await;
    assert!(wd.join("x").exists(), "{r:?}");
    assert_denied(&r, "rm through the loader");
    assert!(r.output.contains("after"), "{r:?}");
    // memfd_create + fexecve of a copy of touch, in Perl (on every Debian): declined.
    let script = wd.join("memfd.pl");
    std::fs::write(
        &script,
        r#"my $name = "sneaky"; my $fd = syscall(319, $name, 0); die "memfd_create: $!" if $fd < 0;
open(my $out, ">&=", $fd) or die; open(my $in, "<", "/usr/bin/touch") or die;
binmode $in; binmode $out; { local $/; my $data = <$in>; print {$out} $data; } close $in; $out->flush;
exec { "/proc/self/fd/$fd" } "touch", "from-memory" or die "exec: $!";
"#,
    )
    .expect("script");
    if cfg!(target_arch = "x86_64") {
        let r = mcp
            .shell(&format!("perl {}; echo after", script.display()), &wd)
            .await;
        assert!(!wd.join("from-memory").exists(), "{r:?}");
        assert!(r.output.contains("Execution denied"), "{r:?}");
        let messages = mcp.approver.messages();
        assert!(
            messages.iter().any(|m| m.contains("memfd:sneaky")),
            "{messages:?}"
        );
    }
}

/// A client that did not declare elicitation is not asked: a prompted program is refused at
/// once (the call does not wait, with its timeout paused, for an answer that cannot come).
#[tokio::test]
async fn mcp_serve_prompt_without_elicitation_support_is_refused_at_once() {
    use tokio::io::AsyncWriteExt;
    let rules = rules_file(TOUCH_PROMPT);
    let (_dir, wd) = workdir();
    let mut child = mcp_serve(&rules, &["--stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start mcp-serve --stdio");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let messages = [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "plain", "version": "1"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "shell",
            "arguments": {"command": "touch asked; echo after", "workdir": dir_str(&wd),
            "login": false}}}),
    ];
    for m in messages {
        let line = format!("{m}\n");
        within("write", stdin.write_all(line.as_bytes()))
            .await
            .expect("write");
    }
    let reply = loop {
        let line = within("a reply", lines.next_line())
            .await
            .expect("read")
            .expect("the server closed stdout");
        let v: Value = serde_json::from_str(&line).expect("JSON");
        assert_ne!(v["method"], "elicitation/create", "{v}");
        if v["id"] == 2 {
            break v;
        }
    };
    let body = reply["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{reply}"));
    assert!(body.contains("cannot be asked"), "{body}");
    assert!(body.contains("after"), "{body}");
    assert!(!wd.join("asked").exists());
    let _ = child.kill().await;
}
