//! What the executor reports about its host (`environment/info`, spec §7), detected once at
//! start-up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use exec_server_protocol::environment::{EnvironmentInfo, ShellInfo};
use exec_server_protocol::PathUri;

/// Capabilities this executor implements, reported in `environmentInfo.capabilities`.
///
/// Keys we do not implement are reported `false` so a client never relies on a missing feature.
pub fn capabilities() -> BTreeMap<String, bool> {
    [
        ("networkProxyLaunch", false),
        ("networkProxyReviewDomains", false),
        ("networkProxyTransparentTcp", false),
        ("credentialMasking", false),
        ("credentialMaskingCustomProviders", false),
        ("capabilityDiscoverySandbox", false),
        ("fsWatchMissing", true),
        ("capabilityDiscoveryV2", false),
        ("environmentConfigRead", false),
        ("httpHeaderEnvVars", true),
        ("sandboxedFileStreaming", false),
        ("fileWriteStreaming", true),
        ("shellSnapshotV2", false),
        ("windowsMxc", false),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Detects the environment of this process.
pub fn detect() -> EnvironmentInfo {
    let cwd = std::env::current_dir()
        .ok()
        .and_then(|p| p.canonicalize().ok().or(Some(p)));
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| passwd_entry().map(|u| u.dir));
    let mut temporary_directories = Vec::new();
    if let Some(t) = std::env::var_os("TMPDIR").map(PathBuf::from) {
        if let Some(u) = uri(&t) {
            temporary_directories.push(u);
        }
    }
    EnvironmentInfo {
        shell: login_shell(),
        executor_version: env!("CARGO_PKG_VERSION").to_string(),
        provider_id: None,
        cwd: cwd.as_deref().and_then(uri),
        user_home_dir: home.as_deref().and_then(uri),
        platform_os: Some(std::env::consts::OS.to_string()),
        prepend_path_dirs: Vec::new(),
        temporary_directories,
        temp_dir: uri(&std::env::temp_dir()),
        capabilities: capabilities(),
    }
}

fn uri(p: &Path) -> Option<PathUri> {
    PathUri::from_path(p)
}

fn passwd_entry() -> Option<nix::unistd::User> {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
}

/// The user's login shell from the passwd database (as upstream does, not `$SHELL`), falling
/// back to `$SHELL` and then `/bin/sh`.
fn login_shell() -> ShellInfo {
    let candidates = [
        passwd_entry().map(|u| u.shell),
        std::env::var_os("SHELL").map(PathBuf::from),
        Some(PathBuf::from("/bin/sh")),
    ];
    let path = candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_absolute() && is_executable(p))
        .unwrap_or_else(|| PathBuf::from("/bin/sh"));
    let name = shell_name(&path);
    ShellInfo {
        name,
        path: path.to_string_lossy().into_owned(),
    }
}

fn is_executable(p: &Path) -> bool {
    nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok()
}

/// The stable shell id of an executable path: its file name without a version suffix.
fn shell_name(path: &Path) -> String {
    let base = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sh".into());
    for known in ["bash", "zsh", "fish", "dash", "ksh", "pwsh", "sh"] {
        if base == known
            || base.starts_with(known) && !base[known.len()..].starts_with(char::is_alphabetic)
        {
            return known.to_string();
        }
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_names() {
        assert_eq!(shell_name(Path::new("/bin/bash")), "bash");
        assert_eq!(shell_name(Path::new("/usr/bin/zsh")), "zsh");
        assert_eq!(shell_name(Path::new("/bin/bash5.2")), "bash");
        assert_eq!(shell_name(Path::new("/bin/sh")), "sh");
        assert_eq!(shell_name(Path::new("/opt/tcsh")), "tcsh");
    }

    #[test]
    fn detects_a_usable_shell_and_cwd() {
        let info = detect();
        assert!(Path::new(&info.shell.path).is_absolute());
        assert!(info.cwd.is_some());
        assert_eq!(info.platform_os.as_deref(), Some("linux"));
    }
}
