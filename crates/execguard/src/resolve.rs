//! From a stopped `execve`/`execveat` to what it will run: the program as an absolute path
//! in the caller's view of the filesystem, the file that path leads to, its arguments, and
//! the programs that run through it (a `#!` interpreter, a dynamic loader's program), so a
//! rule cannot be side-stepped by naming a program indirectly.

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use crate::memory::{self, ReadError};
use crate::notify::Notification;

/// A program to check against the rules: the path it is run by, and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// Absolute path.
    pub program: PathBuf,
    /// Its arguments; `argv[0]` is the caller's choice and is not used for matching.
    pub argv: Vec<String>,
}

/// A decoded exec.
#[derive(Debug, Clone)]
pub struct Exec {
    /// The program as the caller named it, made absolute against its working directory (or
    /// the `execveat` directory), `.` and `..` removed: what a user reads, e.g.
    /// `/usr/bin/touch`.
    pub program: PathBuf,
    /// The file it leads to, symlinks followed (`/usr/bin/busybox` for `/bin/rm` on some
    /// systems); `/memfd:NAME (deleted)` for an in-memory file.
    pub target: PathBuf,
    /// The arguments, UTF-8 (lossy).
    pub argv: Vec<String>,
    /// The caller's working directory.
    pub cwd: PathBuf,
    /// Every program this exec runs, each to be checked: the program under its own name and
    /// under its target's name, the `#!` interpreter of a script, the program a dynamic loader
    /// is asked to load.
    pub subjects: Vec<Subject>,
    /// A program this exec runs that is not a file anyone can name: an in-memory file
    /// (`memfd_create`) or a deleted one (as `/memfd:NAME (deleted)`), directly or through the
    /// dynamic loader.
    pub anonymous: Option<PathBuf>,
}

/// Why an exec could not be decoded; the exec fails with `errno()`.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Reading the caller's memory failed or went past a bound.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The program cannot be opened (it would not run either).
    #[error("{path}: {source}")]
    Open {
        /// The program.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl DecodeError {
    /// The errno the exec fails with.
    pub fn errno(&self) -> i32 {
        match self {
            DecodeError::Read(e) => e.errno(),
            DecodeError::Open { source, .. } => source.raw_os_error().unwrap_or(libc::ENOENT),
        }
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `/proc/<pid>/<rest>` as a path this process can open.
fn proc_path(pid: i32, rest: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{rest}"))
}

/// `a/./b/../c` → `a/c`, lexically.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The exec's path and argv as they are in the caller's memory now.
pub type Raw = (Vec<u8>, Vec<Vec<u8>>);

/// Reads the path and argv of the stopped exec `n` out of the caller's memory.
pub fn read_raw(n: &Notification) -> Result<Raw, ReadError> {
    let (path_ptr, argv_ptr) = if n.nr == libc::SYS_execveat {
        (n.args[1], n.args[2])
    } else {
        (n.args[0], n.args[1])
    };
    let path = memory::read_cstring(n.pid, path_ptr, memory::MAX_PATH, "the path")?;
    Ok((path, memory::read_argv(n.pid, argv_ptr)?))
}

/// Decodes the stopped exec `n` of process `n.pid`; returns it with the raw path and argv it
/// was decoded from.
pub fn decode(n: &Notification) -> Result<(Exec, Raw), DecodeError> {
    let pid = n.pid;
    let (dirfd, flags) = if n.nr == libc::SYS_execveat {
        (n.args[0] as i32, n.args[4] as i32)
    } else {
        (libc::AT_FDCWD, 0)
    };
    let raw = read_raw(n)?;
    let raw_path = lossy(&raw.0);
    let argv: Vec<String> = raw.1.iter().map(|a| lossy(a)).collect();
    let cwd = std::fs::read_link(proc_path(pid, "cwd")).unwrap_or_else(|_| PathBuf::from("/"));

    // Where the caller's path leads: `open_at` is a path this process can open that the
    // kernel walks in the caller's view (its root, cwd or directory descriptor).
    let (program, open_at) = if raw_path.is_empty() && flags & libc::AT_EMPTY_PATH != 0 {
        // fexecve: the descriptor is the program.
        let fd_path = proc_path(pid, &format!("fd/{dirfd}"));
        let named = std::fs::read_link(&fd_path).unwrap_or_else(|_| fd_path.clone());
        (named, fd_path)
    } else if let Some(rest) = raw_path.strip_prefix('/') {
        let own = self_proc_rewrite(pid, &raw_path);
        let open_at = own.unwrap_or_else(|| proc_path(pid, &format!("root/{rest}")));
        (normalize(Path::new(&raw_path)), open_at)
    } else if dirfd != libc::AT_FDCWD {
        let dir_link = proc_path(pid, &format!("fd/{dirfd}"));
        let dir = std::fs::read_link(&dir_link).unwrap_or_else(|_| dir_link.clone());
        (normalize(&dir.join(&raw_path)), dir_link.join(&raw_path))
    } else {
        (
            normalize(&cwd.join(&raw_path)),
            proc_path(pid, "cwd").join(&raw_path),
        )
    };
    // Non-blocking, so a FIFO named as the program cannot stall the supervisor.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&open_at)
        .map_err(|source| DecodeError::Open {
            path: program.clone(),
            source,
        });
    // A program that exists but cannot be read (mode 0111) is still run by the kernel: name
    // it by its path only.
    let (target, head) = match file {
        Ok(mut f) => {
            let target = fd_target(&f).unwrap_or_else(|| program.clone());
            let mut head = [0u8; 256];
            let n = f.read(&mut head).unwrap_or(0);
            (target, head[..n].to_vec())
        }
        Err(DecodeError::Open { source, .. })
            if source.kind() == std::io::ErrorKind::PermissionDenied
                && std::fs::metadata(&open_at).is_ok() =>
        {
            (program.clone(), Vec::new())
        }
        Err(e) => return Err(e),
    };
    let mut anonymous = is_anonymous(&target).then(|| target.clone());

    let mut subjects = vec![Subject {
        program: program.clone(),
        argv: argv.clone(),
    }];
    if target.file_name() != program.file_name() {
        subjects.push(Subject {
            program: target.clone(),
            argv: argv.clone(),
        });
    }
    if let Some((interp, arg)) = shebang(&head) {
        let mut a = vec![interp.clone()];
        a.extend(arg);
        a.push(program.to_string_lossy().into_owned());
        a.extend(argv.iter().skip(1).cloned());
        subjects.push(Subject {
            program: PathBuf::from(interp),
            argv: a,
        });
    }
    if is_loader(&target) || is_loader(&program) {
        if let Some(loaded) = loaded_program(&argv, &cwd) {
            // The loader opens the program itself: name what that path leads to as well
            // (`/proc/self/fd/N` of a memfd is anonymous).
            let raw = loaded.program.to_string_lossy().into_owned();
            let open_at = self_proc_rewrite(pid, &raw).unwrap_or_else(|| {
                proc_path(pid, &format!("root/{}", raw.trim_start_matches('/')))
            });
            if let Some(t) = std::fs::File::open(&open_at)
                .ok()
                .and_then(|f| fd_target(&f))
            {
                if anonymous.is_none() && is_anonymous(&t) {
                    anonymous = Some(t.clone());
                }
                if t.file_name() != loaded.program.file_name() {
                    subjects.push(Subject {
                        program: t,
                        argv: loaded.argv.clone(),
                    });
                }
            }
            subjects.push(loaded);
        }
    }
    Ok((
        Exec {
            program,
            target,
            argv,
            cwd,
            subjects,
            anonymous,
        },
        raw,
    ))
}

/// An in-memory file or a deleted one, as `/proc/*/fd` links name them.
fn is_anonymous(target: &Path) -> bool {
    let name = target.as_os_str().as_bytes();
    name.starts_with(b"/memfd:") || name.ends_with(b" (deleted)")
}

/// `/proc/self/…` and `/proc/thread-self/…` name the caller's own entries; read by this
/// process they would name ours.
fn self_proc_rewrite(pid: i32, path: &str) -> Option<PathBuf> {
    let rest = path
        .strip_prefix("/proc/self/")
        .or_else(|| path.strip_prefix("/proc/thread-self/"))?;
    Some(proc_path(pid, rest))
}

/// The path the open descriptor `f` names (symlinks resolved).
fn fd_target(f: &std::fs::File) -> Option<PathBuf> {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd())).ok()
}

/// The interpreter (and its one optional argument) of a `#!` line.
pub fn shebang(head: &[u8]) -> Option<(String, Option<String>)> {
    let line = head.strip_prefix(b"#!")?;
    let end = line.iter().position(|&b| b == b'\n').unwrap_or(line.len());
    let line = lossy(&line[..end]);
    let line = line.trim_matches(|c: char| c == ' ' || c == '\t' || c == '\r');
    if line.is_empty() {
        return None;
    }
    match line.split_once([' ', '\t']) {
        Some((interp, arg)) => {
            let arg = arg.trim_matches(|c: char| c == ' ' || c == '\t');
            Some((
                interp.to_string(),
                (!arg.is_empty()).then(|| arg.to_string()),
            ))
        }
        None => Some((line.to_string(), None)),
    }
}

/// The dynamic loader (`ld-linux-x86-64.so.2`, `ld-linux-aarch64.so.1`, `ld.so`,
/// `ld-musl-*.so.1`), which runs the program named in its arguments.
pub fn is_loader(path: &Path) -> bool {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy()) else {
        return false;
    };
    name.starts_with("ld-linux") || name == "ld.so" || name.starts_with("ld-musl")
}

/// The program a loader invocation `ld.so [options] PROGRAM [ARGS]` runs, with its argv.
pub fn loaded_program(argv: &[String], cwd: &Path) -> Option<Subject> {
    const WITH_VALUE: &[&str] = &[
        "--library-path",
        "--inhibit-rpath",
        "--audit",
        "--preload",
        "--argv0",
        "--glibc-hwcaps-prepend",
        "--glibc-hwcaps-mask",
    ];
    let mut i = 1;
    let mut argv0 = None;
    while i < argv.len() {
        let a = argv[i].as_str();
        if a == "--" {
            i += 1;
            break;
        }
        if !a.starts_with("--") {
            break;
        }
        if WITH_VALUE.contains(&a) {
            if a == "--argv0" {
                argv0 = argv.get(i + 1).cloned();
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    let program = argv.get(i)?;
    let mut a = vec![argv0.unwrap_or_else(|| program.clone())];
    a.extend(argv[i + 1..].iter().cloned());
    Some(Subject {
        program: normalize(&cwd.join(program)),
        argv: a,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn shebang_lines() {
        assert_eq!(shebang(b"#!/bin/sh\necho"), Some(("/bin/sh".into(), None)));
        assert_eq!(
            shebang(b"#! /usr/bin/env  python3 \n"),
            Some(("/usr/bin/env".into(), Some("python3".into())))
        );
        assert_eq!(shebang(b"#!\n"), None);
        assert_eq!(shebang(b"\x7fELF"), None);
    }

    #[test]
    fn loader_arguments() {
        let cwd = Path::new("/work");
        let got = loaded_program(
            &s(&[
                "ld.so",
                "--library-path",
                "/x",
                "--argv0",
                "rm",
                "./bin/rm",
                "-f",
                "a",
            ]),
            cwd,
        )
        .unwrap();
        assert_eq!(got.program, PathBuf::from("/work/bin/rm"));
        assert_eq!(got.argv, s(&["rm", "-f", "a"]));
        assert!(loaded_program(&s(&["ld.so", "--list"]), cwd).is_none());
        assert!(is_loader(Path::new("/lib64/ld-linux-x86-64.so.2")));
        assert!(!is_loader(Path::new("/usr/bin/ldd")));
    }

    #[test]
    fn normalizes_lexically() {
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(normalize(Path::new("/../x")), PathBuf::from("/x"));
    }
}
