//! An SSE stream of many small events through the executor, read with the MCP transport's
//! `get_stream` (the path a server-initiated MCP event stream takes): checks that every event
//! arrives once and in order, and reports throughput and the peak RSS of the client (this
//! process) and of the executor.
//!
//! ```sh
//! cargo build --release -p exec-server
//! cargo bench -p exec-server-mcp --bench sse_stream -- [--events N] [--only executor|direct] [--server-bin PATH]
//! ```
//!
//! The SSE origin runs in a child process (this binary with `--origin`), so the client's RSS is
//! the client's alone. The same stream is also read with the direct runner for comparison.
#![allow(clippy::print_stdout)] // a report on stdout

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use exec_server_client::environment::EnvironmentHttp;
use exec_server_client::Environment;
use exec_server_mcp::rmcp::transport::streamable_http_client::StreamableHttpClient;
use exec_server_mcp::{McpHttpClient, McpHttpOptions};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let events: u64 = value("--events").map_or(Ok(100_000), |v| v.parse())?;
    let rt = tokio::runtime::Runtime::new()?;
    if args.iter().any(|a| a == "--origin") {
        return rt.block_on(origin(events));
    }
    let server_bin = value("--server-bin").map(PathBuf::from).unwrap_or_else(|| {
        // target/release/deps/sse_stream-HASH → target/release/exec-server
        let exe = std::env::current_exe().unwrap_or_default();
        exe.parent()
            .and_then(|d| d.parent())
            .map(|d| d.join("exec-server"))
            .unwrap_or_default()
    });
    let only = value("--only");
    rt.block_on(drive(events, server_bin, only.as_deref()))
}

/// Serves one SSE stream of `events` events per connection (`id: i`, a JSON-RPC notification
/// as data), written in 64 KiB batches, then closes. Prints its port first.
async fn origin(events: u64) -> Result<(), Error> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", l.local_addr()?.port());
    std::io::stdout().flush()?;
    loop {
        let (mut s, _) = l.accept().await?;
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let hdr =
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
            if s.write_all(hdr.as_bytes()).await.is_err() {
                return;
            }
            let mut batch = String::with_capacity(70_000);
            for i in 0..events {
                batch.push_str(&format!(
                    "id: {i}\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{{\"level\":\"info\",\"data\":{i}}}}}\n\n"
                ));
                if batch.len() >= 64 * 1024 {
                    if s.write_all(batch.as_bytes()).await.is_err() {
                        return;
                    }
                    batch.clear();
                }
            }
            let _ = s.write_all(batch.as_bytes()).await;
            let _ = s.shutdown().await;
        });
    }
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` and returns it with the first line it prints.
fn start(mut cmd: Command) -> Result<(Proc, String), Error> {
    let mut child = cmd.stdout(Stdio::piped()).stdin(Stdio::null()).spawn()?;
    let mut line = String::new();
    let out = child.stdout.take().ok_or("no stdout")?;
    BufReader::new(out).read_line(&mut line)?;
    Ok((Proc(child), line.trim().to_string()))
}

/// `VmRSS` or `VmHWM` of a process, in KiB.
fn status_kib(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

struct Outcome {
    secs: f64,
    bytes: u64,
    client_peak_kib: u64,
    executor_peak_kib: u64,
}

/// Reads the stream at `url` through `runner`, checking ids 0..events in order, while a
/// sampler records the peak RSS of this process and of `executor_pid`.
async fn read_stream(
    runner: EnvironmentHttp,
    url: &str,
    events: u64,
    executor_pid: Option<u32>,
) -> Result<Outcome, Error> {
    let client = McpHttpClient::new(runner, McpHttpOptions::default());
    let peaks = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let sampler = {
        let peaks = peaks.clone();
        tokio::spawn(async move {
            loop {
                peaks
                    .0
                    .fetch_max(status_kib("self", "VmRSS:"), Ordering::Relaxed);
                if let Some(pid) = executor_pid {
                    peaks
                        .1
                        .fetch_max(status_kib(&pid.to_string(), "VmRSS:"), Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let start = Instant::now();
    let mut stream = client
        .get_stream(url.into(), Some("bench".into()), None, None, HashMap::new())
        .await
        .map_err(|e| format!("get_stream: {e}"))?;
    let mut next = 0u64;
    let mut bytes = 0u64;
    while let Some(event) = stream.next().await {
        let event = event.map_err(|e| format!("event {next}: {e}"))?;
        let id = event.id.as_deref().unwrap_or("");
        if id != next.to_string() {
            return Err(format!("event {next} out of order: got id {id:?}").into());
        }
        let data = event.data.unwrap_or_default();
        if !data.ends_with(&format!("\"data\":{next}}}}}")) {
            return Err(format!("event {next} has the wrong data: {data}").into());
        }
        bytes += data.len() as u64;
        next += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    sampler.abort();
    if next != events {
        return Err(format!("stream ended after {next} of {events} events").into());
    }
    Ok(Outcome {
        secs,
        bytes,
        client_peak_kib: peaks.0.load(Ordering::Relaxed),
        executor_peak_kib: peaks.1.load(Ordering::Relaxed),
    })
}

fn report(label: &str, events: u64, o: &Outcome) {
    println!(
        "{label:<20} {events} events in {:>6.3} s = {:>8.0} events/s, {:>6.1} MiB/s of data; \
         peak RSS client {:.1} MiB{}",
        o.secs,
        events as f64 / o.secs,
        o.bytes as f64 / o.secs / 1048576.0,
        o.client_peak_kib as f64 / 1024.0,
        if o.executor_peak_kib > 0 {
            format!(", executor {:.1} MiB", o.executor_peak_kib as f64 / 1024.0)
        } else {
            String::new()
        }
    );
}

async fn drive(events: u64, server_bin: PathBuf, only: Option<&str>) -> Result<(), Error> {
    #[allow(clippy::disallowed_methods)] // the origin: this binary
    let mut origin_cmd = Command::new(std::env::current_exe()?);
    origin_cmd.args(["--origin", "--events", &events.to_string()]);
    let (_origin, port) = start(origin_cmd)?;
    let url = format!("http://127.0.0.1:{port}/mcp");

    #[allow(clippy::disallowed_methods)] // the executor under test
    let mut server_cmd = Command::new(&server_bin);
    server_cmd
        .args(["--listen", "ws://127.0.0.1:0"])
        .env("RUST_LOG", "warn");
    let (executor, ws) =
        start(server_cmd).map_err(|e| format!("cannot start {}: {e}", server_bin.display()))?;
    let pid = executor.0.id();
    let idle = status_kib(&pid.to_string(), "VmRSS:");
    println!(
        "executor {} (pid {pid}, idle RSS {:.1} MiB), client baseline RSS {:.1} MiB",
        server_bin.display(),
        idle as f64 / 1024.0,
        status_kib("self", "VmRSS:") as f64 / 1024.0
    );
    let client = exec_server_client::Client::connect_ws(&ws, None).await?;
    let remote = Environment::remote(client).http_runner();
    for round in (only != Some("direct"))
        .then_some(1..=3)
        .into_iter()
        .flatten()
    {
        let o = read_stream(remote.clone(), &url, events, Some(pid)).await?;
        report(&format!("executor, round {round}"), events, &o);
    }
    let local = Environment::local()?.http_runner();
    for round in (only != Some("executor"))
        .then_some(1..=3)
        .into_iter()
        .flatten()
    {
        let o = read_stream(local.clone(), &url, events, None).await?;
        report(&format!("direct, round {round}"), events, &o);
    }
    println!(
        "peak RSS (VmHWM): client {:.1} MiB, executor {:.1} MiB",
        status_kib("self", "VmHWM:") as f64 / 1024.0,
        status_kib(&pid.to_string(), "VmHWM:") as f64 / 1024.0
    );
    Ok(())
}
