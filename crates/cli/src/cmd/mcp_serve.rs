//! `exec-server mcp-serve`: the executor as an MCP server, over stdio or Streamable HTTP. The
//! work is in the `exec-server-mcp-serve` crate; this file parses the flags, loads the rules
//! and the sandbox, and serves.

use std::path::PathBuf;

use anyhow::Context as _;
use exec_server_execpolicy::Rules;
use exec_server_mcp_serve::{Shell, ShellServer};

/// Examples shown under `exec-server mcp-serve --help`.
pub(crate) const EXAMPLES: &str = "\
Examples:
  exec-server mcp-serve --stdio --rules ~/.config/exec-server/default.rules
  exec-server mcp-serve --listen http://127.0.0.1:8780 --rules team.rules --rules mine.rules

A rules file (docs/execpolicy.md):
  prefix_rule(pattern=[\"rm\"], decision=\"forbidden\", justification=\"use trash\")
  prefix_rule(pattern=[\"git\", [\"push\", \"reset\"]], decision=\"prompt\")

MCP client configuration (docs/mcp-serve.md):
  {\"mcpServers\": {\"shell\": {\"command\": \"exec-server\",
      \"args\": [\"mcp-serve\", \"--stdio\", \"--rules\", \"/path/to/default.rules\"]}}}";

/// Flags of `exec-server mcp-serve`.
#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("transport").required(true).args(["stdio", "listen"]))]
pub(crate) struct McpServeArgs {
    /// Serve one MCP session on stdin/stdout.
    #[arg(long)]
    pub(crate) stdio: bool,

    /// Serve Streamable HTTP at `http://IP:PORT/mcp` (port 0 picks one; the URL is printed on
    /// the first line of stdout).
    #[arg(long, value_name = "http://IP:PORT")]
    pub(crate) listen: Option<String>,

    /// A rules file in the Codex execpolicy syntax; may repeat. Without any, no rule applies
    /// and every exec runs.
    #[arg(long = "rules", value_name = "FILE")]
    pub(crate) rules: Vec<PathBuf>,

    /// A JSON file holding a sandbox context, the shape of `process/start`'s `sandbox` field:
    /// every shell call and file tool runs inside that OS sandbox.
    #[arg(long, value_name = "FILE")]
    pub(crate) sandbox: Option<PathBuf>,

    /// Extra `Host` header values accepted by the HTTP transport (loopback names always are).
    #[arg(long = "allowed-host", value_name = "HOST")]
    pub(crate) allowed_hosts: Vec<String>,
}

/// Loads the configuration and serves until the client (stdio) or a signal (HTTP) ends it.
pub(crate) async fn mcp_serve(args: McpServeArgs) -> anyhow::Result<()> {
    let rules = Rules::load(&args.rules)?;
    let sandbox = match &args.sandbox {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the sandbox file {}", path.display()))?;
            Some(
                serde_json::from_str(&text)
                    .with_context(|| format!("{}: not a sandbox context", path.display()))?,
            )
        }
    };
    tracing::info!(
        rules = rules.len(),
        sandboxed = sandbox.is_some(),
        "mcp-serve starting"
    );
    let shell = Shell {
        rules: std::sync::Arc::new(rules),
        sandbox,
        shell: exec_server_mcp_serve::shell::default_shell(),
        exe: std::env::current_exe().context("cannot find the exec-server binary")?,
        env: std::env::vars().collect(),
    };
    let server = ShellServer::new(shell);
    if args.stdio {
        return exec_server_mcp_serve::serve_stdio(server)
            .await
            .map_err(anyhow::Error::from);
    }
    let listen = args.listen.as_deref().unwrap_or_default();
    let addr = super::rendezvous::listen_addr(listen)?;
    let (listener, bound) = crate::bind(addr).await?;
    let url = exec_server_mcp_serve::http_url(bound);
    crate::announce(&url)?;
    tracing::info!(%url, "mcp-serve listening");
    let stop = tokio_util::sync::CancellationToken::new();
    let trigger = stop.clone();
    tokio::spawn(async move {
        crate::shutdown_signal().await;
        trigger.cancel();
    });
    exec_server_mcp_serve::serve_http(listener, server, args.allowed_hosts, stop)
        .await
        .map_err(anyhow::Error::from)
}
