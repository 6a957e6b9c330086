//! Thin wrappers over the system calls the sandbox needs and `libc` does not wrap: the new
//! mount API, Landlock, seccomp, capabilities. Each returns `io::Result` and owns the
//! descriptors it creates.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub(crate) const OPEN_TREE_CLONE: libc::c_uint = 1;
pub(crate) const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
pub(crate) const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub(crate) const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub(crate) const MOUNT_ATTR_NODEV: u64 = 0x4;
pub(crate) const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

pub(crate) fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn owned(ret: libc::c_long) -> io::Result<OwnedFd> {
    let fd = check(ret)? as RawFd;
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    #[allow(unsafe_code)]
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `unshare(2)`.
pub(crate) fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: unshare takes flags only and touches no memory of ours.
    #[allow(unsafe_code)]
    let r = unsafe { libc::unshare(flags) };
    check(r as libc::c_long).map(drop)
}

/// Makes every mount below `/` private, so nothing we do propagates out.
pub(crate) fn make_root_private() -> io::Result<()> {
    let root = c"/";
    // SAFETY: all pointers are valid NUL-terminated strings or null, as mount(2) allows.
    #[allow(unsafe_code)]
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    check(r as libc::c_long).map(drop)
}

/// `open_tree(path, OPEN_TREE_CLONE | AT_RECURSIVE)`: a detached copy of the mount tree.
pub(crate) fn clone_tree(dirfd: RawFd, path: &Path) -> io::Result<OwnedFd> {
    let c = cstring(path)?;
    let flags = OPEN_TREE_CLONE | AT_RECURSIVE | libc::O_CLOEXEC as libc::c_uint;
    // SAFETY: `c` is a valid C string for the duration of the call.
    #[allow(unsafe_code)]
    let r = unsafe { libc::syscall(libc::SYS_open_tree, dirfd, c.as_ptr(), flags) };
    owned(r)
}

/// `mount_setattr` adding `set` to the mount at `path` (relative to `dirfd`, empty path =
/// `dirfd` itself), recursively.
pub(crate) fn set_mount_attr(dirfd: RawFd, path: &Path, set: u64) -> io::Result<()> {
    let c = cstring(path)?;
    let mut flags = AT_RECURSIVE;
    if path.as_os_str().is_empty() {
        flags |= libc::AT_EMPTY_PATH as libc::c_uint;
    }
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `c` and `attr` outlive the call and the size matches the struct.
    #[allow(unsafe_code)]
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            c.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    check(r).map(drop)
}

/// Attaches the detached mount `tree` at `target`.
pub(crate) fn move_mount(tree: &OwnedFd, target: &Path) -> io::Result<()> {
    let target = cstring(target)?;
    let empty = c"";
    // SAFETY: both strings outlive the call; `tree` is an open mount descriptor.
    #[allow(unsafe_code)]
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    check(r).map(drop)
}

/// A new detached tmpfs with the given options and mount attributes.
pub(crate) fn tmpfs(options: &[(&str, &str)], attrs: u64) -> io::Result<OwnedFd> {
    let fstype = c"tmpfs";
    // SAFETY: `fstype` is a valid C string.
    #[allow(unsafe_code)]
    let fs = owned(unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) })?;
    for (key, value) in options {
        let k = CString::new(*key).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let v = CString::new(*value).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `k` and `v` are valid C strings; `fs` is an fs context descriptor.
        #[allow(unsafe_code)]
        let r = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_SET_STRING,
                k.as_ptr(),
                v.as_ptr(),
                0,
            )
        };
        check(r)?;
    }
    // SAFETY: no pointers; `fs` is an fs context descriptor.
    #[allow(unsafe_code)]
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    };
    check(r)?;
    // SAFETY: no pointers; `fs` is a created fs context.
    #[allow(unsafe_code)]
    let r = unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) };
    owned(r)
}

/// Creates an empty file with mode 000 named `name` below the directory `dirfd`.
pub(crate) fn create_empty_file(dirfd: &OwnedFd, name: &str) -> io::Result<()> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid C string; the returned descriptor is closed right away.
    #[allow(unsafe_code)]
    let r = unsafe {
        libc::openat(
            dirfd.as_raw_fd(),
            c.as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC,
            0 as libc::c_uint,
        )
    };
    owned(r as libc::c_long).map(drop)
}

/// `prctl(PR_SET_NO_NEW_PRIVS, 1)`.
pub(crate) fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: integer arguments only.
    #[allow(unsafe_code)]
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    check(r as libc::c_long).map(drop)
}

/// Empties the bounding, ambient, effective, permitted and inheritable capability sets.
pub(crate) fn drop_all_capabilities() -> io::Result<()> {
    for cap in 0..64 {
        // SAFETY: integer arguments only.
        #[allow(unsafe_code)]
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            // EINVAL: past the kernel's last capability.
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(e);
            }
        }
    }
    // SAFETY: integer arguments only.
    #[allow(unsafe_code)]
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    check(r as libc::c_long)?;
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: header and data match the version-3 capset layout and outlive the call.
    #[allow(unsafe_code)]
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    check(r).map(drop)
}

/// The Landlock ABI version, or `None` when the kernel has no Landlock.
pub(crate) fn landlock_abi() -> Option<u32> {
    // SAFETY: a null attribute with size 0 and the VERSION flag only queries the ABI.
    #[allow(unsafe_code)]
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    u32::try_from(r).ok().filter(|v| *v > 0)
}

/// A Landlock ruleset handling `handled` filesystem accesses.
pub(crate) fn landlock_ruleset(handled: u64) -> io::Result<OwnedFd> {
    let attr: u64 = handled;
    // SAFETY: the attribute is the 8-byte v1 layout (handled_access_fs) and outlives the call.
    #[allow(unsafe_code)]
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const u64,
            8usize,
            0u32,
        )
    };
    owned(r)
}

/// Allows `access` beneath the open path `parent`.
pub(crate) fn landlock_allow(ruleset: &OwnedFd, parent: &OwnedFd, access: u64) -> io::Result<()> {
    #[repr(C, packed)]
    struct PathBeneath {
        allowed_access: u64,
        parent_fd: i32,
    }
    let attr = PathBeneath {
        allowed_access: access,
        parent_fd: parent.as_raw_fd(),
    };
    // SAFETY: `attr` has the kernel's packed layout and outlives the call.
    #[allow(unsafe_code)]
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset.as_raw_fd(),
            1u32, // LANDLOCK_RULE_PATH_BENEATH
            &attr as *const PathBeneath,
            0u32,
        )
    };
    check(r).map(drop)
}

/// Restricts this thread (and what it executes) to `ruleset`.
pub(crate) fn landlock_restrict_self(ruleset: &OwnedFd) -> io::Result<()> {
    // SAFETY: integer arguments only.
    #[allow(unsafe_code)]
    let r = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0u32) };
    check(r).map(drop)
}

/// Opens `path` with `O_PATH` (for Landlock rules).
pub(crate) fn open_path(path: &Path) -> io::Result<OwnedFd> {
    let c = cstring(path)?;
    // SAFETY: `c` is a valid C string.
    #[allow(unsafe_code)]
    let r = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    owned(r as libc::c_long)
}

/// Installs a seccomp BPF program (`no_new_privs` must already be set).
pub(crate) fn install_seccomp(filter: &[libc::sock_filter]) -> io::Result<()> {
    let len = u16::try_from(filter.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "seccomp filter too long"))?;
    let prog = libc::sock_fprog {
        len,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `filter`, which outlives the call; the kernel copies it.
    #[allow(unsafe_code)]
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
        )
    };
    check(r as libc::c_long).map(drop)
}

/// `fork(2)`: `Ok(0)` in the child, the child's pid in the parent. Only call this from a
/// single-threaded process (the helpers are).
pub(crate) fn fork() -> io::Result<libc::pid_t> {
    // SAFETY: the helper is single-threaded here, so the child starts with a consistent
    // copy of every lock and allocation.
    #[allow(unsafe_code)]
    let r = unsafe { libc::fork() };
    check(r as libc::c_long).map(|p| p as libc::pid_t)
}

/// `_exit(2)`: ends the (forked) process at once, without running destructors or atexit
/// handlers that belong to the parent.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no memory of ours.
    #[allow(unsafe_code)]
    unsafe {
        libc::_exit(code)
    }
}

/// `getppid(2)`.
pub(crate) fn parent_pid() -> libc::pid_t {
    // SAFETY: no arguments, always succeeds.
    #[allow(unsafe_code)]
    unsafe {
        libc::getppid()
    }
}

/// Asks for SIGKILL when the parent (thread) dies.
pub(crate) fn kill_on_parent_death() -> io::Result<()> {
    // SAFETY: integer arguments only.
    #[allow(unsafe_code)]
    let r = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    check(r as libc::c_long).map(drop)
}

/// Points the standard descriptors at `/dev/null`, so a background helper never holds the
/// pipes of the process it serves.
pub(crate) fn detach_stdio() -> io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for target in 0..3 {
        // SAFETY: `null` is open for the call; dup2 replaces `target` atomically.
        #[allow(unsafe_code)]
        let r = unsafe { libc::dup2(null.as_raw_fd(), target) };
        check(r as libc::c_long)?;
    }
    Ok(())
}

/// Sets the `lo` interface of the current network namespace up.
pub(crate) fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket creation; the descriptor is owned right away.
    #[allow(unsafe_code)]
    let sock =
        owned(
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) }
                as libc::c_long,
        )?;
    // SAFETY: an all-zero ifreq is valid.
    #[allow(unsafe_code)]
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `ifr` is a valid ifreq naming `lo`; SIOCGIFFLAGS fills its flags.
    #[allow(unsafe_code)]
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) };
    check(r as libc::c_long)?;
    // SAFETY: SIOCGIFFLAGS just set the flags member of the union.
    #[allow(unsafe_code)]
    unsafe {
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: as above; SIOCSIFFLAGS reads the flags.
    #[allow(unsafe_code)]
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) };
    check(r as libc::c_long).map(drop)
}

/// A Landlock ruleset (ABI 4+) handling only the network accesses `handled_net`.
pub(crate) fn landlock_net_ruleset(handled_net: u64) -> io::Result<OwnedFd> {
    #[repr(C)]
    struct Attr {
        handled_access_fs: u64,
        handled_access_net: u64,
    }
    let attr = Attr {
        handled_access_fs: 0,
        handled_access_net: handled_net,
    };
    // SAFETY: `attr` is the 16-byte ABI-4 layout and outlives the call.
    #[allow(unsafe_code)]
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const Attr,
            std::mem::size_of::<Attr>(),
            0u32,
        )
    };
    owned(r)
}

/// Allows `access` on TCP `port` in a network ruleset.
pub(crate) fn landlock_allow_port(ruleset: &OwnedFd, port: u16, access: u64) -> io::Result<()> {
    #[repr(C, packed)]
    struct NetPort {
        allowed_access: u64,
        port: u64,
    }
    let attr = NetPort {
        allowed_access: access,
        port: u64::from(port),
    };
    // SAFETY: `attr` has the kernel's packed layout and outlives the call.
    #[allow(unsafe_code)]
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset.as_raw_fd(),
            2u32, // LANDLOCK_RULE_NET_PORT
            &attr as *const NetPort,
            0u32,
        )
    };
    check(r).map(drop)
}
