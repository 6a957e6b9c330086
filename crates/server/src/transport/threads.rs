//! Connection threads: each WebSocket connection's socket, reader, writer and the requests
//! that complete at once run on one of a few threads, each with its own single-threaded tokio
//! runtime; requests that wait (and every `process/start`) run on the server's multi-thread
//! runtime.
//!
//! Why: on the multi-thread runtime a round trip woke a second worker every time (a worker
//! that leaves its park to run a task tells another one to look for work: two `futex` calls
//! and a wake-up of another CPU per request). On a connection thread a request costs one
//! `epoll_wait`, one read and one write, and nothing else runs there by default. Measured
//! on the 2-vCPU bench machine (docs/benchmarks.md): rpc p50 ~50 → ~39 µs.
//!
//! Connections are handed out round-robin. The threads live as long as the [`ConnectionThreads`]
//! value; dropping it stops them (their tasks are dropped, blocking work is left to finish
//! in the background).

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// Most connection threads (the default is one per CPU, up to this).
pub const MAX_CONNECTION_THREADS: usize = 16;

/// A few single-threaded runtimes, each on its own thread.
#[derive(Debug)]
pub struct ConnectionThreads {
    handles: Vec<Handle>,
    next: AtomicUsize,
    _stop: Vec<oneshot::Sender<()>>,
}

impl ConnectionThreads {
    /// Starts `n` threads (at least 1, at most [`MAX_CONNECTION_THREADS`]).
    pub fn start(n: usize) -> std::io::Result<Self> {
        let n = n.clamp(1, MAX_CONNECTION_THREADS);
        let mut handles = Vec::with_capacity(n);
        let mut stop = Vec::with_capacity(n);
        for i in 0..n {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let (tx, rx) = oneshot::channel::<()>();
            stop.push(tx);
            std::thread::Builder::new()
                .name(format!("exec-conn-{i}"))
                .spawn(move || {
                    // Runs the thread's tasks until the owner is dropped.
                    runtime.block_on(async {
                        let _ = rx.await;
                    });
                    runtime.shutdown_background();
                })?;
        }
        Ok(ConnectionThreads {
            handles,
            next: AtomicUsize::new(0),
            _stop: stop,
        })
    }

    /// The default number of threads: one per CPU, at most [`MAX_CONNECTION_THREADS`].
    pub fn default_count() -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(MAX_CONNECTION_THREADS)
    }

    /// The runtime of the next connection (round-robin).
    pub fn pick(&self) -> &Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[i]
    }

    /// How many threads there are.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Never true: there is always at least one thread.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_over_threads_that_run_tasks() {
        let threads = ConnectionThreads::start(2).expect("threads");
        assert_eq!(threads.len(), 2);
        let names: Vec<String> = (0..4)
            .map(|_| {
                let (tx, rx) = std::sync::mpsc::channel();
                threads.pick().spawn(async move {
                    let name = std::thread::current().name().unwrap_or("").to_string();
                    let _ = tx.send(name);
                });
                rx.recv_timeout(std::time::Duration::from_secs(5))
                    .expect("task ran")
            })
            .collect();
        assert_eq!(
            names,
            ["exec-conn-0", "exec-conn-1", "exec-conn-0", "exec-conn-1"]
        );
    }

    #[test]
    fn clamps_the_count() {
        assert_eq!(ConnectionThreads::start(0).expect("threads").len(), 1);
        assert!(ConnectionThreads::default_count() >= 1);
    }
}
