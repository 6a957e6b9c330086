//! A managed child process: its event log, the tasks that drain its output and reap it, its
//! stdin, signals and termination.

mod log;
mod stdin;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use exec_server_protocol::process::{ProcessSignal, Stream, WriteStatus};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

pub use self::log::{Event, EventKind, EventLog, LogRead, SessionBytes};
pub use self::stdin::{StdinQueueFull, StdinTicket};
use crate::limits::Limits;
use crate::pty::PtyMaster;
use crate::spawn::{self, ChildIo, Spawned};

/// An event of a process on its way to the attached connection.
#[derive(Debug, Clone)]
pub struct ProcessEvent {
    /// The process id the client chose.
    pub process_id: Arc<str>,
    /// The event.
    pub event: Event,
    /// For an exit: the process ran sandboxed, failed, and its output looks like the sandbox
    /// refused something (`sandboxDenied`).
    pub sandbox_denied: bool,
    /// For an exit: its `timeoutMs` deadline killed it.
    pub timed_out: bool,
    /// Events just before this one were evicted before they could be pushed again (a replay
    /// after a resume started too far back): sent as a `process/gap` notification first.
    pub gap: Option<exec_server_protocol::process::Gap>,
}

/// Where a session's notifications go: the attached connection's bounded event queue.
pub type EventSender = tokio::sync::mpsc::Sender<ProcessEvent>;

/// The state behind the process lock.
#[derive(Debug)]
struct State {
    log: EventLog,
    exit_code: Option<i32>,
    /// The signal that killed the child, if one did.
    exit_signal: Option<i32>,
    open_streams: u8,
    closed: bool,
    closed_at: Option<Instant>,
    removed: bool,
    write_ids: HashSet<String>,
    write_id_order: VecDeque<String>,
    /// Sandboxed and some output named a typical denial.
    denial_seen: bool,
    /// Reader mode lasts until this instant (see `log.rs`).
    reader_until: Option<Instant>,
    /// Answers of `process/signal` and `process/terminate` by `opId`.
    op_answers: HashMap<String, bool>,
    op_order: VecDeque<String>,
    /// The deadline fired while the child ran.
    timed_out: bool,
    /// A resumed connection asked for the notifications after this seq again.
    rewind: Option<u64>,
    /// The notification pump runs (it ends once it pushed the close).
    pump_alive: bool,
}

/// How long reader mode outlives the end of the last `process/read`.
const READER_GRACE: Duration = Duration::from_secs(2);

/// What a read returns besides the log's chunks.
#[derive(Debug, Clone)]
pub struct ReadOutcome {
    /// Chunks, cursor and gap.
    pub log: LogRead,
    /// The process exited.
    pub exited: bool,
    /// Its exit code.
    pub exit_code: Option<i32>,
    /// Exited and all streams at EOF.
    pub closed: bool,
    /// The failure looks like a sandbox denial (see [`Process::sandbox_denied`]).
    pub sandbox_denied: bool,
}

/// Where stdin goes.
#[derive(Debug)]
enum StdinKind {
    None,
    Pipe(tokio::sync::Mutex<Option<tokio::process::ChildStdin>>),
    Pty,
}

/// A `timeoutMs` deadline.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    /// Measured from the start, on the monotonic clock.
    pub timeout: Duration,
    /// From the SIGTERM to the SIGKILL.
    pub grace: Duration,
}

/// A process of a session.
#[derive(Debug)]
pub struct Process {
    id: Arc<str>,
    /// The request that started it, for `ifExists: "attach"` to compare against.
    request: Arc<exec_server_protocol::process::StartParams>,
    argv: Vec<String>,
    pid: i32,
    tty: bool,
    sandboxed: bool,
    started_at: std::time::SystemTime,
    state: Mutex<State>,
    /// Bumped on every appended event.
    changed: watch::Sender<u64>,
    /// Bumped whenever delivery frees backlog.
    space: watch::Sender<u64>,
    stdin: StdinKind,
    stdin_order: stdin::Order,
    /// Bytes of writes waiting for their turn or being written.
    stdin_queued: std::sync::atomic::AtomicUsize,
    pty: Option<Arc<PtyMaster>>,
    limits: Arc<Limits>,
    /// The session's output totals.
    session_bytes: Arc<SessionBytes>,
    /// The session, asked to evict delivered output of its other processes.
    session: std::sync::Weak<crate::session::Session>,
    /// Where notifications go, for a pump restarted by a replay.
    sink: watch::Receiver<Option<EventSender>>,
}

impl Process {
    /// Wraps a spawned child and starts its tasks: one reader per output stream, the reaper
    /// and the notification pump feeding whatever connection `sink` names.
    pub fn start(
        request: Arc<exec_server_protocol::process::StartParams>,
        spawned: Spawned,
        deadline: Option<Deadline>,
        home: &crate::session::SessionHome,
        live: crate::session::LiveSlot,
    ) -> Arc<Process> {
        let limits = home.limits.clone();
        let sink = home.sink.clone();
        let Spawned {
            child,
            pid,
            io,
            sandboxed,
        } = spawned;
        let tty = matches!(io, ChildIo::Pty(_));
        let (stdin, pty, readers) = match io {
            ChildIo::Pipes {
                stdin,
                stdout,
                stderr,
            } => {
                let kind = match stdin {
                    Some(s) => StdinKind::Pipe(tokio::sync::Mutex::new(Some(s))),
                    None => StdinKind::None,
                };
                (kind, None, Readers::Pipes(stdout, stderr))
            }
            ChildIo::Pty(master) => {
                let master = Arc::new(master);
                (StdinKind::Pty, Some(master.clone()), Readers::Pty(master))
            }
        };
        let proc = Arc::new(Process {
            id: Arc::from(request.process_id.as_str()),
            argv: request.argv.clone(),
            request,
            pid,
            tty,
            sandboxed,
            started_at: std::time::SystemTime::now(),
            state: Mutex::new(State {
                log: EventLog::in_session(limits.retention_bytes, home.bytes.clone()),
                exit_code: None,
                exit_signal: None,
                open_streams: if tty { 1 } else { 2 },
                closed: false,
                closed_at: None,
                removed: false,
                write_ids: HashSet::new(),
                write_id_order: VecDeque::new(),
                reader_until: None,
                denial_seen: false,
                op_answers: HashMap::new(),
                op_order: VecDeque::new(),
                timed_out: false,
                rewind: None,
                pump_alive: true,
            }),
            changed: watch::channel(0).0,
            space: watch::channel(0).0,
            stdin,
            stdin_order: stdin::Order::default(),
            stdin_queued: std::sync::atomic::AtomicUsize::new(0),
            pty,
            limits,
            session_bytes: home.bytes.clone(),
            session: home.session.clone(),
            sink: sink.clone(),
        });
        match readers {
            Readers::Pipes(out, err) => {
                tokio::spawn(read_stream(proc.clone(), out, Stream::Stdout));
                tokio::spawn(read_stream(proc.clone(), err, Stream::Stderr));
            }
            Readers::Pty(master) => {
                tokio::spawn(read_pty(proc.clone(), master));
            }
        }
        tokio::spawn(reap(proc.clone(), child, live));
        tokio::spawn(pump(proc.clone(), sink));
        if let Some(d) = deadline {
            tokio::spawn(enforce_deadline(Arc::downgrade(&proc), d));
        }
        proc
    }

    /// The request that started it.
    pub fn request(&self) -> &exec_server_protocol::process::StartParams {
        &self.request
    }

    /// It ran under a sandbox.
    pub fn is_sandboxed(&self) -> bool {
        self.sandboxed
    }

    /// Its deadline killed it.
    pub fn timed_out(&self) -> bool {
        self.lock().timed_out
    }

    /// Pushes this process's notifications again from the event after `after` (a resumed
    /// connection's `replayAfter`); a gap notification comes first if some were evicted.
    pub fn replay_after(self: &Arc<Self>, after: u64) {
        let mut st = self.lock();
        if st.removed {
            return;
        }
        st.rewind = Some(after);
        let restart = !std::mem::replace(&mut st.pump_alive, true);
        drop(st);
        if restart {
            tokio::spawn(pump(self.clone(), self.sink.clone()));
        }
        self.changed.send_modify(|v| *v += 1);
    }

    /// The answer given to `op_id` before, or `None` after recording `answer()` as its
    /// answer (the caller then applies the operation). Bounded like `writeId`s.
    fn op_once(
        &self,
        op_id: Option<&str>,
        answer: impl FnOnce(&State) -> bool,
    ) -> Result<bool, bool> {
        let mut st = self.lock();
        let Some(op) = op_id else {
            return Ok(answer(&st));
        };
        if let Some(&a) = st.op_answers.get(op) {
            return Err(a);
        }
        let a = answer(&st);
        st.op_answers.insert(op.to_string(), a);
        st.op_order.push_back(op.to_string());
        if st.op_order.len() > self.limits.max_write_ids {
            if let Some(old) = st.op_order.pop_front() {
                st.op_answers.remove(&old);
            }
        }
        Ok(a)
    }

    /// Evicts delivered output while the session is over its cap.
    pub fn trim_for_session(&self) {
        if self.session_bytes.over() {
            self.lock().log.trim_for_session();
        }
    }

    /// Asks the session to trim its processes' delivered output if it is over its cap.
    fn trim_session_if_over(&self) {
        if self.session_bytes.over() {
            if let Some(s) = self.session.upgrade() {
                s.trim();
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the state itself stays consistent
        // because every critical section is short and panic-free.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client's id.
    pub fn id(&self) -> &Arc<str> {
        &self.id
    }

    /// It ran sandboxed, exited non-zero, and its output names a typical denial
    /// ("Read-only file system", "Permission denied", "Operation not permitted"), or it was
    /// killed by SIGSYS (seccomp). Like upstream this is a heuristic, for `sandboxDenied`.
    pub fn sandbox_denied(&self) -> bool {
        denied(&self.lock())
    }

    /// The OS pid (also the process group and session id).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Started with a PTY.
    pub fn is_tty(&self) -> bool {
        self.tty
    }

    /// The argv it was started with.
    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    /// When it was started.
    pub fn started_at(&self) -> std::time::SystemTime {
        self.started_at
    }

    /// The exit code once the child exited.
    pub fn exit_code(&self) -> Option<i32> {
        self.lock().exit_code
    }

    /// The signal that killed the child, once it has exited by one.
    pub fn exit_signal(&self) -> Option<i32> {
        self.lock().exit_signal
    }

    /// Exited and every stream reached EOF.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// When the process closed.
    pub fn closed_at(&self) -> Option<Instant> {
        self.lock().closed_at
    }

    /// Output bytes retained.
    pub fn retained_bytes(&self) -> usize {
        self.lock().log.retained_bytes()
    }

    /// The last allocated seq and the retained seq range.
    pub fn seq_info(&self) -> (u64, Option<(u64, u64)>) {
        let st = self.lock();
        (st.log.next_seq() - 1, st.log.retained_range())
    }

    fn push(&self, st: &mut State, kind: EventKind) {
        st.log.push(kind);
        self.changed.send_modify(|v| *v += 1);
    }

    /// Reads retained output after `after`; with `wait`, long-polls until there is something
    /// new (output, or an exit the cursor has not passed, or close).
    pub async fn read(&self, after: u64, max_bytes: Option<u64>, wait: Duration) -> ReadOutcome {
        let deadline = tokio::time::Instant::now() + wait;
        let mut changed = self.changed.subscribe();
        loop {
            changed.borrow_and_update();
            let outcome = {
                let mut st = self.lock();
                // A reader streaming this process (a long-poll): pushes stop counting as
                // delivery until it has been quiet for READER_GRACE after its last read ended.
                // A read that does not wait (a catch-up after a reconnect) does not pause the
                // notifications.
                if !wait.is_zero() {
                    st.reader_until = Some(deadline.into_std().max(Instant::now()) + READER_GRACE);
                    st.log.set_reader_mode(true);
                }
                st.log.mark_read(after);
                let log = st.log.read(after, max_bytes);
                if let Some(last) = log.chunks.last() {
                    st.log.mark_read(last.0);
                }
                ReadOutcome {
                    exited: st.exit_code.is_some(),
                    exit_code: st.exit_code,
                    closed: st.closed,
                    sandbox_denied: denied(&st),
                    log,
                }
            };
            let news = !outcome.log.chunks.is_empty()
                || outcome.closed
                || (outcome.exited && after < outcome.log.next_seq.saturating_sub(1))
                || outcome.log.gap.is_some();
            if news || wait.is_zero() {
                self.space.send_modify(|v| *v += 1);
                self.trim_session_if_over();
                return outcome;
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => continue,
                _ => return outcome,
            }
        }
    }

    /// Takes the next place in this process's stdin order, reserving `bytes` of its stdin
    /// queue. Tickets are taken in request arrival order and writes take effect in ticket
    /// order.
    pub fn stdin_ticket(self: &Arc<Self>, bytes: usize) -> Result<StdinTicket, StdinQueueFull> {
        StdinTicket::new(self.clone(), bytes)
    }

    /// Ends the process's input. Called in ticket order.
    async fn close_stdin_in_order(&self) -> WriteStatus {
        if self.lock().exit_code.is_some() {
            return WriteStatus::StdinClosed;
        }
        match &self.stdin {
            StdinKind::None => WriteStatus::StdinClosed,
            StdinKind::Pipe(pipe) => match pipe.lock().await.take() {
                Some(_) => WriteStatus::Accepted,
                None => WriteStatus::StdinClosed,
            },
            StdinKind::Pty => match &self.pty {
                Some(m) if m.write_all(b"\x04").await.is_ok() => WriteStatus::Accepted,
                _ => WriteStatus::StdinClosed,
            },
        }
    }

    /// Writes to stdin unless `write_id` was accepted before. Called in ticket order.
    async fn write_in_order(&self, write_id: String, data: Vec<u8>) -> WriteStatus {
        {
            let st = self.lock();
            if st.write_ids.contains(&write_id) {
                return WriteStatus::Accepted;
            }
            if st.exit_code.is_some() {
                return WriteStatus::StdinClosed;
            }
        }
        let ok = match &self.stdin {
            StdinKind::None => return WriteStatus::StdinClosed,
            StdinKind::Pipe(pipe) => {
                use tokio::io::AsyncWriteExt;
                let mut guard = pipe.lock().await;
                match guard.as_mut() {
                    None => false,
                    Some(w) => {
                        let ok = w.write_all(&data).await.is_ok() && w.flush().await.is_ok();
                        if !ok {
                            *guard = None;
                        }
                        ok
                    }
                }
            }
            StdinKind::Pty => match &self.pty {
                Some(m) => m.write_all(&data).await.is_ok(),
                None => false,
            },
        };
        if !ok {
            return WriteStatus::StdinClosed;
        }
        let mut st = self.lock();
        if st.write_ids.insert(write_id.clone()) {
            st.write_id_order.push_back(write_id);
            if st.write_id_order.len() > self.limits.max_write_ids {
                if let Some(old) = st.write_id_order.pop_front() {
                    st.write_ids.remove(&old);
                }
            }
        }
        WriteStatus::Accepted
    }

    /// Delivers a signal to the process group while the child runs. Returns whether it ran.
    /// A repeated `op_id` is answered as the first time and not applied again.
    pub fn signal(&self, signal: ProcessSignal, op_id: Option<&str>) -> bool {
        use nix::sys::signal::Signal;
        let sig = match signal {
            ProcessSignal::Interrupt => Signal::SIGINT,
            ProcessSignal::Terminate => Signal::SIGTERM,
            ProcessSignal::Hangup => Signal::SIGHUP,
            ProcessSignal::Quit => Signal::SIGQUIT,
            ProcessSignal::User1 => Signal::SIGUSR1,
            ProcessSignal::User2 => Signal::SIGUSR2,
        };
        let running = |st: &State| st.exit_code.is_none() && self.pid > 0;
        match self.op_once(op_id, running) {
            Err(first) => first,
            Ok(false) => false,
            Ok(true) => {
                let pid = nix::unistd::Pid::from_raw(self.pid);
                let _ = nix::sys::signal::killpg(pid, sig)
                    .or_else(|_| nix::sys::signal::kill(pid, sig));
                true
            }
        }
    }

    /// Kills the whole tree with SIGKILL. Returns whether the child was still running. A
    /// repeated `op_id` is answered as the first time and not applied again.
    pub fn terminate(&self, op_id: Option<&str>) -> bool {
        match self.op_once(op_id, |st| st.exit_code.is_none()) {
            Err(first) => first,
            Ok(false) => false,
            Ok(true) => {
                spawn::kill_tree(self.pid, nix::sys::signal::Signal::SIGKILL);
                true
            }
        }
    }

    /// Kills the tree (if running) and marks the process removed so its pump stops.
    pub fn shutdown(&self) {
        if self.exit_code().is_none() {
            spawn::kill_tree(self.pid, nix::sys::signal::Signal::SIGKILL);
        }
        let mut st = self.lock();
        st.removed = true;
        drop(st);
        self.changed.send_modify(|v| *v += 1);
    }

    /// Resizes the PTY. Fails for a pipe process.
    pub fn resize(&self, rows: u16, cols: u16) -> Result<(), std::io::Error> {
        match &self.pty {
            Some(m) => m.resize(rows, cols),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("process {} is not a tty process", self.id),
            )),
        }
    }

    /// Waits until the undelivered backlog is below its bound. Reader mode ends here too,
    /// once the reader has been quiet for its grace period.
    async fn wait_for_space(&self) {
        let mut space = self.space.subscribe();
        loop {
            space.borrow_and_update();
            {
                let mut st = self.lock();
                self.reader_active(&mut st);
                let own = st.log.undelivered_bytes();
                // Session-wide: a process with nothing pending may always take one more read,
                // so no process is starved by the others' backlog.
                let session_ok =
                    own == 0 || self.session_bytes.undelivered() < self.session_bytes.cap();
                if (own < self.limits.retention_bytes && session_ok) || st.removed {
                    return;
                }
            }
            // Wake on delivery, or now and then to let reader mode expire.
            match tokio::time::timeout(READER_GRACE / 4, space.changed()).await {
                Ok(Err(_)) => return,
                _ => continue,
            }
        }
    }

    fn append_output(&self, stream: Stream, data: bytes::Bytes) {
        let hint = self.sandboxed && looks_denied(&data);
        let mut st = self.lock();
        st.denial_seen |= hint;
        self.push(&mut st, EventKind::Output { stream, data });
        drop(st);
        self.trim_session_if_over();
    }

    fn stream_ended(&self) {
        let mut st = self.lock();
        st.open_streams = st.open_streams.saturating_sub(1);
        self.maybe_close(&mut st);
    }

    fn exited(&self, code: i32, signal: Option<i32>) {
        let mut st = self.lock();
        st.exit_code = Some(code);
        st.exit_signal = signal;
        self.push(&mut st, EventKind::Exited { code });
        self.maybe_close(&mut st);
    }

    fn maybe_close(&self, st: &mut State) {
        if st.open_streams == 0 && st.exit_code.is_some() && !st.closed {
            st.closed = true;
            st.closed_at = Some(Instant::now());
            self.push(st, EventKind::Closed);
        }
    }

    /// Whether a client is streaming this process with reads; ends reader mode once its
    /// grace period has passed.
    fn reader_active(&self, st: &mut State) -> bool {
        match st.reader_until {
            Some(t) if Instant::now() >= t => {
                st.reader_until = None;
                st.log.set_reader_mode(false);
                self.space.send_modify(|v| *v += 1);
                false
            }
            Some(_) => true,
            None => false,
        }
    }

    fn mark_pushed(&self, seq: u64) {
        self.lock().log.mark_pushed(seq);
        self.space.send_modify(|v| *v += 1);
        self.trim_session_if_over();
    }
}

fn denied(st: &State) -> bool {
    match st.exit_code {
        Some(code) if code == 128 + libc::SIGSYS => true,
        Some(code) => code != 0 && st.denial_seen,
        None => false,
    }
}

/// Output that names a typical sandbox denial.
fn looks_denied(data: &[u8]) -> bool {
    const MARKERS: [&[u8]; 3] = [
        b"Read-only file system",
        b"Permission denied",
        b"Operation not permitted",
    ];
    MARKERS
        .iter()
        .any(|m| data.windows(m.len()).any(|w| w == *m))
}

enum Readers {
    Pipes(tokio::process::ChildStdout, tokio::process::ChildStderr),
    Pty(Arc<PtyMaster>),
}

async fn read_stream<R: AsyncRead + Unpin>(proc: Arc<Process>, mut reader: R, stream: Stream) {
    let chunk = proc.limits.read_chunk_bytes;
    let mut buf = BytesMut::with_capacity(chunk);
    loop {
        proc.wait_for_space().await;
        if buf.capacity() - buf.len() < chunk / 4 {
            buf.reserve(chunk);
        }
        match reader.read_buf(&mut buf).await {
            Ok(0) => break,
            Ok(_) => {
                // Coalesce what is already in the pipe into this chunk: fewer, larger events
                // when the child writes faster than we forward.
                while buf.len() < chunk && try_read_more(&mut reader, &mut buf) {}
                proc.append_output(stream, buf.split().freeze())
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::debug!(process = %proc.id, %e, "output read failed");
                break;
            }
        }
    }
    proc.stream_ended();
}

/// Reads whatever is available right now without waiting; false when nothing was.
fn try_read_more<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut BytesMut) -> bool {
    use std::future::Future;
    use std::task::{Context, Poll};
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let fut = reader.read_buf(buf);
    let mut fut = std::pin::pin!(fut);
    matches!(fut.as_mut().poll(&mut cx), Poll::Ready(Ok(n)) if n > 0)
}

async fn read_pty(proc: Arc<Process>, master: Arc<PtyMaster>) {
    let mut buf = vec![0u8; proc.limits.read_chunk_bytes.min(64 << 10)];
    loop {
        proc.wait_for_space().await;
        match master.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => proc.append_output(Stream::Pty, bytes::Bytes::copy_from_slice(&buf[..n])),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::debug!(process = %proc.id, %e, "pty read failed");
                break;
            }
        }
    }
    proc.stream_ended();
}

async fn reap(
    proc: Arc<Process>,
    mut child: tokio::process::Child,
    live: crate::session::LiveSlot,
) {
    let (code, signal) = match child.wait().await {
        Ok(status) => {
            use std::os::unix::process::ExitStatusExt;
            (spawn::exit_code(status), status.signal())
        }
        Err(e) => {
            tracing::warn!(process = %proc.id, %e, "waiting for the child failed");
            (-1, None)
        }
    };
    drop(live);
    proc.exited(code, signal);
}

/// At the deadline: SIGTERM to the tree, SIGKILL after the grace. Tokio's clock is the
/// monotonic one, so a deadline that passed while the server was frozen fires as soon as it
/// runs again.
async fn enforce_deadline(proc: std::sync::Weak<Process>, d: Deadline) {
    let Some(at) = tokio::time::Instant::now().checked_add(d.timeout) else {
        return;
    };
    tokio::time::sleep_until(at).await;
    let Some(p) = proc.upgrade() else { return };
    {
        let mut st = p.lock();
        if st.exit_code.is_some() || st.removed {
            return;
        }
        st.timed_out = true;
    }
    tracing::info!(process = %p.id, "deadline reached: SIGTERM to the process tree");
    spawn::kill_tree(p.pid, nix::sys::signal::Signal::SIGTERM);
    let mut changed = p.subscribe_changes();
    let grace_end = tokio::time::Instant::now() + d.grace;
    // Until the grace ends or every output stream is closed (the tree is gone).
    loop {
        if p.is_closed() {
            return;
        }
        match tokio::time::timeout_at(grace_end, changed.changed()).await {
            Ok(Ok(())) => continue,
            Ok(Err(_)) => return,
            Err(_) => break,
        }
    }
    tracing::info!(process = %p.id, "grace over: SIGKILL to the process tree");
    spawn::kill_tree(p.pid, nix::sys::signal::Signal::SIGKILL);
}

/// Pushes the process's events, in seq order, to whichever connection is attached. Events
/// produced while no connection is attached are pushed to the next one.
async fn pump(proc: Arc<Process>, mut sink: watch::Receiver<Option<EventSender>>) {
    const BATCH: usize = 64;
    let mut pushed: u64 = 0;
    // The read cursor already taken into account (a rewind may go back before it).
    let mut read_seen: u64 = 0;
    let mut gap = None;
    let mut changed = proc.changed.subscribe();
    loop {
        let tx = sink.borrow_and_update().clone();
        changed.borrow_and_update();
        let (batch, done, paused) = {
            let mut st = proc.lock();
            if let Some(after) = st.rewind.take() {
                pushed = after.min(st.log.next_seq() - 1);
                read_seen = st.log.read_cursor();
                gap = st.log.gap_after(pushed);
            }
            // While a client streams this process with reads, the reads carry the output and
            // notifications pause; they resume after what the reads returned.
            let paused = proc.reader_active(&mut st);
            if !paused && st.log.read_cursor() > read_seen {
                read_seen = st.log.read_cursor();
                pushed = pushed.max(read_seen);
            }
            let batch = if paused {
                Vec::new()
            } else {
                st.log.events_after(pushed, BATCH)
            };
            let done = st.removed
                || (!paused && st.closed && batch.is_empty() && pushed + 1 >= st.log.next_seq());
            if done {
                // Decided under the lock, so a replay either sees the pump alive (and its
                // rewind is taken above on the next turn) or restarts it.
                st.pump_alive = false;
            }
            (batch, done, paused)
        };
        if done {
            return;
        }
        if paused {
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                r = sink.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(READER_GRACE / 4) => {}
            }
            continue;
        }
        let Some(tx) = tx else {
            if sink.changed().await.is_err() {
                return;
            }
            continue;
        };
        if batch.is_empty() {
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                r = sink.changed() => if r.is_err() { return },
            }
            continue;
        }
        for event in batch {
            let seq = event.seq;
            let exit = matches!(event.kind, EventKind::Exited { .. });
            let ev = ProcessEvent {
                process_id: proc.id.clone(),
                event,
                sandbox_denied: exit && proc.sandbox_denied(),
                timed_out: exit && proc.timed_out(),
                gap: gap.take().filter(|g| g.to_seq < seq),
            };
            let sent = tokio::select! {
                r = tx.send(ev) => r.is_ok(),
                _ = sink.changed() => false,
            };
            if !sent {
                // The connection went away or was replaced: start over with the new one.
                break;
            }
            pushed = seq;
            proc.mark_pushed(seq);
        }
    }
}

impl Process {
    /// A receiver that changes whenever an event is appended.
    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}
