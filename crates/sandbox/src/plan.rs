//! `Plan`: what `confine` will do for a `Policy`, decided without touching the system.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::policy::{ManagedNetwork, Policy, RuleAccess};

/// Device files a confined process may read and write (shells redirect to `/dev/null`).
pub(crate) const DEVICE_PATHS: [&str; 6] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/tty",
    "/dev/ptmx",
    "/dev/pts",
];

/// One mount step, applied in order after the whole tree was made read-only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountStep {
    /// Bind the original (writable) tree back at this path.
    Writable(PathBuf),
    /// Bind the original tree back read-only (a carve-out inside a writable root).
    ReadOnly(PathBuf),
    /// Cover the path with an empty, unreadable, read-only mount.
    Deny(PathBuf),
}

/// Access Landlock grants beneath a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LandlockAccess {
    /// Read files, list directories, execute.
    Read,
    /// Everything.
    Write,
    /// Read and write existing files (devices).
    Device,
}

/// One Landlock rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandlockRule {
    /// The path (rules apply beneath it).
    pub path: PathBuf,
    /// The access.
    pub access: LandlockAccess,
}

/// The steps that confine a process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Set up a user and mount namespace (false only when the filesystem is unrestricted).
    pub namespaces: bool,
    /// Make the whole tree read-only first.
    pub read_only_root: bool,
    /// Mount steps, parents before children.
    pub mounts: Vec<MountStep>,
    /// Landlock rules; `None` when the filesystem is unrestricted.
    pub landlock: Option<Vec<LandlockRule>>,
    /// Landlock is the only thing enforcing some rule (reads restricted): without it,
    /// fail.
    pub landlock_required: bool,
    /// Install the seccomp network filter.
    pub deny_network: bool,
    /// Give the process a network namespace of its own with only loopback, the allowed
    /// ports forwarded to the host (the seccomp filter then also lets IP sockets through:
    /// nothing but the forwarded ports is reachable from that namespace).
    pub managed_network: Option<ManagedNetwork>,
}

impl Plan {
    /// The plan for `policy`.
    pub fn new(policy: &Policy) -> Plan {
        let mut plan = Plan {
            deny_network: policy.deny_network || policy.managed_network.is_some(),
            managed_network: policy.managed_network.clone(),
            ..Plan::default()
        };
        let Some(rules) = &policy.filesystem else {
            return plan;
        };
        plan.namespaces = true;
        let root = rules
            .iter()
            .find(|r| r.path == Path::new("/"))
            .map(|r| r.access);
        plan.read_only_root = root != Some(RuleAccess::Write);
        plan.landlock_required = root.is_none() || root == Some(RuleAccess::Deny);
        let mut landlock = Vec::new();
        for rule in rules {
            let is_root = rule.path == Path::new("/");
            // The most specific rule wins, so the nearest ancestor decides what the path
            // would be without its own rule.
            let writable_above = nearest_ancestor(rules, &rule.path) == Some(RuleAccess::Write);
            match rule.access {
                RuleAccess::Write => {
                    if !is_root && !writable_above {
                        plan.mounts.push(MountStep::Writable(rule.path.clone()));
                    }
                    landlock.push(LandlockRule {
                        path: rule.path.clone(),
                        access: LandlockAccess::Write,
                    });
                }
                RuleAccess::Read => {
                    if !is_root && writable_above {
                        plan.mounts.push(MountStep::ReadOnly(rule.path.clone()));
                    }
                    landlock.push(LandlockRule {
                        path: rule.path.clone(),
                        access: LandlockAccess::Read,
                    });
                }
                RuleAccess::Deny => {
                    if !is_root {
                        plan.mounts.push(MountStep::Deny(rule.path.clone()));
                    }
                }
            }
        }
        for dev in DEVICE_PATHS {
            landlock.push(LandlockRule {
                path: dev.into(),
                access: LandlockAccess::Device,
            });
        }
        plan.landlock = Some(landlock);
        plan
    }
}

fn nearest_ancestor(rules: &[crate::policy::Rule], path: &Path) -> Option<RuleAccess> {
    rules
        .iter()
        .filter(|r| r.path != path && path.starts_with(&r.path))
        .max_by_key(|r| r.path.components().count())
        .map(|r| r.access)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Rule;

    fn rule(p: &str, access: RuleAccess) -> Rule {
        Rule {
            path: p.into(),
            access,
        }
    }

    #[test]
    fn read_only_root_with_workspace_and_git() {
        let policy = Policy {
            filesystem: Some(vec![
                rule("/", RuleAccess::Read),
                rule("/w", RuleAccess::Write),
                rule("/w/.git", RuleAccess::Read),
                rule("/w/secret", RuleAccess::Deny),
            ]),
            deny_network: true,
            managed_network: None,
        };
        let plan = Plan::new(&policy);
        assert!(plan.namespaces && plan.read_only_root && plan.deny_network);
        assert!(!plan.landlock_required);
        assert_eq!(
            plan.mounts,
            vec![
                MountStep::Writable("/w".into()),
                MountStep::ReadOnly("/w/.git".into()),
                MountStep::Deny("/w/secret".into()),
            ]
        );
    }

    #[test]
    fn nested_writable_under_read_only_carve_out_is_bound_again() {
        let policy = Policy {
            filesystem: Some(vec![
                rule("/", RuleAccess::Read),
                rule("/w", RuleAccess::Write),
                rule("/w/ro", RuleAccess::Read),
                rule("/w/ro/rw", RuleAccess::Write),
            ]),
            deny_network: false,
            managed_network: None,
        };
        let plan = Plan::new(&policy);
        assert_eq!(
            plan.mounts,
            vec![
                MountStep::Writable("/w".into()),
                MountStep::ReadOnly("/w/ro".into()),
                MountStep::Writable("/w/ro/rw".into()),
            ]
        );
    }

    #[test]
    fn read_only_root_alone_needs_no_mount_steps() {
        let policy = Policy {
            filesystem: Some(vec![rule("/", RuleAccess::Read)]),
            deny_network: true,
            managed_network: None,
        };
        let plan = Plan::new(&policy);
        assert!(plan.read_only_root && plan.mounts.is_empty());
    }

    #[test]
    fn without_a_readable_root_landlock_is_required() {
        let policy = Policy {
            filesystem: Some(vec![rule("/w", RuleAccess::Write)]),
            deny_network: false,
            managed_network: None,
        };
        assert!(Plan::new(&policy).landlock_required);
    }

    #[test]
    fn managed_network_implies_the_network_filter() {
        let managed = ManagedNetwork {
            loopback_ports: vec![3128],
            allow_local_binding: false,
        };
        let plan = Plan::new(&Policy::managed_network_only(managed.clone()));
        assert!(plan.deny_network && !plan.namespaces);
        assert_eq!(plan.managed_network, Some(managed));
    }

    #[test]
    fn network_only_policy_has_no_namespaces() {
        let plan = Plan::new(&Policy {
            filesystem: None,
            deny_network: true,
            managed_network: None,
        });
        assert!(!plan.namespaces && plan.deny_network && plan.landlock.is_none());
    }
}
