//! Manual interop check: the real upstream executor (`codex exec-server --remote`) registers
//! with our rendezvous, and a harness built from the relay crate's state machines runs
//! `initialize` through it.
//!
//! Usage: `cargo run --release -p exec-server-rendezvous --example upstream_executor -- <codex>`
//! where `<codex>` is the upstream 0.169.0 binary (`scripts/install-upstream.sh`). Exits 0 once
//! the executor answered `initialize` through the Noise channel, after checking the rendezvous
//! only ever carried ciphertext. Not run by `cargo test` (it needs the upstream binary); it is a
//! wire-compatibility check for spec §10 (issue 11).

#![allow(clippy::print_stdout)] // a command-line probe reporting on stdout

use std::process::{ExitCode, Stdio};
use std::time::Duration;

use exec_server_relay::frame::Frame;
use exec_server_relay::harness::{new_stream_id, HarnessStream};
use exec_server_relay::noise::StaticIdentity;
use exec_server_relay::registry::{ConnectRequest, ConnectResponse};
use exec_server_rendezvous::{Config, Options, Rendezvous};
use futures::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::Message;

const MARKER: &str = "interop-marker-51c0";

/// `POST /cloud/environment/e2e/connect` with the harness bearer; status and body.
async fn connect(addr: std::net::SocketAddr, body: &str) -> Result<(u16, String), String> {
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!(
        "POST /cloud/environment/e2e/connect HTTP/1.1\r\nhost: {addr}\r\n\
         authorization: Bearer harness-secret\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = String::new();
    tcp.read_to_string(&mut raw)
        .await
        .map_err(|e| e.to_string())?;
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("bad HTTP answer")?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("bad status line")?;
    Ok((status, body.to_string()))
}

async fn run(codex: &str) -> Result<(), String> {
    let config = Config::parse(
        "[environments.e2e]\nexecutor_tokens = [\"exec-secret\"]\nharness_tokens = [\"harness-secret\"]\n",
    )
    .map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let rendezvous = Rendezvous::new(config, Options::default()).map_err(|e| e.to_string())?;
    tokio::spawn(rendezvous.serve(listener, std::future::pending()));
    println!("rendezvous on http://{addr}");

    let home = std::env::temp_dir().join(format!("rdv-interop-{}", std::process::id()));
    std::fs::create_dir_all(&home).map_err(|e| e.to_string())?;
    #[allow(clippy::disallowed_methods)] // a manual probe, not the server's spawn path
    let mut executor = tokio::process::Command::new(codex)
        .args([
            "exec-server",
            "--remote",
            &format!("http://{addr}"),
            "--environment-id",
            "e2e",
            "--registration-bearer-stdin",
        ])
        .env("CODEX_HOME", &home)
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {codex}: {e}"))?;
    let mut stdin = executor.stdin.take().ok_or("no stdin")?;
    stdin
        .write_all(b"exec-secret\n")
        .await
        .map_err(|e| e.to_string())?;

    // Wait until the executor registered and attached its socket.
    let identity = StaticIdentity::generate().map_err(|e| e.to_string())?;
    let request = serde_json::to_string(&ConnectRequest {
        harness_public_key: identity.public_key().clone(),
    })
    .map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let bundle: ConnectResponse = loop {
        let (status, body) = connect(addr, &request).await?;
        if status == 200 {
            break serde_json::from_str(&body).map_err(|e| e.to_string())?;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("connect still {status}: {body}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("executor registered: {}", bundle.executor_registration_id);
    let url = bundle.url.clone();
    let authorization = bundle.harness_key_authorization.clone();
    let info = bundle.into_connect_info("e2e").map_err(|e| e.to_string())?;
    let (mut ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .map_err(|e| e.to_string())?;
    let (mut stream, opening) =
        HarnessStream::start(&identity, &info, new_stream_id()).map_err(|e| e.to_string())?;
    let mut carried: Vec<Vec<u8>> = Vec::new();
    for f in opening {
        let bytes = f.encode().map_err(|e| e.to_string())?;
        carried.push(bytes.clone());
        ws.send(Message::Binary(bytes.into()))
            .await
            .map_err(|e| e.to_string())?;
    }
    let reply = loop {
        let next = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .map_err(|_| "no answer from the executor in 20 s")?;
        let bytes = match next {
            Some(Ok(Message::Binary(b))) => b.to_vec(),
            Some(Ok(_)) => continue,
            other => return Err(format!("harness socket ended: {other:?}")),
        };
        carried.push(bytes.clone());
        let frame = Frame::decode(&bytes).map_err(|e| e.to_string())?;
        let was_established = stream.is_established();
        let messages = stream.on_frame(frame.body).map_err(|e| e.to_string())?;
        if stream.is_established() && !was_established {
            println!("handshake complete");
            let init =
                format!(r#"{{"id":1,"method":"initialize","params":{{"clientName":"{MARKER}"}}}}"#);
            for f in stream.send(init.as_bytes()).map_err(|e| e.to_string())? {
                let bytes = f.encode().map_err(|e| e.to_string())?;
                carried.push(bytes.clone());
                ws.send(Message::Binary(bytes.into()))
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        if let Some(first) = messages.into_iter().next() {
            break String::from_utf8_lossy(&first).into_owned();
        }
    };
    println!("initialize reply: {reply}");
    if !reply.contains(r#""id":1"#) || !reply.contains("result") {
        return Err("not an initialize result".into());
    }
    for bytes in &carried {
        let hit = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        if hit(MARKER.as_bytes()) || hit(authorization.as_bytes()) || hit(b"initialize") {
            return Err("plaintext crossed the rendezvous".into());
        }
    }
    println!(
        "OK: upstream executor answered initialize through our rendezvous ({} frames, all ciphertext)",
        carried.len()
    );
    let _ = executor.kill().await;
    let _ = std::fs::remove_dir_all(&home);
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let Some(codex) = std::env::args().nth(1) else {
        eprintln!("usage: upstream_executor <codex binary>");
        return ExitCode::FAILURE;
    };
    match run(&codex).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("upstream_executor: {e}");
            ExitCode::FAILURE
        }
    }
}
