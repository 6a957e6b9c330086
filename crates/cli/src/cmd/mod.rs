//! Client commands: `run`, `shell`, `cp`, `info`, `mcp`. Each lives in its own file; this
//! module holds what they share: the connection options and the dispatcher.

pub(crate) mod cp;
pub(crate) mod info;
pub(crate) mod mcp;
pub(crate) mod mcp_serve;
pub(crate) mod rendezvous;
pub(crate) mod run;
pub(crate) mod shell;
mod terminal;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use exec_server_client::manager::{EnvVars, EnvironmentsConfig};
use exec_server_client::{AuthToken, Client, ConnectOptions, Connector, WebSocketTarget};

use crate::args::Command;

/// How to reach and authenticate to the executor; shared by every client command.
#[derive(Debug, clap::Args)]
pub(crate) struct ConnectArgs {
    /// The executor: a `ws://` or `wss://` URL, or the id of an environment in
    /// `$CODEX_HOME/environments.toml` (without that file: `remote`, defined by
    /// CODEX_EXEC_SERVER_URL or the CODEX_EXEC_SERVER_NOISE_* variables).
    #[arg(value_name = "URL")]
    pub(crate) url: String,

    /// Bearer token sent as `Authorization: Bearer ...` (prefer `--token-file` or the
    /// variable, which keep it out of the process list).
    #[arg(long, env = "EXEC_SERVER_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,

    /// Read the bearer token from this file (whitespace trimmed).
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    pub(crate) token_file: Option<PathBuf>,

    /// PEM file of extra CA certificates trusted for `wss://`, besides the system roots.
    #[arg(long, value_name = "FILE")]
    pub(crate) ca_cert: Option<PathBuf>,

    /// Seconds to wait for the connection and the handshake.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub(crate) connect_timeout: u64,
}

impl ConnectArgs {
    /// Connects, with reconnect and resume on.
    pub(crate) async fn connect(&self, client_name: &str) -> anyhow::Result<Client> {
        let connector = self.connector()?;
        let options = ConnectOptions {
            client_name: client_name.into(),
            initialize_timeout: Duration::from_secs(self.connect_timeout),
            ..ConnectOptions::default()
        };
        Client::connect(connector, options)
            .await
            .map_err(anyhow::Error::from)
    }

    fn connector(&self) -> anyhow::Result<Connector> {
        let token = match &self.token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the token file {}", path.display()))?
                    .trim()
                    .to_string(),
            ),
            None => self.token.clone(),
        };
        if self.url.starts_with("ws://") || self.url.starts_with("wss://") {
            let mut t = WebSocketTarget::new(self.url.clone());
            t.bearer_token = token;
            t.ca_certificates = self.ca_cert.clone();
            t.connect_timeout = Duration::from_secs(self.connect_timeout);
            return Ok(Connector::WebSocket(t));
        }
        // Not a URL: an environment id from environments.toml, or `remote` from the variables.
        let config = EnvironmentsConfig::load_with_vars(
            &exec_server_client::manager::codex_home(),
            &EnvVars::from_process(),
        )?;
        let spec = config
            .environments
            .iter()
            .find(|e| e.id == self.url)
            .with_context(|| {
                format!(
                    "`{}` is neither a ws:// or wss:// URL nor an environment id of {}; \
                     known ids: {}",
                    self.url,
                    exec_server_client::manager::codex_home()
                        .join("environments.toml")
                        .display(),
                    config
                        .environments
                        .iter()
                        .map(|e| e.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        match &spec.connector {
            None => anyhow::bail!(
                "`{}` is this machine; client commands need a remote executor URL",
                self.url
            ),
            Some(Connector::WebSocket(t)) => {
                let mut t = t.clone();
                if token.is_some() {
                    t.bearer_token = token;
                }
                if self.ca_cert.is_some() {
                    t.ca_certificates = self.ca_cert.clone();
                }
                Ok(Connector::WebSocket(t))
            }
            Some(Connector::Noise(t)) => {
                let mut t = t.clone();
                if let Some(token) = token {
                    t.auth_token = AuthToken::Value(token);
                }
                if self.ca_cert.is_some() {
                    t.ca_certificates = self.ca_cert.clone();
                }
                Ok(Connector::Noise(t))
            }
            Some(other) => Ok(other.clone()),
        }
    }
}

/// Runs a client command. Commands that end with a remote exit code exit the process here,
/// after their terminal state is restored and their output flushed.
pub(crate) async fn dispatch(command: Command) -> anyhow::Result<()> {
    let code = match command {
        Command::Run(args) => run::run(args).await?,
        Command::Shell(args) => shell::shell(args).await?,
        Command::Cp(args) => {
            cp::cp(args).await?;
            0
        }
        Command::Info(args) => {
            info::info(args).await?;
            0
        }
        Command::Mcp(args) => mcp::mcp(args).await?,
        Command::McpServe(args) => {
            mcp_serve::mcp_serve(args).await?;
            0
        }
        Command::Rendezvous(args) => {
            rendezvous::rendezvous(args).await?;
            0
        }
        Command::Forward(args) => crate::remote_args::forward(args, crate::shutdown_signal())
            .await
            .map(|()| 0)?,
    };
    flush_and_exit(code)
}

/// Flushes stdout and stderr and exits with `code` (a remote exit code; out-of-range codes
/// become 255).
fn flush_and_exit(code: i32) -> ! {
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    let code = if (0..=255).contains(&code) { code } else { 255 };
    std::process::exit(code)
}
