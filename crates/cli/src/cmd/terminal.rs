//! What `run` and `shell` share: the raw-mode guard that restores the terminal on every exit
//! path, and [`drive`], which pumps a remote process's output to stdout/stderr, stdin to the
//! process, Ctrl-C and window sizes to the executor, until the process closes.

use std::io::{IsTerminal as _, Write as _};

use exec_server_client::{ClientError, ProcessControl, ProcessEvent, ProcessEvents};
use exec_server_protocol::process::{ProcessSignal, Stream};
use tokio::io::AsyncReadExt as _;

/// Puts the local terminal in raw mode and restores it when dropped (including on errors and
/// panics that unwind); [`drive`] returns before the process exits, so the guard always runs.
pub(crate) struct RawMode {
    active: bool,
}

impl RawMode {
    /// Raw mode when stdin is a terminal; a no-op otherwise.
    pub(crate) fn enable() -> anyhow::Result<RawMode> {
        if !std::io::stdin().is_terminal() {
            return Ok(RawMode { active: false });
        }
        crossterm::terminal::enable_raw_mode()
            .map_err(|e| anyhow::anyhow!("cannot put the terminal in raw mode: {e}"))?;
        Ok(RawMode { active: true })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if self.active {
            let _ = crossterm::terminal::disable_raw_mode();
        }
    }
}

/// The local window size, when stdout or stdin is a terminal.
pub(crate) fn window_size() -> Option<(u16, u16)> {
    crossterm::terminal::size()
        .ok()
        .filter(|(c, r)| *c > 0 && *r > 0)
        .map(|(cols, rows)| (rows, cols))
}

/// How [`drive`] treats the local terminal.
pub(crate) struct DriveOptions {
    /// Forward local stdin to the process.
    pub(crate) forward_stdin: bool,
    /// Turn Ctrl-C (SIGINT) into `process/signal interrupt` (off in raw mode, where Ctrl-C is a
    /// byte the remote terminal handles).
    pub(crate) forward_interrupt: bool,
    /// Follow local window size changes with `process/resize`.
    pub(crate) forward_resize: bool,
}

/// Pumps events until the process closes; returns its exit code.
pub(crate) async fn drive(
    control: ProcessControl,
    mut events: ProcessEvents,
    opts: DriveOptions,
) -> anyhow::Result<i32> {
    let mut tasks = tokio::task::JoinSet::new();
    if opts.forward_stdin {
        let c = control.clone();
        tasks.spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; 64 << 10];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        // Our end of input is the command's: close its stdin after the
                        // writes already sent.
                        let _ = c.close_stdin().await;
                        return;
                    }
                    Ok(n) => {
                        if c.write(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    if opts.forward_interrupt {
        // Registered here, before any output is shown: a Ctrl-C right after the first line
        // must reach the command, not kill this client (a handler installed by the task's
        // first poll could come too late on a busy machine).
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut interrupt) = signal(SignalKind::interrupt()) {
            let c = control.clone();
            tasks.spawn(async move {
                while interrupt.recv().await.is_some() {
                    if c.signal(ProcessSignal::Interrupt).await.is_err() {
                        return;
                    }
                }
            });
        }
    }
    if opts.forward_resize {
        let c = control.clone();
        tasks.spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut winch) = signal(SignalKind::window_change()) else {
                return;
            };
            while winch.recv().await.is_some() {
                if let Some((rows, cols)) = window_size() {
                    let _ = c.resize(rows, cols).await;
                }
            }
        });
    }
    // SIGTERM and SIGHUP end this client cleanly (the raw-mode guard restores the terminal)
    // instead of killing it in raw mode; the remote process is left to the session's expiry,
    // as when the connection drops.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut code = None;
    let result = loop {
        let next = tokio::select! {
            ev = events.next_event() => ev,
            Some(()) = recv(&mut term) => break Err(anyhow::anyhow!("terminated (SIGTERM)")),
            Some(()) = recv(&mut hup) => break Err(anyhow::anyhow!("hung up (SIGHUP)")),
        };
        match next {
            None => break Ok(()),
            Some(Ok(ProcessEvent::Output { stream, data, .. })) => {
                let written = match stream {
                    Stream::Stderr => {
                        let mut e = std::io::stderr().lock();
                        e.write_all(&data).and_then(|()| e.flush())
                    }
                    Stream::Stdout | Stream::Pty => {
                        let mut o = std::io::stdout().lock();
                        o.write_all(&data).and_then(|()| o.flush())
                    }
                };
                if let Err(e) = written {
                    if e.kind() == std::io::ErrorKind::BrokenPipe {
                        // Our reader went away: stop the remote process like a local pipe would.
                        let _ = control.signal(ProcessSignal::Terminate).await;
                    }
                    break Err(anyhow::Error::from(e).context("cannot write the output"));
                }
            }
            Some(Ok(ProcessEvent::Exited { exit_code, .. })) => code = Some(exit_code),
            Some(Ok(ProcessEvent::Closed { .. })) => break Ok(()),
            Some(Err(e @ ClientError::OutputLost { .. })) => {
                eprintln!("exec-server: warning: {e}");
            }
            Some(Err(e)) => break Err(anyhow::Error::from(e)),
        }
    };
    tasks.abort_all();
    result?;
    code.ok_or_else(|| anyhow::anyhow!("the process closed without an exit code"))
}

/// The next delivery of an optional signal stream (never, when there is none).
async fn recv(s: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}
