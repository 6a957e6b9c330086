//! The affinity cookie store of spec §6.4: load-balancer cookies kept for OpenAI HTTPS hosts so
//! that successive requests reach the same backend. It is not a cookie jar:
//! * only `https` URLs whose host is `chatgpt.com`, `chatgpt-staging.com`,
//!   `openai-staging.com` or a subdomain of one of them take part;
//! * only the allowlisted Cloudflare/OpenAI cookie names are stored; other `Set-Cookie`
//!   headers are ignored;
//! * cookies are host-only: what a host set is sent back to that host alone (so never to a
//!   host outside the allowlist), and a later value replaces an earlier one;
//! * the store is bounded ([`MAX_HOSTS`] hosts, [`MAX_VALUE_BYTES`] per value) and shared by
//!   every runner that shares it: [`AffinityCookies::process`] is the process's one store,
//!   which every [`LocalHttpRunner::new`](super::LocalHttpRunner::new) uses (the server's
//!   `http/request` and a client's direct HTTP alike).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Hosts remembered at most; past it, new hosts are not stored.
pub const MAX_HOSTS: usize = 256;

/// Longest cookie value stored.
pub const MAX_VALUE_BYTES: usize = 4096;

const HOSTS: &[&str] = &["chatgpt.com", "chatgpt-staging.com", "openai-staging.com"];

const NAMES: &[&str] = &[
    "__cf_bm",
    "__cflb",
    "__cfruid",
    "__cfseq",
    "__cfwaitingroom",
    "_cfuvid",
    "cf_clearance",
    "cf_ob_info",
    "cf_use_ob",
    "__oailb",
];

/// Load-balancer affinity cookies, per allowlisted host.
#[derive(Debug, Default)]
pub struct AffinityCookies {
    /// Host → cookies in the order first set.
    hosts: Mutex<HashMap<String, Vec<(String, String)>>>,
}

impl AffinityCookies {
    /// The process-wide store (spec §6.4: one jar per process).
    pub fn process() -> Arc<AffinityCookies> {
        static STORE: OnceLock<Arc<AffinityCookies>> = OnceLock::new();
        STORE.get_or_init(Arc::default).clone()
    }

    /// The `Cookie` value to send to `url`, if the store has cookies for it.
    pub fn cookies_for(&self, url: &url::Url) -> Option<String> {
        let host = eligible_host(url)?;
        let hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let cookies = hosts.get(&host)?;
        let pairs: Vec<String> = cookies.iter().map(|(n, v)| format!("{n}={v}")).collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }

    /// Stores the allowlisted cookies among `set_cookie` header values of a response from
    /// `url`; `Max-Age=0` (or negative) removes a cookie.
    pub fn store<'a>(&self, url: &url::Url, set_cookie: impl IntoIterator<Item = &'a [u8]>) {
        let Some(host) = eligible_host(url) else {
            return;
        };
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        for raw in set_cookie {
            let Some((name, value, expired)) = parse_set_cookie(raw) else {
                continue;
            };
            if !name_allowed(name) || value.len() > MAX_VALUE_BYTES {
                continue;
            }
            if !hosts.contains_key(&host) && (expired || hosts.len() >= MAX_HOSTS) {
                continue;
            }
            let cookies = hosts.entry(host.clone()).or_default();
            cookies.retain(|(n, _)| n != name);
            if !expired {
                cookies.push((name.to_string(), value.to_string()));
            }
        }
    }
}

/// The URL's host when it may take part: `https` and an allowlisted host or subdomain.
fn eligible_host(url: &url::Url) -> Option<String> {
    if url.scheme() != "https" {
        return None;
    }
    let host = url.host_str()?.to_ascii_lowercase();
    let host = host.strip_suffix('.').unwrap_or(&host).to_string();
    HOSTS
        .iter()
        .any(|d| host == *d || host.strip_suffix(d).is_some_and(|p| p.ends_with('.')))
        .then_some(host)
}

fn name_allowed(name: &str) -> bool {
    NAMES.contains(&name) || name.starts_with("cf_chl_")
}

/// `name`, `value` and whether `Max-Age` says the cookie is already gone.
fn parse_set_cookie(raw: &[u8]) -> Option<(&str, &str, bool)> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut parts = text.split(';');
    let (name, value) = parts.next()?.split_once('=')?;
    let (name, value) = (name.trim(), value.trim());
    if name.is_empty() || value.bytes().any(|b| b.is_ascii_control() || b == b';') {
        return None;
    }
    let expired = parts.any(|attr| {
        attr.split_once('=').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("max-age")
                && v.trim().parse::<i64>().is_ok_and(|age| age <= 0)
        })
    });
    Some((name, value, expired))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> url::Url {
        url::Url::parse(s).expect("url")
    }

    fn set(store: &AffinityCookies, u: &str, headers: &[&str]) {
        store.store(&url(u), headers.iter().map(|h| h.as_bytes()));
    }

    #[test]
    fn only_allowlisted_names_are_kept_and_replayed() {
        let s = AffinityCookies::default();
        set(
            &s,
            "https://chatgpt.com/a",
            &[
                "__cflb=one; Path=/; Secure",
                "session=secret",
                "cf_chl_rc_m=7",
            ],
        );
        assert_eq!(
            s.cookies_for(&url("https://chatgpt.com/b")).as_deref(),
            Some("__cflb=one; cf_chl_rc_m=7")
        );
    }

    #[test]
    fn later_values_replace_earlier_ones_and_max_age_zero_removes() {
        let s = AffinityCookies::default();
        set(&s, "https://chatgpt.com/", &["__cflb=one", "__cf_bm=b"]);
        set(&s, "https://chatgpt.com/", &["__cflb=two"]);
        assert_eq!(
            s.cookies_for(&url("https://chatgpt.com/")).as_deref(),
            Some("__cf_bm=b; __cflb=two")
        );
        set(&s, "https://chatgpt.com/", &["__cf_bm=gone; Max-Age=0"]);
        assert_eq!(
            s.cookies_for(&url("https://chatgpt.com/")).as_deref(),
            Some("__cflb=two")
        );
    }

    #[test]
    fn only_https_allowlisted_hosts_take_part_and_cookies_stay_with_their_host() {
        let s = AffinityCookies::default();
        set(&s, "http://chatgpt.com/", &["__cflb=plain"]);
        set(&s, "https://example.com/", &["__cflb=other"]);
        set(&s, "https://evilchatgpt.com/", &["__cflb=evil"]);
        assert_eq!(s.cookies_for(&url("https://chatgpt.com/")), None);
        set(&s, "https://ab.chatgpt.com/", &["__cflb=sub"]);
        assert_eq!(
            s.cookies_for(&url("https://AB.chatgpt.com./x")).as_deref(),
            Some("__cflb=sub")
        );
        assert_eq!(s.cookies_for(&url("https://chatgpt.com/")), None);
        assert_eq!(s.cookies_for(&url("http://ab.chatgpt.com/")), None);
        assert_eq!(s.cookies_for(&url("https://example.com/")), None);
        assert_eq!(s.cookies_for(&url("https://evilchatgpt.com/")), None);
    }

    #[test]
    fn malformed_and_oversized_cookies_are_ignored() {
        let s = AffinityCookies::default();
        let big = format!("__cflb={}", "x".repeat(MAX_VALUE_BYTES + 1));
        set(
            &s,
            "https://chatgpt.com/",
            &["__cflb", "=v", &big, "__cflb=a\tb"],
        );
        assert_eq!(s.cookies_for(&url("https://chatgpt.com/")), None);
        s.store(&url("https://chatgpt.com/"), [&b"__cflb=\xff"[..]]);
        assert_eq!(s.cookies_for(&url("https://chatgpt.com/")), None);
    }

    #[test]
    fn the_number_of_hosts_is_bounded() {
        let s = AffinityCookies::default();
        for i in 0..MAX_HOSTS + 5 {
            set(&s, &format!("https://h{i}.chatgpt.com/"), &["__cflb=v"]);
        }
        assert!(s.cookies_for(&url("https://h0.chatgpt.com/")).is_some());
        assert!(s
            .cookies_for(&url(&format!("https://h{}.chatgpt.com/", MAX_HOSTS + 1)))
            .is_none());
    }
}
