//! Building blocks of classic-BPF seccomp programs, shared by the sandbox's network filter
//! and the exec guard's filter (`exec-server-execguard`).

/// `seccomp_data.nr`.
pub const NR_OFFSET: u32 = 0;
/// `seccomp_data.arch`.
pub const ARCH_OFFSET: u32 = 4;
/// Low word of `seccomp_data.args[0]` (little-endian).
pub const ARG0_OFFSET: u32 = 16;

/// Let the call run.
pub const RET_ALLOW: u32 = 0x7fff_0000;
/// Kill the process.
pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
/// Fail the call with the errno in the low 16 bits.
pub const RET_ERRNO: u32 = 0x0005_0000;
/// Stop the call and notify the supervisor holding the listener.
pub const RET_USER_NOTIF: u32 = 0x7fc0_0000;

/// The audit architecture of this build.
#[cfg(target_arch = "x86_64")]
pub const AUDIT_ARCH: u32 = 0xC000_003E;
/// The audit architecture of this build.
#[cfg(target_arch = "aarch64")]
pub const AUDIT_ARCH: u32 = 0xC000_00B7;

/// x32 system calls carry this bit on x86_64.
pub const X32_BIT: u32 = 0x4000_0000;

/// Load a 32-bit word of `seccomp_data`.
pub const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
/// Jump if the accumulator equals `k`.
pub const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
/// Jump if the accumulator is at least `k`.
pub const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
/// Return `k`.
pub const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// An instruction without jumps.
pub fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// A conditional jump: `jt` / `jf` instructions forward.
pub fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}
