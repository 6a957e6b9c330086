//! `Policy`: a `SandboxContext` resolved to absolute paths with an access each.
//!
//! Special entries are resolved against the context (`cwd`, workspace roots, temporary
//! directories), globs are expanded against the filesystem, existing paths are
//! canonicalized (so mounts land on what the kernel resolves), and writable roots get
//! read-only carve-outs for `.git`, `.codex` and `.agents`. Missing paths are dropped: there
//! is nothing to mount over them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use exec_server_protocol::fs::{
    Access, EntryPath, FileSystemEntry, FileSystemPolicy, NetworkAccess, PermissionProfile,
    SandboxContext, SpecialKind,
};
use serde::{Deserialize, Serialize};

use crate::glob;

/// Directories under a writable root that stay read-only unless a rule names them.
pub const PROTECTED_NAMES: [&str; 3] = [".git", ".codex", ".agents"];

/// System paths of the `minimal` special entry.
const MINIMAL_PATHS: [&str; 9] = [
    "/bin", "/sbin", "/usr", "/lib", "/lib32", "/lib64", "/etc", "/dev", "/proc",
];

/// Default depth bound for glob scans.
const DEFAULT_GLOB_DEPTH: u32 = 8;

/// The access of a resolved rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RuleAccess {
    /// Read and write.
    Write,
    /// Read only.
    Read,
    /// Neither.
    Deny,
}

/// One resolved rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Absolute, canonical when it exists.
    pub path: PathBuf,
    /// The access.
    pub access: RuleAccess,
}

/// A resolved sandbox policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Filesystem rules, parents before children; `None` means the filesystem is unrestricted.
    pub filesystem: Option<Vec<Rule>>,
    /// Refuse network sockets.
    pub deny_network: bool,
    /// Managed network (`enforceManagedNetwork`): the process gets a network namespace of
    /// its own where only these loopback proxy ports lead out. Overrides `deny_network`.
    #[serde(default)]
    pub managed_network: Option<ManagedNetwork>,
}

/// The network a managed-network process may reach (`managedNetwork` of `process/start`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedNetwork {
    /// Loopback TCP ports (the proxies) forwarded to the host's loopback; empty = no network.
    pub loopback_ports: Vec<u16>,
    /// The process may bind TCP ports (inside its own namespace only).
    pub allow_local_binding: bool,
}

impl ManagedNetwork {
    /// Most ports a managed network forwards.
    pub const MAX_PORTS: usize = 16;
}

/// Why a context cannot become a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Cwd-relative entries without a cwd.
    #[error("file system sandbox context with dynamic permissions requires cwd")]
    NeedsCwd,
    /// A path of the context is not a native path of this host.
    #[error("{0}")]
    BadPath(String),
}

impl Policy {
    /// Resolves `ctx`; `fallback_cwd` stands in for a missing context cwd (the process cwd
    /// for `process/start`). `None` means nothing needs enforcing.
    pub fn from_context(
        ctx: &SandboxContext,
        fallback_cwd: Option<&Path>,
    ) -> Result<Option<Policy>, PolicyError> {
        let (fs, network) = match &ctx.permissions {
            PermissionProfile::Disabled | PermissionProfile::External { .. } => return Ok(None),
            PermissionProfile::Managed {
                file_system,
                network,
            } => (file_system, *network),
        };
        let deny_network = network == NetworkAccess::Restricted;
        let filesystem = match fs {
            FileSystemPolicy::Unrestricted => None,
            FileSystemPolicy::Restricted {
                entries,
                glob_scan_max_depth,
            } => {
                let depth = glob_scan_max_depth.map_or(DEFAULT_GLOB_DEPTH, |d| d.get());
                let r = Resolver::new(ctx, fallback_cwd)?;
                Some(r.resolve(entries, depth)?)
            }
        };
        if filesystem.is_none() && !deny_network {
            return Ok(None);
        }
        Ok(Some(Policy {
            filesystem,
            deny_network,
            managed_network: None,
        }))
    }

    /// A policy that confines nothing but the network to `managed` (a process started with
    /// `enforceManagedNetwork` and no filesystem sandbox).
    pub fn managed_network_only(managed: ManagedNetwork) -> Policy {
        Policy {
            filesystem: None,
            deny_network: true,
            managed_network: Some(managed),
        }
    }

    /// Whether file operations must run confined.
    pub fn restricts_filesystem(&self) -> bool {
        self.filesystem.is_some()
    }

    /// Whether the policy lets every path be read: `/` is readable and nothing is denied.
    /// A read-only operation then needs no sandbox (spec §5.13: upstream runs such reads
    /// in-process too).
    pub fn reads_everything(&self) -> bool {
        match &self.filesystem {
            None => true,
            Some(rules) => {
                rules
                    .iter()
                    .any(|r| r.path == Path::new("/") && r.access != RuleAccess::Deny)
                    && rules.iter().all(|r| r.access != RuleAccess::Deny)
            }
        }
    }
}

struct Resolver {
    cwd: Option<PathBuf>,
    roots: Vec<PathBuf>,
    tmpdirs: Vec<PathBuf>,
}

fn native(uri: &exec_server_protocol::PathUri) -> Result<PathBuf, PolicyError> {
    uri.to_path()
        .map_err(|e| PolicyError::BadPath(e.to_string()))
}

impl Resolver {
    fn new(ctx: &SandboxContext, fallback_cwd: Option<&Path>) -> Result<Self, PolicyError> {
        let pc = ctx.policy_context.as_ref();
        let cwd = match pc.and_then(|p| p.cwd.as_ref()).or(ctx.cwd.as_ref()) {
            Some(u) => Some(native(u)?),
            None => fallback_cwd.map(Path::to_path_buf),
        };
        let roots = pc
            .and_then(|p| p.workspace_roots.as_ref())
            .or(ctx.workspace_roots.as_ref())
            .map(|v| v.iter().map(native).collect::<Result<Vec<_>, _>>())
            .transpose()?
            .unwrap_or_default();
        let tmpdirs = match &ctx.temporary_directories {
            Some(v) => v.iter().map(native).collect::<Result<Vec<_>, _>>()?,
            None => std::env::var_os("TMPDIR")
                .map(PathBuf::from)
                .into_iter()
                .collect(),
        };
        Ok(Resolver {
            cwd,
            roots,
            tmpdirs,
        })
    }

    fn cwd(&self) -> Result<&Path, PolicyError> {
        self.cwd.as_deref().ok_or(PolicyError::NeedsCwd)
    }

    fn paths_of(&self, entry: &FileSystemEntry, depth: u32) -> Result<Vec<PathBuf>, PolicyError> {
        Ok(match &entry.path {
            EntryPath::Path { path } => vec![native(path)?],
            EntryPath::GlobPattern { pattern } => {
                let absolute = if Path::new(pattern).is_absolute() {
                    PathBuf::from(pattern)
                } else {
                    self.cwd()?.join(pattern)
                };
                glob::expand(&absolute, depth)
            }
            EntryPath::Special { value } => match value.kind {
                SpecialKind::Root => vec![PathBuf::from("/")],
                SpecialKind::Minimal => MINIMAL_PATHS.iter().map(PathBuf::from).collect(),
                SpecialKind::CurrentWorkingDirectory => vec![self.cwd()?.to_path_buf()],
                SpecialKind::ProjectRoots => {
                    let roots = if self.roots.is_empty() {
                        vec![self.cwd()?.to_path_buf()]
                    } else {
                        self.roots.clone()
                    };
                    match &value.subpath {
                        Some(sub) => roots.into_iter().map(|r| r.join(sub)).collect(),
                        None => roots,
                    }
                }
                SpecialKind::Tmpdir => self.tmpdirs.clone(),
                SpecialKind::SlashTmp => vec![PathBuf::from("/tmp")],
                SpecialKind::Unknown => Vec::new(),
            },
        })
    }

    fn resolve(&self, entries: &[FileSystemEntry], depth: u32) -> Result<Vec<Rule>, PolicyError> {
        // One access per path; on a tie the most restrictive entry wins.
        let mut by_path: BTreeMap<PathBuf, RuleAccess> = BTreeMap::new();
        for entry in entries {
            let access = match entry.access {
                Access::Read => RuleAccess::Read,
                Access::Write => RuleAccess::Write,
                Access::Deny | Access::None => RuleAccess::Deny,
            };
            for path in self.paths_of(entry, depth)? {
                let Ok(path) = std::fs::canonicalize(&path) else {
                    continue;
                };
                let slot = by_path.entry(path).or_insert(access);
                *slot = (*slot).max(access);
            }
        }
        let writable: Vec<PathBuf> = by_path
            .iter()
            .filter(|(_, a)| **a == RuleAccess::Write)
            .map(|(p, _)| p.clone())
            .collect();
        for root in writable {
            for name in PROTECTED_NAMES {
                let p = root.join(name);
                if std::fs::symlink_metadata(&p).is_ok() {
                    by_path.entry(p).or_insert(RuleAccess::Read);
                }
            }
        }
        let mut rules: Vec<Rule> = by_path
            .into_iter()
            .map(|(path, access)| Rule { path, access })
            .collect();
        rules.sort_by(|a, b| {
            let depth = |p: &Path| p.components().count();
            depth(&a.path)
                .cmp(&depth(&b.path))
                .then_with(|| a.path.cmp(&b.path))
        });
        Ok(rules)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use exec_server_protocol::PathUri;

    fn ctx(json: serde_json::Value) -> SandboxContext {
        serde_json::from_value(json).unwrap()
    }

    fn read_only(cwd: &Path) -> serde_json::Value {
        serde_json::json!({
            "permissions": {"type": "managed", "network": "restricted",
                "file_system": {"type": "restricted", "entries": [
                    {"path": {"type": "special", "value": {"kind": "root"}}, "access": "read"}]}},
            "cwd": PathUri::from_path(cwd).unwrap().as_str(),
            "windowsSandboxLevel": "disabled"
        })
    }

    #[test]
    fn reads_everything_only_with_a_readable_root_and_no_denial() {
        let d = tempfile::tempdir().unwrap();
        let p = Policy::from_context(&ctx(read_only(d.path())), None)
            .unwrap()
            .unwrap();
        assert!(p.restricts_filesystem());
        assert!(p.reads_everything());
        let rule = |path: &str, access| Rule {
            path: PathBuf::from(path),
            access,
        };
        let with = |rules: Vec<Rule>| Policy {
            filesystem: Some(rules),
            ..p.clone()
        };
        assert!(!with(vec![
            rule("/", RuleAccess::Read),
            rule("/secret", RuleAccess::Deny)
        ])
        .reads_everything());
        assert!(!with(vec![rule("/home", RuleAccess::Write)]).reads_everything());
        assert!(with(vec![
            rule("/", RuleAccess::Read),
            rule("/w", RuleAccess::Write)
        ])
        .reads_everything());
    }

    #[test]
    fn disabled_and_unrestricted_need_nothing() {
        let c = ctx(serde_json::json!({"permissions": {"type": "disabled"},
            "windowsSandboxLevel": "disabled"}));
        assert_eq!(Policy::from_context(&c, None).unwrap(), None);
        let c = ctx(
            serde_json::json!({"permissions": {"type": "managed", "network": "enabled",
            "file_system": {"type": "unrestricted"}}, "windowsSandboxLevel": "disabled"}),
        );
        assert_eq!(Policy::from_context(&c, None).unwrap(), None);
    }

    #[test]
    fn root_read_with_writable_root_and_carve_outs() {
        let d = tempfile::tempdir().unwrap();
        let w = std::fs::canonicalize(d.path()).unwrap();
        std::fs::create_dir(w.join(".git")).unwrap();
        let mut j = read_only(&w);
        j["permissions"]["file_system"]["entries"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!(
            {"path": {"type": "special", "value": {"kind": "current_working_directory"}},
             "access": "write"}));
        let p = Policy::from_context(&ctx(j), None).unwrap().unwrap();
        assert!(p.deny_network);
        assert_eq!(
            p.filesystem.unwrap(),
            vec![
                Rule {
                    path: "/".into(),
                    access: RuleAccess::Read
                },
                Rule {
                    path: w.clone(),
                    access: RuleAccess::Write
                },
                Rule {
                    path: w.join(".git"),
                    access: RuleAccess::Read
                },
            ]
        );
    }

    #[test]
    fn cwd_entries_need_a_cwd() {
        let c = ctx(serde_json::json!({
            "permissions": {"type": "managed", "network": "enabled",
                "file_system": {"type": "restricted", "entries": [
                    {"path": {"type": "special", "value": {"kind": "current_working_directory"}},
                     "access": "write"}]}},
            "windowsSandboxLevel": "disabled"}));
        assert_eq!(Policy::from_context(&c, None), Err(PolicyError::NeedsCwd));
        assert!(Policy::from_context(&c, Some(Path::new("/"))).is_ok());
    }

    #[test]
    fn deny_wins_a_tie_and_globs_expand() {
        let d = tempfile::tempdir().unwrap();
        let w = std::fs::canonicalize(d.path()).unwrap();
        std::fs::create_dir_all(w.join("a/b")).unwrap();
        std::fs::write(w.join("a/b/.env"), b"").unwrap();
        std::fs::write(w.join(".env"), b"").unwrap();
        let mut j = read_only(&w);
        let entries = j["permissions"]["file_system"]["entries"]
            .as_array_mut()
            .unwrap();
        entries.push(
            serde_json::json!({"path": {"type": "glob_pattern", "pattern": "**/.env"},
            "access": "deny"}),
        );
        entries.push(serde_json::json!({"path": {"type": "path",
            "path": PathUri::from_path(&w.join(".env")).unwrap().as_str()}, "access": "write"}));
        let rules = Policy::from_context(&ctx(j), None)
            .unwrap()
            .unwrap()
            .filesystem
            .unwrap();
        assert!(rules.contains(&Rule {
            path: w.join(".env"),
            access: RuleAccess::Deny
        }));
        assert!(rules.contains(&Rule {
            path: w.join("a/b/.env"),
            access: RuleAccess::Deny
        }));
    }
}
