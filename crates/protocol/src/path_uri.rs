//! `PathUri`: every path on the wire is an absolute `file:` URI (spec §3).
//!
//! Parsing follows WHATWG URL rules (the `url` crate), so dot segments are normalised,
//! `file://localhost/` is accepted and the scheme is case-insensitive. Decoding checks the
//! shape (scheme, query, fragment) and fails as invalid params (`-32602`); converting to a
//! native path checks that the URI belongs to a POSIX host and fails as an invalid request
//! (`-32600`), as upstream does.

use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use url::Url;

/// An absolute `file:` URI naming a path on the executor.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PathUri(Url);

/// Why a string is not a usable `PathUri`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathUriError {
    /// Not a URI at all, e.g. a native path (`invalid URI: …`).
    Invalid(String),
    /// A scheme other than `file`.
    UnsupportedScheme(String),
    /// A `?query` part.
    Query,
    /// A `#fragment` part.
    Fragment,
    /// A Windows drive or UNC form, foreign to this POSIX host.
    Foreign(String),
    /// A segment whose percent-decoding holds `/` or NUL: it names no file (upstream answers
    /// ENOENT), and letting it through would smuggle `..` past textual path checks.
    EncodedSeparator,
}

impl PathUriError {
    /// The JSON-RPC code for this error: shape errors are invalid params, foreign paths are
    /// invalid requests.
    pub fn code(&self) -> i64 {
        match self {
            PathUriError::Foreign(_) => crate::codes::INVALID_REQUEST,
            PathUriError::EncodedSeparator => crate::codes::NOT_FOUND,
            _ => crate::codes::INVALID_PARAMS,
        }
    }
}

impl fmt::Display for PathUriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathUriError::Invalid(e) => write!(f, "invalid URI: {e}"),
            PathUriError::UnsupportedScheme(s) => write!(f, "unsupported path URI scheme `{s}`"),
            PathUriError::Query => f.write_str("query parameters are not allowed in path URIs"),
            PathUriError::Fragment => f.write_str("fragments are not allowed in path URIs"),
            PathUriError::Foreign(u) => write!(f, "'{u}' is invalid on 'linux'"),
            PathUriError::EncodedSeparator => f.write_str("No such file or directory (os error 2)"),
        }
    }
}

impl std::error::Error for PathUriError {}

impl PathUri {
    /// Parses and checks the shape of a URI string.
    pub fn parse(s: &str) -> Result<Self, PathUriError> {
        let url = Url::parse(s).map_err(|e| PathUriError::Invalid(e.to_string()))?;
        if url.scheme() != "file" {
            return Err(PathUriError::UnsupportedScheme(url.scheme().to_string()));
        }
        if url.query().is_some() {
            return Err(PathUriError::Query);
        }
        if url.fragment().is_some() {
            return Err(PathUriError::Fragment);
        }
        Ok(PathUri(url))
    }

    /// The URI of an absolute native path.
    pub fn from_path(path: &Path) -> Option<Self> {
        Url::from_file_path(path).ok().map(PathUri)
    }

    /// The URI text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The native path, percent-decoded. Fails for a URI with a host (UNC) or a Windows drive.
    pub fn to_path(&self) -> Result<PathBuf, PathUriError> {
        let foreign = || PathUriError::Foreign(self.0.as_str().to_string());
        if self.0.host_str().is_some_and(|h| !h.is_empty()) {
            return Err(foreign());
        }
        let segments: Vec<&str> = self
            .0
            .path_segments()
            .map(|s| s.collect())
            .unwrap_or_default();
        if let Some(first) = segments.first() {
            let decoded: Vec<u8> = percent_decode(first);
            if decoded.len() == 2 && decoded[0].is_ascii_alphabetic() && decoded[1] == b':' {
                return Err(foreign());
            }
        }
        let mut bytes = Vec::with_capacity(self.0.path().len());
        for seg in &segments {
            if seg.is_empty() {
                continue;
            }
            let decoded = percent_decode(seg);
            if decoded.iter().any(|&b| b == b'/' || b == 0) {
                return Err(PathUriError::EncodedSeparator);
            }
            bytes.push(b'/');
            bytes.extend(decoded);
        }
        if bytes.is_empty() {
            bytes.push(b'/');
        }
        Ok(PathBuf::from(OsString::from_vec(bytes)))
    }
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for PathUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl Serialize for PathUri {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for PathUri {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        PathUri::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &str) -> Result<PathBuf, PathUriError> {
        PathUri::parse(s)?.to_path()
    }

    #[test]
    fn accepts_the_forms_upstream_accepts() {
        assert_eq!(
            path("file:///tmp/a.txt").unwrap(),
            PathBuf::from("/tmp/a.txt")
        );
        assert_eq!(
            path("FILE:///tmp/a.txt").unwrap(),
            PathBuf::from("/tmp/a.txt")
        );
        assert_eq!(
            path("file://localhost/tmp/a").unwrap(),
            PathBuf::from("/tmp/a")
        );
        assert_eq!(path("file:").unwrap(), PathBuf::from("/"));
        assert_eq!(
            path("file:///tmp/x/../x/./a").unwrap(),
            PathBuf::from("/tmp/x/a")
        );
        assert_eq!(path("file:///tmp/a/").unwrap(), PathBuf::from("/tmp/a"));
        assert_eq!(
            path("file:///tmp/sp%20ace%23x/f%251.txt").unwrap(),
            PathBuf::from("/tmp/sp ace#x/f%1.txt")
        );
    }

    #[test]
    fn rejects_with_upstream_messages() {
        let e = path("/tmp/a").unwrap_err();
        assert_eq!(e.to_string(), "invalid URI: relative URL without a base");
        assert_eq!(e.code(), -32602);
        assert_eq!(
            path("http://x/a").unwrap_err().to_string(),
            "unsupported path URI scheme `http`"
        );
        assert_eq!(
            path("C:\\x").unwrap_err().to_string(),
            "unsupported path URI scheme `c`"
        );
        assert_eq!(path("file:///a?q=1").unwrap_err(), PathUriError::Query);
        assert_eq!(path("file:///a#f").unwrap_err(), PathUriError::Fragment);
        let e = path("file://server/share/x").unwrap_err();
        assert_eq!(e.code(), -32600);
        assert!(path("file:///C:/x").is_err());
        let e = path("file:///work/..%2F..%2Fetc").unwrap_err();
        assert_eq!(e, PathUriError::EncodedSeparator);
        assert_eq!(e.code(), -32004);
        assert!(path("file:///tmp/a%00b").is_err());
    }

    #[test]
    fn encodes_native_paths() {
        let u = PathUri::from_path(Path::new("/tmp/sp ace#x")).unwrap();
        assert_eq!(u.as_str(), "file:///tmp/sp%20ace%23x");
    }
}
