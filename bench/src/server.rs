//! Launching and stopping the servers under test, readiness probing, and `/proc` look-ups
//! (server pid by listening port, VmRSS, machine description).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// How long a freshly launched server may take to answer `GET /readyz` with 200.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A server the bench talks to: either launched by the bench or already running (`--url`).
pub(crate) struct Server {
    pub(crate) url: String,
    port: u16,
    child: Option<Child>,
    pub(crate) log: Option<PathBuf>,
}

impl Server {
    /// A server that is already running at `url` (`ws://HOST:PORT`).
    pub(crate) fn external(url: &str) -> Result<Self> {
        let port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .with_context(|| format!("cannot find a port in {url}"))?;
        Ok(Self {
            url: url.to_string(),
            port,
            child: None,
            log: None,
        })
    }

    /// Launches `template` (with `{listen}` / `{port}` substituted) through `sh -c "exec …"` in
    /// its own process group, stdout+stderr to `log`, and waits for `GET /readyz` → 200.
    pub(crate) async fn launch(template: &str, log: &Path) -> Result<Self> {
        let port = free_port()?;
        let listen = format!("ws://127.0.0.1:{port}");
        let command = template
            .replace("{listen}", &listen)
            .replace("{port}", &port.to_string());
        let child = spawn_logged(&command, log, None).await?;
        let mut server = Self {
            url: listen,
            port,
            child: Some(child),
            log: Some(log.to_path_buf()),
        };
        if let Err(e) = server.wait_ready().await {
            server.stop().await;
            return Err(e.context(format!(
                "server did not become ready (log: {})",
                log.display()
            )));
        }
        Ok(server)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.exited() {
                bail!("server exited during startup: {status}");
            }
            if readyz(self.port).await.unwrap_or(false) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("GET /readyz did not return 200 within {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `Some(status)` if the launched server has exited.
    pub(crate) fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("unknown ({e})")),
        }
    }

    /// Pid of the server process: the owner of the listening socket, else the launched pid.
    pub(crate) fn pid(&self) -> Option<u32> {
        listener_pid(self.port).or_else(|| self.child.as_ref().and_then(Child::id))
    }

    /// SIGTERM to the process group, SIGKILL after 3 s.
    pub(crate) async fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_group(child).await;
        }
    }
}

/// Runs `sh -c "exec COMMAND"` in its own process group, stdout and stderr to `log`. With
/// `stdin`, that text is written to the child's stdin, which is then closed (our executor
/// reads its bearer to the end of stdin); else stdin is `/dev/null`.
pub(crate) async fn spawn_logged(command: &str, log: &Path, stdin: Option<&str>) -> Result<Child> {
    let line = exec_line(command);
    let log_file = std::fs::File::create(log)
        .with_context(|| format!("creating log file {}", log.display()))?;
    // The bench is a client, not the server: launching the servers under test is its job.
    #[allow(clippy::disallowed_methods)]
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(&line)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawning sh -c {line:?}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .await
            .context("writing to the child's stdin")?;
        pipe.flush().await?;
    }
    Ok(child)
}

/// SIGTERM to the process group of `child` (see [`spawn_logged`]), SIGKILL after 3 s.
pub(crate) async fn stop_group(mut child: Child) {
    if let Some(pid) = child.id() {
        signal_group(pid, "TERM").await;
        if tokio::time::timeout(Duration::from_secs(3), child.wait())
            .await
            .is_err()
        {
            signal_group(pid, "KILL").await;
        }
    }
    let _ = child.kill().await;
}

/// Prefixes `exec` so that `sh` is replaced by the server (leading `VAR=value` words stay in
/// front, since `exec VAR=value cmd` would try to run `VAR=value`).
pub(crate) fn exec_line(command: &str) -> String {
    let trimmed = command.trim_start();
    if trimmed.starts_with("exec ") {
        return trimmed.to_string();
    }
    let (prefix, rest) = split_assignments(trimmed);
    format!("{prefix}exec {rest}")
}

/// The program of a launch command: its first word after any leading `VAR=value` words.
pub(crate) fn program(command: &str) -> &str {
    let (_, rest) = split_assignments(command.trim_start());
    &rest[..shell_word_end(rest)]
}

/// Leading `VAR=value` words (each followed by one space) and the rest of `command`.
fn split_assignments(command: &str) -> (String, &str) {
    let mut rest = command;
    let mut prefix = String::new();
    loop {
        let word_end = shell_word_end(rest);
        let word = &rest[..word_end];
        let is_assignment = word.split_once('=').is_some_and(|(name, _)| {
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit())
        });
        if !is_assignment || word_end == rest.len() {
            break;
        }
        prefix.push_str(word);
        prefix.push(' ');
        rest = rest[word_end..].trim_start();
    }
    (prefix, rest)
}

/// Byte length of the first shell word of `text` (quotes, `\` escapes and `$( … )` /
/// `( … )` nesting keep whitespace inside the word).
fn shell_word_end(text: &str) -> usize {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match (quote, c) {
            (Some('\''), '\'') => quote = None,
            (Some('\''), _) => {}
            (_, '\\') => escaped = true,
            (Some('"'), '"') => quote = None,
            (None, '"' | '\'') => quote = Some(c),
            (_, '(') => depth += 1,
            (_, ')') => depth = depth.saturating_sub(1),
            (None, c) if c.is_whitespace() && depth == 0 => return i,
            _ => {}
        }
    }
    text.len()
}

async fn signal_group(pid: u32, signal: &str) {
    // Signals the launched server's process group (see `Server::launch`).
    #[allow(clippy::disallowed_methods)]
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{pid}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
}

pub(crate) fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// `GET /readyz` over a raw HTTP/1.1 connection; true on status 200.
pub(crate) async fn readyz(port: u16) -> Result<bool> {
    let probe = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let request =
            format!("GET /readyz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut head = [0u8; 64];
        let mut filled = 0;
        while filled < 12 {
            let n = stream.read(&mut head[filled..]).await?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        let status_line = String::from_utf8_lossy(&head[..filled]).into_owned();
        anyhow::Ok(
            status_line.starts_with("HTTP/1.1 200") || status_line.starts_with("HTTP/1.0 200"),
        )
    };
    tokio::time::timeout(Duration::from_secs(2), probe)
        .await
        .unwrap_or(Ok(false))
}

/// Pid of the process holding a listening TCP socket on `port` (IPv4 or IPv6).
fn listener_pid(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 10 || fields[3] != "0A" {
                continue;
            }
            let local_port = fields[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) {
                inodes.push(format!("socket:[{}]", fields[9]));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                if inodes.iter().any(|i| target.as_os_str() == i.as_str()) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

/// VmRSS of `pid` in KiB.
pub(crate) fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// Busy-looping `SCHED_IDLE` processes, one per CPU, that keep the CPUs out of their idle
/// states (on a VM, waking a halted vCPU adds tens of µs to every round trip) without taking
/// time from anything else: the scheduler runs them only when nothing else wants the CPU.
pub(crate) struct Spinners {
    children: Vec<Child>,
}

impl Spinners {
    pub(crate) async fn start() -> Result<Self> {
        let (nproc, _) = machine();
        let mut children = Vec::new();
        for _ in 0..nproc.max(1) {
            // The bench is a client, not the server: these are its own helper processes.
            #[allow(clippy::disallowed_methods)]
            let child = Command::new("chrt")
                .args(["--idle", "0", "sh", "-c", "while :; do :; done"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .context("starting a SCHED_IDLE spinner (chrt --idle 0)")?;
            children.push(child);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut spinners = Self { children };
        for child in &mut spinners.children {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("SCHED_IDLE spinner exited at once ({status}); is chrt available?");
            }
        }
        Ok(spinners)
    }
}

impl Drop for Spinners {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.start_kill();
        }
    }
}

/// CPU time (user + system) consumed so far by the bench process itself, in seconds.
pub(crate) fn own_cpu_secs() -> f64 {
    cpu_secs("self").unwrap_or(0.0)
}

/// CPU time (user + system, its own threads only) consumed so far by process `pid`, seconds.
pub(crate) fn pid_cpu_secs(pid: u32) -> Option<f64> {
    cpu_secs(&pid.to_string())
}

fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11..13)?
        .iter()
        .filter_map(|v| v.parse::<f64>().ok())
        .sum();
    // USER_HZ is 100 on Linux.
    Some(ticks / 100.0)
}

/// `(nproc, CPU model)` of this machine.
pub(crate) fn machine() -> (usize, String) {
    let nproc = std::thread::available_parallelism().map_or(0, usize::from);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    (nproc, model)
}

#[cfg(test)]
mod tests {
    use super::exec_line;

    #[test]
    fn exec_is_placed_after_assignments() {
        assert_eq!(exec_line("srv --listen x"), "exec srv --listen x");
        assert_eq!(
            exec_line("CODEX_HOME=$(mktemp -d) /p/codex exec-server --listen x"),
            "CODEX_HOME=$(mktemp -d) exec /p/codex exec-server --listen x"
        );
        assert_eq!(exec_line("exec srv"), "exec srv");
        assert_eq!(
            super::program("CODEX_HOME=$(mktemp -d) /p/codex exec-server"),
            "/p/codex"
        );
        assert_eq!(
            super::program("target/release/exec-server"),
            "target/release/exec-server"
        );
        assert_eq!(
            exec_line("A='x y' B=\"$(f \\\" g)\" srv"),
            "A='x y' B=\"$(f \\\" g)\" exec srv"
        );
    }
}
