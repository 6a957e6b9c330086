//! [`LocalHttpRunner`]: sends requests from this machine with reqwest (HTTP/1.1, rustls).
//!
//! reqwest decides redirects and content decoding per client, not per request, so the runner
//! keeps four clients: {follow, stop} × {decode gzip/zstd, raw}. They share nothing but the
//! process's TLS provider; each keeps its own connection pool.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, COOKIE, SET_COOKIE};
use reqwest::redirect::Policy;
use reqwest::Client;
use tokio::time::Instant;

use super::cookies::AffinityCookies;
use super::prepare::prepare;
use super::{
    HttpBody, HttpConfig, HttpError, HttpHeader, HttpRequest, HttpResponse, HttpRunner,
    RedirectPolicy,
};

/// Redirect hops followed before giving up (reqwest's and upstream's default).
const MAX_REDIRECTS: usize = 10;

/// The local HTTP runner. Cheap to share behind an `Arc`; one per process is enough.
#[derive(Debug)]
pub struct LocalHttpRunner {
    config: HttpConfig,
    follow_decoded: Client,
    follow_raw: Client,
    stop_decoded: Client,
    stop_raw: Client,
    cookies: Arc<AffinityCookies>,
}

impl LocalHttpRunner {
    /// Builds the clients (loads the platform's root certificates and proxy settings); the
    /// affinity cookies are the process's store ([`AffinityCookies::process`]).
    pub fn new(config: HttpConfig) -> Result<Self, HttpError> {
        Self::with_cookies(config, AffinityCookies::process())
    }

    /// Like [`LocalHttpRunner::new`], with its own affinity cookie store.
    pub fn with_cookies(
        config: HttpConfig,
        cookies: Arc<AffinityCookies>,
    ) -> Result<Self, HttpError> {
        install_crypto_provider();
        let build = |follow: bool, decode: bool| {
            let policy = if follow {
                Policy::limited(MAX_REDIRECTS)
            } else {
                Policy::none()
            };
            let mut b = Client::builder().redirect(policy).gzip(decode).zstd(decode);
            for der in &config.extra_root_certs_der {
                let cert = reqwest::Certificate::from_der(der)
                    .map_err(|e| HttpError::Client(e.to_string()))?;
                b = b.add_root_certificate(cert);
            }
            for (host, addr) in &config.resolve {
                b = b.resolve(host, *addr);
            }
            b.build().map_err(|e| HttpError::Client(e.to_string()))
        };
        Ok(LocalHttpRunner {
            follow_decoded: build(true, true)?,
            follow_raw: build(true, false)?,
            stop_decoded: build(false, true)?,
            stop_raw: build(false, false)?,
            cookies,
            config,
        })
    }

    /// The runner's tunables.
    pub fn config(&self) -> &HttpConfig {
        &self.config
    }

    fn client(&self, redirect: RedirectPolicy, decode: bool) -> &Client {
        match (redirect, decode) {
            (RedirectPolicy::Follow, true) => &self.follow_decoded,
            (RedirectPolicy::Follow, false) => &self.follow_raw,
            (RedirectPolicy::Stop, true) => &self.stop_decoded,
            (RedirectPolicy::Stop, false) => &self.stop_raw,
        }
    }
}

impl HttpRunner for LocalHttpRunner {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let mut p = prepare(&request, |var| std::env::var_os(var))?;
        if let Some(ours) = self.cookies.cookies_for(&p.url) {
            merge_cookies(&mut p.headers, &ours);
        }
        let timeout = request.timeout.or(self.config.default_timeout);
        let deadline = timeout.map(|t| (Instant::now() + t, t));
        let client = self.client(request.redirect, !p.caller_accept_encoding);
        let url = p.url.to_string();
        let mut req = reqwest::Request::new(p.method, p.url);
        *req.headers_mut() = p.headers;
        if let Some(body) = request.body {
            *req.body_mut() = Some(body.into());
        }
        let sent = client.execute(req);
        let resp = match deadline {
            Some((at, after)) => {
                tokio::time::timeout_at(at, sent)
                    .await
                    .map_err(|_| HttpError::Timeout {
                        url: url.clone(),
                        after,
                    })?
            }
            None => sent.await,
        }
        .map_err(|e| HttpError::send(&url, &e))?;
        let set_cookie = resp.headers().get_all(SET_COOKIE).iter();
        self.cookies
            .store(resp.url(), set_cookie.map(HeaderValue::as_bytes));
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .filter_map(|(name, value)| {
                let value = std::str::from_utf8(value.as_bytes()).ok()?;
                Some(HttpHeader {
                    name: name.as_str().to_string(),
                    value: value.to_string(),
                    value_env_var: None,
                })
            })
            .collect();
        let len_hint = resp.content_length();
        Ok(HttpResponse {
            status,
            headers,
            body: HttpBody::new(chunks(resp, deadline), len_hint),
        })
    }
}

/// Adds the store's `ours` (`a=1; b=2`) to the request's one `Cookie` header; a cookie the
/// caller set itself wins, and a caller header that is not UTF-8 is left alone.
fn merge_cookies(headers: &mut HeaderMap, ours: &str) {
    let mut parts = Vec::new();
    for v in headers.get_all(COOKIE) {
        let Ok(v) = std::str::from_utf8(v.as_bytes()) else {
            return;
        };
        parts.extend(v.split(';').map(str::trim).filter(|p| !p.is_empty()));
    }
    let name = |pair: &str| {
        pair.split_once('=')
            .map_or(pair, |(n, _)| n)
            .trim()
            .to_string()
    };
    let taken: Vec<String> = parts.iter().map(|p| name(p)).collect();
    parts.extend(ours.split("; ").filter(|p| !taken.contains(&name(p))));
    if let Ok(mut value) = HeaderValue::from_str(&parts.join("; ")) {
        value.set_sensitive(true);
        headers.insert(COOKIE, value);
    }
}

/// The body of `resp` as a stream of chunks, each read bounded by the request's deadline.
fn chunks(
    resp: reqwest::Response,
    deadline: Option<(Instant, Duration)>,
) -> impl futures::Stream<Item = Result<bytes::Bytes, HttpError>> + Send {
    futures::stream::unfold(Some(resp), move |state| async move {
        let mut resp = state?;
        let next = match deadline {
            Some((at, after)) => match tokio::time::timeout_at(at, resp.chunk()).await {
                Ok(next) => next,
                Err(_) => return Some((Err(HttpError::BodyTimeout { after }), None)),
            },
            None => resp.chunk().await,
        };
        match next {
            Ok(Some(chunk)) => Some((Ok(chunk), Some(resp))),
            Ok(None) => None,
            Err(e) => Some((Err(HttpError::body(&e)), None)),
        }
    })
}

/// reqwest is built without a default TLS crypto provider (to avoid a second crypto library):
/// install ring's once for the process, unless something else already installed one.
fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    //! Exchanges with a hand-rolled HTTP/1.1 responder on 127.0.0.1.

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Serves one connection: reads the request head, records it, writes `reply` in pieces
    /// with `gap` between them.
    async fn serve_once(
        reply: Vec<Vec<u8>>,
        gap: Duration,
    ) -> (String, tokio::task::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/", l.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.expect("accept");
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.expect("read");
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            for piece in reply {
                if s.write_all(&piece).await.is_err() {
                    break;
                }
                tokio::time::sleep(gap).await;
            }
            String::from_utf8_lossy(&head).into_owned()
        });
        (url, task)
    }

    fn get(url: &str) -> HttpRequest {
        HttpRequest {
            method: "GET".into(),
            url: url.into(),
            ..HttpRequest::default()
        }
    }

    fn runner() -> LocalHttpRunner {
        LocalHttpRunner::new(HttpConfig::default()).expect("runner")
    }

    #[tokio::test]
    async fn buffered_exchange_keeps_repeated_headers() {
        let reply =
            b"HTTP/1.1 200 OK\r\nX-Multi: one\r\nX-Multi: two\r\nContent-Length: 2\r\n\r\nhi";
        let (url, server) = serve_once(vec![reply.to_vec()], Duration::ZERO).await;
        let resp = runner().send(get(&url)).await.expect("response");
        assert_eq!(resp.status, 200);
        let multi: Vec<_> = resp
            .headers
            .iter()
            .filter(|h| h.name == "x-multi")
            .map(|h| h.value.as_str())
            .collect();
        assert_eq!(multi, ["one", "two"]);
        assert_eq!(resp.body.read_to_end(10).await.expect("body"), "hi");
        let head = server.await.expect("server").to_ascii_lowercase();
        assert!(head.contains("accept: */*"), "{head}");
        assert!(head.contains("accept-encoding: "), "{head}");
        assert!(!head.contains("user-agent"), "{head}");
    }

    #[tokio::test]
    async fn deadline_bounds_the_headers() {
        let (url, _server) = serve_once(vec![Vec::new()], Duration::from_secs(5)).await;
        let mut req = get(&url);
        req.timeout = Some(Duration::from_millis(100));
        let err = runner().send(req).await.expect_err("times out");
        assert!(matches!(err, HttpError::Timeout { .. }), "{err}");
    }

    #[tokio::test]
    async fn deadline_bounds_the_body() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab".to_vec();
        let (url, _server) = serve_once(vec![head, b"cd".to_vec()], Duration::from_secs(5)).await;
        let mut req = get(&url);
        req.timeout = Some(Duration::from_millis(300));
        let mut body = runner().send(req).await.expect("headers").body;
        assert_eq!(body.next_chunk().await.expect("chunk").expect("ok"), "ab");
        let err = body
            .next_chunk()
            .await
            .expect("end")
            .expect_err("times out");
        assert!(matches!(err, HttpError::BodyTimeout { .. }), "{err}");
    }

    #[tokio::test]
    async fn refused_connection_names_the_cause() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/", l.local_addr().expect("addr"));
        drop(l);
        let err = runner().send(get(&url)).await.expect_err("refused");
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!(
                "http/request failed: error sending request for url ({url})"
            )),
            "{msg}"
        );
        assert!(msg.to_lowercase().contains("refused"), "{msg}");
    }

    #[test]
    fn stored_cookies_join_the_callers_cookie_header() {
        let mut h = HeaderMap::new();
        merge_cookies(&mut h, "__cflb=one; __cf_bm=b");
        assert_eq!(h.get(COOKIE).expect("set"), "__cflb=one; __cf_bm=b");
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("sid=1; __cflb=mine"));
        h.append(COOKIE, HeaderValue::from_static("x=2"));
        merge_cookies(&mut h, "__cflb=one; __cf_bm=b");
        let all: Vec<_> = h.get_all(COOKIE).iter().collect();
        assert_eq!(all, ["sid=1; __cflb=mine; x=2; __cf_bm=b"]);
    }

    #[tokio::test]
    async fn truncated_body_is_an_error() {
        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nxxxxxxxxxx".to_vec();
        let (url, _server) = serve_once(vec![reply], Duration::ZERO).await;
        let resp = runner().send(get(&url)).await.expect("headers");
        let err = resp.body.read_to_end(1000).await.expect_err("truncated");
        assert!(matches!(err, HttpError::Body { .. }), "{err}");
    }
}
