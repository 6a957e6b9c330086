//! The harness's one registry call (spec §10.7): `POST {registry}/cloud/environment/{id}/connect`
//! with the harness key, answered by a fresh connect bundle (rendezvous URL, executor key,
//! registration id, harness key authorization).
//!
//! As upstream: a 10 s timeout per request, no redirects, a 401/403 is final, a 503 (no
//! executor attached yet) is retried with backoff from 0.5 s doubling to 5 s, a few times, then
//! given up on. 502 and 504 count as 503: they are what a proxy in front of a restarting
//! registry answers. Answers are read up to [`MAX_ANSWER_BYTES`].

use std::time::Duration;

use exec_server_relay::noise::PublicKey;
use exec_server_relay::registry::{
    connect_path, ConnectRequest, ConnectResponse, ErrorBody, CHATGPT_ACCOUNT_ID_HEADER,
    MAX_ANSWER_BYTES,
};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;

use super::{NoiseConnectError, NoiseTarget};

/// Longest registry error text quoted in an error.
const MAX_DETAIL_CHARS: usize = 300;

/// Asks the registry for a connect bundle for `harness_key`.
pub(super) async fn connect(
    http: &reqwest::Client,
    target: &NoiseTarget,
    bearer: &str,
    harness_key: &PublicKey,
) -> Result<ConnectResponse, NoiseConnectError> {
    let url = format!(
        "{}{}",
        target.registry_url.trim_end_matches('/'),
        connect_path(&target.environment_id)
    );
    let body = serde_json::to_vec(&ConnectRequest {
        harness_public_key: harness_key.clone(),
    })
    .map_err(|e| NoiseConnectError::Request(format!("cannot encode the request: {e}")))?;
    let mut authorization = HeaderValue::try_from(format!("Bearer {bearer}")).map_err(|_| {
        NoiseConnectError::Config(
            "the auth token contains characters not allowed in a header".into(),
        )
    })?;
    authorization.set_sensitive(true);
    let account = match &target.chatgpt_account_id {
        Some(a) => Some(HeaderValue::try_from(a.as_str()).map_err(|_| {
            NoiseConnectError::Config(
                "the ChatGPT account id contains characters not allowed in a header".into(),
            )
        })?),
        None => None,
    };
    let timeouts = &target.timeouts;
    let mut delay = timeouts.retry_initial;
    let mut attempt = 1;
    loop {
        let mut request = http
            .post(&url)
            .timeout(timeouts.registry)
            .header(CONTENT_TYPE, "application/json")
            .header(AUTHORIZATION, authorization.clone())
            .body(body.clone());
        if let Some(account) = &account {
            request = request.header(CHATGPT_ACCOUNT_ID_HEADER, account.clone());
        }
        let resp = request.send().await.map_err(request_failed)?;
        let status = resp.status();
        if status.is_success() {
            let bytes = read_bounded(resp).await.map_err(request_failed)?;
            return serde_json::from_slice(&bytes).map_err(|e| {
                NoiseConnectError::InvalidAnswer(format!(
                    "environment registry returned an invalid connect response: {e}"
                ))
            });
        }
        let detail = error_detail(resp).await;
        let retryable = matches!(
            status,
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
        );
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(NoiseConnectError::Unauthorized {
                status: status.to_string(),
                detail,
            });
        }
        if !retryable {
            return Err(NoiseConnectError::Status {
                code: status.as_u16(),
                status: status.to_string(),
                detail,
            });
        }
        if attempt >= timeouts.retry_attempts.max(1) {
            return Err(NoiseConnectError::Unavailable {
                status: status.to_string(),
                attempts: attempt,
                detail,
            });
        }
        tracing::debug!(%status, attempt, ?delay, "environment registry unavailable; retrying connect");
        tokio::time::sleep(with_jitter(delay)).await;
        delay = (delay * 2).min(timeouts.retry_max);
        attempt += 1;
    }
}

/// `delay` plus up to a fifth of it, so harnesses that lost the same registry do not come back
/// in step.
fn with_jitter(delay: Duration) -> Duration {
    let fraction = (uuid::Uuid::new_v4().as_u128() % 1000) as f64 / 5000.0;
    delay + delay.mul_f64(fraction)
}

fn request_failed(e: reqwest::Error) -> NoiseConnectError {
    if e.is_timeout() {
        NoiseConnectError::Request("environment registry request timed out".into())
    } else {
        // reqwest's Display omits the cause ("error sending request"); its source says why.
        let mut text = format!("environment registry request failed: {e}");
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(&format!(": {s}"));
            source = s.source();
        }
        NoiseConnectError::Request(text)
    }
}

/// `": code: message"` from a registry error body, or nothing.
async fn error_detail(resp: reqwest::Response) -> String {
    let Ok(bytes) = read_bounded(resp).await else {
        return String::new();
    };
    let Ok(body) = serde_json::from_slice::<ErrorBody>(&bytes) else {
        return String::new();
    };
    let parts: Vec<String> = [body.error.code, body.error.message]
        .into_iter()
        .flatten()
        .filter(|p| !p.trim().is_empty())
        .collect();
    if parts.is_empty() {
        return String::new();
    }
    let text: String = parts
        .join(": ")
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_DETAIL_CHARS)
        .collect();
    format!(": {text}")
}

/// The answer body, cut at [`MAX_ANSWER_BYTES`] (a cut answer does not parse, which the caller
/// reports).
async fn read_bounded(mut resp: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if out.len() + chunk.len() > MAX_ANSWER_BYTES {
            break;
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use exec_server_relay::noise::StaticIdentity;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::transport::noise::{AuthToken, NoiseTimeouts};

    /// A registry on loopback answering the n-th request with `answers[n]`; returns its URL and
    /// the requests it got (head and body, lowercased head).
    async fn registry(answers: Vec<(u16, String)>) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("addr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            for (status, body) in answers {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head_len, length) = loop {
                    let n = sock.read(&mut chunk).await.expect("read");
                    assert!(n > 0, "request cut short");
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..at]).to_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (at + 4, length);
                    }
                };
                while buf.len() < head_len + length {
                    let n = sock.read(&mut chunk).await.expect("read");
                    assert!(n > 0, "body cut short");
                    buf.extend_from_slice(&chunk[..n]);
                }
                let head = String::from_utf8_lossy(&buf[..head_len]).to_lowercase();
                let body_in = String::from_utf8_lossy(&buf[head_len..]).to_string();
                log.lock().expect("lock").push(format!("{head}{body_in}"));
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                sock.write_all(answer.as_bytes()).await.expect("write");
            }
        });
        (url, seen)
    }

    fn target(url: &str) -> NoiseTarget {
        let mut t = NoiseTarget::new(url, "e2e", AuthToken::Value("harness-secret".into()));
        t.chatgpt_account_id = Some("acct-1".into());
        t.timeouts = NoiseTimeouts {
            retry_initial: Duration::from_millis(10),
            retry_max: Duration::from_millis(20),
            retry_attempts: 3,
            ..NoiseTimeouts::default()
        };
        t
    }

    fn bundle(executor: &StaticIdentity) -> String {
        serde_json::json!({
            "environment_id": "e2e", "url": "ws://127.0.0.1:1/rendezvous/e2e/harness?ticket=t",
            "security_profile": "noise_hybrid_ik_v1", "executor_registration_id": "reg",
            "executor_public_key": executor.public_key(), "harness_key_authorization": "auth",
        })
        .to_string()
    }

    fn unavailable() -> (u16, String) {
        (
            503,
            r#"{"error":{"code":"executor_unavailable","message":"no executor"}}"#.into(),
        )
    }

    async fn call(t: &NoiseTarget) -> Result<ConnectResponse, NoiseConnectError> {
        crate::transport::install_crypto_provider();
        let http = t.shared.http(None).expect("http client");
        let key = t.harness_public_key().expect("key");
        connect(&http, t, "harness-secret", &key).await
    }

    #[tokio::test]
    async fn a_503_is_retried_and_every_call_carries_bearer_account_and_key() {
        let executor = StaticIdentity::generate().expect("identity");
        let (url, seen) =
            registry(vec![unavailable(), unavailable(), (200, bundle(&executor))]).await;
        let t = target(&url);
        let answer = call(&t).await.expect("third call answers");
        assert_eq!(&answer.executor_public_key, executor.public_key());
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.len(), 3);
        let key = serde_json::to_string(&t.harness_public_key().expect("key")).expect("json");
        for request in seen.iter() {
            assert!(
                request.starts_with("post /cloud/environment/e2e/connect http/1.1"),
                "{request}"
            );
            assert!(request.contains("authorization: bearer harness-secret"));
            assert!(request.contains("chatgpt-account-id: acct-1"));
            assert!(request.contains("content-type: application/json"));
            assert!(request.ends_with(&format!(r#"{{"harness_public_key":{}}}"#, key)));
        }
    }

    #[tokio::test]
    async fn a_401_is_final_and_503s_are_given_up_on() {
        let (url, seen) = registry(vec![(
            401,
            r#"{"error":{"code":"unauthorized","message":"bad token"}}"#.into(),
        )])
        .await;
        let err = call(&target(&url)).await.expect_err("401");
        assert_eq!(
            err.to_string(),
            "environment registry refused the auth token (401 Unauthorized): unauthorized: bad token"
        );
        assert!(err.is_permanent());
        assert_eq!(seen.lock().expect("lock").len(), 1, "not retried");

        let (url, seen) = registry(vec![unavailable(), unavailable(), unavailable()]).await;
        let err = call(&target(&url)).await.expect_err("503s");
        assert!(
            matches!(err, NoiseConnectError::Unavailable { attempts: 3, .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("executor_unavailable: no executor"),
            "{err}"
        );
        assert!(!err.is_permanent());
        assert_eq!(seen.lock().expect("lock").len(), 3);

        let (url, _) = registry(vec![(
            404,
            r#"{"error":{"code":"unknown_environment"}}"#.into(),
        )])
        .await;
        let err = call(&target(&url)).await.expect_err("404");
        assert_eq!(
            err.to_string(),
            "environment registry request failed (404 Not Found): unknown_environment"
        );
        assert!(err.is_permanent());

        let (url, _) = registry(vec![(200, "<html>".into())]).await;
        let err = call(&target(&url)).await.expect_err("not JSON");
        assert!(matches!(err, NoiseConnectError::InvalidAnswer(_)), "{err}");
    }

    #[test]
    fn jitter_adds_at_most_a_fifth() {
        for _ in 0..100 {
            let d = with_jitter(Duration::from_millis(500));
            assert!(d >= Duration::from_millis(500) && d <= Duration::from_millis(600));
        }
    }
}
