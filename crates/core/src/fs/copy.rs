//! `fs/copy`: files, symlinks (copied as links) and directory trees.
//!
//! The tree copy types every entry with `lstat`, so a directory symlink inside the source
//! is copied as a link and never followed out of the tree.

use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::FsError;

/// Copies `source` to `destination`; a directory source needs `recursive`.
pub fn copy(source: &Path, destination: &Path, recursive: bool) -> Result<(), FsError> {
    let meta = fs::symlink_metadata(source)?;
    let ft = meta.file_type();
    if ft.is_dir() {
        if !recursive {
            return Err(FsError::CopyNeedsRecursive);
        }
        if is_same_or_descendant(source, destination)? {
            return Err(FsError::CopyIntoItself);
        }
        return copy_tree(source, destination);
    }
    if ft.is_symlink() {
        return copy_link(source, destination);
    }
    if ft.is_file() {
        fs::copy(source, destination)?;
        return Ok(());
    }
    Err(FsError::NotAFile(source.to_path_buf()))
}

fn copy_link(source: &Path, destination: &Path) -> Result<(), FsError> {
    let target = fs::read_link(source)?;
    match fs::symlink_metadata(destination) {
        Ok(m) if !m.is_dir() => fs::remove_file(destination)?,
        _ => {}
    }
    symlink(target, destination)?;
    Ok(())
}

fn copy_tree(source: &Path, destination: &Path) -> Result<(), FsError> {
    match fs::create_dir(destination) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && destination.is_dir() => {}
        Err(e) => return Err(e.into()),
    }
    for entry in fs::read_dir(source)? {
        let entry = entry?;
        let from = entry.path();
        let to = destination.join(entry.file_name());
        let ft = entry.file_type()?;
        if ft.is_dir() {
            copy_tree(&from, &to)?;
        } else if ft.is_symlink() {
            copy_link(&from, &to)?;
        } else if ft.is_file() {
            fs::copy(&from, &to)?;
        }
        // Sockets, FIFOs and devices are skipped: copying them has no portable meaning.
    }
    Ok(())
}

/// Whether `destination` is `source` or lies below it, comparing resolved paths (the
/// destination itself need not exist yet).
fn is_same_or_descendant(source: &Path, destination: &Path) -> Result<bool, FsError> {
    let source = fs::canonicalize(source)?;
    let destination = resolve_partial(destination)?;
    Ok(destination.starts_with(&source))
}

/// Canonicalizes the longest existing ancestor of `path` and appends the rest.
fn resolve_partial(path: &Path) -> Result<PathBuf, FsError> {
    let mut rest = Vec::new();
    let mut cur = path.to_path_buf();
    loop {
        match fs::canonicalize(&cur) {
            Ok(mut base) => {
                for name in rest.iter().rev() {
                    base.push(name);
                }
                return Ok(base);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let Some(name) = cur.file_name().map(|n| n.to_os_string()) else {
                    return Err(e.into());
                };
                rest.push(name);
                if !cur.pop() {
                    return Err(e.into());
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_trees_without_following_links() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        fs::create_dir_all(src.join("x/y")).unwrap();
        fs::write(src.join("x/f"), b"deep").unwrap();
        let outside = d.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("secret"), b"s").unwrap();
        symlink(&outside, src.join("out")).unwrap();
        copy(&src, &d.path().join("dst"), true).unwrap();
        assert_eq!(fs::read(d.path().join("dst/x/f")).unwrap(), b"deep");
        assert!(d.path().join("dst/x/y").is_dir());
        let link = fs::symlink_metadata(d.path().join("dst/out")).unwrap();
        assert!(link.file_type().is_symlink());
    }

    #[test]
    fn rejects_directories_without_recursive_and_into_itself() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("a/sub")).unwrap();
        assert!(matches!(
            copy(&d.path().join("a"), &d.path().join("b"), false),
            Err(FsError::CopyNeedsRecursive)
        ));
        assert!(matches!(
            copy(&d.path().join("a"), &d.path().join("a/sub/inner"), true),
            Err(FsError::CopyIntoItself)
        ));
        assert!(!d.path().join("b").exists());
    }

    #[test]
    fn copies_files_and_links() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("f"), b"new").unwrap();
        fs::write(d.path().join("g"), b"old old").unwrap();
        copy(&d.path().join("f"), &d.path().join("g"), false).unwrap();
        assert_eq!(fs::read(d.path().join("g")).unwrap(), b"new");
        symlink("f", d.path().join("l")).unwrap();
        copy(&d.path().join("l"), &d.path().join("l2"), false).unwrap();
        assert_eq!(fs::read_link(d.path().join("l2")).unwrap(), Path::new("f"));
        let e = copy(&d.path().join("f"), &d.path().join("no/dir"), false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
