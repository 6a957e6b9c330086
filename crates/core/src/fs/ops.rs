//! The blocking one-shot operations behind `LocalFileSystem`: read, write, mkdir, metadata,
//! canonicalize, list, remove.
//!
//! Each function does its work on the calling thread; `LocalFileSystem` runs them on tokio's
//! blocking pool and the sandbox helper calls them directly once it is confined.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::UNIX_EPOCH;

use exec_server_protocol::fs::{DirectoryEntry, Metadata};

use super::{CreateDirectoryOptions, FsError, RemoveOptions};

/// Opens `path` for reading without blocking on FIFOs and checks that it is a regular file.
pub(crate) fn open_regular_for_read(path: &Path, follow_symlinks: bool) -> Result<File, FsError> {
    let mut flags = libc::O_NONBLOCK;
    if !follow_symlinks {
        flags |= libc::O_NOFOLLOW;
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(FsError::NotAFile(path.to_path_buf()));
    }
    clear_nonblock(&file)?;
    Ok(file)
}

fn clear_nonblock(file: &File) -> Result<(), FsError> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags & !OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Reads a whole regular file of at most `limit` bytes.
pub fn read_file(path: &Path, follow_symlinks: bool, limit: u64) -> Result<Vec<u8>, FsError> {
    let file = open_regular_for_read(path, follow_symlinks)?;
    let size = file.metadata()?.len();
    if size > limit {
        return Err(FsError::FileTooLarge { size, limit });
    }
    // The size is only a hint (the file may grow); the cap is enforced on what is read.
    let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(limit + 1).read_to_end(&mut data)?;
    if data.len() as u64 > limit {
        return Err(FsError::FileTooLarge {
            size: data.len() as u64,
            limit,
        });
    }
    Ok(data)
}

/// Replaces the content of `path` atomically: a temporary file in the same directory is
/// written, synced and renamed over the target, so readers see the old or the new content.
///
/// The existing file's mode is kept. A final symlink is followed (the link stays a link)
/// unless `follow_symlinks` is false, which fails with `ELOOP` like an `O_NOFOLLOW` open.
/// Targets that are not regular files (FIFOs, devices) are written in place.
pub fn write_file(path: &Path, data: &[u8], follow_symlinks: bool) -> Result<(), FsError> {
    let target = match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            if !follow_symlinks {
                return Err(io::Error::from_raw_os_error(libc::ELOOP).into());
            }
            match fs::canonicalize(path) {
                Ok(t) => t,
                // A dangling link: create its target through the link, as open(2) would.
                Err(_) => return write_in_place(path, data),
            }
        }
        _ => path.to_path_buf(),
    };
    let existing = match fs::metadata(&target) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    if let Some(m) = &existing {
        if m.is_dir() {
            return Err(io::Error::from_raw_os_error(libc::EISDIR).into());
        }
        if !m.is_file() {
            return write_in_place(&target, data);
        }
    }
    let (tmp_path, mut tmp) = match create_temp_beside(&target) {
        Ok(t) => t,
        // A writable file in a directory we cannot write to: fall back to an in-place write.
        Err(e) if existing.is_some() && e.kind() == io::ErrorKind::PermissionDenied => {
            return write_in_place(&target, data);
        }
        Err(e) => return Err(e.into()),
    };
    let result = (|| -> io::Result<()> {
        if let Some(m) = &existing {
            tmp.set_permissions(fs::Permissions::from_mode(m.mode() & 0o7777))?;
            // Keeping the owner only works with privileges; failing to is not an error.
            let _ = std::os::unix::fs::fchown(&tmp, Some(m.uid()), Some(m.gid()));
        }
        tmp.write_all(data)?;
        tmp.sync_all()?;
        fs::rename(&tmp_path, &target)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp_path);
        return Err(e.into());
    }
    Ok(())
}

fn write_in_place(path: &Path, data: &[u8]) -> Result<(), FsError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.write_all(data)?;
    Ok(())
}

/// Creates `.<name>.<random>.tmp` next to `target` with `O_EXCL`.
fn create_temp_beside(target: &Path) -> io::Result<(PathBuf, File)> {
    let parent = target.parent().unwrap_or(Path::new("/"));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut last = io::Error::from_raw_os_error(libc::EEXIST);
    for _ in 0..16 {
        let tmp = parent.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(f) => {
                // New files get the mode a plain create would give them (0666 minus umask).
                let mode = 0o666 & !current_umask();
                f.set_permissions(fs::Permissions::from_mode(mode))?;
                return Ok((tmp, f));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

fn current_umask() -> u32 {
    use std::sync::OnceLock;
    static UMASK: OnceLock<u32> = OnceLock::new();
    *UMASK.get_or_init(|| {
        // /proc/self/status reports the umask without the race of umask(2) set-and-restore.
        fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .unwrap_or(0o022)
    })
}

/// Creates a directory (`mkdir -p` when recursive). An existing directory is fine only when
/// recursive.
pub fn create_directory(path: &Path, opts: CreateDirectoryOptions) -> Result<(), FsError> {
    if !opts.follow_symlinks {
        check_no_symlinks(path)?;
    }
    if opts.recursive {
        fs::create_dir_all(path)?;
    } else {
        fs::create_dir(path)?;
    }
    Ok(())
}

/// Fails with `SymlinkInPath` when any existing component of `path` is a symlink.
pub fn check_no_symlinks(path: &Path) -> Result<(), FsError> {
    let mut prefix = PathBuf::new();
    for comp in path.components() {
        match comp {
            Component::RootDir => prefix.push("/"),
            Component::Normal(n) => {
                prefix.push(n);
                match fs::symlink_metadata(&prefix) {
                    Ok(m) if m.file_type().is_symlink() => return Err(FsError::SymlinkInPath),
                    Ok(_) => {}
                    Err(_) => return Ok(()),
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Metadata of `path`; with `follow_symlinks` a symlink reports its target's type and size.
pub fn metadata(path: &Path, follow_symlinks: bool) -> Result<Metadata, FsError> {
    if !follow_symlinks {
        check_no_symlinks(path)?;
    }
    let link = fs::symlink_metadata(path)?;
    let is_symlink = link.file_type().is_symlink();
    let m = if is_symlink && follow_symlinks {
        fs::metadata(path)?
    } else {
        link
    };
    Ok(Metadata {
        is_directory: m.is_dir(),
        is_file: m.is_file(),
        is_symlink,
        size: m.len(),
        created_at_ms: m.created().map(ms_since_epoch).unwrap_or(0),
        modified_at_ms: m.modified().map(ms_since_epoch).unwrap_or(0),
    })
}

fn ms_since_epoch(t: std::time::SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// The path with symlinks and dot segments resolved.
pub fn canonicalize(path: &Path) -> Result<PathBuf, FsError> {
    Ok(fs::canonicalize(path)?)
}

/// The entries of a directory in iteration order; symlinks are typed by their target.
pub fn read_directory(path: &Path) -> Result<Vec<DirectoryEntry>, FsError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(path)? {
        let entry = entry?;
        let mut ft = entry.file_type()?;
        if ft.is_symlink() {
            match fs::metadata(entry.path()) {
                Ok(m) => ft = m.file_type(),
                Err(_) => {
                    out.push(DirectoryEntry {
                        file_name: entry.file_name().to_string_lossy().into_owned(),
                        is_directory: false,
                        is_file: false,
                    });
                    continue;
                }
            }
        }
        out.push(DirectoryEntry {
            file_name: entry.file_name().to_string_lossy().into_owned(),
            is_directory: ft.is_dir(),
            is_file: ft.is_file(),
        });
    }
    Ok(out)
}

/// Removes a file, a symlink (never its target) or a directory (a tree when recursive).
///
/// Recursive removal never follows symlinks out of the tree (std's `remove_dir_all` works
/// on directory descriptors and unlinks links). A missing path is fine with `force`.
pub fn remove(path: &Path, opts: RemoveOptions) -> Result<(), FsError> {
    if !opts.follow_symlinks {
        if let Some(parent) = path.parent() {
            check_no_symlinks(parent)?;
        }
    }
    let result = (|| -> io::Result<()> {
        let m = fs::symlink_metadata(path)?;
        if m.is_dir() {
            if opts.recursive {
                fs::remove_dir_all(path)
            } else {
                fs::remove_dir(path)
            }
        } else {
            fs::remove_file(path)
        }
    })();
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound && opts.force => Ok(()),
        r => Ok(r?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().expect("tempdir")
    }

    #[test]
    fn write_then_read_round_trips_and_keeps_mode() {
        let d = tmp();
        let p = d.path().join("f");
        fs::write(&p, b"old content that is longer").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        write_file(&p, b"new", true).unwrap();
        assert_eq!(read_file(&p, true, 1 << 20).unwrap(), b"new");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o640);
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn write_through_symlink_keeps_the_link() {
        let d = tmp();
        let target = d.path().join("t");
        fs::write(&target, b"a").unwrap();
        symlink(&target, d.path().join("l")).unwrap();
        write_file(&d.path().join("l"), b"b", true).unwrap();
        assert!(fs::symlink_metadata(d.path().join("l"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&target).unwrap(), b"b");
        let e = write_file(&d.path().join("l"), b"c", false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Too many levels of symbolic links (os error 40)"
        );
    }

    #[test]
    fn write_errors() {
        let d = tmp();
        let e = write_file(&d.path().join("no/such"), b"x", true).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let e = write_file(d.path(), b"x", true).unwrap_err();
        assert_eq!(e.to_string(), "Is a directory (os error 21)");
    }

    #[test]
    fn read_rejects_directories_fifos_and_oversize() {
        let d = tmp();
        assert!(matches!(
            read_file(d.path(), true, 10),
            Err(FsError::NotAFile(_))
        ));
        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(
            read_file(&fifo, true, 10),
            Err(FsError::NotAFile(_))
        ));
        fs::write(d.path().join("big"), [0u8; 11]).unwrap();
        assert!(matches!(
            read_file(&d.path().join("big"), true, 10),
            Err(FsError::FileTooLarge {
                size: 11,
                limit: 10
            })
        ));
    }

    #[test]
    fn read_without_following_a_symlink_is_eloop() {
        let d = tmp();
        fs::write(d.path().join("t"), b"x").unwrap();
        symlink(d.path().join("t"), d.path().join("l")).unwrap();
        let e = read_file(&d.path().join("l"), false, 10).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Too many levels of symbolic links (os error 40)"
        );
    }

    #[test]
    fn metadata_follows_links_and_detects_symlink_components() {
        let d = tmp();
        fs::write(d.path().join("t"), b"abc").unwrap();
        symlink(d.path().join("t"), d.path().join("l")).unwrap();
        let m = metadata(&d.path().join("l"), true).unwrap();
        assert!(m.is_symlink && m.is_file && m.size == 3);
        assert!(matches!(
            metadata(&d.path().join("l"), false),
            Err(FsError::SymlinkInPath)
        ));
        symlink(d.path().join("gone"), d.path().join("dangling")).unwrap();
        let e = metadata(&d.path().join("dangling"), true).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn create_directory_semantics() {
        let d = tmp();
        let rec = CreateDirectoryOptions {
            recursive: true,
            follow_symlinks: true,
        };
        let flat = CreateDirectoryOptions {
            recursive: false,
            ..rec
        };
        create_directory(&d.path().join("a/b"), rec).unwrap();
        create_directory(&d.path().join("a/b"), rec).unwrap();
        assert!(create_directory(&d.path().join("a/b"), flat).is_err());
        let e = create_directory(&d.path().join("x/y"), flat).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        fs::write(d.path().join("f"), b"").unwrap();
        let e = create_directory(&d.path().join("f"), rec).unwrap_err();
        assert_eq!(e.to_string(), "File exists (os error 17)");
    }

    #[test]
    fn remove_semantics() {
        let d = tmp();
        let opts = RemoveOptions {
            recursive: true,
            force: true,
            follow_symlinks: true,
        };
        fs::create_dir_all(d.path().join("t/a")).unwrap();
        fs::write(d.path().join("t/a/f"), b"").unwrap();
        symlink(d.path().join("t"), d.path().join("link")).unwrap();
        remove(&d.path().join("link"), opts).unwrap();
        assert!(d.path().join("t/a/f").exists());
        let flat = RemoveOptions {
            recursive: false,
            ..opts
        };
        assert!(remove(&d.path().join("t"), flat).is_err());
        remove(&d.path().join("t"), opts).unwrap();
        assert!(!d.path().join("t").exists());
        remove(&d.path().join("missing"), opts).unwrap();
        let strict = RemoveOptions {
            force: false,
            ..opts
        };
        let e = remove(&d.path().join("missing"), strict).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn read_directory_types_links_by_target() {
        let d = tmp();
        fs::create_dir(d.path().join("sub")).unwrap();
        fs::write(d.path().join("f"), b"").unwrap();
        symlink(d.path().join("sub"), d.path().join("sl")).unwrap();
        let mut e = read_directory(d.path()).unwrap();
        e.sort_by(|a, b| a.file_name.cmp(&b.file_name));
        let got: Vec<_> = e
            .iter()
            .map(|e| (e.file_name.as_str(), e.is_directory, e.is_file))
            .collect();
        assert_eq!(
            got,
            [
                ("f", false, true),
                ("sl", true, false),
                ("sub", true, false)
            ]
        );
    }
}
