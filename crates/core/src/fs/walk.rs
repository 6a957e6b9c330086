//! `fs/walk`: a bounded breadth-first listing of a directory tree.
//!
//! Entries of one directory are name-sorted; the root itself is not listed; symlinks are
//! listed only when they lead to a directory and `followDirectorySymlinks` is set (then the
//! walk descends into them, once per real directory, so link cycles end). Errors on the way
//! are collected, not fatal; a limit that stops the walk sets `truncated`.

use std::collections::{HashSet, VecDeque};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use exec_server_protocol::fs::{WalkEntry, WalkEntryKind, WalkError, WalkOptions, WalkResult};
use exec_server_protocol::PathUri;

use super::FsError;

/// Largest accepted `maxDepth`.
pub const MAX_WALK_DEPTH: usize = 64;
/// Largest accepted `maxDirectories`.
pub const MAX_WALK_DIRECTORIES: usize = 10_000;
/// Largest accepted `maxEntries`.
pub const MAX_WALK_ENTRIES: usize = 50_000;
/// Approximate bound on the encoded reply, so one walk never builds a huge message.
const MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;
/// JSON overhead of one entry besides its URI, roughly.
const ENTRY_OVERHEAD: usize = 40;

/// Walks `root` within `opts`.
pub fn walk(root: &Path, opts: &WalkOptions) -> Result<WalkResult, FsError> {
    if opts.max_depth > MAX_WALK_DEPTH
        || opts.max_directories > MAX_WALK_DIRECTORIES
        || opts.max_entries > MAX_WALK_ENTRIES
    {
        return Err(FsError::WalkLimits);
    }
    let mut out = WalkResult {
        entries: Vec::new(),
        errors: Vec::new(),
        truncated: false,
    };
    let root_meta = fs::metadata(root)?;
    if !root_meta.is_dir() {
        return Ok(out);
    }
    let mut seen = HashSet::from([(root_meta.dev(), root_meta.ino())]);
    let mut queue = VecDeque::from([(root.to_path_buf(), 0usize)]);
    let mut directories_read = 0usize;
    let mut reply_bytes = 0usize;
    while let Some((dir, depth)) = queue.pop_front() {
        if directories_read >= opts.max_directories {
            out.truncated = true;
            break;
        }
        directories_read += 1;
        let names = match sorted_names(&dir) {
            Ok(n) => n,
            Err(e) if depth == 0 => return Err(e.into()),
            Err(e) => {
                push_error(&mut out, &dir, &e);
                continue;
            }
        };
        for name in names {
            let path = dir.join(&name);
            let Some((kind, descend)) = classify(&path, opts, &mut seen, &name) else {
                continue;
            };
            if out.entries.len() >= opts.max_entries {
                out.truncated = true;
                return Ok(out);
            }
            let Some(uri) = PathUri::from_path(&path) else {
                continue;
            };
            reply_bytes += uri.as_str().len() + ENTRY_OVERHEAD;
            if reply_bytes > MAX_REPLY_BYTES {
                out.truncated = true;
                return Ok(out);
            }
            out.entries.push(WalkEntry { path: uri, kind });
            if descend && depth + 1 < opts.max_depth {
                queue.push_back((path, depth + 1));
            }
        }
    }
    Ok(out)
}

/// The kind of an entry and whether to descend into it, or `None` to leave it out.
fn classify(
    path: &Path,
    opts: &WalkOptions,
    seen: &mut HashSet<(u64, u64)>,
    name: &std::ffi::OsStr,
) -> Option<(WalkEntryKind, bool)> {
    let lmeta = fs::symlink_metadata(path).ok()?;
    let ft = lmeta.file_type();
    let hidden = name.as_encoded_bytes().first() == Some(&b'.');
    if ft.is_dir() {
        let descend =
            !(opts.prune_hidden_directories && hidden) && seen.insert((lmeta.dev(), lmeta.ino()));
        return Some((WalkEntryKind::Directory, descend));
    }
    if ft.is_symlink() {
        if !opts.follow_directory_symlinks {
            return None;
        }
        let meta = fs::metadata(path).ok()?;
        if !meta.is_dir() {
            return None;
        }
        let descend =
            !(opts.prune_hidden_directories && hidden) && seen.insert((meta.dev(), meta.ino()));
        return Some((WalkEntryKind::Directory, descend));
    }
    if ft.is_file() {
        return Some((WalkEntryKind::File, false));
    }
    None
}

fn sorted_names(dir: &Path) -> std::io::Result<Vec<std::ffi::OsString>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        names.push(entry?.file_name());
    }
    names.sort();
    Ok(names)
}

fn push_error(out: &mut WalkResult, path: &Path, e: &std::io::Error) {
    if let Some(uri) = PathUri::from_path(path) {
        out.errors.push(WalkError {
            path: uri,
            message: e.to_string(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn opts(depth: usize) -> WalkOptions {
        WalkOptions {
            max_depth: depth,
            max_directories: 100,
            max_entries: 100,
            follow_directory_symlinks: false,
            prune_hidden_directories: false,
        }
    }

    fn names(root: &Path, r: &WalkResult) -> Vec<String> {
        r.entries
            .iter()
            .map(|e| {
                let p = e.path.to_path().unwrap();
                p.strip_prefix(root).unwrap().to_string_lossy().into_owned()
            })
            .collect()
    }

    #[test]
    fn breadth_first_name_sorted() {
        let d = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(d.path()).unwrap();
        fs::create_dir_all(root.join("nested/deeper")).unwrap();
        fs::write(root.join("root.txt"), b"").unwrap();
        fs::write(root.join("nested/note.txt"), b"").unwrap();
        let r = walk(&root, &opts(4)).unwrap();
        assert_eq!(
            names(&root, &r),
            ["nested", "root.txt", "nested/deeper", "nested/note.txt"]
        );
        assert!(!r.truncated);
        let r = walk(&root, &opts(1)).unwrap();
        assert_eq!(names(&root, &r), ["nested", "root.txt"]);
    }

    #[test]
    fn limits_and_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(d.path()).unwrap();
        fs::create_dir(root.join("a")).unwrap();
        fs::write(root.join("a/f"), b"").unwrap();
        symlink(root.join("a"), root.join("la")).unwrap();
        symlink(root.join("a/f"), root.join("lf")).unwrap();
        symlink(&root, root.join("a/loop")).unwrap();
        let r = walk(&root, &opts(8)).unwrap();
        assert_eq!(names(&root, &r), ["a", "a/f"]);
        let mut follow = opts(8);
        follow.follow_directory_symlinks = true;
        let r = walk(&root, &follow).unwrap();
        assert_eq!(names(&root, &r), ["a", "la", "a/f", "a/loop"]);
        let mut few = opts(8);
        few.max_entries = 1;
        assert!(walk(&root, &few).unwrap().truncated);
        let mut too_deep = opts(65);
        assert!(matches!(walk(&root, &too_deep), Err(FsError::WalkLimits)));
        too_deep.max_depth = 1;
        assert!(walk(&root.join("a/f"), &too_deep)
            .unwrap()
            .entries
            .is_empty());
    }
}
