//! The user-notification ioctls on a listener descriptor: receive one stopped call, check
//! that it is still pending, and answer it (let it continue, or fail it with an errno).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// One stopped system call, as the kernel reported it.
#[derive(Debug, Clone, Copy)]
pub struct Notification {
    /// The cookie every answer names.
    pub id: u64,
    /// The caller (a thread id, in the supervisor's PID namespace).
    pub pid: i32,
    /// The system call number.
    pub nr: i64,
    /// Its six arguments.
    pub args: [u64; 6],
}

/// Waits for the next notification. `Ok(None)` when the stopped caller went away before it
/// could be received (the kernel's `ENOENT`) or the wait was interrupted: try again.
pub fn receive(listener: &OwnedFd) -> io::Result<Option<Notification>> {
    // SAFETY: a zeroed seccomp_notif is what the kernel requires on input.
    #[allow(unsafe_code)]
    let mut notif: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: `notif` is a valid, writable seccomp_notif for the ioctl.
    #[allow(unsafe_code)]
    let r = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_RECV as _,
            &mut notif as *mut libc::seccomp_notif,
        )
    };
    if r < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::EINTR) => Ok(None),
            _ => Err(err),
        };
    }
    Ok(Some(Notification {
        id: notif.id,
        pid: notif.pid as i32,
        nr: notif.data.nr as i64,
        args: notif.data.args,
    }))
}

/// Whether the call `id` is still waiting: after reading the caller's memory, this proves the
/// memory read was the caller's (its pid was not reused by another process meanwhile).
pub fn still_pending(listener: &OwnedFd, id: u64) -> bool {
    let mut id = id;
    // SAFETY: the ioctl reads one u64.
    #[allow(unsafe_code)]
    let r = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID as _,
            &mut id as *mut u64,
        )
    };
    r == 0
}

/// How a stopped call ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The kernel runs the call as the caller made it.
    Continue,
    /// The call fails with this errno.
    Fail(i32),
}

/// Answers the call `id`. An error `ENOENT` means the caller is gone (killed, or the call
/// was interrupted): nothing to do.
pub fn answer(listener: &OwnedFd, id: u64, answer: Answer) -> io::Result<()> {
    let (error, flags) = match answer {
        Answer::Continue => (0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32),
        Answer::Fail(errno) => (-errno.abs(), 0),
    };
    let mut resp = libc::seccomp_notif_resp {
        id,
        val: 0,
        error,
        flags,
    };
    // SAFETY: `resp` is a valid seccomp_notif_resp for the ioctl.
    #[allow(unsafe_code)]
    let r = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND as _,
            &mut resp as *mut libc::seccomp_notif_resp,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
