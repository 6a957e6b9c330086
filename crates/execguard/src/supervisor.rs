//! The supervisor: a thread per guarded tree that receives each stopped exec, decodes it and
//! asks the caller's [`Triage`] function: what it can decide at once (a rule says allow or
//! forbid) is answered on the thread, with no hand-off; the rest is handed to the async side as
//! an [`ExecRequest`], answered whenever the decision is made (after the user answers a
//! prompt). Several requests may be open at once; the thread never waits for an answer.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::notify::{self, Answer, Notification};
use crate::resolve::{self, Exec};

/// How many decoded execs may wait for a decision before the supervisor thread stops taking
/// more (the callers stay stopped in the kernel meanwhile).
pub const QUEUE: usize = 64;

/// What the supervisor thread does with a decoded exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Triage {
    /// Let it run (after the second reading, as [`ExecRequest::allow`]).
    Allow,
    /// Fail it with this errno.
    Deny(i32),
    /// Hand it to the async side: it needs a decision that takes time.
    Ask,
}

/// One stopped exec, waiting for [`ExecRequest::allow`] or [`ExecRequest::deny`]. Dropping
/// it unanswered denies it (`EPERM`).
#[derive(Debug)]
pub struct ExecRequest {
    /// What it would run.
    pub exec: Exec,
    /// The caller's pid.
    pub pid: i32,
    /// The first exec of the tree: the guard helper starting the command it was given.
    pub initial: bool,
    id: u64,
    notification: Notification,
    /// The path and argv as first read, compared with a second reading before continuing.
    raw: (Vec<u8>, Vec<Vec<u8>>),
    listener: Arc<OwnedFd>,
    answered: bool,
}

impl ExecRequest {
    /// Lets the exec run, if what it would run has not changed since it was decoded: the
    /// caller's path and arguments are read again and compared, and the call must still be
    /// pending (so the pid was not reused). A change fails the exec with `EPERM`.
    pub fn allow(mut self) -> io::Result<()> {
        self.answered = true;
        let unchanged = resolve::read_raw(&self.notification).is_ok_and(|again| again == self.raw);
        if !unchanged || !notify::still_pending(&self.listener, self.id) {
            tracing::warn!(pid = self.pid, program = %self.exec.program.display(), "exec changed while it was being decided: refused");
            return self.answer(Answer::Fail(libc::EPERM));
        }
        self.answer(Answer::Continue)
    }

    /// Fails the exec with `errno` (e.g. `libc::EPERM`).
    pub fn deny(mut self, errno: i32) -> io::Result<()> {
        self.answered = true;
        self.answer(Answer::Fail(errno))
    }

    fn answer(&self, answer: Answer) -> io::Result<()> {
        match notify::answer(&self.listener, self.id, answer) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            other => other,
        }
    }
}

impl Drop for ExecRequest {
    fn drop(&mut self) {
        if !self.answered {
            let _ = self.answer(Answer::Fail(libc::EPERM));
        }
    }
}

/// Receives the guarded tree's execs from `listener` until every process of the tree has
/// exited (or the receiver is dropped, after which every exec handed out is refused). Runs on
/// its own thread, where `triage` sees each exec (and whether it is the tree's first, the
/// command itself) and decides it or hands it out; returns the receiving end.
pub fn supervise<F>(listener: OwnedFd, triage: F) -> io::Result<mpsc::Receiver<ExecRequest>>
where
    F: FnMut(&Exec, bool) -> Triage + Send + 'static,
{
    let (tx, rx) = mpsc::channel(QUEUE);
    let listener = Arc::new(listener);
    std::thread::Builder::new()
        .name("exec-guard".into())
        .spawn(move || run(listener, tx, triage))?;
    Ok(rx)
}

fn run<F>(listener: Arc<OwnedFd>, tx: mpsc::Sender<ExecRequest>, mut triage: F)
where
    F: FnMut(&Exec, bool) -> Triage,
{
    let mut first = true;
    loop {
        let mut pfd = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        #[allow(unsafe_code)]
        let r = unsafe { libc::poll(&mut pfd, 1, -1) };
        if r < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break;
        }
        if pfd.revents & libc::POLLIN == 0 {
            // POLLHUP: no process of the tree is left.
            break;
        }
        let n = match notify::receive(&listener) {
            Ok(Some(n)) => n,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "exec guard: receiving a notification failed");
                break;
            }
        };
        let (exec, raw) = match resolve::decode(&n) {
            Ok(decoded) => decoded,
            Err(e) => {
                tracing::debug!(pid = n.pid, error = %e, "exec refused: cannot decode it");
                let _ = notify::answer(&listener, n.id, Answer::Fail(e.errno()));
                continue;
            }
        };
        // The arguments were read from the caller's memory; if its pid was reused meanwhile
        // they belong to someone else.
        if !notify::still_pending(&listener, n.id) {
            continue;
        }
        let request = ExecRequest {
            exec,
            pid: n.pid,
            initial: std::mem::take(&mut first),
            id: n.id,
            notification: n,
            raw,
            listener: listener.clone(),
            answered: false,
        };
        let answered = match triage(&request.exec, request.initial) {
            Triage::Allow => request.allow(),
            Triage::Deny(errno) => request.deny(errno),
            Triage::Ask => {
                // Nobody decides any more: refuse (dropping the request does).
                let _ = tx.blocking_send(request);
                Ok(())
            }
        };
        if let Err(e) = answered {
            tracing::debug!(error = %e, "exec guard: answering failed");
        }
    }
}
