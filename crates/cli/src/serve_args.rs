//! Flags of the server (the default command), validated into a `ServeConfig` in one place.

use std::net::SocketAddr;
use std::time::Duration;

use exec_server_server::ServeConfig;

/// Flags of the server (the default command).
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Where to listen: `ws://IP:PORT` (port 0 picks a free port; the bound URL is printed as
    /// the first line of stdout) or `stdio` (newline-delimited JSON on stdin/stdout).
    #[arg(long, value_name = "URL", default_value = "ws://127.0.0.1:0")]
    listen: String,

    /// Requests processed concurrently per connection; more wait their turn (stdin writes to
    /// one process always take effect in arrival order).
    #[arg(long, value_name = "N", default_value_t = 64)]
    concurrent_requests: usize,

    /// Seconds a disconnected session stays resumable before its processes are killed.
    #[arg(long, value_name = "SECONDS", default_value_t = 80)]
    session_ttl: u64,

    /// Seconds a finished process stays readable (and its id taken) after it closed.
    #[arg(long, value_name = "SECONDS", default_value_t = 80)]
    process_retention: u64,

    /// Output bytes retained per process for replay after a reconnect; also the backlog at
    /// which the server stops reading a child's output until a client takes it.
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 20)]
    retention_per_process: usize,

    /// Largest accepted message (WebSocket message or stdio line), in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    max_message_bytes: usize,
}

/// Where to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listen {
    /// WebSocket on this address.
    Ws(SocketAddr),
    /// stdin/stdout.
    Stdio,
}

/// Parses `--listen` with upstream's messages.
pub(crate) fn parse_listen(s: &str) -> anyhow::Result<Listen> {
    if s == "stdio" || s == "stdio://" {
        return Ok(Listen::Stdio);
    }
    if let Some(rest) = s.strip_prefix("ws://") {
        return rest.parse::<SocketAddr>().map(Listen::Ws).map_err(|_| {
            anyhow::anyhow!("invalid websocket --listen URL `{s}`; expected `ws://IP:PORT`")
        });
    }
    anyhow::bail!("unsupported --listen URL `{s}`; expected `ws://IP:PORT` or `stdio`")
}

impl ServeArgs {
    /// Validates the flags.
    pub(crate) fn into_config(self) -> anyhow::Result<(Listen, ServeConfig)> {
        let listen = parse_listen(&self.listen)?;
        if self.concurrent_requests == 0 {
            anyhow::bail!("--concurrent-requests must be at least 1");
        }
        if self.retention_per_process < 64 << 10 {
            anyhow::bail!("--retention-per-process must be at least 65536 bytes");
        }
        if self.max_message_bytes < 1 << 20 {
            anyhow::bail!("--max-message-bytes must be at least 1048576");
        }
        let mut config = ServeConfig {
            concurrent_requests: self.concurrent_requests,
            max_message_bytes: self.max_message_bytes,
            ..ServeConfig::default()
        };
        config.limits.session_ttl = Duration::from_secs(self.session_ttl);
        config.limits.closed_retention = Duration::from_secs(self.process_retention);
        config.limits.retention_bytes = self.retention_per_process;
        Ok((listen, config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_urls_parse_like_upstream() {
        assert_eq!(parse_listen("stdio").unwrap(), Listen::Stdio);
        assert_eq!(parse_listen("stdio://").unwrap(), Listen::Stdio);
        assert!(matches!(
            parse_listen("ws://127.0.0.1:0").unwrap(),
            Listen::Ws(_)
        ));
        assert_eq!(
            parse_listen("ws://localhost:1").unwrap_err().to_string(),
            "invalid websocket --listen URL `ws://localhost:1`; expected `ws://IP:PORT`"
        );
        assert_eq!(
            parse_listen("wss://1.2.3.4:5").unwrap_err().to_string(),
            "unsupported --listen URL `wss://1.2.3.4:5`; expected `ws://IP:PORT` or `stdio`"
        );
    }
}
