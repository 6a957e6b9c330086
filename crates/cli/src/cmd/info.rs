//! `exec-server info URL`: print the executor's environmentInfo as JSON.

use std::io::Write as _;

use super::ConnectArgs;

pub(crate) const EXAMPLES: &str = "\
Examples:
  exec-server info ws://127.0.0.1:8765
  exec-server info --token-file ~/.exec-token wss://devbox.example:8765 | jq .capabilities";

/// Flags of `info`.
#[derive(Debug, clap::Args)]
pub(crate) struct InfoArgs {
    #[command(flatten)]
    pub(crate) connect: ConnectArgs,
}

/// Prints `environment/info` (fresh, not the copy from `initialize`) with the session id.
pub(crate) async fn info(args: InfoArgs) -> anyhow::Result<()> {
    let client = args.connect.connect("exec-server info").await?;
    let info = client
        .call::<exec_server_protocol::environment::Info>(())
        .await?;
    let text = serde_json::to_string_pretty(&info)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()?;
    client.close();
    Ok(())
}
