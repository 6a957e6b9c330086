//! The runner over HTTPS against a local server whose certificate comes from a CA made by the
//! test, reached under allowlisted and other host names: TLS set-up and the affinity cookies.

use std::sync::Arc;

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::{HttpConfig, HttpRequest, HttpRunner, LocalHttpRunner};

/// A CA, and a server certificate for `chatgpt.com` and `example.com` signed by it.
struct Pki {
    ca_der: Vec<u8>,
    server: Arc<rustls::ServerConfig>,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "exec-server test CA");
    let ca_key = KeyPair::generate().expect("ca key");
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let leaf_params =
        CertificateParams::new(vec!["chatgpt.com".to_string(), "example.com".to_string()])
            .expect("leaf params");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = leaf_params
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("leaf");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .expect("server config");
    Pki {
        ca_der: ca.der().to_vec(),
        server: Arc::new(server),
    }
}

/// Serves HTTPS on 127.0.0.1: `/set1` and `/set2` set cookies, `/echo` answers with the
/// request's `Cookie` header.
async fn serve(server: Arc<rustls::ServerConfig>) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 2048];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let path = head.split(' ').nth(1).unwrap_or("").to_string();
                let cookie = head
                    .split("\r\n")
                    .find_map(|l| l.strip_prefix("cookie: "))
                    .unwrap_or("")
                    .to_string();
                let (extra, body) = match path.as_str() {
                    "/set1" => (
                        "Set-Cookie: __cflb=one; Path=/; Secure\r\n\
                         Set-Cookie: session=secret\r\n\
                         Set-Cookie: __cf_bm=b\r\n",
                        String::new(),
                    ),
                    "/set2" => ("Set-Cookie: __cflb=two\r\n", String::new()),
                    _ => ("", cookie),
                };
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

async fn get(runner: &LocalHttpRunner, url: String) -> String {
    let req = HttpRequest {
        method: "GET".into(),
        url,
        ..HttpRequest::default()
    };
    let resp = runner.send(req).await.expect("response");
    assert_eq!(resp.status, 200);
    let body = resp.body.read_to_end(1 << 20).await.expect("body");
    String::from_utf8(body.to_vec()).expect("utf-8")
}

#[tokio::test]
async fn affinity_cookies_are_kept_for_allowlisted_https_hosts_only() {
    let pki = pki();
    let addr = serve(pki.server.clone()).await;
    // Its own store: the process's is exercised by the test below.
    let config = HttpConfig {
        extra_root_certs_der: vec![pki.ca_der.clone()],
        resolve: vec![("chatgpt.com".into(), addr), ("example.com".into(), addr)],
        ..HttpConfig::default()
    };
    let runner = LocalHttpRunner::with_cookies(config, Default::default()).expect("runner");
    let port = addr.port();
    let chatgpt = |p: &str| format!("https://chatgpt.com:{port}{p}");
    let other = |p: &str| format!("https://example.com:{port}{p}");

    assert_eq!(get(&runner, chatgpt("/echo")).await, "");
    get(&runner, chatgpt("/set1")).await;
    assert_eq!(
        get(&runner, chatgpt("/echo")).await,
        "__cflb=one; __cf_bm=b"
    );
    get(&runner, chatgpt("/set2")).await;
    assert_eq!(
        get(&runner, chatgpt("/echo")).await,
        "__cf_bm=b; __cflb=two"
    );

    // Never sent to another host, and another host's cookies are not stored.
    assert_eq!(get(&runner, other("/echo")).await, "");
    get(&runner, other("/set1")).await;
    assert_eq!(get(&runner, other("/echo")).await, "");
}

/// Spec §6.4: one store per process. Two runners built with `new` (the server's and a client's
/// direct MCP transport, say) share it; a runner with its own store does not.
#[tokio::test]
async fn runners_share_the_process_cookie_store() {
    let pki = pki();
    let addr = serve(pki.server.clone()).await;
    let host = "chatgpt.com";
    let config = || HttpConfig {
        extra_root_certs_der: vec![pki.ca_der.clone()],
        resolve: vec![(host.into(), addr)],
        ..HttpConfig::default()
    };
    let first = LocalHttpRunner::new(config()).expect("runner");
    let second = LocalHttpRunner::new(config()).expect("runner");
    let own = LocalHttpRunner::with_cookies(config(), Default::default()).expect("runner");
    let url = |p: &str| format!("https://{host}:{}{p}", addr.port());
    get(&first, url("/set1")).await;
    assert_eq!(get(&second, url("/echo")).await, "__cflb=one; __cf_bm=b");
    assert_eq!(get(&own, url("/echo")).await, "");
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_clear_error() {
    let pki = pki();
    let addr = serve(pki.server.clone()).await;
    let runner = LocalHttpRunner::new(HttpConfig {
        resolve: vec![("chatgpt.com".into(), addr)],
        ..HttpConfig::default()
    })
    .expect("runner");
    let req = HttpRequest {
        method: "GET".into(),
        url: format!("https://chatgpt.com:{}/echo", addr.port()),
        ..HttpRequest::default()
    };
    let msg = runner.send(req).await.expect_err("untrusted").to_string();
    assert!(
        msg.starts_with("http/request failed: error sending request for url (https://chatgpt.com:"),
        "{msg}"
    );
    assert!(msg.to_lowercase().contains("certificate"), "{msg}");
}
