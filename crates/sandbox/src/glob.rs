//! Glob expansion for policy entries: `*` and `?` within one name, `**` for any number of
//! directories. Scans are bounded by depth and never follow directory symlinks.

use std::path::{Component, Path, PathBuf};

/// Most matches one pattern may produce.
const MAX_MATCHES: usize = 4096;

/// The existing paths matching the absolute `pattern`, scanning at most `depth` levels below
/// its literal prefix. A pattern without wildcards is returned as is.
pub(crate) fn expand(pattern: &Path, depth: u32) -> Vec<PathBuf> {
    let parts: Vec<String> = pattern
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    let literal = parts.iter().take_while(|p| !is_glob(p)).count();
    if literal == parts.len() {
        return vec![pattern.to_path_buf()];
    }
    let mut base = PathBuf::from("/");
    base.extend(&parts[..literal]);
    let mut out = Vec::new();
    walk(&base, &parts[literal..], depth, &mut out);
    out
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

fn walk(dir: &Path, rest: &[String], depth: u32, out: &mut Vec<PathBuf>) {
    let Some((first, tail)) = rest.split_first() else {
        out.push(dir.to_path_buf());
        return;
    };
    if out.len() >= MAX_MATCHES {
        return;
    }
    if first == "**" {
        // Zero directories...
        walk(dir, tail, depth, out);
        // ...or one more, then `**` again.
        if depth == 0 {
            return;
        }
        for (path, is_dir) in children(dir) {
            if is_dir {
                walk(&path, rest, depth - 1, out);
            }
        }
        return;
    }
    if !is_glob(first) {
        let p = dir.join(first);
        if std::fs::symlink_metadata(&p).is_ok() {
            walk(&p, tail, depth, out);
        }
        return;
    }
    if depth == 0 {
        return;
    }
    for (path, is_dir) in children(dir) {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if matches(first.as_bytes(), name.as_bytes()) && (tail.is_empty() || is_dir) {
            walk(&path, tail, depth - 1, out);
        }
    }
}

fn children(dir: &Path) -> Vec<(PathBuf, bool)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(Result::ok)
        .map(|e| {
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            (e.path(), is_dir)
        })
        .collect()
}

/// Matches one name against a pattern with `*`, `?` and `[...]` classes.
fn matches(pat: &[u8], name: &[u8]) -> bool {
    match pat.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| matches(rest, &name[i..])),
        Some((b'?', rest)) => !name.is_empty() && matches(rest, &name[1..]),
        Some((b'[', rest)) => {
            let Some(end) = rest.iter().position(|&c| c == b']') else {
                return name.first() == Some(&b'[') && matches(rest, &name[1..]);
            };
            let (class, after) = (&rest[..end], &rest[end + 1..]);
            let Some((&c, name_rest)) = name.split_first() else {
                return false;
            };
            let (negate, class) = match class.split_first() {
                Some((b'!' | b'^', cls)) => (true, cls),
                _ => (false, class),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    hit |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            hit != negate && matches(after, name_rest)
        }
        Some((&p, rest)) => name.first() == Some(&p) && matches(rest, &name[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_patterns() {
        assert!(matches(b"*.env", b"prod.env"));
        assert!(matches(b".env*", b".env"));
        assert!(!matches(b"*.env", b"env"));
        assert!(matches(b"f?o", b"foo"));
        assert!(matches(b"[a-c]x", b"bx"));
        assert!(!matches(b"[!a-c]x", b"bx"));
    }

    #[test]
    fn expands_double_star_within_depth() {
        let d = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(d.path()).unwrap();
        std::fs::create_dir_all(root.join("a/b/c")).unwrap();
        for p in [".env", "a/.env", "a/b/c/.env"] {
            std::fs::write(root.join(p), b"").unwrap();
        }
        let mut got = expand(&root.join("**/.env"), 8);
        got.sort();
        assert_eq!(
            got,
            vec![
                root.join(".env"),
                root.join("a/.env"),
                root.join("a/b/c/.env")
            ]
        );
        assert_eq!(expand(&root.join("**/.env"), 1).len(), 2);
        let mut one = expand(&root.join("a/*"), 8);
        one.sort();
        assert_eq!(one, vec![root.join("a/.env"), root.join("a/b")]);
    }
}
