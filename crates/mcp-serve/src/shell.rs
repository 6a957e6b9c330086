//! One `shell` tool call: the command runs under `bash -lc` (or `-c`) through the exec guard,
//! optionally inside the OS sandbox; every exec of its tree is judged against the rules
//! ([`crate::decide`]); `prompt` asks the [`Approver`]; the timeout does not run while any
//! approval is open; at the deadline the whole tree is killed and the result says
//! `timed_out`.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use exec_server_core::spawn::{self, ChildIo, SpawnSpec};
use exec_server_execguard::{Exec, ExecRequest, Triage};
use exec_server_execpolicy::{Decision, Rules};
use exec_server_protocol::fs::SandboxContext;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use nix::sys::signal::Signal;
use tokio::io::AsyncReadExt;
use tokio::task::JoinSet;

use crate::decide::{self, Judgement};
use crate::output::Output;

/// Time between `SIGTERM` and `SIGKILL` when the deadline kills the tree.
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// How long the output pipes may stay open after the tree is gone.
const DRAIN: Duration = Duration::from_secs(5);

/// The user's answer to an approval request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approval {
    /// The exec runs.
    Approved,
    /// The exec fails; the text says why (declined, cancelled, cannot ask).
    Denied(String),
}

/// Asks the user whether an exec may run (an MCP elicitation in the server).
pub trait Approver: Send + Sync + 'static {
    /// `message` names the program, its arguments, the working directory and the rule.
    fn approve(&self, message: String) -> BoxFuture<'static, Approval>;
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ShellRequest {
    /// The script.
    pub command: String,
    /// The working directory (absolute).
    pub workdir: PathBuf,
    /// The time the command may run, not counting time spent waiting for approvals.
    pub timeout: Duration,
    /// `bash -lc` instead of `bash -c`.
    pub login: bool,
}

/// How it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct ShellOutcome {
    /// Exit status, or 128 + signal.
    pub exit_code: i32,
    /// Stdout and stderr, interleaved, bounded ([`crate::output`]).
    pub output: String,
    /// Wall time of the call, approvals included.
    pub duration: Duration,
    /// The deadline killed the tree.
    pub timed_out: bool,
}

/// Why a call could not run.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    /// `workdir` is not an absolute path of a directory.
    #[error("workdir must be an absolute path of an existing directory: {0}")]
    Workdir(String),
    /// The sandbox policy cannot be applied to this call.
    #[error("sandbox: {0}")]
    Sandbox(String),
    /// Starting the process failed.
    #[error("cannot start the shell: {0}")]
    Spawn(String),
}

/// The shell runner: shared by every call of a server.
#[derive(Debug, Clone)]
pub struct Shell {
    /// The rules every exec is checked against.
    pub rules: Arc<Rules>,
    /// The sandbox every call runs in, if any.
    pub sandbox: Option<SandboxContext>,
    /// The shell (`bash`).
    pub shell: PathBuf,
    /// The exec-server binary, which serves as the guard helper.
    pub exe: PathBuf,
    /// The environment of the command.
    pub env: HashMap<String, String>,
}

/// Kills the tree when a call is abandoned (its future dropped, e.g. a cancelled request).
struct TreeGuard(i32);

impl Drop for TreeGuard {
    fn drop(&mut self) {
        if self.0 > 0 {
            spawn::kill_tree(self.0, Signal::SIGKILL);
        }
    }
}

impl Shell {
    /// Runs one call to its end.
    pub async fn run(
        &self,
        req: ShellRequest,
        approver: Arc<dyn Approver>,
    ) -> Result<ShellOutcome, ShellError> {
        let started = Instant::now();
        if !req.workdir.is_absolute() || !req.workdir.is_dir() {
            return Err(ShellError::Workdir(req.workdir.display().to_string()));
        }
        let (ours, theirs) =
            std::os::unix::net::UnixStream::pair().map_err(|e| ShellError::Spawn(e.to_string()))?;
        // The helper sends the listener at once; a helper that never does (it failed) closes
        // its end, so this only bounds a wedged one.
        let _ = ours.set_read_timeout(Some(Duration::from_secs(30)));
        let flag = if req.login { "-lc" } else { "-c" };
        let argv = vec![
            self.shell.to_string_lossy().into_owned(),
            flag.to_string(),
            req.command.clone(),
        ];
        let mut spec = SpawnSpec {
            argv: exec_server_execguard::wrap_argv(
                &self.exe.to_string_lossy(),
                theirs.as_raw_fd(),
                &argv,
            ),
            arg0: None,
            cwd: req.workdir.clone(),
            env: self.env.clone(),
            tty: false,
            pipe_stdin: false,
            inherit_fd: Some(theirs.as_raw_fd()),
        };
        if let Some(ctx) = &self.sandbox {
            let policy = exec_server_sandbox::Policy::from_context(ctx, Some(&req.workdir))
                .map_err(|e| ShellError::Sandbox(e.to_string()))?;
            if let Some(policy) = policy {
                spawn::sandbox(&mut spec, &policy)
                    .map_err(|e| ShellError::Sandbox(e.to_string()))?;
            }
        }
        let spawned = spawn::spawn(&spec).map_err(|e| ShellError::Spawn(e.to_string()))?;
        drop(theirs);
        let pid = spawned.pid;
        let mut tree = TreeGuard(pid);
        let mut child = spawned.child;

        let output = Arc::new(Mutex::new(Output::default()));
        let mut readers = JoinSet::new();
        if let ChildIo::Pipes { stdout, stderr, .. } = spawned.io {
            readers.spawn(read_into(stdout, output.clone()));
            readers.spawn(read_into(stderr, output.clone()));
        }

        let listener = tokio::task::spawn_blocking(move || {
            exec_server_sandbox::fdpass::recv_fd(ours.as_raw_fd())
        })
        .await
        .ok()
        .and_then(Result::ok)
        .flatten();
        // What a rule decides is answered on the supervisor thread, at once; only prompts come
        // here.
        let triage = {
            let rules = self.rules.clone();
            let output = output.clone();
            move |exec: &Exec, initial: bool| {
                if initial {
                    return Triage::Allow;
                }
                match decide::judge(&rules, exec) {
                    None => Triage::Allow,
                    Some(j) => match j.decision {
                        Decision::Allow => Triage::Allow,
                        Decision::Forbidden => {
                            record_denial(exec, &output, &j.reason);
                            Triage::Deny(libc::EPERM)
                        }
                        Decision::Prompt => Triage::Ask,
                    },
                }
            }
        };
        let mut requests = match listener.map(|l| exec_server_execguard::supervise(l, triage)) {
            Some(Ok(rx)) => Some(rx),
            Some(Err(e)) => return Err(ShellError::Spawn(e.to_string())),
            // The helper failed before it ran anything; its stderr says why.
            None => None,
        };

        let mut deadline = Instant::now() + req.timeout;
        let mut paused_at: Option<Instant> = None;
        // Polled in this task (not spawned): rmcp ties an elicitation to the tool call through
        // a task-local, so over Streamable HTTP it goes out on the call's own stream.
        let mut prompts: FuturesUnordered<BoxFuture<'static, ()>> = FuturesUnordered::new();
        let mut status = None;
        let mut timed_out = false;
        let mut kill_at: Option<Instant> = None;
        loop {
            if status.is_some() && requests.is_none() {
                break;
            }
            // Nothing is signalled once the helper has been reaped: its pid may be reused (it
            // killed what was left of the tree itself on its way out).
            let sleep_until = match (kill_at, paused_at, timed_out) {
                (Some(k), _, _) if status.is_none() => Some(k),
                (None, None, false) if status.is_none() => Some(deadline),
                _ => None,
            };
            tokio::select! {
                r = recv(&mut requests) => match r {
                    Some(request) => self.handle(request, &output, &approver, &mut prompts, &mut paused_at),
                    None => requests = None,
                },
                s = child.wait(), if status.is_none() => {
                    status = Some(s.map(spawn::exit_code).unwrap_or(-1));
                    tree.0 = 0;
                }
                Some(()) = prompts.next(), if !prompts.is_empty() => {
                    if prompts.is_empty() {
                        if let Some(p) = paused_at.take() {
                            deadline += p.elapsed();
                        }
                    }
                }
                _ = sleep_opt(sleep_until) => {
                    if kill_at.is_some() {
                        spawn::kill_tree(pid, Signal::SIGKILL);
                        kill_at = None;
                    } else {
                        timed_out = true;
                        prompts.clear();
                        paused_at = None;
                        spawn::kill_tree(pid, Signal::SIGTERM);
                        kill_at = Some(Instant::now() + KILL_GRACE);
                    }
                }
            }
        }
        drop(prompts);
        // The tree is gone; the pipes close with it (bounded, in case a process outside it
        // holds them).
        let _ = tokio::time::timeout(DRAIN, async {
            while readers.join_next().await.is_some() {}
        })
        .await;
        readers.abort_all();
        let text = output.lock().map(|o| o.text()).unwrap_or_default();
        Ok(ShellOutcome {
            exit_code: status.unwrap_or(-1),
            output: text,
            duration: started.elapsed(),
            timed_out,
        })
    }

    /// Asks the user about one exec a rule prompts for; the answer is polled with the call.
    fn handle(
        &self,
        request: ExecRequest,
        output: &Arc<Mutex<Output>>,
        approver: &Arc<dyn Approver>,
        prompts: &mut FuturesUnordered<BoxFuture<'static, ()>>,
        paused_at: &mut Option<Instant>,
    ) {
        let judgement = decide::judge(&self.rules, &request.exec).unwrap_or(Judgement {
            decision: Decision::Prompt,
            reason: "asked".into(),
        });
        let message = decide::approval_message(&request.exec, &judgement);
        let answer = approver.approve(message);
        let output = output.clone();
        if prompts.is_empty() {
            *paused_at = Some(Instant::now());
        }
        prompts.push(Box::pin(async move {
            match answer.await {
                Approval::Approved => {
                    let _ = request.allow();
                }
                Approval::Denied(why) => {
                    record_denial(&request.exec, &output, &why);
                    let _ = request.deny(libc::EPERM);
                }
            }
        }));
    }
}

/// Adds the `Execution denied: ...` line to the output (and the log).
fn record_denial(exec: &Exec, output: &Mutex<Output>, why: &str) {
    let line = decide::denial_line(exec, why);
    tracing::info!("{}", line.trim_end());
    if let Ok(mut o) = output.lock() {
        o.push(line.as_bytes());
    }
}

async fn recv(
    requests: &mut Option<tokio::sync::mpsc::Receiver<ExecRequest>>,
) -> Option<ExecRequest> {
    match requests {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_opt(until: Option<Instant>) {
    match until {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

async fn read_into(mut pipe: impl tokio::io::AsyncRead + Unpin, output: Arc<Mutex<Output>>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let Ok(mut o) = output.lock() {
                    o.push(&buf[..n]);
                }
            }
        }
    }
}

/// `bash` on the server's `PATH`, else `/bin/sh`.
pub fn default_shell() -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    path.split(':')
        .map(|d| Path::new(d).join("bash"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("/bin/sh"))
}
