//! Who may open a WebSocket: bearer-token authentication (spec §9.3) and the `Host` check.
//!
//! Two modes, flag-compatible with upstream: a capability token (the server keeps only its
//! SHA-256 and compares in constant time) and HS256 JWTs signed with a shared secret. Beyond
//! upstream, a JWT may not live longer than a maximum lifetime, and the `Host` header of an
//! upgrade must name this server (DNS-rebinding protection).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// How upgrade requests authenticate.
#[derive(Clone, Default)]
pub enum WsAuth {
    /// No authentication (only allowed on loopback unless explicitly accepted).
    #[default]
    None,
    /// `Authorization: Bearer <token>` whose SHA-256 equals this.
    CapabilityToken {
        /// SHA-256 of the token.
        sha256: [u8; 32],
    },
    /// `Authorization: Bearer <HS256 JWT>`.
    SignedBearer(JwtConfig),
}

impl std::fmt::Debug for WsAuth {
    /// Never prints secrets or token hashes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WsAuth::None => "WsAuth::None",
            WsAuth::CapabilityToken { .. } => "WsAuth::CapabilityToken",
            WsAuth::SignedBearer(_) => "WsAuth::SignedBearer",
        })
    }
}

/// Settings of the signed-bearer-token mode.
#[derive(Clone)]
pub struct JwtConfig {
    /// The HMAC secret (at least 32 bytes).
    pub secret: Vec<u8>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud` (string or member of an array), when set.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf` (default 30 s).
    pub max_clock_skew: Duration,
    /// Longest accepted lifetime: `exp - iat`, or `exp - now` without `iat` (default 24 h).
    pub max_lifetime: Duration,
}

/// Why an upgrade was refused: the HTTP 401 body (upstream's texts).
pub type AuthError = &'static str;

impl WsAuth {
    /// Whether any authentication is configured.
    pub fn is_enabled(&self) -> bool {
        !matches!(self, WsAuth::None)
    }

    /// Checks the upgrade request's `Authorization` header.
    pub fn check(&self, headers: &HeaderMap, now: SystemTime) -> Result<(), AuthError> {
        match self {
            WsAuth::None => Ok(()),
            WsAuth::CapabilityToken { sha256 } => {
                if token_matches(bearer(headers)?, sha256) {
                    Ok(())
                } else {
                    Err("invalid websocket bearer token")
                }
            }
            WsAuth::SignedBearer(cfg) => verify_jwt(cfg, bearer(headers)?, now),
        }
    }
}

/// Whether `token`'s SHA-256 is `sha256`, compared in constant time.
pub fn token_matches(token: &str, sha256: &[u8; 32]) -> bool {
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    bool::from(digest.ct_eq(sha256))
}

/// SHA-256 of a token, for `--ws-token-file`.
pub fn token_sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.trim().as_bytes()).into()
}

fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or("missing websocket bearer token")?;
    let value = value.to_str().map_err(|_| "invalid authorization header")?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or("invalid authorization header")?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err("invalid authorization header");
    }
    let token = token.trim();
    if token.is_empty() {
        return Err("missing websocket bearer token");
    }
    Ok(token)
}

fn b64url(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
}

fn verify_jwt(cfg: &JwtConfig, token: &str, now: SystemTime) -> Result<(), AuthError> {
    const BAD: AuthError = "invalid websocket jwt";
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BAD);
    };
    let header: serde_json::Value = b64url(h)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(BAD)?;
    // Only HS256: `none` and every other algorithm are refused.
    if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
        return Err(BAD);
    }
    let sig = b64url(sig).ok_or(BAD)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&cfg.secret).map_err(|_| BAD)?;
    mac.update(h.as_bytes());
    mac.update(b".");
    mac.update(p.as_bytes());
    mac.verify_slice(&sig).map_err(|_| BAD)?;
    let claims: serde_json::Value = b64url(p)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(BAD)?;
    let now = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let skew = cfg.max_clock_skew.as_secs() as i64;
    let exp = claims.get("exp").and_then(|v| v.as_i64()).ok_or(BAD)?;
    if now > exp.saturating_add(skew) {
        return Err("expired websocket jwt");
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = nbf.as_i64().ok_or(BAD)?;
        if now.saturating_add(skew) < nbf {
            return Err("websocket jwt is not valid yet");
        }
    }
    let start = claims.get("iat").and_then(|v| v.as_i64()).unwrap_or(now);
    if exp.saturating_sub(start) > cfg.max_lifetime.as_secs() as i64 {
        return Err("websocket jwt lifetime exceeds the maximum");
    }
    if let Some(want) = &cfg.issuer {
        if claims.get("iss").and_then(|v| v.as_str()) != Some(want.as_str()) {
            return Err("websocket jwt issuer mismatch");
        }
    }
    if let Some(want) = &cfg.audience {
        let ok = match claims.get("aud") {
            Some(serde_json::Value::String(s)) => s == want,
            Some(serde_json::Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(want)),
            _ => false,
        };
        if !ok {
            return Err("websocket jwt audience mismatch");
        }
    }
    Ok(())
}

/// Which `Host` headers an upgrade may carry.
#[derive(Debug, Clone, Default)]
pub struct HostPolicy {
    /// Bound to a loopback address: loopback names are accepted.
    pub loopback: bool,
    /// Extra allowed host names (without port). Empty and not loopback: any host.
    pub allowed: Vec<String>,
}

impl HostPolicy {
    /// Whether `host` (a `Host` header value, maybe with a port) is acceptable.
    pub fn allows(&self, host: Option<&str>) -> bool {
        if !self.loopback && self.allowed.is_empty() {
            return true;
        }
        let Some(host) = host else { return false };
        let name = strip_port(host).to_ascii_lowercase();
        if self.loopback && is_loopback_name(&name) {
            return true;
        }
        self.allowed.iter().any(|a| a.eq_ignore_ascii_case(&name))
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

fn is_loopback_name(name: &str) -> bool {
    name == "localhost"
        || name.ends_with(".localhost")
        || name == "::1"
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_str(auth).unwrap());
        h
    }

    fn jwt(secret: &[u8], header: &str, claims: serde_json::Value) -> String {
        let e = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let h = e(header.as_bytes());
        let p = e(claims.to_string().as_bytes());
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(format!("{h}.{p}").as_bytes());
        format!("{h}.{p}.{}", e(&mac.finalize().into_bytes()))
    }

    fn cfg() -> JwtConfig {
        JwtConfig {
            secret: vec![7; 32],
            issuer: Some("me".into()),
            audience: Some("exec".into()),
            max_clock_skew: Duration::from_secs(30),
            max_lifetime: Duration::from_secs(86400),
        }
    }

    const HS: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

    fn check(token: &str) -> Result<(), AuthError> {
        let t = UNIX_EPOCH + Duration::from_secs(1_000_000);
        WsAuth::SignedBearer(cfg()).check(&headers(&format!("Bearer {token}")), t)
    }

    #[test]
    fn capability_tokens() {
        let auth = WsAuth::CapabilityToken {
            sha256: token_sha256("s3cret\n"),
        };
        let now = SystemTime::now();
        assert_eq!(auth.check(&headers("bearer s3cret"), now), Ok(()));
        assert_eq!(
            auth.check(&headers("Bearer nope"), now),
            Err("invalid websocket bearer token")
        );
        assert_eq!(
            auth.check(&HeaderMap::new(), now),
            Err("missing websocket bearer token")
        );
        assert_eq!(
            auth.check(&headers("Basic abc"), now),
            Err("invalid authorization header")
        );
    }

    #[test]
    fn jwt_rules() {
        let good = serde_json::json!({"exp": 1_000_100, "iss": "me", "aud": ["x", "exec"]});
        assert_eq!(check(&jwt(&[7; 32], HS, good.clone())), Ok(()));
        assert_eq!(
            check(&jwt(&[8; 32], HS, good.clone())),
            Err("invalid websocket jwt")
        );
        let none = jwt(&[7; 32], r#"{"alg":"none"}"#, good.clone());
        assert_eq!(check(&none), Err("invalid websocket jwt"));
        let c = serde_json::json!({"exp": 999_950, "iss": "me", "aud": "exec"});
        assert_eq!(check(&jwt(&[7; 32], HS, c)), Err("expired websocket jwt"));
        let c = serde_json::json!({"exp": 999_980, "iss": "me", "aud": "exec"});
        assert_eq!(check(&jwt(&[7; 32], HS, c)), Ok(()), "within the skew");
        let c = serde_json::json!({"exp": 1_000_100, "nbf": 1_000_060, "iss": "me", "aud": "exec"});
        assert_eq!(
            check(&jwt(&[7; 32], HS, c)),
            Err("websocket jwt is not valid yet")
        );
        let c = serde_json::json!({"exp": 1_000_100, "iss": "other", "aud": "exec"});
        assert_eq!(
            check(&jwt(&[7; 32], HS, c)),
            Err("websocket jwt issuer mismatch")
        );
        let c = serde_json::json!({"exp": 1_000_100, "iss": "me", "aud": "nope"});
        assert_eq!(
            check(&jwt(&[7; 32], HS, c)),
            Err("websocket jwt audience mismatch")
        );
        let c = serde_json::json!({"iss": "me", "aud": "exec"});
        assert_eq!(
            check(&jwt(&[7; 32], HS, c)),
            Err("invalid websocket jwt"),
            "exp required"
        );
        let c = serde_json::json!({"exp": 1_000_000 + 2 * 86400, "iss": "me", "aud": "exec"});
        assert_eq!(
            check(&jwt(&[7; 32], HS, c)),
            Err("websocket jwt lifetime exceeds the maximum")
        );
    }

    #[test]
    fn host_policy() {
        let lo = HostPolicy {
            loopback: true,
            allowed: vec!["box.internal".into()],
        };
        for ok in [
            "127.0.0.1:80",
            "localhost",
            "LOCALHOST:1",
            "[::1]:9",
            "box.internal:5",
        ] {
            assert!(lo.allows(Some(ok)), "{ok}");
        }
        for bad in ["evil.example", "evil.example:80", "10.0.0.1"] {
            assert!(!lo.allows(Some(bad)), "{bad}");
        }
        assert!(!lo.allows(None));
        assert!(HostPolicy::default().allows(Some("anything")));
    }
}
