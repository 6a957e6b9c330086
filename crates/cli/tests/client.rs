//! The client library against the real server: typed calls, process event streams, file
//! streams, reconnect + resume through a proxy that is cut mid-stream, and the Environment
//! parity suite (one body, local and remote).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use exec_server_client::environment::{ExecBackend, ExecProcess};
use exec_server_client::files::TransferOptions;
use exec_server_client::{Client, ClientError, Environment, ProcessEvent};
use exec_server_core::fs::{FileSystem, MetadataOptions, ReadOptions, WriteOptions};
use exec_server_protocol::process::Stream;
use exec_server_protocol::PathUri;
use futures::StreamExt;
use tokio::net::{TcpListener, TcpStream};

use crate::support::{sh, Server};

async fn connect(url: &str) -> Client {
    Client::connect_ws(url, None).await.expect("connect")
}

#[tokio::test]
async fn typed_calls_and_process_streams() {
    let server = Server::start(&[]);
    let client = connect(&server.url).await;
    assert!(!client.session_id().is_empty());
    let info = client
        .call::<exec_server_protocol::environment::Info>(())
        .await
        .expect("info");
    assert_eq!(info.platform_os.as_deref(), Some("linux"));

    let mut p = client
        .start_process(sh("p1", "echo out; echo err >&2; exit 3"))
        .await
        .expect("start");
    let (out, err, code) = p.events().collect_output().await.expect("events");
    assert_eq!(
        (out.as_slice(), err.as_slice(), code),
        (&b"out\n"[..], &b"err\n"[..], Some(3))
    );

    // Errors keep their code; a duplicate id is refused.
    let e = client
        .call::<exec_server_protocol::process::Read>(exec_server_protocol::process::ReadParams {
            process_id: "nope".into(),
            after_seq: None,
            max_bytes: None,
            wait_ms: None,
        })
        .await
        .expect_err("unknown process");
    assert_eq!(e.rpc().map(|e| e.code), Some(-32600));
}

#[tokio::test]
async fn stdin_writes_reach_the_process_once() {
    let server = Server::start(&[]);
    let client = connect(&server.url).await;
    let mut params = sh("cat", "head -c 6");
    params.pipe_stdin = true;
    let p = client.start_process(params).await.expect("start");
    let (control, mut events) = p.split();
    control.write(b"abc").await.expect("write");
    control.write(b"def").await.expect("write");
    let (out, _, code) = events.collect_output().await.expect("events");
    assert_eq!(out, b"abcdef");
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn read_stream_and_write_stream_round_trip() {
    let server = Server::start(&[]);
    let client = connect(&server.url).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data: Vec<u8> = (0..3_000_017u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let path = PathUri::from_path(&dir.path().join("f")).expect("uri");
    let opts = TransferOptions {
        block_size: 64 << 10,
        in_flight: 6,
    };
    let mut progressed = 0;
    let n = client
        .write_stream(&path, &data[..], opts, |n| progressed += n)
        .await
        .expect("write");
    assert_eq!((n, progressed), (data.len() as u64, data.len() as u64));
    let mut stream = client.read_stream(&path, opts).await.expect("open");
    let mut back = Vec::new();
    while let Some(b) = stream.next().await {
        back.extend_from_slice(&b.expect("block"));
    }
    assert!(back == data, "read back {} bytes", back.len());
    let missing = PathUri::from_path(&dir.path().join("missing")).expect("uri");
    let e = client
        .read_stream(&missing, opts)
        .await
        .expect_err("missing");
    assert_eq!(e.io_kind(), std::io::ErrorKind::NotFound);
}

/// A TCP proxy whose open connections can be cut while it keeps accepting new ones.
struct Proxy {
    url: String,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(server_url: &str) -> Proxy {
        let target = server_url.trim_start_matches("ws://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("ws://{}", listener.local_addr().expect("addr"));
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let c = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                c.lock().expect("lock").push(task);
            }
        });
        Proxy { url, conns, accept }
    }

    /// Drops every open connection (both directions, mid-message if need be).
    fn cut(&self) {
        for t in self.conns.lock().expect("lock").drain(..) {
            t.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

#[tokio::test]
async fn killing_the_connection_mid_stream_loses_and_duplicates_nothing() {
    let server = Server::start(&[]);
    let proxy = Proxy::start(&server.url).await;
    let client = connect(&proxy.url).await;
    let session = client.session_id();
    // Paced output so the cuts land mid-stream, then a burst.
    let script = "i=0; while [ $i -lt 300 ]; do echo \"line $i of the paced part\"; \
                  i=$((i+1)); sleep 0.005; done; seq 1 200000";
    let mut expected = Vec::new();
    for i in 0..300 {
        expected.extend_from_slice(format!("line {i} of the paced part\n").as_bytes());
    }
    for i in 1..=200000 {
        expected.extend_from_slice(format!("{i}\n").as_bytes());
    }
    let mut p = client
        .start_process(sh("stream", script))
        .await
        .expect("start");
    let mut got = Vec::new();
    let mut seqs = Vec::new();
    let mut cuts = 0;
    let mut code = None;
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(60), p.events().next_event())
            .await
            .expect("event within 60 s")
            .expect("stream ended before the close")
            .expect("no error");
        match ev {
            ProcessEvent::Output { seq, data, .. } => {
                seqs.push(seq);
                got.extend_from_slice(&data);
                if (cuts == 0 && got.len() > 500) || (cuts == 1 && got.len() > 5000) {
                    proxy.cut();
                    cuts += 1;
                }
            }
            ProcessEvent::Exited { seq, exit_code, .. } => {
                seqs.push(seq);
                code = Some(exit_code);
            }
            ProcessEvent::Closed { seq } => {
                seqs.push(seq);
                break;
            }
        }
    }
    assert_eq!(cuts, 2);
    assert_eq!(code, Some(0));
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seqs not increasing");
    assert_eq!(got.len(), expected.len(), "byte count");
    assert!(got == expected, "bytes differ");
    assert_eq!(
        client.session_id(),
        session,
        "the session was resumed, not replaced"
    );

    // Writes after a cut go through once (retried with the same writeId if need be).
    let mut params = sh("cat2", "head -c 4");
    params.pipe_stdin = true;
    let p = client.start_process(params).await.expect("start");
    let (control, mut events) = p.split();
    control.write(b"ab").await.expect("write");
    proxy.cut();
    control.write(b"cd").await.expect("write after cut");
    let (out, _, code) = events.collect_output().await.expect("events");
    assert_eq!((out.as_slice(), code), (&b"abcd"[..], Some(0)));
}

#[tokio::test]
async fn a_lost_session_ends_process_streams_with_an_error() {
    let server = Server::start(&["--session-ttl", "1"]);
    let proxy = Proxy::start(&server.url).await;
    let options = exec_server_client::ConnectOptions {
        recovery_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let target = exec_server_client::WebSocketTarget::new(proxy.url.clone());
    let client = Client::connect(exec_server_client::Connector::WebSocket(target), options)
        .await
        .expect("connect");
    let mut p = client
        .start_process(sh("long", "sleep 30"))
        .await
        .expect("start");
    // Refuse reconnects until the session expired: stop accepting, cut, wait.
    proxy.accept.abort();
    proxy.cut();
    let ev = tokio::time::timeout(Duration::from_secs(20), p.events().next_event())
        .await
        .expect("an event within 20 s");
    assert!(
        matches!(ev, Some(Err(ClientError::SessionLost(_)))),
        "{ev:?}"
    );
}

/// A tiny HTTP origin: every request gets the same small response.
async fn origin() -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", l.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = "hello from the origin";
                let reply = format!(
                    "HTTP/1.1 201 Created\r\nConnection: close\r\nX-Test: a\r\nX-Test: b\r\n\
                     Content-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    (base, task)
}

/// One body, run against both faces of the Environment.
async fn parity_body(env: &Environment, origin: &str) -> Vec<String> {
    use exec_server_core::http::{HttpRequest, HttpRunner};
    let mut facts = Vec::new();
    let http = env.http();
    let resp = http
        .send(HttpRequest {
            method: "GET".into(),
            url: format!("{origin}/x"),
            ..Default::default()
        })
        .await
        .expect("http");
    let headers: Vec<_> = resp
        .headers
        .iter()
        .filter(|h| h.name == "x-test")
        .map(|h| h.value.clone())
        .collect();
    let body = resp.body.read_to_end(1 << 20).await.expect("body");
    facts.push(format!("http: {} {headers:?} {body:?}", resp.status));
    let e = http
        .send(HttpRequest {
            method: "GET".into(),
            url: "ftp://example/".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad scheme");
    facts.push(format!(
        "http error: {e} invalid={}",
        e.is_invalid_request()
    ));

    let exec = env.exec();
    let mut p = exec
        .start(sh("parity", "echo out; echo err >&2; exit 5"))
        .await
        .expect("start");
    let mut streams = Vec::new();
    let (mut out, mut code) = (std::collections::BTreeMap::new(), None);
    while let Some(ev) = p.events().next_event().await {
        match ev.expect("event") {
            ProcessEvent::Output { stream, data, .. } => {
                streams.push(stream);
                out.entry(stream.as_str())
                    .or_insert_with(Vec::new)
                    .extend_from_slice(&data);
            }
            ProcessEvent::Exited { exit_code, .. } => code = Some(exit_code),
            ProcessEvent::Closed { .. } => break,
        }
    }
    streams.sort_by_key(|s| s.as_str());
    facts.push(format!("streams={streams:?} out={out:?} code={code:?}"));
    assert!(streams.contains(&Stream::Stdout) && streams.contains(&Stream::Stderr));

    let mut missing = sh("missing", "");
    missing.argv = vec!["/definitely/not/here".into()];
    let e = exec.start(missing).await.expect_err("spawn fails");
    let obj = e.rpc().expect("an rpc error").clone();
    facts.push(format!(
        "spawn: {} {} {:?}",
        obj.code, obj.message, obj.data
    ));
    let dup = exec
        .start(sh("parity", "true"))
        .await
        .expect_err("duplicate");
    facts.push(format!("dup: {dup}"));

    let mut cat = sh("cat", "head -c 3");
    cat.pipe_stdin = true;
    let mut c = exec.start(cat).await.expect("start cat");
    c.write(b"xyz").await.expect("write");
    let (o, _, code) = c.events().collect_output().await.expect("cat");
    facts.push(format!("cat: {o:?} {code:?}"));

    let fs = env.fs();
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("a.txt");
    fs.write_file(
        &f,
        b"hello".to_vec(),
        WriteOptions {
            follow_symlinks: true,
        },
        None,
    )
    .await
    .expect("write");
    let back = fs
        .read_file(
            &f,
            ReadOptions {
                follow_symlinks: true,
            },
            None,
        )
        .await
        .expect("read");
    let meta = fs
        .get_metadata(
            &f,
            MetadataOptions {
                follow_symlinks: true,
            },
            None,
        )
        .await
        .expect("meta");
    facts.push(format!(
        "file: {back:?} size={} file={}",
        meta.size, meta.is_file
    ));
    for bad in [dir.path().join("nope"), dir.path().to_path_buf()] {
        let e = fs
            .read_file(
                &bad,
                ReadOptions {
                    follow_symlinks: true,
                },
                None,
            )
            .await
            .expect_err("fails");
        facts.push(format!("read {}: {:?} {}", bad == f, e.kind(), e));
    }
    let e = fs
        .create_directory(
            &f,
            exec_server_core::fs::CreateDirectoryOptions {
                recursive: false,
                follow_symlinks: true,
            },
            None,
        )
        .await
        .expect_err("exists");
    facts.push(format!("mkdir over a file: {:?} {e}", e.kind()));
    facts
}

#[tokio::test]
async fn environment_parity_local_and_remote() {
    let server = Server::start(&[]);
    let (origin, _task) = origin().await;
    let local = Environment::local().expect("local");
    let remote = Environment::remote(connect(&server.url).await);
    let l = parity_body(&local, &origin).await;
    let r = parity_body(&remote, &origin).await;
    // Temp dir names differ; everything else must match.
    let scrub = |v: Vec<String>| -> Vec<String> {
        v.into_iter()
            .map(|s| {
                s.split('`')
                    .enumerate()
                    .map(|(i, part)| if i % 2 == 1 { "<path>" } else { part })
                    .collect::<Vec<_>>()
                    .join("`")
            })
            .collect()
    };
    assert_eq!(scrub(l), scrub(r));
}

#[tokio::test]
async fn stdio_transport_spawns_the_server() {
    let connector = exec_server_client::Connector::Stdio(exec_server_client::StdioCommand {
        program: crate::support::BIN.into(),
        args: vec!["--listen".into(), "stdio".into()],
        env: [("RUST_LOG".to_string(), "warn".to_string())].into(),
        cwd: None,
    });
    let options = exec_server_client::ConnectOptions {
        reconnect: false,
        ..Default::default()
    };
    let client = Client::connect(connector, options).await.expect("connect");
    let mut p = client
        .start_process(sh("s", "printf stdio"))
        .await
        .expect("start");
    let (out, _, code) = p.events().collect_output().await.expect("events");
    assert_eq!((out.as_slice(), code), (&b"stdio"[..], Some(0)));
}

#[tokio::test]
async fn environment_manager_connects_configured_environments() {
    use exec_server_client::manager::EnvironmentsConfig;
    use exec_server_client::EnvironmentManager;
    let server = Server::start(&[]);
    let home = tempfile::tempdir().expect("tempdir");
    let toml = format!(
        "default = \"ws\"\n\
         [[environments]]\nid = \"ws\"\nurl = \"{url}\"\n\
         [[environments]]\nid = \"pipe\"\nprogram = \"{bin}\"\nargs = [\"--listen\", \"stdio\"]\n\
         env = {{ RUST_LOG = \"warn\" }}\n",
        url = server.url,
        bin = crate::support::BIN,
    );
    std::fs::write(home.path().join("environments.toml"), toml).expect("write");
    let config = EnvironmentsConfig::load(home.path(), Some("none")).expect("config");
    let manager = EnvironmentManager::new(config);
    assert_eq!(manager.ids(), ["local", "ws", "pipe"]);
    let default = manager
        .default_environment()
        .await
        .expect("connect")
        .expect("a default");
    assert!(matches!(default, Environment::Remote(_)));
    for id in ["ws", "pipe", "local"] {
        let env = manager.get(id).await.expect("environment");
        let mut p = env.exec().start(sh("m", "printf ok")).await.expect("start");
        let (out, _, code) = p.events().collect_output().await.expect("events");
        assert_eq!((out.as_slice(), code), (&b"ok"[..], Some(0)), "{id}");
    }
    let e = manager.get("nope").await.expect_err("unknown id");
    assert!(
        e.to_string().contains("unknown environment id `nope`"),
        "{e}"
    );
}

#[tokio::test]
async fn a_read_stream_reopens_its_file_after_a_cut() {
    let server = Server::start(&[]);
    let proxy = Proxy::start(&server.url).await;
    let client = connect(&proxy.url).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data: Vec<u8> = (0..8_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(dir.path().join("f"), &data).expect("write");
    let path = PathUri::from_path(&dir.path().join("f")).expect("uri");
    let opts = TransferOptions {
        block_size: 64 << 10,
        in_flight: 4,
    };
    let mut stream = client.read_stream(&path, opts).await.expect("open");
    let mut back = Vec::new();
    let mut cut = false;
    while let Some(b) = stream.next().await {
        back.extend_from_slice(&b.expect("block"));
        if !cut && back.len() > 1_000_000 {
            proxy.cut();
            cut = true;
        }
    }
    assert!(cut);
    assert_eq!(back.len(), data.len());
    assert!(back == data, "bytes differ");
}
