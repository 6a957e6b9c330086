//! The remote-mode setup of one round: our rendezvous (`exec-server rendezvous`) and the
//! executor under test registered with it, plus the harness identity the measurements use.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use exec_server_relay::noise::StaticIdentity;
use tokio::process::Child;

use super::harness::Harness;
use crate::server;

/// Environment id, executor token and harness token of the bench's rendezvous config. (The
/// upstream 0.169.0 executor fails registration with a one-character bearer: "invalid
/// environment registry executor registration response".)
const ENVIRONMENT_ID: &str = "bench";
const EXECUTOR_TOKEN: &str = "bench-executor";
const HARNESS_TOKEN: &str = "bench-harness";

/// How long the rendezvous may take to answer `/readyz`, and the executor to attach.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How the relay measurements start their processes.
#[derive(Clone, Debug)]
pub(crate) struct RelayCommands {
    /// The rendezvous command; the bench appends `--listen http://127.0.0.1:PORT --config FILE`.
    pub(crate) rendezvous: String,
    /// The executor under test, with `{remote}` (the registry URL) and `{env}` (the
    /// environment id); its registration bearer is written to its stdin.
    pub(crate) executor: String,
}

/// Derives the remote-mode executor command from a `--listen {listen}` launch template:
/// `--listen {listen}` becomes `--remote {remote} --environment-id {env}
/// --registration-bearer-stdin` (flags ours and upstream 0.169.0 share). `None` when the
/// template has no `--listen {listen}`.
pub(crate) fn derive_executor(template: &str) -> Option<String> {
    const REMOTE: &str = "--remote {remote} --environment-id {env} --registration-bearer-stdin";
    ["--listen {listen}", "--listen={listen}"]
        .iter()
        .find(|pattern| template.contains(*pattern))
        .map(|pattern| template.replacen(pattern, REMOTE, 1))
}

/// Derives the rendezvous command from our launch template: its program (the first word
/// after any `VAR=value` words) with the `rendezvous` subcommand.
pub(crate) fn derive_rendezvous(ours: &str) -> String {
    format!("{} rendezvous", server::program(ours))
}

/// A running rendezvous with the executor under test attached.
pub(crate) struct RelayWorld {
    rendezvous: Option<Child>,
    executor: Option<Child>,
    pub(crate) harness: Arc<Harness>,
    pub(crate) executor_log: PathBuf,
    config_file: PathBuf,
}

impl RelayWorld {
    /// Starts the rendezvous, then the executor, and waits until a harness can connect.
    /// `log_stem` names the two log files in `log_dir`.
    pub(crate) async fn start(
        commands: &RelayCommands,
        log_dir: &Path,
        log_stem: &str,
    ) -> Result<Self> {
        let config_file =
            std::env::temp_dir().join(format!("bench-rendezvous-{}.toml", std::process::id()));
        std::fs::write(
            &config_file,
            format!(
                "[environments.{ENVIRONMENT_ID}]\nexecutor_tokens = [\"{EXECUTOR_TOKEN}\"]\n\
                 harness_tokens = [\"{HARNESS_TOKEN}\"]\n"
            ),
        )
        .with_context(|| format!("writing {}", config_file.display()))?;
        let port = server::free_port()?;
        let registry = format!("127.0.0.1:{port}");
        let rendezvous_cmd = format!(
            "{} --listen http://{registry} --config {}",
            commands.rendezvous,
            config_file.display()
        );
        let rendezvous_log = log_dir.join(format!("{log_stem}-rendezvous.log"));
        let rendezvous = server::spawn_logged(&rendezvous_cmd, &rendezvous_log, None).await?;
        let executor_log = log_dir.join(format!("{log_stem}-executor.log"));
        let harness = Arc::new(Harness {
            registry,
            environment_id: ENVIRONMENT_ID.to_string(),
            token: HARNESS_TOKEN.to_string(),
            identity: StaticIdentity::generate()
                .map_err(|e| anyhow::anyhow!("harness identity: {e}"))?,
        });
        let mut world = Self {
            rendezvous: Some(rendezvous),
            executor: None,
            harness,
            executor_log,
            config_file,
        };
        if let Err(e) = world.start_executor(commands, port).await {
            world.stop().await;
            return Err(e);
        }
        Ok(world)
    }

    async fn start_executor(&mut self, commands: &RelayCommands, port: u16) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while !server::readyz(port).await.unwrap_or(false) {
            if let Some(status) = self.exited() {
                bail!("rendezvous exited during startup: {status}");
            }
            if Instant::now() > deadline {
                bail!("the rendezvous did not answer /readyz within {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let command = commands
            .executor
            .replace("{remote}", &format!("http://127.0.0.1:{port}"))
            .replace("{env}", ENVIRONMENT_ID);
        let executor = server::spawn_logged(
            &command,
            &self.executor_log,
            Some(&format!("{EXECUTOR_TOKEN}\n")),
        )
        .await?;
        self.executor = Some(executor);
        // Ready when a harness `connect` gets a bundle instead of 503 (the executor registered
        // and attached its socket). The probe's bundle is left unused; it expires.
        loop {
            if let Some(status) = self.exited() {
                bail!(
                    "executor exited during startup: {status} (log: {})",
                    self.executor_log.display()
                );
            }
            let harness = self.harness.clone();
            let probe = tokio::task::spawn_blocking(move || harness.try_connect()).await?;
            match probe {
                Ok(Some(_)) => return Ok(()),
                Ok(None) => {}
                // 401/404 until the executor has registered.
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => {}
            }
            if Instant::now() > deadline {
                bail!(
                    "the executor did not attach to the rendezvous within {READY_TIMEOUT:?} (log: {})",
                    self.executor_log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The executor's pid (the launched `sh` execs it).
    pub(crate) fn executor_pid(&self) -> Option<u32> {
        self.executor.as_ref().and_then(Child::id)
    }

    /// The rendezvous's pid.
    pub(crate) fn rendezvous_pid(&self) -> Option<u32> {
        self.rendezvous.as_ref().and_then(Child::id)
    }

    /// `Some(what)` when the rendezvous or the executor has exited.
    pub(crate) fn exited(&mut self) -> Option<String> {
        for (name, child) in [
            ("rendezvous", &mut self.rendezvous),
            ("executor", &mut self.executor),
        ] {
            if let Some(child) = child.as_mut() {
                match child.try_wait() {
                    Ok(Some(status)) => return Some(format!("{name} exited: {status}")),
                    Ok(None) => {}
                    Err(e) => return Some(format!("{name}: unknown ({e})")),
                }
            }
        }
        None
    }

    /// Stops the executor, then the rendezvous.
    pub(crate) async fn stop(&mut self) {
        if let Some(child) = self.executor.take() {
            server::stop_group(child).await;
        }
        if let Some(child) = self.rendezvous.take() {
            server::stop_group(child).await;
        }
        let _ = std::fs::remove_file(&self.config_file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_commands_are_derived_from_listen_templates() {
        assert_eq!(
            derive_executor("CODEX_HOME=$(mktemp -d) /u/codex exec-server --listen {listen}")
                .unwrap(),
            "CODEX_HOME=$(mktemp -d) /u/codex exec-server --remote {remote} \
             --environment-id {env} --registration-bearer-stdin"
        );
        assert_eq!(
            derive_executor("srv --listen={listen} --x 1").unwrap(),
            "srv --remote {remote} --environment-id {env} --registration-bearer-stdin --x 1"
        );
        assert_eq!(derive_executor("srv --port {port}"), None);
        assert_eq!(
            derive_rendezvous("RUST_LOG=warn target/release/exec-server --listen {listen}"),
            "target/release/exec-server rendezvous"
        );
    }
}
