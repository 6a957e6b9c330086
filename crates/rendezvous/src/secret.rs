//! Random secrets the rendezvous hands out (registration ids, socket tickets, harness key
//! authorizations) and the digests it keeps of them.
//!
//! A secret is 32 bytes from the operating system's RNG, written as unpadded URL-safe base64
//! (43 characters), so it fits a URL query and a JSON string unchanged. The rendezvous keeps a
//! ticket or an authorization only as its SHA-256 digest: the state in memory cannot be
//! replayed, and a map lookup by digest reveals nothing useful through its timing.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::config::sha256;

/// Longest secret a peer may present, in bytes (the spec's authorization bound, §10.4). Ours
/// are 43 characters; anything longer than this is refused before hashing.
pub(crate) const MAX_PRESENTED_SECRET_LEN: usize = 4096;

/// Why no secret could be made.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed")]
pub(crate) struct RandomError(#[source] getrandom::Error);

/// A fresh random secret: 32 bytes as unpadded URL-safe base64.
pub(crate) fn new_secret() -> Result<String, RandomError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(RandomError)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The digest a presented secret is looked up by. `None` for text too long to be one of ours.
pub(crate) fn digest(secret: &str) -> Option<[u8; 32]> {
    (secret.len() <= MAX_PRESENTED_SECRET_LEN).then(|| sha256(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_fresh_url_safe_and_digestible() {
        let a = new_secret().unwrap();
        let b = new_secret().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(digest(&a), digest(&a));
        assert_ne!(digest(&a), digest(&b));
        assert_eq!(digest(&"x".repeat(MAX_PRESENTED_SECRET_LEN + 1)), None);
    }
}
