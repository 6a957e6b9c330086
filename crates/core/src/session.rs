//! Sessions: they own the process table, survive a disconnect (detached) for a TTL, and can be
//! resumed by a new connection with `resumeSessionId`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use exec_server_protocol::process::{IfExists, SandboxType, StartParams};
use tokio::sync::watch;

use crate::env_policy;
use crate::limits::Limits;
use crate::process::{Deadline, EventSender, Process, SessionBytes};
use crate::spawn::{self, SpawnError, SpawnSpec};

/// Identifies a connection to the session layer.
pub type ConnectionId = u64;

/// Why `initialize {resumeSessionId}` failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResumeError {
    /// Unknown or expired.
    #[error("unknown session id {0}")]
    Unknown(String),
    /// Attached to another live connection.
    #[error("session {0} is already attached to another connection")]
    AlreadyAttached(String),
}

/// Why a session could not be created.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CreateError {
    /// The server holds its maximum number of sessions.
    #[error("too many sessions (at most {0})")]
    TooMany(usize),
}

/// Why `process/start` failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `argv` was empty.
    #[error("argv must not be empty")]
    EmptyArgv,
    /// The id is taken by a running or retained process.
    #[error("process {0} already exists")]
    AlreadyExists(String),
    /// `ifExists: "attach"` to a process started with a different request.
    #[error("process {id} already exists with a different {field}")]
    AttachMismatch {
        /// The process id.
        id: String,
        /// The first field that differs: `argv`, `cwd`, `env`, `tty` or `sandbox`.
        field: &'static str,
    },
    /// `ifExists: "attach"` to an id that ran and was forgotten: starting it again could run
    /// the command twice.
    #[error("process {0} already ran and was forgotten after its retention; use a new id")]
    Forgotten(String),
    /// `ifExists: "attach"` while the id's start is in flight.
    #[error("process {0} is starting; retry")]
    Starting(String),
    /// `timeoutMs` of 0, or a grace beyond its bound.
    #[error("{0}")]
    Deadline(String),
    /// The session holds its maximum number of processes.
    #[error("too many processes in this session (at most {0})")]
    TooMany(usize),
    /// Too many processes are running in this session or on this server.
    #[error("too many running processes ({0}); wait for some to exit")]
    TooManyRunning(String),
    /// The cwd URI is not a path of this host.
    #[error("{0}")]
    Cwd(exec_server_protocol::PathUriError),
    /// The sandbox context cannot become a policy (e.g. it needs a cwd).
    #[error("{0}")]
    Sandbox(exec_server_sandbox::PolicyError),
    /// `enforceManagedNetwork` with a context that cannot be set up.
    #[error(transparent)]
    ManagedNetwork(#[from] crate::managed_network::ManagedNetworkError),
    /// The OS refused to start it.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
}

impl StartError {
    /// The JSON-RPC code of this failure (spec §4.1, §17), for the server and the client's
    /// local environment alike.
    pub fn code(&self) -> i64 {
        use exec_server_protocol::codes;
        match self {
            StartError::EmptyArgv
            | StartError::Sandbox(_)
            | StartError::ManagedNetwork(_)
            | StartError::Deadline(_) => codes::INVALID_PARAMS,
            StartError::AlreadyExists(_)
            | StartError::AttachMismatch { .. }
            | StartError::Forgotten(_)
            | StartError::Starting(_)
            | StartError::TooMany(_)
            | StartError::TooManyRunning(_) => codes::INVALID_REQUEST,
            StartError::Cwd(e) => e.code(),
            StartError::Spawn(_) => codes::INTERNAL_ERROR,
        }
    }

    /// The 0.171.0 `error.data.kind`, where the failure has one.
    pub fn kind(&self) -> Option<&'static str> {
        match self {
            StartError::Sandbox(_) => Some("sandboxPreparation"),
            StartError::ManagedNetwork(
                crate::managed_network::ManagedNetworkError::Unavailable(_),
            ) => Some("sandboxUnavailable"),
            StartError::Spawn(e) => Some(e.kind()),
            _ => None,
        }
    }
}

#[derive(Debug)]
enum Slot {
    Starting,
    Ready(Arc<Process>),
}

#[derive(Debug)]
enum Attachment {
    Attached(ConnectionId),
    /// Detached; the number counts detaches so a stale expiry timer can tell it is stale.
    Detached(u64),
}

/// What a process takes from its session.
#[derive(Debug)]
pub struct SessionHome {
    /// The limits in force.
    pub limits: Arc<Limits>,
    /// Where notifications go.
    pub sink: watch::Receiver<Option<EventSender>>,
    /// The session's output totals.
    pub bytes: Arc<SessionBytes>,
    /// The session, asked to evict its delivered output while it is over its cap.
    pub session: std::sync::Weak<Session>,
}

/// The longest `killGraceMs` (one hour).
pub const MAX_KILL_GRACE_MS: u64 = 3_600_000;
/// `killGraceMs` when absent.
pub const DEFAULT_KILL_GRACE_MS: u64 = 5_000;

/// The first field, in the order the issue lists them, in which two start requests differ.
fn differing_field(a: &StartParams, b: &StartParams) -> Option<&'static str> {
    if a.argv != b.argv || a.arg0 != b.arg0 {
        Some("argv")
    } else if a.cwd != b.cwd {
        Some("cwd")
    } else if a.env != b.env || a.env_policy != b.env_policy {
        Some("env")
    } else if a.tty != b.tty || a.pipe_stdin != b.pipe_stdin {
        Some("tty")
    } else if a.sandbox != b.sandbox
        || a.enforce_managed_network != b.enforce_managed_network
        || a.managed_network != b.managed_network
    {
        Some("sandbox")
    } else {
        None
    }
}

/// What `process/start` did.
#[derive(Debug)]
pub struct Started {
    /// The process.
    pub process: Arc<Process>,
    /// The sandbox it runs under.
    pub sandbox_type: SandboxType,
    /// An existing process answered (`ifExists: "attach"`).
    pub attached: bool,
}

/// A session.
#[derive(Debug)]
pub struct Session {
    id: String,
    processes: Mutex<HashMap<String, Slot>>,
    /// Ids of processes forgotten after their retention, so `process/status` can say it no
    /// longer knows them rather than that they never ran.
    forgotten: Mutex<Forgotten>,
    attachment: Mutex<(Attachment, u64)>,
    sink: watch::Sender<Option<EventSender>>,
    limits: Arc<Limits>,
    /// Running processes of this session.
    live: Arc<AtomicUsize>,
    /// Running processes of the whole server.
    server_live: Arc<AtomicUsize>,
    /// Output held by the session's processes, against `--retention-per-session`.
    bytes: Arc<SessionBytes>,
}

/// What a session knows of a process id (see [`Session::lookup`]).
#[derive(Debug)]
pub enum Lookup {
    /// Running, or exited and still retained.
    Known(Arc<Process>),
    /// Its `process/start` is in flight.
    Starting,
    /// It ran, and was forgotten after its retention.
    Forgotten,
    /// This session never started it (or forgot more ids since than it remembers).
    Never,
}

/// How many forgotten process ids a session remembers, oldest dropped first.
pub const FORGOTTEN_IDS: usize = 16_384;

#[derive(Debug, Default)]
struct Forgotten {
    order: VecDeque<String>,
    ids: HashSet<String>,
}

impl Forgotten {
    fn add(&mut self, id: &str) {
        if self.ids.insert(id.to_string()) {
            self.order.push_back(id.to_string());
            if self.order.len() > FORGOTTEN_IDS {
                if let Some(old) = self.order.pop_front() {
                    self.ids.remove(&old);
                }
            }
        }
    }

    fn remove(&mut self, id: &str) {
        if self.ids.remove(id) {
            self.order.retain(|o| o != id);
        }
    }
}

/// Holds one place in the running-process counts; released when the child has exited.
#[derive(Debug)]
pub struct LiveSlot {
    counters: [Arc<AtomicUsize>; 2],
}

impl Drop for LiveSlot {
    fn drop(&mut self) {
        for c in &self.counters {
            c.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Takes a place under `max` in `counter`, or fails.
fn take(counter: &AtomicUsize, max: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

impl Session {
    fn reserve_live(&self) -> Result<LiveSlot, StartError> {
        let l = &self.limits;
        if !take(&self.server_live, l.max_live_processes) {
            return Err(StartError::TooManyRunning(format!(
                "at most {} per server",
                l.max_live_processes
            )));
        }
        if !take(&self.live, l.max_live_processes_per_session) {
            self.server_live.fetch_sub(1, Ordering::AcqRel);
            return Err(StartError::TooManyRunning(format!(
                "at most {} per session",
                l.max_live_processes_per_session
            )));
        }
        Ok(LiveSlot {
            counters: [self.live.clone(), self.server_live.clone()],
        })
    }

    /// The session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn table(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        self.processes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A running or retained process by id.
    pub fn process(&self, id: &str) -> Option<Arc<Process>> {
        match self.table().get(id) {
            Some(Slot::Ready(p)) => Some(p.clone()),
            _ => None,
        }
    }

    /// What this session knows of process `id`.
    pub fn lookup(&self, id: &str) -> Lookup {
        match self.table().get(id) {
            Some(Slot::Ready(p)) => Lookup::Known(p.clone()),
            Some(Slot::Starting) => Lookup::Starting,
            None if self.forgotten().ids.contains(id) => Lookup::Forgotten,
            None => Lookup::Never,
        }
    }

    fn forgotten(&self) -> MutexGuard<'_, Forgotten> {
        self.forgotten.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True while `process/start` for this id is in flight.
    pub fn is_starting(&self, id: &str) -> bool {
        matches!(self.table().get(id), Some(Slot::Starting))
    }

    /// Every running or retained process.
    pub fn processes(&self) -> Vec<Arc<Process>> {
        self.table()
            .values()
            .filter_map(|s| match s {
                Slot::Ready(p) => Some(p.clone()),
                Slot::Starting => None,
            })
            .collect()
    }

    /// Starts a process. The id is reserved while the child is spawned and released if the
    /// spawn fails. With `ifExists: "attach"`, an id that is taken answers its process when
    /// the request is the same.
    pub fn start(self: &Arc<Self>, params: &StartParams) -> Result<Started, StartError> {
        if params.argv.is_empty() {
            return Err(StartError::EmptyArgv);
        }
        let deadline = match params.timeout_ms {
            None => None,
            Some(0) => return Err(StartError::Deadline("timeoutMs must be at least 1".into())),
            Some(ms) => {
                let grace = params.kill_grace_ms.unwrap_or(DEFAULT_KILL_GRACE_MS);
                if grace > MAX_KILL_GRACE_MS {
                    return Err(StartError::Deadline(format!(
                        "killGraceMs must be at most {MAX_KILL_GRACE_MS}"
                    )));
                }
                Some(Deadline {
                    timeout: std::time::Duration::from_millis(ms),
                    grace: std::time::Duration::from_millis(grace),
                })
            }
        };
        if params.if_exists == Some(IfExists::Attach) {
            match self.lookup(&params.process_id) {
                Lookup::Known(process) => {
                    return match differing_field(process.request(), params) {
                        Some(field) => Err(StartError::AttachMismatch {
                            id: params.process_id.clone(),
                            field,
                        }),
                        None => Ok(Started {
                            sandbox_type: if process.is_sandboxed() {
                                SandboxType::LinuxSeccomp
                            } else {
                                SandboxType::None
                            },
                            process,
                            attached: true,
                        }),
                    };
                }
                Lookup::Starting => return Err(StartError::Starting(params.process_id.clone())),
                Lookup::Forgotten => return Err(StartError::Forgotten(params.process_id.clone())),
                Lookup::Never => {}
            }
        }
        let cwd = params.cwd.to_path().map_err(StartError::Cwd)?;
        let mut policy = match &params.sandbox {
            None => None,
            Some(ctx) => exec_server_sandbox::Policy::from_context(ctx, Some(&cwd))
                .map_err(StartError::Sandbox)?,
        };
        if params.enforce_managed_network {
            let managed = crate::managed_network::resolve(params.managed_network.as_ref())?;
            policy = Some(match policy {
                Some(mut p) => {
                    p.managed_network = Some(managed);
                    p
                }
                None => exec_server_sandbox::Policy::managed_network_only(managed),
            });
        }
        {
            let mut table = self.table();
            if table.contains_key(&params.process_id) {
                return Err(StartError::AlreadyExists(params.process_id.clone()));
            }
            if table.len() >= self.limits.max_processes_per_session {
                return Err(StartError::TooMany(self.limits.max_processes_per_session));
            }
            table.insert(params.process_id.clone(), Slot::Starting);
        }
        self.forgotten().remove(&params.process_id);
        let slot = match self.reserve_live() {
            Ok(s) => s,
            Err(e) => {
                self.table().remove(&params.process_id);
                return Err(e);
            }
        };
        let mut env = env_policy::build(&params.env, params.env_policy.as_ref(), std::env::vars());
        if let Some(managed) = policy.as_ref().and_then(|p| p.managed_network.as_ref()) {
            crate::managed_network::proxy_env(&mut env, managed);
        }
        let mut spec = SpawnSpec {
            argv: params.argv.clone(),
            arg0: params.arg0.clone(),
            cwd,
            env,
            tty: params.tty,
            pipe_stdin: params.pipe_stdin,
            inherit_fd: None,
        };
        let sandbox_type = match &policy {
            None => SandboxType::None,
            Some(_) => SandboxType::LinuxSeccomp,
        };
        let prepared = match &policy {
            None => Ok(()),
            Some(policy) => spawn::sandbox(&mut spec, policy),
        };
        let spawned = match prepared.and_then(|()| spawn::spawn(&spec)) {
            Ok(mut s) => {
                s.sandboxed = policy.is_some();
                s
            }
            Err(e) => {
                self.table().remove(&params.process_id);
                return Err(e.into());
            }
        };
        let home = SessionHome {
            limits: self.limits.clone(),
            sink: self.sink.subscribe(),
            bytes: self.bytes.clone(),
            session: Arc::downgrade(self),
        };
        let proc = Process::start(Arc::new(params.clone()), spawned, deadline, &home, slot);
        self.table()
            .insert(params.process_id.clone(), Slot::Ready(proc.clone()));
        tokio::spawn(forget_after_retention(Arc::downgrade(self), proc.clone()));
        Ok(Started {
            process: proc,
            sandbox_type,
            attached: false,
        })
    }

    /// Evicts delivered output, largest holders first, while the session retains more than
    /// its cap.
    pub(crate) fn trim(&self) {
        let mut procs = self.processes();
        procs.sort_by_key(|p| std::cmp::Reverse(p.retained_bytes()));
        for p in procs {
            if !self.bytes.over() {
                break;
            }
            p.trim_for_session();
        }
    }

    /// Output bytes the session's processes retain.
    pub fn retained_bytes(&self) -> usize {
        self.bytes.retained()
    }

    /// Kills every process (used when the session expires or the server stops).
    pub fn shutdown(&self) {
        let procs: Vec<Arc<Process>> = self.processes();
        for p in procs {
            p.shutdown();
        }
        self.sink.send_replace(None);
    }
}

/// Forgets a process `closed_retention` after it closed, freeing its id.
async fn forget_after_retention(session: std::sync::Weak<Session>, proc: Arc<Process>) {
    let mut changed = proc.subscribe_changes();
    let closed_at = loop {
        if let Some(t) = proc.closed_at() {
            break t;
        }
        if changed.changed().await.is_err() {
            return;
        }
    };
    drop(changed);
    let Some(retention) = session.upgrade().map(|s| s.limits.closed_retention) else {
        return;
    };
    tokio::time::sleep_until((closed_at + retention).into()).await;
    if let Some(s) = session.upgrade() {
        let mut table = s.table();
        if let Some(Slot::Ready(p)) = table.get(proc.id().as_ref()) {
            if Arc::ptr_eq(p, &proc) {
                table.remove(proc.id().as_ref());
                s.forgotten().add(proc.id());
            }
        }
        drop(table);
        proc.shutdown();
    }
}

/// Counts for metrics, read by [`Sessions::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionStats {
    /// Sessions held (attached or detached, not yet expired).
    pub sessions: usize,
    /// Sessions attached to a connection.
    pub attached: usize,
    /// Running processes of every session.
    pub live_processes: usize,
}

/// The server's sessions.
#[derive(Debug)]
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
    limits: Arc<Limits>,
    live: Arc<AtomicUsize>,
}

impl Sessions {
    /// An empty registry.
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Sessions {
            map: Mutex::new(HashMap::new()),
            limits: Arc::new(limits),
            live: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// How many sessions are held and attached, and how many processes run.
    pub fn stats(&self) -> SessionStats {
        let sessions: Vec<Arc<Session>> = self.map().values().cloned().collect();
        let attached = sessions
            .iter()
            .filter(|s| {
                let att = s.attachment.lock().unwrap_or_else(|e| e.into_inner());
                matches!(att.0, Attachment::Attached(_))
            })
            .count();
        SessionStats {
            sessions: sessions.len(),
            attached,
            live_processes: self.live.load(Ordering::Acquire),
        }
    }

    /// Every held session (attached or detached).
    pub fn all(&self) -> Vec<Arc<Session>> {
        self.map().values().cloned().collect()
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates a session attached to `conn`, whose notifications go to `sink`.
    pub fn create(
        &self,
        conn: ConnectionId,
        sink: EventSender,
    ) -> Result<Arc<Session>, CreateError> {
        let mut map = self.map();
        if map.len() >= self.limits.max_sessions {
            return Err(CreateError::TooMany(self.limits.max_sessions));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let session = Arc::new(Session {
            id: id.clone(),
            processes: Mutex::new(HashMap::new()),
            forgotten: Mutex::new(Forgotten::default()),
            attachment: Mutex::new((Attachment::Attached(conn), 0)),
            sink: watch::channel(Some(sink)).0,
            limits: self.limits.clone(),
            live: Arc::new(AtomicUsize::new(0)),
            server_live: self.live.clone(),
            bytes: SessionBytes::new(self.limits.session_retention_bytes),
        });
        map.insert(id, session.clone());
        Ok(session)
    }

    /// Attaches a detached session to `conn`. `replay_after` names processes whose
    /// notifications are pushed again after the given seq.
    pub fn resume(
        &self,
        id: &str,
        conn: ConnectionId,
        sink: EventSender,
        replay_after: Option<&HashMap<String, u64>>,
    ) -> Result<Arc<Session>, ResumeError> {
        let session = self
            .map()
            .get(id)
            .cloned()
            .ok_or_else(|| ResumeError::Unknown(id.to_string()))?;
        let mut att = session.attachment.lock().unwrap_or_else(|e| e.into_inner());
        match att.0 {
            Attachment::Attached(_) => Err(ResumeError::AlreadyAttached(id.to_string())),
            Attachment::Detached(_) => {
                att.0 = Attachment::Attached(conn);
                drop(att);
                // Before the sink is set, so the pumps start the new connection at the
                // rewound point.
                for (pid, &after) in replay_after.into_iter().flatten() {
                    if let Some(p) = session.process(pid) {
                        p.replay_after(after);
                    }
                }
                session.sink.send_replace(Some(sink));
                Ok(session)
            }
        }
    }

    /// Detaches `session` from `conn` (if still attached to it) and arms its expiry.
    pub fn detach(self: &Arc<Self>, session: &Arc<Session>, conn: ConnectionId) {
        let generation = {
            let mut att = session.attachment.lock().unwrap_or_else(|e| e.into_inner());
            match att.0 {
                Attachment::Attached(c) if c == conn => {
                    att.1 += 1;
                    att.0 = Attachment::Detached(att.1);
                    att.1
                }
                _ => return,
            }
        };
        session.sink.send_replace(None);
        let this = Arc::downgrade(self);
        let session = Arc::downgrade(session);
        let ttl = self.limits.session_ttl;
        tokio::spawn(async move {
            tokio::time::sleep(ttl).await;
            let (Some(this), Some(session)) = (this.upgrade(), session.upgrade()) else {
                return;
            };
            this.expire(&session, generation);
        });
    }

    fn expire(&self, session: &Arc<Session>, generation: u64) {
        {
            let att = session.attachment.lock().unwrap_or_else(|e| e.into_inner());
            if !matches!(att.0, Attachment::Detached(g) if g == generation) {
                return;
            }
        }
        tracing::info!(session = %session.id, "detached session expired");
        self.map().remove(&session.id);
        session.shutdown();
    }

    /// Kills every session's processes (server shutdown).
    pub fn shutdown_all(&self) {
        let sessions: Vec<Arc<Session>> = self.map().drain().map(|(_, s)| s).collect();
        for s in sessions {
            s.shutdown();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgotten_ids_are_bounded_oldest_first() {
        let mut f = Forgotten::default();
        for i in 0..=FORGOTTEN_IDS {
            f.add(&format!("p{i}"));
        }
        f.add("p5"); // already there: not added twice
        assert_eq!(f.order.len(), FORGOTTEN_IDS);
        assert_eq!(f.ids.len(), FORGOTTEN_IDS);
        assert!(!f.ids.contains("p0"), "the oldest went");
        assert!(f.ids.contains("p1") && f.ids.contains(&format!("p{FORGOTTEN_IDS}")));
        f.remove("p7");
        assert!(!f.ids.contains("p7"));
        assert_eq!(f.order.len(), FORGOTTEN_IDS - 1);
    }
}
