//! `confine`: applies a `Plan` to the calling process, which must be single-threaded (the
//! helper calls it first thing in `main`). Every step either succeeds or returns an error;
//! the caller must then exit without doing the work.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::plan::{LandlockAccess, MountStep, Plan};
use crate::{net, seccomp, sys, SandboxError};

const ACCESS_EXECUTE: u64 = 1 << 0;
const ACCESS_WRITE_FILE: u64 = 1 << 1;
const ACCESS_READ_FILE: u64 = 1 << 2;
const ACCESS_READ_DIR: u64 = 1 << 3;
const ACCESS_ABI1: u64 = (1 << 13) - 1;
const ACCESS_REFER: u64 = 1 << 13;
const ACCESS_TRUNCATE: u64 = 1 << 14;
const ACCESS_IOCTL_DEV: u64 = 1 << 15;
/// Rights that apply to a file (not a directory) in a path-beneath rule.
const FILE_RIGHTS: u64 =
    ACCESS_EXECUTE | ACCESS_WRITE_FILE | ACCESS_READ_FILE | ACCESS_TRUNCATE | ACCESS_IOCTL_DEV;

/// What the kernel offers the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Support {
    /// User namespaces can be created (per `max_user_namespaces`).
    pub user_namespaces: bool,
    /// The Landlock ABI version, if any.
    pub landlock_abi: Option<u32>,
    /// Network namespaces exist (`/proc/self/ns/net`).
    pub network_namespaces: bool,
    /// The server runs as root (then no user namespace is needed).
    pub root: bool,
}

impl Support {
    /// Whether a managed network can be set up here, and why not.
    pub fn managed_network(&self) -> Result<(), String> {
        if !self.network_namespaces {
            return Err("managed network needs network namespaces, which this kernel lacks".into());
        }
        if !self.root && !self.user_namespaces {
            return Err("managed network needs user namespaces, which are disabled here".into());
        }
        Ok(())
    }
}

/// What this kernel supports, without changing anything.
pub fn probe() -> Support {
    let user_namespaces = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .is_some_and(|n| n > 0);
    Support {
        user_namespaces,
        landlock_abi: sys::landlock_abi(),
        network_namespaces: Path::new("/proc/self/ns/net").exists(),
        root: euid_egid().0 == 0,
    }
}

/// Confines the calling (single-threaded) process according to `plan`.
pub fn confine(plan: &Plan) -> Result<(), SandboxError> {
    // The bridge of a managed network must stay in the host's network namespace.
    let bridge = match &plan.managed_network {
        Some(_) => Some(net::fork_bridge()?),
        None => None,
    };
    let mut flags = 0;
    if plan.namespaces {
        flags |= libc::CLONE_NEWNS;
    }
    if plan.managed_network.is_some() {
        flags |= libc::CLONE_NEWNET;
    }
    if flags != 0 {
        enter_namespaces(flags)?;
    }
    if let (Some(link), Some(managed)) = (bridge, &plan.managed_network) {
        net::open_ports(link, managed)?;
    }
    if plan.namespaces {
        apply_mounts(plan)?;
        // The working directory still points into the mount it was entered through (now
        // read-only, or covered); enter it again through the new mounts.
        if let Ok(cwd) = std::env::current_dir() {
            let _ = std::env::set_current_dir(cwd);
        }
    }
    sys::set_no_new_privs().map_err(|e| SandboxError::step("setting no_new_privs", e))?;
    if let Some(rules) = &plan.landlock {
        apply_landlock(rules, plan.landlock_required)?;
    }
    if let Some(managed) = &plan.managed_network {
        net::restrict_tcp(managed)?;
    }
    sys::drop_all_capabilities().map_err(|e| SandboxError::step("dropping capabilities", e))?;
    if plan.deny_network {
        let filter = seccomp::network_filter(plan.managed_network.is_some());
        sys::install_seccomp(&filter)
            .map_err(|e| SandboxError::step("installing the seccomp network filter", e))?;
    }
    Ok(())
}

/// New namespaces (`flags`: mount and/or network); unprivileged callers first get a user namespace (mapping only
/// their own ids) that owns it. Root keeps its user namespace: a process cannot map the
/// whole id range from inside a namespace it just created, and with one id mapped root
/// would lose access to files of other users. Either way the capabilities that could undo
/// the mounts are dropped before anything runs, and a nested user namespace only sees the
/// mounts locked.
fn enter_namespaces(flags: libc::c_int) -> Result<(), SandboxError> {
    let (euid, egid) = euid_egid();
    if euid == 0 {
        sys::unshare(flags).map_err(|e| SandboxError::step("creating namespaces", e))?;
    } else {
        sys::unshare(libc::CLONE_NEWUSER | flags)
            .map_err(|e| SandboxError::step("creating a user namespace", e))?;
        let write = |file: &str, content: String| {
            std::fs::write(file, content)
                .map_err(|e| SandboxError::step(format!("writing {file}"), e))
        };
        write("/proc/self/setgroups", "deny".into())?;
        write("/proc/self/uid_map", format!("{euid} {euid} 1"))?;
        write("/proc/self/gid_map", format!("{egid} {egid} 1"))?;
    }
    if flags & libc::CLONE_NEWNS != 0 {
        sys::make_root_private().map_err(|e| SandboxError::step("making mounts private", e))?;
    }
    Ok(())
}

fn euid_egid() -> (u32, u32) {
    // /proc/self/status has the effective ids on the second field of Uid:/Gid:.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(u32::MAX)
    };
    (field("Uid:"), field("Gid:"))
}

fn apply_mounts(plan: &Plan) -> Result<(), SandboxError> {
    // Clone the trees to bind back before anything is made read-only, so writable roots keep
    // their original flags.
    let mut clones: Vec<(PathBuf, Option<OwnedFd>)> = Vec::new();
    for step in &plan.mounts {
        match step {
            MountStep::Writable(p) | MountStep::ReadOnly(p) => {
                let fd = sys::clone_tree(libc::AT_FDCWD, p).map_err(|e| {
                    SandboxError::step(format!("cloning the mount tree at {}", p.display()), e)
                })?;
                clones.push((p.clone(), Some(fd)));
            }
            MountStep::Deny(p) => clones.push((p.clone(), None)),
        }
    }
    if plan.read_only_root {
        sys::set_mount_attr(libc::AT_FDCWD, Path::new("/"), sys::MOUNT_ATTR_RDONLY)
            .map_err(|e| SandboxError::step("making / read-only", e))?;
    }
    for (step, (path, clone)) in plan.mounts.iter().zip(clones) {
        let what = |verb: &str| format!("{verb} {}", path.display());
        match (step, clone) {
            (MountStep::Writable(_), Some(tree)) => {
                sys::move_mount(&tree, &path)
                    .map_err(|e| SandboxError::step(what("binding writable"), e))?;
            }
            (MountStep::ReadOnly(_), Some(tree)) => {
                sys::set_mount_attr(tree.as_raw_fd(), Path::new(""), sys::MOUNT_ATTR_RDONLY)
                    .map_err(|e| SandboxError::step(what("making read-only"), e))?;
                sys::move_mount(&tree, &path)
                    .map_err(|e| SandboxError::step(what("binding read-only"), e))?;
            }
            _ => deny(&path).map_err(|e| SandboxError::step(what("denying"), e))?,
        }
    }
    Ok(())
}

/// Covers `path` with an empty mount nobody can read: a mode-000 tmpfs for a directory, a
/// mode-000 empty file for anything else. Both are read-only.
fn deny(path: &Path) -> std::io::Result<()> {
    let locked = sys::MOUNT_ATTR_RDONLY
        | sys::MOUNT_ATTR_NOSUID
        | sys::MOUNT_ATTR_NODEV
        | sys::MOUNT_ATTR_NOEXEC;
    let is_dir = std::fs::metadata(path)?.is_dir();
    if is_dir {
        let fs = sys::tmpfs(&[("mode", "0"), ("size", "4k")], locked)?;
        return sys::move_mount(&fs, path);
    }
    let fs = sys::tmpfs(&[("mode", "0700"), ("size", "4k")], 0)?;
    sys::create_empty_file(&fs, "denied")?;
    let file = sys::clone_tree(fs.as_raw_fd(), Path::new("denied"))?;
    sys::set_mount_attr(file.as_raw_fd(), Path::new(""), locked)?;
    sys::move_mount(&file, path)
}

fn apply_landlock(rules: &[crate::LandlockRule], required: bool) -> Result<(), SandboxError> {
    let Some(abi) = sys::landlock_abi() else {
        if required {
            return Err(SandboxError::Unsupported(
                "the policy restricts reads and this kernel has no Landlock".into(),
            ));
        }
        return Ok(());
    };
    let mut handled = ACCESS_ABI1;
    if abi >= 2 {
        handled |= ACCESS_REFER;
    }
    if abi >= 3 {
        handled |= ACCESS_TRUNCATE;
    }
    if abi >= 5 {
        handled |= ACCESS_IOCTL_DEV;
    }
    let ruleset = sys::landlock_ruleset(handled)
        .map_err(|e| SandboxError::step("creating the Landlock ruleset", e))?;
    for rule in rules {
        let Ok(fd) = sys::open_path(&rule.path) else {
            continue;
        };
        let is_dir = std::fs::metadata(&rule.path)
            .map(|m| m.is_dir())
            .unwrap_or(false);
        let mut access = match rule.access {
            LandlockAccess::Read => ACCESS_EXECUTE | ACCESS_READ_FILE | ACCESS_READ_DIR,
            LandlockAccess::Write => handled,
            LandlockAccess::Device => {
                ACCESS_READ_FILE
                    | ACCESS_WRITE_FILE
                    | ACCESS_READ_DIR
                    | ACCESS_TRUNCATE
                    | ACCESS_IOCTL_DEV
            }
        } & handled;
        if !is_dir {
            access &= FILE_RIGHTS;
        }
        sys::landlock_allow(&ruleset, &fd, access).map_err(|e| {
            SandboxError::step(
                format!("adding the Landlock rule for {}", rule.path.display()),
                e,
            )
        })?;
    }
    sys::landlock_restrict_self(&ruleset).map_err(|e| SandboxError::step("enforcing Landlock", e))
}
