//! The guard helper: the exec-server binary re-executed with a hidden first argument. It
//! becomes the reaper of the guarded tree (a child subreaper, so an orphan that left with
//! `setsid` and a double fork stays its descendant), forks the command's process, which
//! installs the exec filter, passes the filter's listener to the supervisor over the
//! inherited socket and executes the command. The helper waits for the command, then kills
//! whatever the command left behind, so nothing of the tree outlives the call, and exits with
//! the command's status (128 + signal for a signal death).
//!
//! `SIGTERM`, `SIGINT`, `SIGHUP` and the parent's death (`PR_SET_PDEATHSIG`) make the helper
//! kill the whole tree and exit.

use std::ffi::OsString;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::filter;

/// The hidden first argument that selects the guard helper.
pub const GUARD_HELPER_ARG: &str = "--exec-server-exec-guard";

/// Exit status of the helper when it cannot guard the command (nothing was run).
pub const EXIT_GUARD_FAILED: i32 = 125;

/// The argv that runs `argv` under the guard through the helper: `exe` is the exec-server
/// binary, `socket` the descriptor number of the supervisor's socket in the child (it must be
/// inherited: not close-on-exec).
pub fn wrap_argv(exe: &str, socket: RawFd, argv: &[String]) -> Vec<String> {
    let mut out = vec![
        exe.to_string(),
        GUARD_HELPER_ARG.to_string(),
        socket.to_string(),
        "--".to_string(),
    ];
    out.extend(argv.iter().cloned());
    out
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// The helper: `args` are the process arguments after [`GUARD_HELPER_ARG`]. Returns the exit
/// status to use.
pub fn helper_main(args: &[OsString]) -> i32 {
    let fail = |msg: String| {
        eprintln!("exec-server exec guard: {msg}");
        EXIT_GUARD_FAILED
    };
    let socket: RawFd = match args.first().and_then(|a| a.to_str()).map(str::parse) {
        Some(Ok(fd)) if fd > 2 => fd,
        _ => return fail("missing or bad socket descriptor".into()),
    };
    if args.get(1).map(|a| a != "--").unwrap_or(true) || args.len() < 3 {
        return fail("missing command".into());
    }
    // SAFETY: the caller passed this descriptor for us to own.
    #[allow(unsafe_code)]
    let socket = unsafe { OwnedFd::from_raw_fd(socket) };
    // The parent-death signal follows the thread that spawned the helper: the server spawns
    // from a tokio worker thread, which lives as long as the server's runtime.
    #[allow(unsafe_code)]
    // SAFETY: plain prctls with integer arguments; the process is still single-threaded.
    let parent = unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0);
        libc::getppid()
    };
    if parent == 1 {
        return fail("the server went away".into());
    }
    // SAFETY: the helper is single-threaded here, so the child may run any code before exec.
    #[allow(unsafe_code)]
    let child = unsafe { libc::fork() };
    if child < 0 {
        return fail(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if child == 0 {
        // SAFETY: back to the default for the command.
        #[allow(unsafe_code)]
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0);
        }
        std::process::exit(run_command(socket, &args[2..]));
    }
    drop(socket);
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: `on_stop` only stores to an atomic, which is async-signal-safe; no
        // SA_RESTART, so the signal interrupts the wait in `reap`.
        #[allow(unsafe_code)]
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_stop as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
    reap(child)
}

/// In the forked child: install the filter, hand its listener over, run the command.
fn run_command(socket: OwnedFd, argv: &[OsString]) -> i32 {
    use std::os::fd::AsRawFd;
    let listener = match filter::install() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("exec-server exec guard: cannot install the exec filter: {e}");
            return EXIT_GUARD_FAILED;
        }
    };
    if let Err(e) = exec_server_sandbox::fdpass::send_fd(socket.as_raw_fd(), Some(&listener)) {
        eprintln!("exec-server exec guard: cannot reach the supervisor: {e}");
        return EXIT_GUARD_FAILED;
    }
    drop(listener);
    drop(socket);
    #[allow(clippy::disallowed_methods)] // exec in place: no new process is created here
    let err = std::process::Command::new(&argv[0]).args(&argv[1..]).exec();
    eprintln!(
        "exec-server exec guard: {}: {err}",
        argv[0].to_string_lossy()
    );
    if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

/// Reaps every process that comes to the helper until the command has exited and nothing is
/// left; kills the rest once the command is gone or a stop signal arrived.
fn reap(command: libc::pid_t) -> i32 {
    let mut status_of_command: Option<i32> = None;
    loop {
        // Once the command is gone (or a stop came), everything left is killed; again after
        // each reaped process, in case one forked between a scan and its kill.
        if status_of_command.is_some() || STOP.load(Ordering::SeqCst) {
            kill_descendants();
        }
        let mut status = 0;
        // SAFETY: waits for any child; `status` is a valid out-pointer.
        #[allow(unsafe_code)]
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid < 0 {
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                _ => break, // ECHILD: nothing left
            }
        }
        if pid == command {
            status_of_command = Some(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            });
        }
    }
    status_of_command.unwrap_or(128 + libc::SIGKILL)
}

/// SIGKILL to every descendant of this process.
fn kill_descendants() {
    // SAFETY: getpid has no preconditions.
    #[allow(unsafe_code)]
    let me = unsafe { libc::getpid() };
    for pid in exec_server_core::spawn::descendants_of(me) {
        // SAFETY: plain kill(2).
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}
