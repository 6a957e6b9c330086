//! Spawning a child in its own session, with pipes or a pseudo-terminal.
//!
//! This is the only module that creates processes (`clippy.toml` bans `Command::new`
//! elsewhere), so every spawn sets the working directory, the exact environment and a new
//! session (pgid = sid = child pid). Its two `pre_exec` hooks, one that calls `setsid` and
//! takes the controlling terminal and one that lets the child inherit a descriptor (the exec
//! guard's socket), are its only `unsafe` blocks.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};

use nix::pty::{openpty, Winsize};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout};

use crate::pty::PtyMaster;

/// The default PTY size, as upstream: 24 rows × 80 columns.
pub const DEFAULT_PTY_SIZE: (u16, u16) = (24, 80);

/// What to run.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    /// Program and arguments (non-empty).
    pub argv: Vec<String>,
    /// argv\[0\] as the child sees it.
    pub arg0: Option<String>,
    /// Working directory.
    pub cwd: PathBuf,
    /// The complete environment.
    pub env: HashMap<String, String>,
    /// Run under a pseudo-terminal.
    pub tty: bool,
    /// Keep stdin open as a pipe (non-tty).
    pub pipe_stdin: bool,
    /// A descriptor the child inherits under the same number (its close-on-exec flag is
    /// cleared in the child only), e.g. the exec guard's socket. The caller keeps it open until
    /// `spawn` returns.
    pub inherit_fd: Option<std::os::fd::RawFd>,
}

/// The child's I/O as the parent holds it.
#[derive(Debug)]
pub enum ChildIo {
    /// Separate pipes.
    Pipes {
        /// Stdin, when `pipe_stdin`.
        stdin: Option<ChildStdin>,
        /// Stdout.
        stdout: ChildStdout,
        /// Stderr.
        stderr: ChildStderr,
    },
    /// One pseudo-terminal for all three.
    Pty(PtyMaster),
}

/// A started child.
#[derive(Debug)]
pub struct Spawned {
    /// The child (owns reaping).
    pub child: Child,
    /// Its pid, which is also its process group and session id.
    pub pid: i32,
    /// Its I/O.
    pub io: ChildIo,
    /// It runs inside the OS sandbox (set by the caller that wrapped it with [`sandbox`]).
    pub sandboxed: bool,
}

/// Why a spawn failed, with the upstream error kind (spec §17).
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct SpawnError {
    /// The OS error.
    #[source]
    pub source: io::Error,
}

impl SpawnError {
    /// `spawnNotFound`, `spawnPermissionDenied` or `spawnFailed`.
    pub fn kind(&self) -> &'static str {
        match self.source.kind() {
            io::ErrorKind::NotFound => "spawnNotFound",
            io::ErrorKind::PermissionDenied => "spawnPermissionDenied",
            _ => "spawnFailed",
        }
    }
}

impl From<io::Error> for SpawnError {
    fn from(source: io::Error) -> Self {
        SpawnError { source }
    }
}

/// Rewrites `spec` so the program runs confined by `policy`: the program is resolved first (so
/// a missing or non-executable program still fails the start), then run through the sandbox
/// helper (our own binary), which confines itself before it executes the program. An `arg0`
/// override does not survive the helper's exec.
pub fn sandbox(
    spec: &mut SpawnSpec,
    policy: &exec_server_sandbox::Policy,
) -> Result<(), SpawnError> {
    let program = resolve_program(spec)?;
    let mut argv = vec![program];
    argv.extend(spec.argv.iter().skip(1).cloned());
    spec.argv = exec_server_sandbox::wrap_argv("/proc/self/exe", policy, &argv);
    spec.arg0 = None;
    Ok(())
}

/// Finds the executable `spec.argv[0]` names: a path relative to the cwd, or a bare name on
/// the child's `PATH` (the server's when the child has none).
fn resolve_program(spec: &SpawnSpec) -> Result<String, SpawnError> {
    use std::os::unix::fs::PermissionsExt;
    let name = spec.argv.first().map(String::as_str).unwrap_or_default();
    let candidates: Vec<PathBuf> = if name.contains('/') {
        vec![spec.cwd.join(name)]
    } else {
        let path = spec
            .env
            .get("PATH")
            .cloned()
            .or_else(|| std::env::var("PATH").ok())
            .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| PathBuf::from(d).join(name))
            .collect()
    };
    if !spec.cwd.is_dir() {
        return Err(io::Error::from(io::ErrorKind::NotFound).into());
    }
    let mut denied = false;
    for c in candidates {
        match std::fs::metadata(&c) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {
                return Ok(c.to_string_lossy().into_owned())
            }
            Ok(_) => denied = true,
            Err(_) => {}
        }
    }
    let kind = if denied {
        io::ErrorKind::PermissionDenied
    } else {
        io::ErrorKind::NotFound
    };
    Err(io::Error::from(kind).into())
}

/// Starts the child. Must run inside a tokio runtime.
pub fn spawn(spec: &SpawnSpec) -> Result<Spawned, SpawnError> {
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "argv must not be empty"))?;
    // A pipe process is started with posix_spawn (vfork-speed) when std can use it: no
    // pre_exec hook, and an absolute program (std falls back to fork+exec to search a PATH
    // the child's environment changed). So bare names are resolved here, as execvp would.
    let resolved = if !spec.tty && !program.contains('/') {
        Some(resolve_program(spec)?)
    } else {
        None
    };
    #[allow(clippy::disallowed_methods)] // the one place processes are created
    let mut cmd = std::process::Command::new(resolved.as_deref().unwrap_or(program));
    cmd.args(args)
        .current_dir(&spec.cwd)
        .env_clear()
        .envs(&spec.env);
    match (&spec.arg0, &resolved) {
        (Some(arg0), _) => {
            cmd.arg0(OsString::from(arg0));
        }
        (None, Some(_)) => {
            cmd.arg0(OsString::from(program));
        }
        (None, None) => {}
    }
    if let Some(fd) = spec.inherit_fd {
        inherit(&mut cmd, fd);
    }
    if spec.tty {
        spawn_pty(cmd)
    } else {
        spawn_pipes(cmd, spec.pipe_stdin)
    }
}

fn spawn_pipes(mut cmd: std::process::Command, pipe_stdin: bool) -> Result<Spawned, SpawnError> {
    cmd.stdin(if pipe_stdin {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    // Its own process group (pgid = pid), so signals and termination reach the whole group;
    // no `setsid` hook, which would force the slow fork+exec path.
    cmd.process_group(0);
    let mut child = tokio::process::Command::from(cmd)
        .kill_on_drop(false)
        .spawn()?;
    let pid = child.id().map(|p| p as i32).unwrap_or(-1);
    let missing = || io::Error::other("child pipe missing");
    let stdout = child.stdout.take().ok_or_else(missing)?;
    let stderr = child.stderr.take().ok_or_else(missing)?;
    grow_pipe(stdout.as_raw_fd());
    grow_pipe(stderr.as_raw_fd());
    let stdin = child.stdin.take();
    Ok(Spawned {
        child,
        pid,
        io: ChildIo::Pipes {
            stdin,
            stdout,
            stderr,
        },
        sandboxed: false,
    })
}

fn spawn_pty(mut cmd: std::process::Command) -> Result<Spawned, SpawnError> {
    let (rows, cols) = DEFAULT_PTY_SIZE;
    let size = Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = openpty(Some(&size), None).map_err(io::Error::from)?;
    let slave: OwnedFd = pty.slave;
    cmd.stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave));
    new_session(&mut cmd, true);
    let child = tokio::process::Command::from(cmd)
        .kill_on_drop(false)
        .spawn()?;
    // `cmd` (and with it the parent's copies of the slave) is dropped here, so the master sees
    // EOF once every process holding the terminal has closed it.
    let pid = child.id().map(|p| p as i32).unwrap_or(-1);
    let master = PtyMaster::new(pty.master)?;
    Ok(Spawned {
        child,
        pid,
        io: ChildIo::Pty(master),
        sandboxed: false,
    })
}

/// Makes the child a session leader (pgid = sid = pid); with `tty`, the terminal on its stdin
/// becomes its controlling terminal.
#[allow(unsafe_code)]
fn new_session(cmd: &mut std::process::Command, tty: bool) {
    // SAFETY: the closure runs in the forked child before exec and calls only the
    // async-signal-safe functions setsid(2) and ioctl(2); it allocates nothing and touches no
    // locks.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            if tty && libc::ioctl(0, libc::TIOCSCTTY as _, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Clears the close-on-exec flag of `fd` in the child.
#[allow(unsafe_code)]
fn inherit(cmd: &mut std::process::Command, fd: std::os::fd::RawFd) {
    // SAFETY: the closure runs in the forked child before exec and calls only fcntl(2).
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Asks for a 1 MiB pipe buffer so a fast writer needs fewer wake-ups; best effort.
fn grow_pipe(fd: i32) {
    let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
}

/// The exit code convention: the status, or 128 + signal for a signal death, or -1.
pub fn exit_code(status: ExitStatus) -> i32 {
    if let Some(code) = status.code() {
        code
    } else if let Some(sig) = status.signal() {
        128 + sig
    } else {
        -1
    }
}

/// Sends `signal` to the process group of `pid` and, so that nothing escapes, to every
/// descendant found through `/proc` (including those that left the group with `setsid`).
pub fn kill_tree(pid: i32, signal: nix::sys::signal::Signal) {
    use nix::sys::signal::{kill, killpg};
    use nix::unistd::Pid;
    if pid <= 0 {
        return;
    }
    let descendants = descendants_of(pid);
    let _ = killpg(Pid::from_raw(pid), signal);
    let _ = kill(Pid::from_raw(pid), signal);
    for d in descendants {
        let _ = kill(Pid::from_raw(d), signal);
    }
}

/// Every process below `root` in the parent tree, from `/proc/*/stat`.
pub fn descendants_of(root: i32) -> Vec<i32> {
    let mut parent_of: Vec<(i32, i32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                // The command name may contain spaces and parentheses: split after the last ')'.
                if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                    let ppid = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok());
                    if let Some(ppid) = ppid {
                        parent_of.push((pid, ppid));
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(child, parent) in &parent_of {
            if parent == p && !out.contains(&child) {
                out.push(child);
                frontier.push(child);
            }
        }
    }
    out
}
