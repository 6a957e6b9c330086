//! The seccomp program of a guarded tree: `execve(2)` and `execveat(2)` wait for the
//! supervisor (`SECCOMP_RET_USER_NOTIF`); the same calls through a foreign ABI (i386 via
//! `int 0x80`, x32), which the supervisor could not decode, fail with `EPERM`; every other
//! system call is allowed.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use exec_server_sandbox::bpf::{
    jump, stmt, ARCH_OFFSET, AUDIT_ARCH, JEQ_K, LD_W_ABS, NR_OFFSET, RET_ALLOW, RET_ERRNO, RET_K,
    RET_USER_NOTIF, X32_BIT,
};

const SECCOMP_SET_MODE_FILTER: libc::c_long = 1;
const FLAG_NEW_LISTENER: libc::c_long = 1 << 3;
/// Once the supervisor has received a notification, only a fatal signal interrupts the wait
/// (Linux 5.19): a stray `SIGCHLD` does not restart the call and ask the user twice.
const FLAG_WAIT_KILLABLE_RECV: libc::c_long = 1 << 5;

/// The exec calls of the foreign ABIs (i386 through `int 0x80`), refused outright.
#[cfg(target_arch = "x86_64")]
const FOREIGN_EXECS: &[u32] = &[11, 358];
/// The x32 exec calls: they arrive with the native arch and the x32 bit in the number.
#[cfg(target_arch = "x86_64")]
const NATIVE_REFUSED: &[u32] = &[X32_BIT | 520, X32_BIT | 545];
/// The exec calls of 32-bit ARM, refused outright.
#[cfg(target_arch = "aarch64")]
const FOREIGN_EXECS: &[u32] = &[11, 387];
#[cfg(target_arch = "aarch64")]
const NATIVE_REFUSED: &[u32] = &[];

/// Appends "for each of `numbers`: if nr == it, return EPERM" (the accumulator holds nr).
fn refuse(prog: &mut Vec<libc::sock_filter>, numbers: &[u32]) {
    for nr in numbers {
        prog.push(jump(JEQ_K, *nr, 0, 1));
        prog.push(stmt(RET_K, RET_ERRNO | libc::EPERM as u32));
    }
}

/// The BPF program.
pub fn exec_filter() -> Vec<libc::sock_filter> {
    let mut foreign = vec![stmt(LD_W_ABS, NR_OFFSET)];
    refuse(&mut foreign, FOREIGN_EXECS);
    foreign.push(stmt(RET_K, RET_ALLOW));

    let mut prog = vec![
        stmt(LD_W_ABS, ARCH_OFFSET),
        jump(JEQ_K, AUDIT_ARCH, foreign.len() as u8, 0),
    ];
    prog.extend(foreign);
    prog.push(stmt(LD_W_ABS, NR_OFFSET));
    refuse(&mut prog, NATIVE_REFUSED);
    prog.push(jump(JEQ_K, libc::SYS_execve as u32, 2, 0));
    prog.push(jump(JEQ_K, libc::SYS_execveat as u32, 1, 0));
    prog.push(stmt(RET_K, RET_ALLOW));
    prog.push(stmt(RET_K, RET_USER_NOTIF));
    prog
}

/// Installs the filter on the calling thread (which must be the process's only thread) and
/// returns the listener: the descriptor on which the supervisor receives each exec. Sets
/// `no_new_privs` first, as an unprivileged filter requires (so set-user-ID programs do not
/// gain privileges under the guard).
pub(crate) fn install() -> io::Result<OwnedFd> {
    install_program(&exec_filter())
}

/// [`install`] with a program built beforehand: allocates nothing, so it may run between
/// `fork` and `exec` (a `pre_exec` hook).
pub fn install_program(prog: &[libc::sock_filter]) -> io::Result<OwnedFd> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: plain prctl with integer arguments.
    #[allow(unsafe_code)]
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut flags = FLAG_NEW_LISTENER | FLAG_WAIT_KILLABLE_RECV;
    loop {
        // SAFETY: `fprog` points at `prog`, which outlives the call; the kernel copies it.
        #[allow(unsafe_code)]
        let fd = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                flags,
                &fprog as *const libc::sock_fprog,
            )
        };
        if fd >= 0 {
            // SAFETY: the kernel returned a new descriptor that nothing else owns.
            #[allow(unsafe_code)]
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        }
        let err = io::Error::last_os_error();
        // Before Linux 5.19 the killable wait does not exist: go on without it.
        if err.raw_os_error() == Some(libc::EINVAL) && flags & FLAG_WAIT_KILLABLE_RECV != 0 {
            flags &= !FLAG_WAIT_KILLABLE_RECV;
            continue;
        }
        return Err(err);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_jump_lands_inside_the_program_and_it_ends_in_a_return() {
        let prog = exec_filter();
        for (i, ins) in prog.iter().enumerate() {
            if ins.code & 0x07 == libc::BPF_JMP as u16 {
                assert!(
                    i + 1 + (ins.jt.max(ins.jf) as usize) < prog.len(),
                    "jump at {i}"
                );
            }
        }
        assert_eq!(prog.last().map(|i| i.code), Some(RET_K));
        assert!(prog.len() < 64);
    }

    #[test]
    fn both_exec_calls_are_sent_to_the_supervisor() {
        let prog = exec_filter();
        let notif_at = prog.len() - 1;
        for nr in [libc::SYS_execve as u32, libc::SYS_execveat as u32] {
            let (i, ins) = prog
                .iter()
                .enumerate()
                .find(|(_, ins)| ins.code == JEQ_K && ins.k == nr)
                .expect("the call is tested");
            assert_eq!(i + 1 + ins.jt as usize, notif_at);
        }
        assert_eq!(prog[notif_at].k, RET_USER_NOTIF);
    }
}
