//! Remote mode flags (spec §10.1, §10.8), named as upstream's `codex exec-server` names them:
//! `--remote URL --environment-id ID [--name NAME]` plus a credential source, validated into a
//! [`RemoteConfig`]. Used by the server (flattened into its flags) and by `forward`.
//!
//! Credential sources: one bearer on stdin (`--registration-bearer-stdin`), a ChatGPT access
//! token on stdin with `--chatgpt-account-id` (`--chatgpt-token-stdin`), or else the
//! `CODEX_API_KEY` variable. Upstream's rotating credentials, Agent Identity and the SigV4
//! direct transport are refused with a clear error.

use std::time::Duration;

use anyhow::Context as _;
use exec_server_server::transport::relay::{self, Credentials, RemoteConfig, Target};
use tokio::io::AsyncReadExt as _;

/// Longest bearer read from stdin (spec §10.1: one newline-terminated line of at most 16 KiB).
const MAX_STDIN_BEARER: usize = 16 << 10;

/// The remote transports of upstream's `--remote-transport`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RemoteTransport {
    /// Relay frames through a rendezvous, end to end Noise (the default).
    #[default]
    Noise,
    /// SigV4-signed plain JSON-RPC (not supported here).
    Direct,
}

/// Remote registration flags.
#[derive(Debug, Default, clap::Args)]
pub(crate) struct RemoteArgs {
    /// Register this exec-server as a remote environment using the given registry base URL,
    /// then serve the harnesses the rendezvous relays to it (instead of `--listen`).
    #[arg(long, value_name = "URL")]
    pub(crate) remote: Option<String>,

    /// Transport used for the remote executor connection (only `noise` is supported).
    #[arg(long, value_enum, value_name = "REMOTE_TRANSPORT", default_value_t = RemoteTransport::Noise)]
    remote_transport: RemoteTransport,

    /// Environment id to attach to when registering remotely.
    #[arg(long, value_name = "ID")]
    environment_id: Option<String>,

    /// Human-readable environment name (logged).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,

    /// Read one registration bearer from stdin (one line, at most 16 KiB).
    #[arg(long)]
    registration_bearer_stdin: bool,

    /// Read a ChatGPT access token from stdin for registration (with `--chatgpt-account-id`).
    #[arg(long, conflicts_with = "registration_bearer_stdin")]
    chatgpt_token_stdin: bool,

    /// ChatGPT account id, sent as `ChatGPT-Account-Id`.
    #[arg(long, value_name = "ID")]
    chatgpt_account_id: Option<String>,

    /// Rotating executor credentials on stdin (upstream's; not supported here).
    #[arg(long, hide = true)]
    executor_credential_stdin: bool,

    /// Agent Identity auth from CODEX_ACCESS_TOKEN (upstream's; not supported here).
    #[arg(long, hide = true)]
    use_agent_identity_auth: bool,
}

impl RemoteArgs {
    /// `None` without `--remote`; else the validated configuration (the credential is read
    /// from stdin or the environment here). Remote-only flags without `--remote` are refused.
    pub(crate) async fn into_config(
        self,
        ping_interval: Duration,
    ) -> anyhow::Result<Option<RemoteConfig>> {
        let Some(remote) = self.remote.clone() else {
            if self.environment_id.is_some()
                || self.name.is_some()
                || self.registration_bearer_stdin
                || self.chatgpt_token_stdin
                || self.chatgpt_account_id.is_some()
            {
                anyhow::bail!("remote registration flags require `--remote URL`");
            }
            return Ok(None);
        };
        if self.remote_transport == RemoteTransport::Direct {
            anyhow::bail!("`--remote-transport direct` is not supported; use `noise`");
        }
        if self.executor_credential_stdin || self.use_agent_identity_auth {
            anyhow::bail!(
                "`--executor-credential-stdin` and `--use-agent-identity-auth` are not supported; use `--registration-bearer-stdin`"
            );
        }
        if !(remote.starts_with("http://") || remote.starts_with("https://")) {
            anyhow::bail!("`--remote` must be an http:// or https:// URL, got `{remote}`");
        }
        let environment_id = self
            .environment_id
            .as_deref()
            .map(str::trim)
            .context("`--remote` requires `--environment-id ID`")?
            .to_string();
        exec_server_relay::registry::check_environment_id(&environment_id)
            .map_err(|e| anyhow::anyhow!("invalid `--environment-id`: {e}"))?;
        let credentials = self.credentials().await?;
        Ok(Some(RemoteConfig {
            registry_url: remote,
            environment_id,
            name: self.name,
            credentials,
            ping_interval,
        }))
    }

    async fn credentials(&self) -> anyhow::Result<Credentials> {
        if self.chatgpt_account_id.is_some() && !self.chatgpt_token_stdin {
            anyhow::bail!("`--chatgpt-account-id` requires `--chatgpt-token-stdin`");
        }
        let bearer = if self.registration_bearer_stdin || self.chatgpt_token_stdin {
            read_stdin_bearer().await?
        } else {
            match std::env::var("CODEX_API_KEY") {
                Ok(key) if !key.trim().is_empty() => key.trim().to_string(),
                _ => anyhow::bail!(
                    "no registration credential: pass `--registration-bearer-stdin` (and the bearer on stdin) or set CODEX_API_KEY"
                ),
            }
        };
        Ok(Credentials {
            bearer,
            chatgpt_account_id: self.chatgpt_account_id.clone(),
        })
    }
}

/// Reads one bearer line from stdin.
async fn read_stdin_bearer() -> anyhow::Result<String> {
    let mut buf = Vec::new();
    tokio::io::stdin()
        .take(MAX_STDIN_BEARER as u64 + 2)
        .read_to_end(&mut buf)
        .await
        .context("cannot read the registration bearer from stdin")?;
    let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = std::str::from_utf8(line)
        .context("the registration bearer on stdin is not UTF-8")?
        .trim();
    if line.len() > MAX_STDIN_BEARER {
        anyhow::bail!("the registration bearer on stdin is over {MAX_STDIN_BEARER} bytes");
    }
    if line.is_empty() {
        anyhow::bail!("no registration bearer on stdin");
    }
    Ok(line.to_string())
}

/// `exec-server forward`: register like the server does and relay every authenticated stream to
/// an existing exec-server (spec §10.8).
#[derive(Debug, clap::Args)]
pub(crate) struct ForwardArgs {
    /// Destination exec-server WebSocket URL.
    #[arg(long, value_name = "URL")]
    connect: String,

    /// Seconds between WebSocket pings on the rendezvous socket.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    ping_interval: u64,

    /// Registration flags.
    #[command(flatten)]
    remote: RemoteArgs,
}

/// Runs `forward` until SIGTERM or Ctrl-C.
pub(crate) async fn forward(
    args: ForwardArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if !(args.connect.starts_with("ws://") || args.connect.starts_with("wss://")) {
        anyhow::bail!("`--connect` must be a ws:// or wss:// URL");
    }
    let config = args
        .remote
        .into_config(Duration::from_secs(args.ping_interval.max(1)))
        .await?
        .context("`forward` requires `--remote URL`")?;
    relay::serve(config, Target::Forward(args.connect), shutdown)
        .await
        .map_err(anyhow::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        remote: RemoteArgs,
    }

    fn parse(args: &[&str]) -> RemoteArgs {
        T::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .expect("parses")
            .remote
    }

    async fn err(args: &[&str]) -> String {
        parse(args)
            .into_config(Duration::from_secs(30))
            .await
            .expect_err("refused")
            .to_string()
    }

    #[tokio::test]
    async fn flags_are_checked_before_any_credential_is_read() {
        assert!(parse(&[])
            .into_config(Duration::from_secs(1))
            .await
            .expect("ok")
            .is_none());
        assert!(err(&["--environment-id", "e"])
            .await
            .contains("require `--remote URL`"));
        assert!(
            err(&["--remote", "http://r", "--remote-transport", "direct"])
                .await
                .contains("not supported")
        );
        assert!(err(&["--remote", "ws://r", "--environment-id", "e"])
            .await
            .contains("http:// or https://"));
        assert!(err(&["--remote", "http://r"])
            .await
            .contains("--environment-id"));
        assert!(err(&["--remote", "http://r", "--environment-id", "a/b"])
            .await
            .contains("invalid `--environment-id`"));
        assert!(err(&[
            "--remote",
            "http://r",
            "--environment-id",
            "e",
            "--chatgpt-account-id",
            "x"
        ])
        .await
        .contains("requires `--chatgpt-token-stdin`"));
    }
}
