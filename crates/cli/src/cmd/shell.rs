//! `exec-server shell URL`: an interactive login shell on the executor in a pseudo-terminal.

use super::run::{interactive, resolve_cwd, start_params};
use super::ConnectArgs;

pub(crate) const EXAMPLES: &str = "\
Examples:
  exec-server shell ws://127.0.0.1:8765
  exec-server shell --cwd /srv/app --token-file ~/.exec-token wss://devbox.example:8765
  exec-server shell devbox        # an id from $CODEX_HOME/environments.toml

The shell is the executor's (environmentInfo.shell). Your terminal is in raw mode while the
shell runs and is restored however it ends; window size changes are sent with
process/resize. Exit the shell (exit, Ctrl-D) to return; its exit code becomes yours.";

/// Flags of `shell`.
#[derive(Debug, clap::Args)]
pub(crate) struct ShellArgs {
    #[command(flatten)]
    pub(crate) connect: ConnectArgs,

    /// Working directory on the executor (default: the executor's own working directory).
    #[arg(long, value_name = "DIR")]
    pub(crate) cwd: Option<String>,

    /// Set an environment variable for the shell (repeatable).
    #[arg(long = "env", short = 'e', value_name = "K=V", value_parser = parse_env)]
    pub(crate) env: Vec<(String, String)>,

    /// The shell to run instead of the executor's.
    #[arg(long, value_name = "PATH")]
    pub(crate) shell: Option<String>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not K=V")),
    }
}

/// Runs the shell; returns its exit code.
pub(crate) async fn shell(args: ShellArgs) -> anyhow::Result<i32> {
    let client = args.connect.connect("exec-server shell").await?;
    let cwd = resolve_cwd(&client, args.cwd.as_deref())?;
    let info = client.environment_info();
    let program = args
        .shell
        .clone()
        .or_else(|| Some(info.shell.path.clone()).filter(|p| !p.is_empty()))
        .unwrap_or_else(|| "/bin/sh".into());
    let params = start_params(&client, vec![program], cwd, args.env, true, false);
    interactive(&client, params, true).await
}
