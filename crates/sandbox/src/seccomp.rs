//! The seccomp filter of a network-restricted sandbox: `socket(2)` is refused (`EPERM`)
//! for every domain but `AF_UNIX` (and `AF_INET`/`AF_INET6` in a managed network, whose
//! namespace is the boundary), `io_uring_setup(2)` is refused (io_uring can open sockets),
//! and system calls of a foreign ABI kill the process.

use crate::bpf::*;

/// The BPF program; `allow_ip` also lets `AF_INET` and `AF_INET6` sockets through.
pub(crate) fn network_filter(allow_ip: bool) -> Vec<libc::sock_filter> {
    let eperm = RET_ERRNO | libc::EPERM as u32;
    let mut prog = vec![
        stmt(LD_W_ABS, ARCH_OFFSET),
        jump(JEQ_K, AUDIT_ARCH, 1, 0),
        stmt(RET_K, RET_KILL_PROCESS),
        stmt(LD_W_ABS, NR_OFFSET),
        jump(JGE_K, X32_BIT, 0, 1),
        stmt(RET_K, eperm),
        jump(JEQ_K, libc::SYS_io_uring_setup as u32, 0, 1),
        stmt(RET_K, eperm),
        jump(JEQ_K, libc::SYS_socket as u32, 1, 0),
        stmt(RET_K, RET_ALLOW),
        stmt(LD_W_ABS, ARG0_OFFSET),
    ];
    let mut domains = vec![libc::AF_UNIX as u32];
    if allow_ip {
        domains.extend([libc::AF_INET as u32, libc::AF_INET6 as u32]);
    }
    for domain in domains {
        prog.push(jump(JEQ_K, domain, 0, 1));
        prog.push(stmt(RET_K, RET_ALLOW));
    }
    prog.push(stmt(RET_K, eperm));
    prog
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_jump_lands_inside_the_program() {
        for allow_ip in [false, true] {
            let prog = network_filter(allow_ip);
            for (i, ins) in prog.iter().enumerate() {
                if ins.code & 0x07 == libc::BPF_JMP as u16 {
                    assert!(i + 1 + (ins.jt.max(ins.jf) as usize) < prog.len());
                }
            }
            assert_eq!(
                prog.last().map(|i| i.code),
                Some((libc::BPF_RET | libc::BPF_K) as u16)
            );
        }
    }
}
