//! `MissingWatches`: one connection's `fs/watchMissing` watches (spec §5.11).
//!
//! A watch is a set of paths the client expects to be missing; it fires once, when any of
//! them exists (an `lstat` succeeds), and is then removed. A path that already exists when
//! the watch is added fires at the first check. Firing runs the future the caller attached
//! to the watch (the server sends `fs/missingChanged` there), so this module knows nothing
//! about the wire.
//!
//! One task per connection, started by the first watch, does the checking. It watches the
//! nearest existing ancestor directory of every watched path with inotify (creation, move
//! in, deletion or move of the directory itself) and re-checks on every event; a poll every
//! [`POLL_INTERVAL`] covers what inotify cannot see (a directory it could not watch, an
//! overflowed queue, a path swapped by another mount). Checks run on the blocking pool.
//!
//! Bounds per connection: at most [`MAX_WATCHES`] live watches and [`MAX_WATCHED_PATHS`]
//! paths across them (so at most that many inotify watches); past either the request fails.
//! Everything is released by [`MissingWatches::close`] or when the value is dropped.

use std::collections::{HashMap, HashSet};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Live watches per connection.
pub const MAX_WATCHES: usize = 64;
/// Watched paths per connection, across its live watches.
pub const MAX_WATCHED_PATHS: usize = 1024;
/// How often every watched path is checked even without an inotify event.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Why a watch was refused.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The connection has [`MAX_WATCHES`] live watches.
    #[error("too many fs/watchMissing watches on this connection (at most {MAX_WATCHES})")]
    TooManyWatches,
    /// The watch would take the connection past [`MAX_WATCHED_PATHS`].
    #[error(
        "too many watched paths on this connection (at most {MAX_WATCHED_PATHS} across its watches)"
    )]
    TooManyPaths,
    /// The connection is closing.
    #[error("the connection is closing")]
    Closed,
}

/// What a watch runs when it fires.
pub type OnFire = BoxFuture<'static, ()>;

struct Watch {
    paths: Vec<PathBuf>,
    on_fire: OnFire,
}

#[derive(Default)]
struct State {
    watches: HashMap<u64, Watch>,
    paths: usize,
    started: bool,
    closed: bool,
}

/// One connection's missing-path watches.
#[derive(Default)]
pub struct MissingWatches {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    wake: Notify,
    cancel: CancellationToken,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl MissingWatches {
    /// Adds watch `id` over `paths`; `on_fire` runs once when one of them exists. Returns
    /// `false` (and adds nothing) when `paths` is empty or `id` is already watching.
    pub fn add(&self, id: u64, paths: Vec<PathBuf>, on_fire: OnFire) -> Result<bool, WatchError> {
        let mut st = self.inner.lock();
        if st.closed {
            return Err(WatchError::Closed);
        }
        if paths.is_empty() || st.watches.contains_key(&id) {
            return Ok(false);
        }
        if st.watches.len() >= MAX_WATCHES {
            return Err(WatchError::TooManyWatches);
        }
        if st.paths + paths.len() > MAX_WATCHED_PATHS {
            return Err(WatchError::TooManyPaths);
        }
        st.paths += paths.len();
        st.watches.insert(id, Watch { paths, on_fire });
        if !st.started {
            st.started = true;
            tokio::spawn(run(self.inner.clone()));
        }
        drop(st);
        self.inner.wake.notify_one();
        Ok(true)
    }

    /// The number of live watches.
    pub fn len(&self) -> usize {
        self.inner.lock().watches.len()
    }

    /// No live watch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every watch and stops the checking task; later `add`s fail.
    pub fn close(&self) {
        let mut st = self.inner.lock();
        st.closed = true;
        st.watches.clear();
        st.paths = 0;
        drop(st);
        self.inner.cancel.cancel();
    }
}

impl Drop for MissingWatches {
    fn drop(&mut self) {
        self.close();
    }
}

/// The checking task of one connection.
async fn run(inner: Arc<Inner>) {
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
        .ok()
        .and_then(|i| {
            // Readiness is registered on a duplicate of the descriptor (same open file).
            let fd = i.as_fd().try_clone_to_owned().ok()?;
            Some((i, crate::pty::register(fd).ok()?))
        });
    if inotify.is_none() {
        tracing::warn!("inotify unavailable; fs/watchMissing falls back to polling");
    }
    let mut armed: HashMap<PathBuf, WatchDescriptor> = HashMap::new();
    loop {
        let watched: Vec<(u64, Vec<PathBuf>)> = inner
            .lock()
            .watches
            .iter()
            .map(|(id, w)| (*id, w.paths.clone()))
            .collect();
        let checked = tokio::task::spawn_blocking(move || check(watched)).await;
        let Ok((fired, dirs)) = checked else {
            return;
        };
        let mut ready = Vec::new();
        {
            let mut st = inner.lock();
            for id in fired {
                if let Some(w) = st.watches.remove(&id) {
                    st.paths -= w.paths.len();
                    ready.push(w.on_fire);
                }
            }
        }
        for on_fire in ready {
            tokio::select! {
                _ = on_fire => {}
                _ = inner.cancel.cancelled() => return,
            }
        }
        if let Some((i, _)) = &inotify {
            rearm(i, &mut armed, dirs);
        }
        let event = async {
            match &inotify {
                Some((i, fd)) => match fd.readable().await {
                    Ok(mut guard) => {
                        // Drain the queue; the events only mean "check again".
                        while i.read_events().is_ok() {}
                        guard.clear_ready();
                    }
                    Err(_) => std::future::pending().await,
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = inner.cancel.cancelled() => return,
            _ = inner.wake.notified() => {}
            _ = event => {}
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
}

/// The watches with an existing path, and the directories to watch for the others.
fn check(watched: Vec<(u64, Vec<PathBuf>)>) -> (Vec<u64>, HashSet<PathBuf>) {
    let mut fired = Vec::new();
    let mut dirs = HashSet::new();
    for (id, paths) in watched {
        if paths.iter().any(|p| p.symlink_metadata().is_ok()) {
            fired.push(id);
            continue;
        }
        dirs.extend(paths.iter().filter_map(|p| nearest_existing_dir(p)));
    }
    (fired, dirs)
}

fn nearest_existing_dir(path: &Path) -> Option<PathBuf> {
    path.ancestors()
        .skip(1)
        .find(|a| a.is_dir())
        .map(Path::to_path_buf)
}

/// Makes the inotify watches match `dirs`.
fn rearm(inotify: &Inotify, armed: &mut HashMap<PathBuf, WatchDescriptor>, dirs: HashSet<PathBuf>) {
    armed.retain(|dir, wd| {
        let keep = dirs.contains(dir);
        if !keep {
            let _ = inotify.rm_watch(*wd);
        }
        keep
    });
    let flags = AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_ONLYDIR;
    for dir in dirs {
        if armed.contains_key(&dir) {
            continue;
        }
        // A directory we cannot watch is still covered by the poll.
        if let Ok(wd) = inotify.add_watch(dir.as_path(), flags) {
            armed.insert(dir, wd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    fn fire() -> (OnFire, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (
            Box::pin(async move {
                let _ = tx.send(());
            }),
            rx,
        )
    }

    #[tokio::test]
    async fn fires_once_when_a_nested_path_appears() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a/b/c");
        let watches = MissingWatches::default();
        let (f, mut rx) = fire();
        assert!(watches.add(1, vec![target.clone()], f).unwrap());
        let (f2, _) = fire();
        assert!(!watches.add(1, vec![target.clone()], f2).unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(rx.try_recv().is_err());
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(&target, b"x").unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .unwrap()
            .unwrap();
        assert!(watches.is_empty());
    }

    #[tokio::test]
    async fn empty_lists_and_limits() {
        let watches = MissingWatches::default();
        let (f, _) = fire();
        assert!(!watches.add(1, Vec::new(), f).unwrap());
        for id in 0..MAX_WATCHES as u64 {
            let (f, _) = fire();
            assert!(watches
                .add(id, vec![PathBuf::from("/nonexistent/x")], f)
                .unwrap());
        }
        let (f, _) = fire();
        assert!(matches!(
            watches.add(999, vec![PathBuf::from("/nonexistent/y")], f),
            Err(WatchError::TooManyWatches)
        ));
        watches.close();
        let (f, _) = fire();
        assert!(matches!(
            watches.add(1000, vec![PathBuf::from("/x")], f),
            Err(WatchError::Closed)
        ));
    }
}
