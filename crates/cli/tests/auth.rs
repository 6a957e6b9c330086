//! WebSocket authentication, the Host check and the non-loopback bind rule.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Error as WsError;

use crate::support::{Server, BIN};

/// Tries an upgrade with the given headers; Ok(()) or the HTTP status and body.
async fn upgrade(url: &str, headers: &[(&str, &str)]) -> Result<(), (u16, String)> {
    let mut req = url.into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut()
            .insert(axum_free_header(k), v.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => Ok(()),
        Err(WsError::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).to_string())
                .unwrap_or_default();
            Err((resp.status().as_u16(), body))
        }
        Err(e) => Err((0, e.to_string())),
    }
}

fn axum_free_header(k: &str) -> tokio_tungstenite::tungstenite::http::HeaderName {
    tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap()
}

fn secret_file(dir: &std::path::Path, name: &str, content: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p.to_string_lossy().into_owned()
}

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("es-auth-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test]
async fn capability_token() {
    let dir = tmpdir("cap");
    let f = secret_file(&dir, "token", "  open-sesame\n");
    let server = Server::start(&["--ws-auth", "capability-token", "--ws-token-file", &f]);
    assert_eq!(
        upgrade(&server.url, &[]).await,
        Err((401, "missing websocket bearer token".into()))
    );
    assert_eq!(
        upgrade(&server.url, &[("authorization", "Bearer nope")]).await,
        Err((401, "invalid websocket bearer token".into()))
    );
    assert_eq!(
        upgrade(&server.url, &[("authorization", "Token open-sesame")]).await,
        Err((401, "invalid authorization header".into()))
    );
    assert_eq!(
        upgrade(&server.url, &[("authorization", "bearer open-sesame")]).await,
        Ok(())
    );
    // /readyz needs no token.
    let addr = server.url.trim_start_matches("ws://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(
        format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}

fn jwt(secret: &[u8], alg: &str, claims: serde_json::Value) -> String {
    let e = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let h = e(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes());
    let p = e(claims.to_string().as_bytes());
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(format!("{h}.{p}").as_bytes());
    format!("{h}.{p}.{}", e(&mac.finalize().into_bytes()))
}

#[tokio::test]
async fn signed_bearer_tokens() {
    let dir = tmpdir("jwt");
    let secret = "0123456789abcdef0123456789abcdef";
    let f = secret_file(&dir, "secret", secret);
    let server = Server::start(&[
        "--ws-auth",
        "signed-bearer-token",
        "--ws-shared-secret-file",
        &f,
        "--ws-issuer",
        "harness",
        "--ws-audience",
        "executor",
    ]);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let s = secret.as_bytes();
    let cases = [
        (
            jwt(
                s,
                "HS256",
                serde_json::json!({"exp": now + 60, "iss": "harness", "aud": "executor"}),
            ),
            None,
        ),
        (
            jwt(
                b"wrong-secret-wrong-secret-wrong!!",
                "HS256",
                serde_json::json!({"exp": now + 60, "iss": "harness", "aud": "executor"}),
            ),
            Some("invalid websocket jwt"),
        ),
        (
            jwt(
                s,
                "none",
                serde_json::json!({"exp": now + 60, "iss": "harness", "aud": "executor"}),
            ),
            Some("invalid websocket jwt"),
        ),
        (
            jwt(
                s,
                "HS256",
                serde_json::json!({"exp": now - 120, "iss": "harness", "aud": "executor"}),
            ),
            Some("expired websocket jwt"),
        ),
        (
            jwt(
                s,
                "HS256",
                serde_json::json!({"exp": now + 60, "iss": "other", "aud": "executor"}),
            ),
            Some("websocket jwt issuer mismatch"),
        ),
        (
            jwt(
                s,
                "HS256",
                serde_json::json!({"exp": now + 60, "iss": "harness", "aud": ["x"]}),
            ),
            Some("websocket jwt audience mismatch"),
        ),
        (
            jwt(
                s,
                "HS256",
                serde_json::json!({"exp": now + 3 * 86400, "iss": "harness", "aud": "executor"}),
            ),
            Some("websocket jwt lifetime exceeds the maximum"),
        ),
        (
            jwt(
                s,
                "HS256",
                serde_json::json!({"exp": now + 600, "nbf": now + 300, "iss": "harness", "aud": "executor"}),
            ),
            Some("websocket jwt is not valid yet"),
        ),
    ];
    for (token, want) in cases {
        let auth = format!("Bearer {token}");
        let got = upgrade(&server.url, &[("authorization", &auth)]).await;
        match want {
            None => assert_eq!(got, Ok(())),
            Some(msg) => assert_eq!(got, Err((401, msg.to_string()))),
        }
    }
}

#[tokio::test]
async fn foreign_host_is_refused() {
    let server = Server::start(&[]);
    let got = upgrade(&server.url, &[("host", "evil.example:80")]).await;
    assert_eq!(got.map_err(|e| e.0), Err(403));
    assert_eq!(upgrade(&server.url, &[("host", "localhost")]).await, Ok(()));
}

#[test]
fn flag_validation_and_non_loopback_bind() {
    let run = |args: &[&str]| {
        #[allow(clippy::disallowed_methods)]
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    assert!(run(&["--listen", "ws://0.0.0.0:0"]).contains("--allow-unauthenticated"));
    assert!(run(&["--ws-token-sha256", "00"]).contains(
        "websocket auth flags require `--ws-auth capability-token` or `--ws-auth signed-bearer-token`"
    ));
    assert!(run(&["--ws-auth", "capability-token"]).contains(
        "`--ws-token-file` or `--ws-token-sha256` is required when `--ws-auth capability-token` is set"
    ));
    let dir = tmpdir("flags");
    let short = secret_file(&dir, "short", "tooshort");
    assert!(run(&[
        "--ws-auth",
        "signed-bearer-token",
        "--ws-shared-secret-file",
        &short
    ])
    .contains("at least 32 bytes"));
    assert!(run(&["--ws-auth", "signed-bearer-token"]).contains(
        "`--ws-shared-secret-file` is required when `--ws-auth signed-bearer-token` is set"
    ));
}
