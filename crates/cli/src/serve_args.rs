//! Flags of the server (the default command), validated into a `ServeConfig` in one place.

use std::net::SocketAddr;
use std::time::Duration;

use exec_server_server::ServeConfig;

/// Flags of the server (the default command).
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Where to listen: `ws://IP:PORT` (port 0 picks a free port; the bound URL is printed as
    /// the first line of stdout) or `stdio` (newline-delimited JSON on stdin/stdout).
    #[arg(
        long,
        value_name = "URL",
        default_value = "ws://127.0.0.1:0",
        conflicts_with = "remote"
    )]
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
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    retention_per_process: usize,

    /// Output bytes retained by all the processes of one session: over it, delivered output is
    /// evicted from the largest holders, and children are no longer read while the session's
    /// undelivered output reaches it. At least `--retention-per-process`.
    #[arg(long, value_name = "BYTES", default_value_t = 256 << 20)]
    retention_per_session: usize,

    /// Largest accepted message (WebSocket message or stdio line), in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 96 << 20)]
    max_message_bytes: usize,

    /// WebSocket authentication: `capability-token` (a bearer token whose SHA-256 the server
    /// knows) or `signed-bearer-token` (HS256 JWTs signed with a shared secret).
    #[arg(long, value_name = "MODE", value_enum)]
    ws_auth: Option<WsAuthMode>,

    /// Absolute path of a file holding the capability token (whitespace trimmed).
    #[arg(long, value_name = "PATH")]
    ws_token_file: Option<std::path::PathBuf>,

    /// SHA-256 of the capability token, as 64 hex characters.
    #[arg(long, value_name = "HEX")]
    ws_token_sha256: Option<String>,

    /// Absolute path of a file holding the JWT secret (at least 32 bytes, trimmed).
    #[arg(long, value_name = "PATH")]
    ws_shared_secret_file: Option<std::path::PathBuf>,

    /// Required JWT `iss`.
    #[arg(long, value_name = "ISSUER")]
    ws_issuer: Option<String>,

    /// Required JWT `aud` (a string, or a member of the array).
    #[arg(long, value_name = "AUDIENCE")]
    ws_audience: Option<String>,

    /// Clock skew allowed on JWT `exp` and `nbf`.
    #[arg(long, value_name = "SECONDS")]
    ws_max_clock_skew_seconds: Option<u64>,

    /// Longest JWT lifetime accepted (`exp - iat`, or `exp - now` without `iat`).
    #[arg(long, value_name = "SECONDS")]
    ws_max_token_lifetime_seconds: Option<u64>,

    /// Absolute path of a file holding the admin token (whitespace trimmed): with it,
    /// `process/list {"allSessions": true, "adminToken": TOKEN}` lists every session's
    /// processes. Without an admin token that listing is refused.
    #[arg(long, value_name = "PATH", conflicts_with = "admin_token_sha256")]
    admin_token_file: Option<std::path::PathBuf>,

    /// SHA-256 of the admin token, as 64 hex characters (instead of `--admin-token-file`).
    #[arg(long, value_name = "HEX")]
    admin_token_sha256: Option<String>,

    /// Host name accepted in the upgrade's `Host` header (repeatable). Loopback names are
    /// always accepted when bound to loopback; with none given on another address, any host is.
    #[arg(long = "allowed-host", value_name = "NAME")]
    allowed_hosts: Vec<String>,

    /// Serve a non-loopback address without `--ws-auth` (anyone who can reach the port can run
    /// commands).
    #[arg(long)]
    allow_unauthenticated: bool,

    /// Connections that have not finished their WebSocket upgrade.
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_pending_connections: usize,

    /// Open WebSocket connections.
    #[arg(long, value_name = "N", default_value_t = 256)]
    max_connections: usize,

    /// Running processes per session.
    #[arg(long, value_name = "N", default_value_t = 256)]
    max_processes_per_session: usize,

    /// Running processes per server.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    max_processes: usize,

    /// Seconds a connection may take to send its HTTP request headers.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    header_read_timeout: u64,

    /// Seconds after the WebSocket upgrade (or a relay stream's handshake) by which
    /// `initialize` must have succeeded.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    initialize_timeout: u64,

    /// Largest body a buffered `http/request` reply may carry; larger ones are refused with
    /// an error telling the caller to use `streamResponse`.
    #[arg(long, value_name = "BYTES", default_value_t = 32 << 20)]
    http_max_buffered_bytes: usize,

    /// Largest file `fs/readFile` returns; larger ones are refused with an error telling the
    /// caller to use `fs/open` + `fs/readBlock`. The reply is base64, a third larger: raise
    /// the client's message limit to match.
    #[arg(long, value_name = "BYTES", default_value_t = 48 << 20)]
    max_read_file_bytes: u64,

    /// Deadline, in seconds, of `http/request`s that give no `timeoutMs` (0: none). An
    /// explicit `timeoutMs: null` always means no deadline.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    http_default_timeout: u64,

    /// Seconds between WebSocket pings; a peer silent for two intervals is disconnected (its
    /// session detaches).
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    ping_interval: u64,

    /// Threads that run WebSocket connections, each with its own event loop (default: one
    /// per CPU, at most 16). 0 runs connections on the shared worker threads instead:
    /// slower round trips, for comparison.
    #[arg(long, value_name = "N")]
    connection_threads: Option<usize>,

    /// Remote mode: register with a registry and serve through its rendezvous.
    #[command(flatten)]
    pub(crate) remote: crate::remote_args::RemoteArgs,
}

/// `--ws-auth` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum WsAuthMode {
    /// A bearer token compared by its SHA-256.
    CapabilityToken,
    /// HS256 JWTs.
    SignedBearerToken,
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
        if self.retention_per_session < self.retention_per_process {
            anyhow::bail!(
                "--retention-per-session ({}) must be at least --retention-per-process ({})",
                self.retention_per_session,
                self.retention_per_process
            );
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
        config.limits.session_retention_bytes = self.retention_per_session;
        config.limits.max_live_processes_per_session = self.max_processes_per_session;
        config.limits.max_live_processes = self.max_processes;
        config.max_pending_connections = self.max_pending_connections.max(1);
        config.max_connections = self.max_connections.max(1);
        config.header_read_timeout = Duration::from_secs(self.header_read_timeout.max(1));
        config.initialize_deadline = Duration::from_secs(self.initialize_timeout.max(1));
        config.ping_interval = Duration::from_secs(self.ping_interval.max(1));
        config.http_max_buffered_body = self.http_max_buffered_bytes;
        config.read_file_limit = self.max_read_file_bytes;
        if let Some(n) = self.connection_threads {
            config.connection_threads = n;
        }
        config.admin_token_sha256 = match (&self.admin_token_file, &self.admin_token_sha256) {
            (Some(path), _) => {
                let token = read_secret_file(path, "--admin-token-file")?;
                if token.is_empty() {
                    anyhow::bail!("`--admin-token-file` {} is empty", path.display());
                }
                Some(exec_server_server::auth::token_sha256(&token))
            }
            (None, Some(hex)) => Some(parse_sha256(hex, "--admin-token-sha256")?),
            (None, None) => None,
        };
        config.http_default_timeout =
            (self.http_default_timeout > 0).then(|| Duration::from_secs(self.http_default_timeout));
        config.auth = self.auth()?;
        if let Listen::Ws(addr) = listen {
            if !addr.ip().is_loopback() && !config.auth.is_enabled() && !self.allow_unauthenticated
            {
                anyhow::bail!(
                    "refusing to serve {addr} without authentication: anyone who can reach it could run commands; configure --ws-auth, or pass --allow-unauthenticated"
                );
            }
            config.hosts = exec_server_server::auth::HostPolicy {
                loopback: addr.ip().is_loopback(),
                allowed: self.allowed_hosts.clone(),
            };
        }
        Ok((listen, config))
    }

    /// Validates the auth flags with upstream's messages.
    fn auth(&self) -> anyhow::Result<exec_server_server::auth::WsAuth> {
        use exec_server_server::auth::{token_sha256, JwtConfig, WsAuth};
        let token_flags = self.ws_token_file.is_some() || self.ws_token_sha256.is_some();
        let jwt_flags = self.ws_shared_secret_file.is_some()
            || self.ws_issuer.is_some()
            || self.ws_audience.is_some()
            || self.ws_max_clock_skew_seconds.is_some()
            || self.ws_max_token_lifetime_seconds.is_some();
        match self.ws_auth {
            None if token_flags || jwt_flags => anyhow::bail!(
                "websocket auth flags require `--ws-auth capability-token` or `--ws-auth signed-bearer-token`"
            ),
            None => Ok(WsAuth::None),
            Some(WsAuthMode::CapabilityToken) => {
                if jwt_flags {
                    anyhow::bail!("signed-bearer-token flags cannot be used with `--ws-auth capability-token`");
                }
                let sha256 = match (&self.ws_token_file, &self.ws_token_sha256) {
                    (Some(_), Some(_)) => anyhow::bail!(
                        "`--ws-token-file` and `--ws-token-sha256` are mutually exclusive"
                    ),
                    (None, None) => anyhow::bail!(
                        "`--ws-token-file` or `--ws-token-sha256` is required when `--ws-auth capability-token` is set"
                    ),
                    (Some(path), None) => {
                        let token = read_secret_file(path, "--ws-token-file")?;
                        if token.is_empty() {
                            anyhow::bail!("`--ws-token-file` {} is empty", path.display());
                        }
                        token_sha256(&token)
                    }
                    (None, Some(hex)) => parse_sha256(hex, "--ws-token-sha256")?,
                };
                Ok(WsAuth::CapabilityToken { sha256 })
            }
            Some(WsAuthMode::SignedBearerToken) => {
                if token_flags {
                    anyhow::bail!("capability-token flags cannot be used with `--ws-auth signed-bearer-token`");
                }
                let path = self.ws_shared_secret_file.as_ref().ok_or_else(|| {
                    anyhow::anyhow!(
                        "`--ws-shared-secret-file` is required when `--ws-auth signed-bearer-token` is set"
                    )
                })?;
                let secret = read_secret_file(path, "--ws-shared-secret-file")?;
                if secret.len() < 32 {
                    anyhow::bail!("`--ws-shared-secret-file` must hold at least 32 bytes");
                }
                Ok(WsAuth::SignedBearer(JwtConfig {
                    secret: secret.into_bytes(),
                    issuer: self.ws_issuer.clone(),
                    audience: self.ws_audience.clone(),
                    max_clock_skew: Duration::from_secs(self.ws_max_clock_skew_seconds.unwrap_or(30)),
                    max_lifetime: Duration::from_secs(
                        self.ws_max_token_lifetime_seconds.unwrap_or(24 * 3600),
                    ),
                }))
            }
        }
    }
}

fn read_secret_file(path: &std::path::Path, flag: &str) -> anyhow::Result<String> {
    if !path.is_absolute() {
        anyhow::bail!("`{flag}` must be an absolute path");
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read `{flag}` {}: {e}", path.display()))?;
    Ok(text.trim().to_string())
}

fn parse_sha256(hex: &str, flag: &str) -> anyhow::Result<[u8; 32]> {
    let hex = hex.trim();
    let bad = || anyhow::anyhow!("`{flag}` must be 64 hexadecimal characters");
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
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
