//! `exec-server mcp URL --server MCP_URL`: list the tools of a Streamable HTTP MCP server reached
//! from the executor (or call one with `--call NAME --args JSON`), through `exec_server_mcp`.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use exec_server_client::environment::EnvironmentHttp;
use exec_server_client::Environment;
use exec_server_core::http::HttpHeader;
use exec_server_mcp::rmcp::model::{CallToolRequestParams, ClientConfig, ProtocolVersion};
use exec_server_mcp::rmcp::service::NotificationContext;
use exec_server_mcp::rmcp::{ClientHandler, RoleClient, ServiceExt};
use exec_server_mcp::{McpHttpClient, McpHttpOptions};

use super::ConnectArgs;

pub(crate) const EXAMPLES: &str = "\
Examples:
  exec-server mcp ws://127.0.0.1:8765 --server http://10.0.0.5:8080/mcp
  exec-server mcp ws://127.0.0.1:8765 --server http://127.0.0.1:9000/mcp --call add --args '{\"a\":2,\"b\":3}'
  exec-server mcp devbox --server https://mcp.internal/mcp --bearer-token-env-var MCP_TOKEN
  exec-server mcp --direct --server http://127.0.0.1:9000/mcp --json";

/// Flags of `mcp`.
#[derive(Debug, clap::Args)]
pub(crate) struct McpArgs {
    /// The executor: a `ws://` or `wss://` URL, or the id of an environment in
    /// `$CODEX_HOME/environments.toml` (not with `--direct`).
    #[arg(value_name = "URL", required_unless_present = "direct")]
    pub(crate) url: Option<String>,

    /// The MCP server's Streamable HTTP endpoint, as the executor reaches it.
    #[arg(long, value_name = "MCP_URL")]
    pub(crate) server: String,

    /// Call this tool instead of listing the tools.
    #[arg(long, value_name = "NAME")]
    pub(crate) call: Option<String>,

    /// The tool's arguments, a JSON object.
    #[arg(long, value_name = "JSON", requires = "call")]
    pub(crate) args: Option<String>,

    /// Print the tools or the call's result as JSON.
    #[arg(long)]
    pub(crate) json: bool,

    /// A header sent with every request (`Name: value`; repeatable).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub(crate) headers: Vec<String>,

    /// A header whose value is the environment variable VAR of the executor (of this machine
    /// with `--direct`) (`Name=VAR`; repeatable): the secret stays on the executor.
    #[arg(long = "env-header", value_name = "NAME=VAR")]
    pub(crate) env_headers: Vec<String>,

    /// Send `Authorization: Bearer $VAR`, VAR read on the executor (here with `--direct`).
    #[arg(long, value_name = "VAR")]
    pub(crate) bearer_token_env_var: Option<String>,

    /// Send `Authorization: Bearer TOKEN` (an OAuth access token, for instance).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "MCP_BEARER_TOKEN",
        hide_env_values = true
    )]
    pub(crate) bearer_token: Option<String>,

    /// Send from this machine instead of from an executor.
    #[arg(long, conflicts_with = "url")]
    pub(crate) direct: bool,

    /// Seconds the whole exchange may take.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub(crate) timeout: u64,

    /// Bearer token for the executor (see `run --help`).
    #[arg(long, env = "EXEC_SERVER_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,

    /// Read the executor's bearer token from this file.
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    pub(crate) token_file: Option<PathBuf>,

    /// PEM file of extra CA certificates trusted for `wss://`.
    #[arg(long, value_name = "FILE")]
    pub(crate) ca_cert: Option<PathBuf>,

    /// Seconds to wait for the executor connection and handshake.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub(crate) connect_timeout: u64,
}

/// Prints server notifications (log messages, list changes) on stderr.
#[derive(Clone)]
struct Notes;

impl ClientHandler for Notes {
    fn get_info(&self) -> ClientConfig {
        let mut c = ClientConfig::default();
        // The newest version with sessions: what deployed servers speak.
        c.protocol_version = ProtocolVersion::LATEST_WITH_INITIALIZE;
        c.client_info.name = "exec-server mcp".into();
        c
    }

    #[allow(deprecated)] // Deprecated by SEP-2577, still sent by servers.
    async fn on_logging_message(
        &self,
        params: exec_server_mcp::rmcp::model::LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        tracing::info!(level = ?params.level, data = %params.data, "mcp server log");
    }
}

/// Lists the tools or calls one.
pub(crate) async fn mcp(args: McpArgs) -> anyhow::Result<i32> {
    let options = McpHttpOptions {
        headers: headers(&args)?,
        ..McpHttpOptions::default()
    };
    let (runner, client) = if args.direct {
        (Environment::local()?.http_runner(), None)
    } else {
        let connect = ConnectArgs {
            url: args.url.clone().context("the executor URL is missing")?,
            token: args.token.clone(),
            token_file: args.token_file.clone(),
            ca_cert: args.ca_cert.clone(),
            connect_timeout: args.connect_timeout,
        };
        let client = connect.connect("exec-server mcp").await?;
        (
            Environment::remote(client.clone()).http_runner(),
            Some(client),
        )
    };
    let timeout = Duration::from_secs(args.timeout);
    let result = tokio::time::timeout(timeout, session(&args, runner, options)).await;
    if let Some(c) = client {
        c.close();
    }
    result.map_err(|_| anyhow::anyhow!("the MCP exchange took longer than {}s", args.timeout))?
}

async fn session(
    args: &McpArgs,
    runner: EnvironmentHttp,
    options: McpHttpOptions,
) -> anyhow::Result<i32> {
    let http = McpHttpClient::new(runner, options);
    let mut config = exec_server_mcp::config(args.server.as_str());
    config.auth_header = args.bearer_token.clone();
    let why = |http: &McpHttpClient<EnvironmentHttp>| {
        http.last_error()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    };
    let mcp = Notes
        .serve(http.transport(config))
        .await
        .map_err(|e| anyhow::anyhow!("cannot initialize {}: {e}{}", args.server, why(&http)))?;
    let mut out = std::io::stdout().lock();
    let code = match &args.call {
        None => {
            let tools = mcp
                .list_all_tools()
                .await
                .map_err(|e| anyhow::anyhow!("tools/list failed: {e}{}", why(&http)))?;
            if args.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&tools)?)?;
            } else {
                for t in &tools {
                    let desc = t.description.as_deref().unwrap_or("");
                    let first = desc.lines().next().unwrap_or("");
                    writeln!(out, "{}\t{first}", t.name)?;
                }
            }
            0
        }
        Some(name) => {
            let mut params = CallToolRequestParams::new(name.clone());
            if let Some(text) = &args.args {
                let value: serde_json::Value =
                    serde_json::from_str(text).context("--args is not valid JSON")?;
                let serde_json::Value::Object(obj) = value else {
                    anyhow::bail!("--args must be a JSON object");
                };
                params = params.with_arguments(obj);
            }
            let result = mcp
                .call_tool(params)
                .await
                .map_err(|e| anyhow::anyhow!("tools/call {name} failed: {e}{}", why(&http)))?;
            if args.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&result)?)?;
            } else {
                for block in &result.content {
                    match block.as_text() {
                        Some(t) => writeln!(out, "{}", t.text)?,
                        None => writeln!(out, "{}", serde_json::to_string(block)?)?,
                    }
                }
                if let Some(s) = &result.structured_content {
                    if result.content.is_empty() {
                        writeln!(out, "{}", serde_json::to_string_pretty(s)?)?;
                    }
                }
            }
            i32::from(result.is_error == Some(true))
        }
    };
    out.flush()?;
    drop(out);
    // Ends the session (DELETE); a failure to do so is not the command's.
    if let Err(e) = mcp.cancel().await {
        tracing::debug!("closing the MCP session: {e}");
    }
    Ok(code)
}

/// The `--header`, `--env-header` and `--bearer-token-env-var` headers.
fn headers(args: &McpArgs) -> anyhow::Result<Vec<HttpHeader>> {
    let mut out = Vec::new();
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .with_context(|| format!("--header {h:?} is not `Name: value`"))?;
        out.push(HttpHeader {
            name: name.trim().to_string(),
            value: value.trim().to_string(),
            value_env_var: None,
        });
    }
    for h in &args.env_headers {
        let (name, var) = h
            .split_once('=')
            .with_context(|| format!("--env-header {h:?} is not `Name=VAR`"))?;
        out.push(HttpHeader {
            name: name.trim().to_string(),
            value: String::new(),
            value_env_var: Some(var.trim().to_string()),
        });
    }
    if let Some(var) = &args.bearer_token_env_var {
        if args.bearer_token.is_some() {
            anyhow::bail!("give either --bearer-token or --bearer-token-env-var");
        }
        out.push(HttpHeader {
            name: "authorization".into(),
            value: "Bearer ".into(),
            value_env_var: Some(var.clone()),
        });
    }
    Ok(out)
}
