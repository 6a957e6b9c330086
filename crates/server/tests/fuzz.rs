//! Fuzz targets on the stable toolchain (docs/testing.md): JSON-RPC decoding, `PathUri` parsing
//! and the stdio framing, each run for a time budget with `arbtest`.
//!
//! Inputs are mutated from a seed corpus of valid messages (bit flips, inserted, deleted,
//! duplicated and spliced ranges, JSON and URI tokens), with raw random bytes now and then.
//! The budget per target is `EXEC_SERVER_FUZZ_SECONDS` (default 1 s, CI's fuzz step sets
//! more). A finding panics with the seed that reproduces it: rerun the one target with
//! `ARBTEST_SEED=0x...` (add `EXEC_SERVER_FUZZ_MINIMIZE=1` to shrink it).

use std::time::Duration;

use arbitrary::Unstructured;
use exec_server_protocol::jsonrpc::{self, Incoming};
use exec_server_protocol::{fs, initialize, process, PathUri};
use exec_server_server::transport::stdio;
use exec_server_server::{ServeConfig, ServerState};

fn budget() -> Duration {
    let secs = std::env::var("EXEC_SERVER_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(1.0);
    Duration::from_secs_f64(secs.max(0.01))
}

/// Runs `target` on mutated inputs for the budget (or once, for `ARBTEST_SEED`).
fn fuzz(seeds: &[&[u8]], dict: &[&[u8]], mut target: impl FnMut(&[u8])) {
    let run = arbtest::arbtest(|u| {
        let input = mutate(u, seeds, dict)?;
        target(&input);
        Ok(())
    })
    .size_max(1 << 14);
    let minimize = std::env::var_os("EXEC_SERVER_FUZZ_MINIMIZE").is_some();
    match std::env::var("ARBTEST_SEED") {
        Ok(_) if minimize => run.minimize().budget(budget()).run(),
        Ok(_) => run.run(),
        Err(_) => run.budget(budget()).run(),
    }
}

/// Bytes that often matter to JSON and URI parsers.
const SPECIAL: &[u8] = b"\0\n\r\t \"\\{}[]:,/%.-+0123456789eE#?@ \xff\xc3\xa9";

fn mutate(u: &mut Unstructured<'_>, seeds: &[&[u8]], dict: &[&[u8]]) -> arbitrary::Result<Vec<u8>> {
    let mut data: Vec<u8> = if u.ratio(1, 10)? {
        u.arbitrary()?
    } else {
        u.choose(seeds)?.to_vec()
    };
    let rounds = u.int_in_range(0..=8)?;
    for _ in 0..rounds {
        let len = data.len();
        let at = u.int_in_range(0..=len)?;
        match u.int_in_range(0..=7)? {
            0 if len > 0 => {
                let i = at.min(len - 1);
                data[i] ^= 1 << u.int_in_range(0..=7)?;
            }
            1 => {
                let b = *u.choose(SPECIAL)?;
                data.insert(at, b);
            }
            2 if len > 0 => {
                let i = at.min(len - 1);
                data[i] = *u.choose(SPECIAL)?;
            }
            3 => {
                let end = u.int_in_range(at..=len.min(at + 16))?;
                data.drain(at..end);
            }
            4 => {
                let token = u.choose(dict)?;
                data.splice(at..at, token.iter().copied());
            }
            5 => {
                let end = u.int_in_range(at..=len.min(at + 32))?;
                let chunk = data[at..end].to_vec();
                let to = u.int_in_range(0..=len)?;
                data.splice(to..to, chunk);
            }
            6 => {
                let other = u.choose(seeds)?;
                let from = u.int_in_range(0..=other.len())?;
                let end = u.int_in_range(from..=other.len())?;
                data.splice(at..at, other[from..end].iter().copied());
            }
            _ => {
                let n = u.int_in_range(1..=4)?;
                let v = u.int_in_range(0..=9)?;
                let digits = std::iter::repeat_n(b'0' + v as u8, n);
                data.splice(at..at, digits);
            }
        }
    }
    Ok(data)
}

const JSON_DICT: &[&[u8]] = &[
    b"null",
    b"true",
    b"false",
    b"{}",
    b"[]",
    b"\"\"",
    b"\"id\":",
    b"\"method\":",
    b"\"params\":",
    b"\"result\":",
    b"\"error\":",
    b"\"trace\":",
    b"\"traceparent\":",
    b"\"tracestate\":",
    b"\"jsonrpc\":\"2.0\",",
    b"\"processId\":",
    b"\"path\":",
    b"\\u0000",
    b"\\ud800",
    b"\\\"",
    b"9223372036854775807",
    b"-9223372036854775809",
    b"1e400",
    b"-0",
    b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    b"{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":",
];

const JSONRPC_SEEDS: &[&[u8]] = &[
    br#"{"id":1,"method":"initialize","params":{"clientName":"fuzz"}}"#,
    br#"{"method":"initialized"}"#,
    br#"{"id":"a","method":"process/start","params":{"processId":"p","argv":["true"],"cwd":"file:///tmp","env":{},"tty":false}}"#,
    br#"{"id":2,"method":"process/read","params":{"processId":"p","afterSeq":3,"maxBytes":10,"waitMs":0}}"#,
    br#"{"id":3,"method":"process/write","params":{"processId":"p","chunk":"aGk=","writeId":"w"}}"#,
    br#"{"id":4,"method":"fs/readFile","params":{"path":"file:///etc/hostname"}}"#,
    br#"{"id":5,"method":"fs/writeFile","params":{"path":"file:///tmp/x","dataBase64":"AA=="}}"#,
    br#"{"id":6,"method":"environment/info","params":null,"trace":{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","tracestate":"k=v"}}"#,
    br#"{"id":7,"result":{}}"#,
    br#"{"id":8,"error":{"code":-32600,"message":"x"}}"#,
    br#"{"jsonrpc":"2.0","id":-1,"method":"x","params":[1,2,3],"trace":null}"#,
    br#"[{"id":1}]"#,
];

/// Decoding never panics; what decodes is valid JSON, and a request's id and trace survive
/// re-encoding; params decode (or fail) without panicking for every shape we route.
#[test]
fn fuzz_jsonrpc_decode() {
    fuzz(JSONRPC_SEEDS, JSON_DICT, |input| {
        let Ok(msg) = jsonrpc::decode(input) else {
            return;
        };
        assert!(
            serde_json::from_slice::<serde::de::IgnoredAny>(input).is_ok(),
            "decoded invalid JSON: {:?}",
            String::from_utf8_lossy(input)
        );
        let params = match msg {
            Incoming::Request {
                id, params, trace, ..
            } => {
                let reply = jsonrpc::encode_result(&id, &());
                let v: serde_json::Value = serde_json::from_str(&reply).expect("a reply is JSON");
                let again: exec_server_protocol::RequestId =
                    serde_json::from_value(v["id"].clone()).expect("the id decodes");
                assert_eq!(again, id);
                if let Some(t) = trace {
                    let text = serde_json::to_string(&t).expect("trace encodes");
                    let back: jsonrpc::TraceContext =
                        serde_json::from_str(&text).expect("trace decodes");
                    assert_eq!(back, t);
                }
                params
            }
            Incoming::Notification { params, .. } => params,
            Incoming::Response => None,
        };
        let _ = jsonrpc::decode_params::<serde_json::Value>(params);
        let _ = jsonrpc::decode_params::<()>(params);
        let _ = jsonrpc::decode_params::<initialize::InitializeParams>(params);
        let _ = jsonrpc::decode_params::<process::StartParams>(params);
        let _ = jsonrpc::decode_params::<process::ReadParams>(params);
        let _ = jsonrpc::decode_params::<process::WriteParams>(params);
        let _ = jsonrpc::decode_params::<fs::ReadFileParams>(params);
        let _ = jsonrpc::decode_params::<fs::WriteFileParams>(params);
        let _ = jsonrpc::decode_params::<fs::CopyParams>(params);
    });
}

const URI_DICT: &[&[u8]] = &[
    b"file:",
    b"file://",
    b"file:///",
    b"FILE://localhost/",
    b"http://",
    b"//host/share/",
    b"/C:/",
    b"C|/",
    b"%2F",
    b"%2e%2e",
    b"%00",
    b"%ff",
    b"%",
    b"/../",
    b"/./",
    b"\\",
    b"?q",
    b"#f",
    b"@",
    b"[::1]",
    b"\xc3\xa9",
];

const URI_SEEDS: &[&[u8]] = &[
    b"file:///tmp/a%20b/c",
    b"file://localhost/etc/hosts",
    b"file:///",
    b"file:///C:/Windows",
    b"file://server/share/x",
    b"file:///a/./b/../c/",
    b"file:///%E2%9C%93/%ff",
    b"FILE:///x?y#z",
    b"/not/a/uri",
];

/// `PathUri::parse` and `to_path` never panic; serde agrees with `parse`; a native path is
/// absolute, and both the URI's own text and the path's URI name the same path again.
#[test]
fn fuzz_path_uri() {
    fuzz(URI_SEEDS, URI_DICT, |input| {
        let Ok(text) = std::str::from_utf8(input) else {
            return;
        };
        let Ok(uri) = PathUri::parse(text) else {
            return;
        };
        let via_serde: PathUri = serde_json::from_value(serde_json::Value::String(text.into()))
            .expect("serde agrees with parse");
        assert_eq!(via_serde, uri);
        let Ok(path) = uri.to_path() else {
            return;
        };
        assert!(path.is_absolute(), "{text:?} -> {path:?}");
        // The URI text we echo back names the same path. (The text alone may not re-parse
        // to an equal URI: the url crate keeps a `.` host that it does not serialise, and such
        // a URI is refused by `to_path`.)
        let again = PathUri::parse(uri.as_str()).expect("our own text parses");
        assert_eq!(again.to_path().as_ref(), Ok(&path), "{text:?}");
        // A percent-encoded `/` inside a segment decodes to a path with `//`, `.` or `..`
        // components (as upstream's decoding does), and a first component like `C:` is a
        // Windows drive on the wire (spec §3); only other paths must survive the trip.
        use std::path::{Component, PathBuf};
        let rebuilt: PathBuf = path.components().collect();
        let drive = path.components().nth(1).is_some_and(|c| {
            let b = c.as_os_str().as_encoded_bytes();
            b.len() == 2 && b[0].is_ascii_alphabetic() && matches!(b[1], b':' | b'|')
        });
        let normal = !drive
            && path
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
            && rebuilt.as_os_str() == path.as_os_str();
        if normal {
            let back = PathUri::from_path(&path).expect("an absolute path has a URI");
            assert_eq!(back.to_path().as_ref(), Ok(&path), "{text:?} -> {path:?}");
        }
    });
}

/// Methods the stdio target never lets through: they start processes, touch the filesystem
/// beyond a stat, or reach the network. Checked on the decoded method name (the server's own
/// decoder), so no escaping gets one past.
const UNSAFE_METHODS: &[&str] = &[
    "process/start",
    "fs/readFile",
    "fs/writeFile",
    "fs/createDirectory",
    "fs/readDirectory",
    "fs/walk",
    "fs/remove",
    "fs/copy",
    "fs/open",
    "fs/watchMissing",
    "http/request",
];

fn defang(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    for (i, line) in input.split(|b| *b == b'\n').enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        let method = match jsonrpc::decode(line) {
            Ok(Incoming::Request { method, .. }) | Ok(Incoming::Notification { method, .. }) => {
                Some(method.into_owned())
            }
            _ => None,
        };
        if method.is_some_and(|m| UNSAFE_METHODS.contains(&m.as_str())) {
            out.extend_from_slice(br#"{"id":"defanged","method":"environment/status"}"#);
        } else {
            out.extend_from_slice(line);
        }
    }
    out
}

const STDIO_SEEDS: &[&[u8]] = &[
    b"{\"id\":1,\"method\":\"initialize\",\"params\":{\"clientName\":\"fuzz\"}}\n{\"method\":\"initialized\"}\n{\"id\":2,\"method\":\"environment/info\"}\n",
    b"{\"id\":1,\"method\":\"initialize\",\"params\":{\"clientName\":\"fuzz\"}}\r\n{\"method\":\"initialized\"}\r\n{\"id\":2,\"method\":\"fs/getMetadata\",\"params\":{\"path\":\"file:///tmp\"}}\r\n{\"id\":3,\"method\":\"process/read\",\"params\":{\"processId\":\"p\"}}\n",
    b"{\"id\":1,\"method\":\"environment/info\"}\n\n   \n{\"id\":2,\"method\":\"initialize\",\"params\":{\"clientName\":\"x\",\"resumeSessionId\":\"nope\"}}",
    b"not json\n{\"id\":1}\n[]\n{\"id\":1,\"result\":null}\n",
    b"{\"method\":\"unknown\"}\n{\"id\":9,\"method\":\"initialize\"}\n",
];

/// Arbitrary bytes on stdin: `serve` neither panics nor hangs once the input ends, and
/// everything it writes is newline-delimited JSON objects, at most one reply per line read.
#[test]
fn fuzz_stdio_framing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut config = ServeConfig {
        max_message_bytes: 2048,
        drain_timeout: Duration::from_secs(5),
        ..ServeConfig::default()
    };
    config.limits.session_ttl = Duration::from_millis(1);
    let state = rt.block_on(async { ServerState::new(config) });
    let mut dict = JSON_DICT.to_vec();
    dict.extend_from_slice(&[b"\n", b"\r\n", b"\n\n", b"\xff\xfe"]);
    fuzz(STDIO_SEEDS, &dict, |input| {
        let input = defang(input);
        let lines = input.split(|b| *b == b'\n').count();
        let out = rt.block_on(async {
            let (mut client_in, server_in) = tokio::io::duplex(1 << 16);
            let (server_out, mut client_out) = tokio::io::duplex(1 << 16);
            let server = tokio::spawn(stdio::serve(server_in, server_out, state.clone()));
            let write = async {
                let _ = client_in.write_all(&input).await;
                let _ = client_in.shutdown().await;
                drop(client_in);
            };
            let read = async {
                let mut out = Vec::new();
                let _ = client_out.read_to_end(&mut out).await;
                out
            };
            let (_, out) =
                tokio::time::timeout(Duration::from_secs(20), async { tokio::join!(write, read) })
                    .await
                    .expect("stdio serve hung after its input ended");
            server.await.expect("stdio serve panicked");
            out
        });
        let text = std::str::from_utf8(&out).expect("output is UTF-8");
        assert!(text.is_empty() || text.ends_with('\n'), "unterminated line");
        let mut replies = 0;
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            assert!(v.is_object(), "{line}");
            if v.get("id").is_some() {
                replies += 1;
                assert!(
                    v.get("result").is_some() != v.get("error").is_some(),
                    "{line}"
                );
            }
        }
        assert!(replies <= lines, "{replies} replies to {lines} lines");
    });
}
