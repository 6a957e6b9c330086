//! `exec-server run URL [--tty] [--cwd DIR] [--env K=V]... -- CMD ARGS...`: run one command on
//! an executor and behave like it locally (streams, stdin, Ctrl-C, exit code).

use std::collections::HashMap;
use std::io::IsTerminal as _;

use anyhow::Context as _;
use exec_server_client::Client;
use exec_server_protocol::process::{EnvInherit, ExecEnvPolicy, StartParams};
use exec_server_protocol::PathUri;

use super::terminal::{drive, window_size, DriveOptions, RawMode};
use super::ConnectArgs;

pub(crate) const EXAMPLES: &str = "\
Examples:
  exec-server run ws://127.0.0.1:8765 -- sh -c 'echo out; echo err >&2; exit 7'
  exec-server run ws://127.0.0.1:8765 --cwd /srv/app --env RUST_LOG=debug -- cargo test
  printf 'a\nb\n' | exec-server run ws://127.0.0.1:8765 -- head -n 2
  exec-server run -n ws://127.0.0.1:8765 -- make      # no stdin
  exec-server run --tty ws://127.0.0.1:8765 -- top
  exec-server run devbox -- make           # an id from $CODEX_HOME/environments.toml
  CODEX_EXEC_SERVER_NOISE_REGISTRY_URL=http://127.0.0.1:8700 \\
  CODEX_EXEC_SERVER_NOISE_ENVIRONMENT_ID=e2e CODEX_EXEC_SERVER_NOISE_AUTH_TOKEN=harness-secret \\
      exec-server run remote -- uname -a   # an executor in remote mode, via its rendezvous

The command inherits the executor's environment (minus names matching *KEY*, *SECRET*,
*TOKEN*), with --env on top. The exit code is the remote one (128 + N when killed by
signal N). A dropped connection is resumed without losing output. When local stdin ends,
the command's stdin is closed too (`process/closeStdin`, an extension of exec-server; an
upstream executor does not have it, so there use -n for commands that read to the end).";

/// Flags of `run`.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) connect: ConnectArgs,

    /// Run under a pseudo-terminal (your terminal goes to raw mode and its size is followed).
    #[arg(long, short = 't')]
    pub(crate) tty: bool,

    /// Working directory on the executor (default: the executor's own working directory).
    #[arg(long, value_name = "DIR")]
    pub(crate) cwd: Option<String>,

    /// Set an environment variable for the command (repeatable).
    #[arg(long = "env", short = 'e', value_name = "K=V", value_parser = parse_env)]
    pub(crate) env: Vec<(String, String)>,

    /// Do not forward stdin (the command reads end-of-file at once).
    #[arg(long, short = 'n')]
    pub(crate) no_stdin: bool,

    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub(crate) command: Vec<String>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not K=V")),
    }
}

/// The working directory as a URI: absolute as given, relative to the executor's cwd, or the
/// executor's cwd.
pub(crate) fn resolve_cwd(client: &Client, cwd: Option<&str>) -> anyhow::Result<PathUri> {
    let base = client
        .environment_info()
        .cwd
        .and_then(|u| u.to_path().ok())
        .unwrap_or_else(|| "/".into());
    let path = match cwd {
        None => base,
        Some(c) if c.starts_with('/') => c.into(),
        Some(c) => base.join(c),
    };
    PathUri::from_path(&path).with_context(|| format!("bad directory {}", path.display()))
}

/// Start parameters shared by `run` and `shell`.
pub(crate) fn start_params(
    client: &Client,
    argv: Vec<String>,
    cwd: PathUri,
    env: Vec<(String, String)>,
    tty: bool,
    pipe_stdin: bool,
) -> StartParams {
    let mut env: HashMap<String, String> = env.into_iter().collect();
    if tty {
        let term = std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into());
        env.entry("TERM".into()).or_insert(term);
    }
    StartParams {
        process_id: client.new_process_id(),
        metadata: None,
        argv,
        cwd,
        env_policy: Some(ExecEnvPolicy {
            inherit: EnvInherit::All,
            ignore_default_excludes: false,
            exclude: Vec::new(),
            set: HashMap::new(),
            include_only: Vec::new(),
        }),
        shell_snapshot: None,
        env,
        tty,
        pipe_stdin,
        arg0: None,
        sandbox: None,
        enforce_managed_network: false,
        managed_network: None,
        network_proxy: None,
        if_exists: None,
        timeout_ms: None,
        kill_grace_ms: None,
    }
}

/// Runs the command; returns its exit code.
pub(crate) async fn run(args: RunArgs) -> anyhow::Result<i32> {
    let client = args.connect.connect("exec-server run").await?;
    let cwd = resolve_cwd(&client, args.cwd.as_deref())?;
    let params = start_params(
        &client,
        args.command.clone(),
        cwd,
        args.env,
        args.tty,
        !args.tty && !args.no_stdin,
    );
    interactive(&client, params, !args.no_stdin).await
}

/// Starts `params` and drives it; for a tty process the local terminal is raw for the
/// duration and its size is sent at start and on every change.
pub(crate) async fn interactive(
    client: &Client,
    params: StartParams,
    forward_stdin: bool,
) -> anyhow::Result<i32> {
    let tty = params.tty;
    let name = params.argv.first().cloned().unwrap_or_default();
    let process = client
        .start_process(params)
        .await
        .with_context(|| format!("cannot start `{name}` on the executor"))?;
    let (control, events) = process.split();
    let local_tty = std::io::stdin().is_terminal();
    let raw = if tty { Some(RawMode::enable()?) } else { None };
    if tty {
        if let Some((rows, cols)) = window_size() {
            let _ = control.resize(rows, cols).await;
        }
    }
    let opts = DriveOptions {
        forward_stdin,
        forward_interrupt: !(tty && local_tty),
        forward_resize: tty,
    };
    let code = drive(control, events, opts).await;
    drop(raw);
    code
}
