//! Every `execve` of a process tree, stopped and decided by a supervisor.
//!
//! The guarded command runs under a seccomp filter whose `execve(2)` and `execveat(2)` return
//! `SECCOMP_RET_USER_NOTIF`: the calling thread stops in the kernel and the supervisor, which
//! holds the filter's listener descriptor, receives the call, reads the program path and
//! `argv` out of the caller's memory ([`memory`]), resolves what it would run in the caller's
//! view of the filesystem ([`resolve`]), and answers: continue, or fail with an errno. The
//! filter is inherited by every descendant and cannot be removed, so a shell's children, a
//! script's interpreter, `env`, `xargs`, `find -exec` and a process that left with `setsid`
//! are all caught, with any unmodified shell.
//!
//! The pieces:
//! - [`filter`]: the BPF program and its installation (with `no_new_privs`);
//! - [`helper`]: the hidden helper mode of the exec-server binary that installs the filter,
//!   passes the listener to the supervisor over an inherited socket, runs the command and
//!   reaps (and at the end kills) the whole tree;
//! - [`supervisor`]: the thread that receives the stopped execs and hands them out as
//!   [`ExecRequest`]s to be allowed or denied, several open at once;
//! - [`notify`], [`memory`], [`resolve`]: the ioctls, the memory reads, the decoding.
//!
//! **Time of check and time of use.** The kernel reads the path and `argv` again when the exec
//! continues. Between the supervisor's read and that, the caller is stopped, so for a
//! single-threaded caller (every shell, `env`, `xargs`, `find`) nothing can change them; the
//! supervisor also checks the notification is still pending after reading (so the pid was not
//! reused) and reads everything again just before letting the exec continue, refusing it if
//! anything changed. What stays open is documented in `docs/mcp-serve.md` ("What is caught").

pub mod filter;
pub mod helper;
pub mod memory;
pub mod notify;
pub mod resolve;
pub mod supervisor;

pub use helper::{helper_main, wrap_argv, EXIT_GUARD_FAILED, GUARD_HELPER_ARG};
pub use resolve::{Exec, Subject};
pub use supervisor::{supervise, ExecRequest, Triage};
