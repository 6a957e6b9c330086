//! `http/request` over the wire against a hand-rolled HTTP/1.1 origin on 127.0.0.1: streaming
//! order, deadlines, redirects, the compression rule, bounds, and a hung request beside fast
//! ones.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{unb64, Client, Server};

/// The plain body behind `/gzip`.
const GZIP_PLAIN: &[u8] = b"gzip-body;gzip-body;gzip-body;gzip-body;gzip-body;";

/// A local origin; stops when dropped.
struct Origin {
    base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn origin() -> Origin {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", l.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(serve(s));
        }
    });
    Origin { base, task }
}

/// Answers one request on `s` by its path, then closes the connection.
async fn serve(mut s: TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let path = first.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let seg: Vec<&str> = path.split('/').collect();
    let num = |i: usize| seg.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let _ = if path.starts_with("/echo") {
        echo(&mut s, &method, &path, &headers).await
    } else if path.starts_with("/redirect") {
        respond(
            &mut s,
            "302 Found",
            &[("Location", "/echo?redirected=1")],
            b"",
        )
        .await
    } else if path.starts_with("/slow/") {
        tokio::time::sleep(Duration::from_millis(num(2))).await;
        echo(&mut s, &method, &path, &headers).await
    } else if path.starts_with("/stream/") {
        stream(&mut s, num(2), num(3)).await
    } else if path.starts_with("/gzip") {
        let accepts = headers
            .iter()
            .any(|(k, v)| k == "accept-encoding" && v.contains("gzip"));
        if accepts {
            let body = gzip_stored(GZIP_PLAIN);
            respond(&mut s, "200 OK", &[("Content-Encoding", "gzip")], &body).await
        } else {
            respond(&mut s, "200 OK", &[], GZIP_PLAIN).await
        }
    } else if path.starts_with("/big/") {
        big(&mut s, num(2), true).await
    } else if path.starts_with("/bigchunked/") {
        big(&mut s, num(2), false).await
    } else {
        respond(&mut s, "404 Not Found", &[], b"").await
    };
}

async fn respond(
    s: &mut TcpStream,
    status: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut out = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(out.as_bytes()).await?;
    s.write_all(body).await
}

async fn echo(
    s: &mut TcpStream,
    method: &str,
    path: &str,
    headers: &[(String, String)],
) -> std::io::Result<()> {
    let body = json!({"method": method, "path": path, "headers": headers}).to_string();
    let ct = [("Content-Type", "application/json")];
    respond(s, "200 OK", &ct, body.as_bytes()).await
}

async fn stream(s: &mut TcpStream, parts: u64, gap_ms: u64) -> std::io::Result<()> {
    s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await?;
    for i in 0..parts {
        let part = format!("part-{i};");
        s.write_all(format!("{:x}\r\n{part}\r\n", part.len()).as_bytes())
            .await?;
        tokio::time::sleep(Duration::from_millis(gap_ms)).await;
    }
    s.write_all(b"0\r\n\r\n").await
}

/// `n` bytes of `i % 251`, with or without a content-length.
async fn big(s: &mut TcpStream, n: u64, with_length: bool) -> std::io::Result<()> {
    let framing = if with_length {
        format!("Content-Length: {n}")
    } else {
        "Transfer-Encoding: chunked".to_string()
    };
    let head = format!("HTTP/1.1 200 OK\r\nConnection: close\r\n{framing}\r\n\r\n");
    s.write_all(head.as_bytes()).await?;
    let block: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mut sent = 0u64;
    while sent < n {
        let k = (n - sent).min(block.len() as u64) as usize;
        if with_length {
            s.write_all(&block[..k]).await?;
        } else {
            s.write_all(format!("{k:x}\r\n").as_bytes()).await?;
            s.write_all(&block[..k]).await?;
            s.write_all(b"\r\n").await?;
        }
        sent += k as u64;
    }
    if !with_length {
        s.write_all(b"0\r\n\r\n").await?;
    }
    Ok(())
}

/// A gzip member holding `data` in stored (uncompressed) deflate blocks.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let blocks: Vec<&[u8]> = data.chunks(65535).collect();
    for (i, block) in blocks.iter().enumerate() {
        out.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        out.extend(len.to_le_bytes());
        out.extend((!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    out.extend((!crc).to_le_bytes());
    out.extend((data.len() as u32).to_le_bytes());
    out
}

fn header<'a>(result: &'a Value, name: &str) -> Vec<&'a str> {
    result["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter(|h| h["name"] == name)
        .filter_map(|h| h["value"].as_str())
        .collect()
}

fn body(result: &Value) -> Vec<u8> {
    unb64(result["bodyBase64"].as_str().expect("bodyBase64"))
}

/// Sends a streamed request and returns every message received until its terminal delta, in
/// arrival order.
async fn streamed(c: &mut Client, params: Value) -> (i64, Vec<Value>) {
    let rid = params["requestId"].clone();
    let id = c.request_async("http/request", params).await;
    let mut seen = Vec::new();
    loop {
        let m = c.recv().await.expect("connection closed");
        let done = m["method"] == "http/request/bodyDelta"
            && m["params"]["requestId"] == rid
            && m["params"]["done"] == true;
        let failed = m["id"] == id && m.get("error").is_some();
        seen.push(m);
        if done || failed {
            return (id, seen);
        }
    }
}

fn deltas(seen: &[Value], rid: &str) -> Vec<Value> {
    seen.iter()
        .filter(|m| m["method"] == "http/request/bodyDelta" && m["params"]["requestId"] == rid)
        .map(|m| m["params"].clone())
        .collect()
}

fn joined(ds: &[Value]) -> Vec<u8> {
    ds.iter()
        .flat_map(|d| unb64(d["deltaBase64"].as_str().expect("delta")))
        .collect()
}

/// The server's peak resident memory in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        * 1024
}

#[tokio::test]
async fn streamed_response_precedes_its_deltas_which_arrive_in_order() {
    let o = origin().await;
    let server = Server::start(&[]);
    let (mut c, _) = server.session().await;
    let (id, seen) = streamed(
        &mut c,
        json!({"method": "GET", "url": format!("{}/stream/5/50", o.base), "requestId": "s1",
               "streamResponse": true}),
    )
    .await;
    let reply = seen.iter().position(|m| m["id"] == id).expect("reply");
    let first = seen
        .iter()
        .position(|m| m["method"] == "http/request/bodyDelta")
        .expect("delta");
    assert!(reply < first, "the response came after a delta: {seen:?}");
    assert_eq!(seen[reply]["result"]["status"], 200);
    assert_eq!(seen[reply]["result"]["bodyBase64"], "");
    let ds = deltas(&seen, "s1");
    let seqs: Vec<u64> = ds.iter().map(|d| d["seq"].as_u64().expect("seq")).collect();
    assert_eq!(seqs, (1..=ds.len() as u64).collect::<Vec<_>>());
    let last = ds.last().expect("terminal");
    assert_eq!(last["done"], true);
    assert_eq!(last["error"], Value::Null);
    assert_eq!(last["deltaBase64"], "");
    assert!(ds[..ds.len() - 1].iter().all(|d| d["done"] == false));
    let expected: Vec<u8> = (0..5)
        .flat_map(|i| format!("part-{i};").into_bytes())
        .collect();
    assert_eq!(joined(&ds), expected);
    assert!(ds.len() >= 4, "not streamed: {} deltas", ds.len());
}

#[tokio::test]
async fn timeout_fails_the_request_promptly_with_a_clear_message() {
    let o = origin().await;
    let server = Server::start(&[]);
    let (mut c, _) = server.session().await;
    let t0 = Instant::now();
    let r = c
        .request(
            "http/request",
            json!({"method": "GET", "url": format!("{}/slow/3000", o.base), "requestId": "t",
                   "timeoutMs": 300}),
        )
        .await;
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(r["error"]["code"], -32603, "{r}");
    let msg = r["error"]["message"].as_str().expect("message");
    assert!(
        msg.starts_with("http/request failed: error sending request for url (")
            && msg.ends_with("timed out after 300 ms"),
        "{msg}"
    );
}

#[tokio::test]
async fn omitted_timeout_uses_the_server_default_and_null_means_none() {
    let o = origin().await;
    let server = Server::start(&["--http-default-timeout", "1"]);
    let (mut c, _) = server.session().await;
    let url = format!("{}/slow/2500", o.base);
    let t0 = Instant::now();
    let r = c
        .request(
            "http/request",
            json!({"method": "GET", "url": url, "requestId": "a"}),
        )
        .await;
    assert_eq!(r["error"]["code"], -32603, "{r}");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    let r = c
        .request(
            "http/request",
            json!({"method": "GET", "url": url, "requestId": "b", "timeoutMs": null}),
        )
        .await;
    assert!(r.get("result").is_some(), "null means no deadline: {r}");
}

#[tokio::test]
async fn timeout_bounds_a_streamed_body() {
    let o = origin().await;
    let server = Server::start(&[]);
    let (mut c, _) = server.session().await;
    let (_, seen) = streamed(
        &mut c,
        json!({"method": "GET", "url": format!("{}/stream/20/100", o.base), "requestId": "st",
               "streamResponse": true, "timeoutMs": 500}),
    )
    .await;
    let ds = deltas(&seen, "st");
    let last = ds.last().expect("terminal");
    assert_eq!(last["done"], true);
    let error = last["error"].as_str().expect("error");
    assert!(error.contains("timed out after 500 ms"), "{error}");
    let got = joined(&ds);
    assert!(!got.is_empty() && got.len() < 20 * 7, "{} bytes", got.len());
}

#[tokio::test]
async fn redirects_are_followed_or_returned_as_is() {
    let o = origin().await;
    let server = Server::start(&[]);
    let (mut c, _) = server.session().await;
    let url = format!("{}/redirect", o.base);
    let followed = c
        .call(
            "http/request",
            json!({"method": "GET", "url": url, "requestId": "r1"}),
        )
        .await;
    assert_eq!(followed["status"], 200);
    let echoed: Value = serde_json::from_slice(&body(&followed)).expect("json");
    assert_eq!(echoed["path"], "/echo?redirected=1");
    let stopped = c
        .call(
            "http/request",
            json!({"method": "GET", "url": url, "requestId": "r2", "redirectPolicy": "stop"}),
        )
        .await;
    assert_eq!(stopped["status"], 302);
    assert_eq!(header(&stopped, "location"), ["/echo?redirected=1"]);
}

#[tokio::test]
async fn compressed_bodies_are_decoded_only_when_the_caller_chose_no_encoding() {
    let o = origin().await;
    let server = Server::start(&[]);
    let (mut c, _) = server.session().await;
    let url = format!("{}/gzip", o.base);
    let decoded = c
        .call(
            "http/request",
            json!({"method": "GET", "url": url, "requestId": "g1"}),
        )
        .await;
    assert!(header(&decoded, "content-encoding").is_empty(), "{decoded}");
    assert!(header(&decoded, "content-length").is_empty(), "{decoded}");
    assert_eq!(body(&decoded), GZIP_PLAIN);

    let (_, seen) = streamed(
        &mut c,
        json!({"method": "GET", "url": url, "requestId": "g2", "streamResponse": true}),
    )
    .await;
    assert_eq!(joined(&deltas(&seen, "g2")), GZIP_PLAIN);

    let raw = c
        .call(
            "http/request",
            json!({"method": "GET", "url": url, "requestId": "g3",
                   "headers": [{"name": "Accept-Encoding", "value": "gzip"}]}),
        )
        .await;
    assert_eq!(header(&raw, "content-encoding"), ["gzip"]);
    assert_eq!(body(&raw), gzip_stored(GZIP_PLAIN));
}

#[tokio::test]
async fn a_hung_request_does_not_delay_others_on_its_connection() {
    let o = origin().await;
    let server = Server::start(&[]);
    let (mut c, _) = server.session().await;
    let hung = c
        .request_async(
            "http/request",
            json!({"method": "GET", "url": format!("{}/slow/4000", o.base), "requestId": "h"}),
        )
        .await;
    let t0 = Instant::now();
    for i in 0..5 {
        let r = c
            .call(
                "http/request",
                json!({"method": "GET", "url": format!("{}/echo/{i}", o.base),
                       "requestId": format!("f{i}")}),
            )
            .await;
        assert_eq!(r["status"], 200);
    }
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(!c.responses.contains_key(&hung.to_string()));
    let r = c.response(hung).await;
    assert_eq!(r["result"]["status"], 200, "{r}");
}

#[tokio::test]
async fn env_var_headers_use_the_executor_environment() {
    let o = origin().await;
    let server = Server::start(&[]);
    let (mut c, _) = server.session().await;
    let url = format!("{}/echo", o.base);
    let r = c
        .call(
            "http/request",
            json!({"method": "GET", "url": url, "requestId": "e1",
                   "headers": [{"name": "X-Marker", "value": "v=", "valueEnvVar": "ES_TEST_MARKER"}]}),
        )
        .await;
    let echoed: Value = serde_json::from_slice(&body(&r)).expect("json");
    assert!(
        echoed["headers"]
            .as_array()
            .expect("headers")
            .iter()
            .any(|h| h[0] == "x-marker" && h[1] == "v=visible"),
        "{echoed}"
    );
    let r = c
        .request(
            "http/request",
            json!({"method": "GET", "url": url, "requestId": "e2",
                   "headers": [{"name": "X-Marker", "value": "", "valueEnvVar": "ES_TEST_UNSET_VAR"}]}),
        )
        .await;
    assert_eq!(r["error"]["code"], -32602);
    assert_eq!(
        r["error"]["message"],
        "http/request header X-Marker requires executor environment variable ES_TEST_UNSET_VAR"
    );
}

#[tokio::test]
async fn oversized_buffered_bodies_are_refused_in_bounded_memory() {
    let o = origin().await;
    let server = Server::start(&[]);
    let (mut c, _) = server.session().await;
    for path in ["big/419430400", "bigchunked/209715200"] {
        let r = c
            .request(
                "http/request",
                json!({"method": "GET", "url": format!("{}/{path}", o.base), "requestId": "b"}),
            )
            .await;
        assert_eq!(r["error"]["code"], -32603, "{path}");
        let msg = r["error"]["message"].as_str().expect("message");
        assert!(
            msg.contains("33554432-byte limit") && msg.contains("streamResponse"),
            "{msg}"
        );
    }
    let peak = peak_rss(server.pid());
    assert!(peak < 100 << 20, "peak RSS {peak} bytes");
}

#[tokio::test]
async fn a_large_streamed_body_arrives_whole_in_bounded_memory() {
    let o = origin().await;
    let server = Server::start(&[]);
    let (mut c, _) = server.session().await;
    let n: usize = 1 << 30; // the figure: 1 GiB in under 100 MB
    let id = c
        .request_async(
            "http/request",
            json!({"method": "GET", "url": format!("{}/bigchunked/{n}", o.base),
                   "requestId": "big", "streamResponse": true}),
        )
        .await;
    let mut got = 0usize;
    let mut next_seq = 1;
    let mut replied = false;
    loop {
        let m = c.recv().await.expect("connection closed");
        if m["id"] == id {
            replied = true;
            continue;
        }
        assert!(replied, "delta before the response");
        let p = &m["params"];
        assert_eq!(p["seq"], next_seq);
        next_seq += 1;
        let data = unb64(p["deltaBase64"].as_str().expect("delta"));
        let expected = |i: usize| (((got + i) % (64 * 1024)) % 251) as u8;
        assert!(data.iter().enumerate().all(|(i, b)| *b == expected(i)));
        got += data.len();
        if p["done"] == true {
            assert_eq!(p["error"], Value::Null);
            break;
        }
    }
    assert_eq!(got, n);
    let peak = peak_rss(server.pid());
    assert!(peak < 100 << 20, "peak RSS {peak} bytes");
}
