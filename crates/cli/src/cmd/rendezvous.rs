//! `exec-server rendezvous`: the open registry + rendezvous of remote mode (spec §10), served
//! from one listener until SIGTERM or Ctrl-C. The work is in the `exec-server-rendezvous`
//! crate; this file parses the flags and prints the bound URL.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use exec_server_rendezvous::{Config, Options, Rendezvous};

/// Examples shown under `exec-server rendezvous --help`.
pub(crate) const EXAMPLES: &str = "\
Examples:
  exec-server rendezvous --listen http://127.0.0.1:8700 --config rendezvous.toml
  exec-server rendezvous --listen http://0.0.0.0:8700 --config rendezvous.toml \\
      --public-url https://relay.example.com

rendezvous.toml:
  [environments.e2e]
  executor_tokens = [\"exec-secret\"]     # or \"sha256:<hex>\"
  harness_tokens = [\"harness-secret\"]

Executors register with `--remote http://HOST:PORT --environment-id e2e`; harnesses use
CODEX_EXEC_SERVER_NOISE_REGISTRY_URL=http://HOST:PORT (docs/remote.md).";

/// Flags of `exec-server rendezvous`.
#[derive(Debug, clap::Args)]
pub(crate) struct RendezvousArgs {
    /// Where to listen: `http://IP:PORT` (port 0 picks one; the bound URL is printed on the
    /// first line of stdout). Serves the registry API and the rendezvous WebSocket.
    #[arg(long, value_name = "http://IP:PORT")]
    pub(crate) listen: String,

    /// The TOML file of environments and their executor and harness tokens.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: PathBuf,

    /// The URL clients reach this rendezvous at, when it is behind a proxy; socket URLs handed
    /// out start with it (http→ws, https→wss). Default: the Host each request was sent to.
    #[arg(long, value_name = "URL")]
    pub(crate) public_url: Option<String>,

    /// Threads that serve sockets. 1 (the default) runs everything on one thread: a relayed
    /// frame goes from one socket's reader to the other socket's writer without waking a
    /// second CPU, which takes about a third off a relayed round trip (docs/benchmarks.md);
    /// one thread relays over 1 GiB/s. More threads (a multi-thread runtime) spread many busy
    /// sockets over CPUs.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub(crate) threads: u16,
}

/// Parses `http://IP:PORT`.
pub(crate) fn listen_addr(listen: &str) -> anyhow::Result<SocketAddr> {
    let rest = listen
        .strip_prefix("http://")
        .with_context(|| format!("--listen must look like http://IP:PORT, not `{listen}`"))?;
    rest.trim_end_matches('/')
        .parse()
        .with_context(|| format!("--listen must look like http://IP:PORT, not `{listen}`"))
}

/// Runs the rendezvous until stopped.
pub(crate) async fn rendezvous(args: RendezvousArgs) -> anyhow::Result<()> {
    let addr = listen_addr(&args.listen)?;
    let config = Config::load(&args.config)?;
    let environments = config.environments.len();
    let rendezvous = Rendezvous::new(
        config,
        Options {
            public_url: args.public_url.clone(),
            ..Options::default()
        },
    )?;
    let (listener, bound) = crate::bind(addr).await?;
    announce(&format!("http://{bound}"))?;
    tracing::info!(url = %format!("http://{bound}"), environments, public_url = ?args.public_url, "rendezvous listening");
    rendezvous
        .serve(listener, stopped())
        .await
        .context("rendezvous server failed")
}

/// Prints the bound URL alone on the first line of stdout.
#[allow(clippy::print_stdout)]
fn announce(url: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{url}")?;
    out.flush()?;
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn stopped() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        }
        Err(e) => {
            tracing::warn!(%e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("rendezvous shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_takes_http_ip_port_only() {
        assert_eq!(
            listen_addr("http://127.0.0.1:8700").unwrap(),
            "127.0.0.1:8700".parse().unwrap()
        );
        assert_eq!(listen_addr("http://[::1]:0/").unwrap().port(), 0);
        for bad in [
            "127.0.0.1:1",
            "ws://127.0.0.1:1",
            "http://localhost:1",
            "http://1.2.3.4",
        ] {
            assert!(listen_addr(bad).is_err(), "{bad}");
        }
    }
}
