//! The measurements. Each opens its own connection(s) to the server under test and returns
//! named figures; the caller applies the timeout.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::lean::LeanClient;
use crate::quick_json::Json;
use crate::relay::world::RelayWorld;
use crate::rpc::{self, Client};
use crate::server::{self, Server};

/// Which direction of a figure is better.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Better {
    Higher,
    Lower,
    /// A yes/no figure (1.0 = yes); yes is better.
    Yes,
}

/// One reported number.
pub(crate) struct Figure {
    pub(crate) key: &'static str,
    pub(crate) label: &'static str,
    pub(crate) better: Better,
}

/// One measurement (selectable with `--only NAME`).
pub(crate) struct Measure {
    pub(crate) name: &'static str,
    pub(crate) figures: &'static [Figure],
    pub(crate) timeout: Duration,
}

pub(crate) const fn fig(key: &'static str, label: &'static str, better: Better) -> Figure {
    Figure { key, label, better }
}

/// All measurements, in the order they run against a freshly started server (idle RSS first,
/// the heavy output streams last).
pub(crate) const MEASURES: &[Measure] = &[
    Measure {
        name: "idle-rss",
        figures: &[fig("rss_kib", "idle RSS (KiB)", Better::Lower)],
        timeout: Duration::from_secs(30),
    },
    Measure {
        name: "retained-rss",
        figures: &[fig(
            "retained_rss_mib_per_process",
            "RSS per process with 64 MiB of output delivered and retained (MiB)",
            Better::Lower,
        )],
        timeout: Duration::from_secs(120),
    },
    Measure {
        name: "rpc",
        figures: &[
            fig("rpc_p50_us", "rpc round trip p50 (µs)", Better::Lower),
            fig("rpc_p99_us", "rpc round trip p99 (µs)", Better::Lower),
        ],
        timeout: Duration::from_secs(60),
    },
    Measure {
        name: "rpc-awake",
        figures: &[
            fig(
                "rpc_awake_p50_us",
                "rpc round trip p50, CPUs kept awake (µs)",
                Better::Lower,
            ),
            fig(
                "rpc_awake_p99_us",
                "rpc round trip p99, CPUs kept awake (µs)",
                Better::Lower,
            ),
        ],
        timeout: Duration::from_secs(60),
    },
    Measure {
        name: "spawn",
        figures: &[
            fig("spawn_p50_us", "spawn round trip p50 (µs)", Better::Lower),
            fig("spawn_p99_us", "spawn round trip p99 (µs)", Better::Lower),
        ],
        timeout: Duration::from_secs(120),
    },
    Measure {
        name: "sleep200",
        figures: &[
            fig(
                "sleep_all_exited_s",
                "N× sleep 1, all exited (s)",
                Better::Lower,
            ),
            fig(
                "sleep_all_started_s",
                "N× sleep 1, all starts answered (s)",
                Better::Lower,
            ),
        ],
        timeout: Duration::from_secs(60),
    },
    Measure {
        name: "multi-conn",
        figures: &[fig(
            "multi_spawns_per_s",
            "parallel connections spawning (spawns/s)",
            Better::Higher,
        )],
        timeout: Duration::from_secs(120),
    },
    Measure {
        name: "notify-stream",
        figures: &[
            fig("notify_mibs", "notification stream (MiB/s)", Better::Higher),
            fig(
                "notify_lossless",
                "notification stream lossless",
                Better::Yes,
            ),
            fig(
                "notify_server_cpu_s_per_gib",
                "notification stream, server CPU per GiB (s)",
                Better::Lower,
            ),
        ],
        timeout: Duration::from_secs(180),
    },
    Measure {
        name: "read-stream",
        figures: &[
            fig("read_mibs", "process/read stream (MiB/s)", Better::Higher),
            fig("read_lossless", "process/read stream lossless", Better::Yes),
            fig(
                "read_received_mib",
                "process/read received (MiB)",
                Better::Higher,
            ),
        ],
        timeout: Duration::from_secs(180),
    },
    Measure {
        name: "fs-read",
        figures: &[
            fig("fs_read_mibs", "fs/readFile 64 MiB (MiB/s)", Better::Higher),
            fig(
                "fs_read_peak_rss_mib",
                "fs/readFile 64 MiB, server peak RSS (MiB)",
                Better::Lower,
            ),
        ],
        timeout: Duration::from_secs(60),
    },
    Measure {
        name: "fs-write64",
        figures: &[
            fig("fs_write64_ok", "fs/writeFile 64 MiB succeeds", Better::Yes),
            fig("fs_write64_s", "fs/writeFile 64 MiB (s)", Better::Lower),
        ],
        timeout: Duration::from_secs(60),
    },
    Measure {
        name: "fs-write8",
        figures: &[fig(
            "fs_write8_mibs",
            "8 × 8 MiB fs/writeFile at once, one connection (MiB/s)",
            Better::Higher,
        )],
        timeout: Duration::from_secs(60),
    },
    Measure {
        name: "fs-blocks",
        figures: &[
            fig(
                "fs_block1_mibs",
                "fs/readBlock 256 MiB, 1 MiB blocks, 1 in flight (MiB/s)",
                Better::Higher,
            ),
            fig(
                "fs_block4_mibs",
                "fs/readBlock 256 MiB, 1 MiB blocks, 4 in flight (MiB/s)",
                Better::Higher,
            ),
        ],
        timeout: Duration::from_secs(120),
    },
    Measure {
        name: "fs-sandbox",
        figures: &[fig(
            "fs_sandbox_p50_ms",
            "sandboxed fs/getMetadata (read-only) p50 (ms)",
            Better::Lower,
        )],
        timeout: Duration::from_secs(60),
    },
    // Remote mode: the executor under test registered with our rendezvous (crate::relay).
    Measure {
        name: "relay-rpc",
        figures: &[
            fig(
                "relay_rpc_p50_us",
                "relay: rpc round trip p50 (µs)",
                Better::Lower,
            ),
            fig(
                "relay_rpc_p99_us",
                "relay: rpc round trip p99 (µs)",
                Better::Lower,
            ),
            fig(
                "relay_direct_rpc_p50_us",
                "relay: same server, direct WebSocket rpc p50 (µs)",
                Better::Lower,
            ),
            fig(
                "relay_rpc_over_direct",
                "relay: rpc p50 relay / direct",
                Better::Lower,
            ),
        ],
        timeout: Duration::from_secs(90),
    },
    Measure {
        name: "relay-rpc-awake",
        figures: &[
            fig(
                "relay_awake_rpc_p50_us",
                "relay: rpc round trip p50, CPUs kept awake (µs)",
                Better::Lower,
            ),
            fig(
                "relay_awake_rpc_p99_us",
                "relay: rpc round trip p99, CPUs kept awake (µs)",
                Better::Lower,
            ),
            fig(
                "relay_awake_direct_rpc_p50_us",
                "relay: same server, direct rpc p50, CPUs kept awake (µs)",
                Better::Lower,
            ),
            fig(
                "relay_awake_rpc_over_direct",
                "relay: rpc p50 relay / direct, CPUs kept awake",
                Better::Lower,
            ),
        ],
        timeout: Duration::from_secs(90),
    },
    Measure {
        name: "relay-handshake",
        figures: &[
            fig(
                "relay_handshake_p50_ms",
                "relay: open a stream (connect + WS + Noise + initialize) p50 (ms)",
                Better::Lower,
            ),
            fig(
                "relay_handshake_p90_ms",
                "relay: open a stream p90 (ms)",
                Better::Lower,
            ),
        ],
        timeout: Duration::from_secs(60),
    },
    Measure {
        name: "relay-streams",
        figures: &[
            fig(
                "relay_streams_ok",
                "relay: 128 concurrent streams all succeed",
                Better::Yes,
            ),
            fig(
                "relay_streams_s",
                "relay: 128 concurrent streams, open + initialize + echo (s)",
                Better::Lower,
            ),
        ],
        timeout: Duration::from_secs(120),
    },
    Measure {
        name: "relay-stream",
        figures: &[
            fig(
                "relay_stream_mibs",
                "relay: notification stream (MiB/s)",
                Better::Higher,
            ),
            fig(
                "relay_stream_lossless",
                "relay: notification stream lossless",
                Better::Yes,
            ),
            fig(
                "relay_stream_exec_cpu_s_per_gib",
                "relay: notification stream, executor CPU per GiB (s)",
                Better::Lower,
            ),
            fig(
                "relay_stream_rendezvous_cpu_s_per_gib",
                "relay: notification stream, rendezvous CPU per GiB (s)",
                Better::Lower,
            ),
        ],
        timeout: Duration::from_secs(180),
    },
    // The MCP shell tool over stdio, not the WebSocket server (crate::mcp); the timeout is
    // per reply.
    Measure {
        name: crate::mcp::NAME,
        figures: crate::mcp::FIGURES,
        timeout: crate::mcp::CALL_TIMEOUT,
    },
];

/// True for the measurements that need the rendezvous and a remote-mode executor.
pub(crate) fn is_relay(name: &str) -> bool {
    name.starts_with("relay-")
}

/// Sizes of the workloads.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) rpc_calls: usize,
    pub(crate) spawn_runs: usize,
    pub(crate) stream_bytes: u64,
    pub(crate) sleepers: usize,
    pub(crate) conns: usize,
    pub(crate) spawns_per_conn: usize,
    /// Directory of the filesystem measurements' files.
    pub(crate) fs_dir: std::path::PathBuf,
}

pub(crate) type Figures = Vec<(&'static str, f64)>;

/// Runs measurement `name` against `server` (and, for the relay measurements, `relay`: the
/// same server command in remote mode behind our rendezvous).
pub(crate) async fn run(
    name: &str,
    server: &Server,
    relay: Option<&RelayWorld>,
    config: &Config,
) -> Result<Figures> {
    let url = server.url.as_str();
    if is_relay(name) {
        let harness = relay
            .context("no remote-mode setup (see the errors above)")?
            .harness
            .clone();
        let (name, url, config) = (name.to_string(), url.to_string(), config.clone());
        // SCHED_IDLE spinners keep the vCPUs out of their idle states (see `rpc-awake`).
        let _spinners = if name == "relay-rpc-awake" {
            Some(server::Spinners::start().await?)
        } else {
            None
        };
        return tokio::task::spawn_blocking(move || match name.as_str() {
            "relay-rpc" => crate::relay::rpc(&harness, &url, config.rpc_calls, false),
            "relay-rpc-awake" => crate::relay::rpc(&harness, &url, config.rpc_calls, true),
            "relay-stream" => crate::relay::stream(&harness, config.stream_bytes),
            "relay-handshake" => crate::relay::handshake(&harness),
            "relay-streams" => crate::relay::many_streams(&harness),
            other => bail!("unknown measurement {other}"),
        })
        .await
        .context("relay measurement panicked")?;
    }
    match name {
        "idle-rss" => idle_rss(server).await,
        "retained-rss" => retained_rss(server).await,
        "rpc" => rpc_round_trip(url, config.rpc_calls, "rpc").await,
        "rpc-awake" => {
            let _spinners = server::Spinners::start().await?;
            rpc_round_trip(url, config.rpc_calls, "rpc_awake").await
        }
        "spawn" => spawn_round_trip(url, config.spawn_runs).await,
        "sleep200" => concurrent_sleepers(url, config.sleepers).await,
        "multi-conn" => parallel_spawners(url, config.conns, config.spawns_per_conn).await,
        "notify-stream" | "read-stream" => {
            let measure = if name == "notify-stream" {
                notification_stream
            } else {
                read_stream
            };
            let (url, bytes) = (url.to_string(), config.stream_bytes);
            tokio::task::spawn_blocking(move || measure(&url, bytes))
                .await
                .context("stream measurement panicked")?
        }
        "fs-read" | "fs-write64" | "fs-write8" | "fs-blocks" | "fs-sandbox" => {
            let fixture = crate::fs::FsFixture::new(config.fs_dir.clone());
            match name {
                "fs-read" => crate::fs::read_file(server, &fixture).await,
                "fs-write64" => crate::fs::write_big(server, &fixture).await,
                "fs-write8" => crate::fs::write_concurrent(server, &fixture).await,
                "fs-blocks" => crate::fs::read_blocks(server, &fixture).await,
                _ => crate::fs::sandboxed_op(server, &fixture).await,
            }
        }
        other => bail!("unknown measurement {other}"),
    }
}

pub(crate) fn start_params(process_id: &str, argv: &[&str]) -> Value {
    json!({
        "processId": process_id,
        "argv": argv,
        "cwd": "file:///tmp",
        "env": {"PATH": "/usr/bin:/bin"},
        "tty": false,
    })
}

/// Nearest-rank percentile of sorted durations, in µs.
pub(crate) fn percentile_us(sorted: &[Duration], pct: usize) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (sorted.len() * pct).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e6
}

pub(crate) fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

/// Waits for `process/closed` of `process_id`, discarding other notifications.
async fn wait_closed(client: &mut Client, process_id: &str) -> Result<()> {
    loop {
        let notification = client.next_notification().await?;
        if rpc::method(&notification) == "process/closed"
            && rpc::process_id(&notification) == process_id
        {
            return Ok(());
        }
    }
}

async fn idle_rss(server: &Server) -> Result<Figures> {
    let _client = Client::connect_initialized(&server.url).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = server
        .pid()
        .context("cannot find the server pid (no local listener on its port)")?;
    let kib = server::rss_kib(pid)?;
    Ok(vec![("rss_kib", kib as f64)])
}

/// What retention costs: 4 processes each write 64 MiB, every byte is pushed to the client,
/// and the server's RSS growth over its idle RSS is divided by 4. Our server keeps the last
/// 64 MiB of each for replay (`--retention-per-process`); upstream keeps what its own bound
/// allows.
async fn retained_rss(server: &Server) -> Result<Figures> {
    const PROCESSES: usize = 4;
    let pid = server
        .pid()
        .context("cannot find the server pid (no local listener on its port)")?;
    let mut client = Client::connect_initialized(&server.url).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = server::rss_kib(pid)?;
    for i in 0..PROCESSES {
        let id = format!("retained-{i}");
        client
            .call(
                "process/start",
                start_params(&id, &["head", "-c", "67108864", "/dev/zero"]),
            )
            .await?;
        wait_closed(&mut client, &id).await?;
    }
    let after = server::rss_kib(pid)?;
    let per = after.saturating_sub(before) as f64 / 1024.0 / PROCESSES as f64;
    Ok(vec![("retained_rss_mib_per_process", per)])
}

/// `prefix` names the figures (`rpc` or `rpc_awake`).
async fn rpc_round_trip(url: &str, calls: usize, prefix: &str) -> Result<Figures> {
    let url = url.to_string();
    let samples = tokio::task::spawn_blocking(move || crate::lean::rpc_samples(&url, calls))
        .await
        .context("rpc measurement thread")??;
    let (p50, p99) = if prefix == "rpc" {
        ("rpc_p50_us", "rpc_p99_us")
    } else {
        ("rpc_awake_p50_us", "rpc_awake_p99_us")
    };
    Ok(vec![
        (p50, percentile_us(&samples, 50)),
        (p99, percentile_us(&samples, 99)),
    ])
}

async fn spawn_round_trip(url: &str, runs: usize) -> Result<Figures> {
    let mut client = Client::connect_initialized(url).await?;
    for i in 0..5 {
        let id = format!("warm-{i}");
        client
            .call("process/start", start_params(&id, &["true"]))
            .await?;
        wait_closed(&mut client, &id).await?;
    }
    let mut samples = Vec::with_capacity(runs);
    for i in 0..runs {
        let id = format!("spawn-{i}");
        let started = Instant::now();
        client
            .call("process/start", start_params(&id, &["true"]))
            .await?;
        wait_closed(&mut client, &id).await?;
        samples.push(started.elapsed());
    }
    samples.sort();
    Ok(vec![
        ("spawn_p50_us", percentile_us(&samples, 50)),
        ("spawn_p99_us", percentile_us(&samples, 99)),
    ])
}

async fn concurrent_sleepers(url: &str, count: usize) -> Result<Figures> {
    let mut client = Client::connect_initialized(url).await?;
    let started = Instant::now();
    let mut request_ids = Vec::with_capacity(count);
    for i in 0..count {
        let id = format!("sleep-{i}");
        request_ids.push(
            client
                .send_request("process/start", start_params(&id, &["sleep", "1"]))
                .await?,
        );
    }
    for (i, request_id) in request_ids.into_iter().enumerate() {
        client
            .wait_response(request_id)
            .await
            .with_context(|| format!("process/start sleep-{i}"))?;
    }
    let all_started = started.elapsed().as_secs_f64();
    let mut exited = vec![false; count];
    let mut remaining = count;
    while remaining > 0 {
        let notification = client.next_notification().await?;
        if rpc::method(&notification) != "process/exited" {
            continue;
        }
        let index = rpc::process_id(&notification)
            .strip_prefix("sleep-")
            .and_then(|n| n.parse::<usize>().ok());
        if let Some(index) = index.filter(|&i| i < count) {
            if !exited[index] {
                exited[index] = true;
                remaining -= 1;
            }
        }
    }
    Ok(vec![
        ("sleep_all_exited_s", started.elapsed().as_secs_f64()),
        ("sleep_all_started_s", all_started),
    ])
}

async fn parallel_spawners(url: &str, conns: usize, per_conn: usize) -> Result<Figures> {
    let clients =
        futures::future::try_join_all((0..conns).map(|_| Client::connect_initialized(url))).await?;
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(k, mut client)| {
            tokio::spawn(async move {
                for i in 0..per_conn {
                    let id = format!("c{k}-{i}");
                    client
                        .call("process/start", start_params(&id, &["true"]))
                        .await?;
                    wait_closed(&mut client, &id).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await.context("spawner task panicked")??;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(vec![(
        "multi_spawns_per_s",
        (conns * per_conn) as f64 / secs,
    )])
}

pub(crate) fn head_command(bytes: u64) -> String {
    format!("head -c {bytes} /dev/zero")
}

/// Length in bytes of the base64 `chunk` field. The length is computed from the base64 text
/// (exact for valid base64); every `VERIFY_EVERY`-th chunk is fully decoded and checked to be
/// zeros (the streams read /dev/zero), so the client's decoding cost does not cap the figure.
pub(crate) fn chunk_len(text: &[u8], index: u64, scratch: &mut Vec<u8>) -> Result<u64> {
    const VERIFY_EVERY: u64 = 16;
    if !text.len().is_multiple_of(4) {
        bail!("chunk is not padded base64 (length {})", text.len());
    }
    if index.is_multiple_of(VERIFY_EVERY) {
        scratch.clear();
        STANDARD
            .decode_vec(text, scratch)
            .context("chunk is not valid base64")?;
        if scratch.iter().any(|&b| b != 0) {
            bail!("chunk contains non-zero bytes (stream is /dev/zero)");
        }
        return Ok(scratch.len() as u64);
    }
    let padding = text.iter().rev().take(2).filter(|&&b| b == b'=').count();
    Ok((text.len() / 4 * 3 - padding) as u64)
}

/// The notification stream, received with the raw client (see [`crate::lean::RawConn`]).
fn notification_stream(url: &str, bytes: u64) -> Result<Figures> {
    let mut conn = LeanClient::connect_initialized(url)?.into_raw()?;
    let id = "notify-stream";
    let params = start_params(id, &["/bin/sh", "-c", &head_command(bytes)]).to_string();
    let started = Instant::now();
    conn.send_request("process/start", &params)?;
    let mut output = OutputCount::new(id);
    while !output.feed(conn.next_message()?)? {}
    let received = output.received;
    let secs = started.elapsed().as_secs_f64();
    if received == 0 {
        bail!("no output received");
    }
    let lossless = if received == bytes { 1.0 } else { 0.0 };
    if received != bytes {
        eprintln!("    notification stream: received {received} of {bytes} bytes");
    }
    Ok(vec![
        ("notify_mibs", mib(received) / secs),
        ("notify_lossless", lossless),
    ])
}

/// Counts the output of process `id` from pushed notifications, message by message.
pub(crate) struct OutputCount<'a> {
    id: &'a str,
    /// Output bytes so far.
    pub(crate) received: u64,
    chunks: u64,
    scratch: Vec<u8>,
}

impl<'a> OutputCount<'a> {
    pub(crate) fn new(id: &'a str) -> Self {
        OutputCount {
            id,
            received: 0,
            chunks: 0,
            scratch: Vec::with_capacity(64 << 10),
        }
    }

    /// Takes one message (the reply to `process/start` and other processes' notifications are
    /// skipped); true once the process's `process/closed` arrived.
    pub(crate) fn feed(&mut self, message: &[u8]) -> Result<bool> {
        let Some(note) = Note::parse(message)? else {
            return Ok(false);
        };
        if note.process_id != self.id {
            return Ok(false);
        }
        match note.method {
            "process/output" => {
                let chunk = note.chunk.context("process/output without chunk")?;
                self.received += chunk_len(chunk, self.chunks, &mut self.scratch)?;
                self.chunks += 1;
                Ok(false)
            }
            "process/closed" => Ok(true),
            _ => Ok(false),
        }
    }
}

/// What the notification stream needs of a process notification, borrowed from its bytes.
pub(crate) struct Note<'a> {
    pub(crate) method: &'a str,
    pub(crate) process_id: &'a str,
    pub(crate) chunk: Option<&'a [u8]>,
}

impl<'a> Note<'a> {
    /// Read with [`Json`] (strings delimited with SIMD), else with serde_json. `None` for a
    /// reply; an error reply is an error.
    pub(crate) fn parse(message: &'a [u8]) -> Result<Option<Self>> {
        if let Some(v) = Json::parse(message) {
            if v.get("id").is_some() {
                return match v.get("error") {
                    None | Some(Json::Null) => Ok(None),
                    Some(_) => bail!("error reply: {}", String::from_utf8_lossy(message)),
                };
            }
            let quick = (|| {
                let params = v.get("params")?;
                let chunk = match params.get("chunk") {
                    None => None,
                    Some(c) => Some(c.bytes()?),
                };
                Some(Note {
                    method: v.get("method")?.str()?,
                    process_id: params.get("processId")?.str()?,
                    chunk,
                })
            })();
            if quick.is_some() {
                return Ok(quick);
            }
        }
        let msg: RawMessage = serde_json::from_slice(message).context("message")?;
        if msg.id.is_some() {
            return match msg.error {
                None => Ok(None),
                Some(e) => bail!("error reply: {}", e.get()),
            };
        }
        let params = msg.params.context("notification without params")?;
        Ok(Some(Note {
            method: msg.method.context("notification without method")?,
            process_id: params.process_id,
            chunk: params.chunk.map(str::as_bytes),
        }))
    }
}

/// What the read stream needs of a `process/read` reply, borrowed from its bytes.
struct ReadReply<'a> {
    /// `(seq, base64)` of each chunk.
    chunks: Vec<(u64, &'a [u8])>,
    next_seq: u64,
    closed: bool,
    gap_bytes: u64,
}

impl<'a> ReadReply<'a> {
    /// Read with [`Json`] (strings delimited with SIMD), else with serde_json, which also
    /// turns an error reply into `Err`.
    fn parse(message: &'a [u8]) -> Result<Self> {
        let quick = Json::parse(message).and_then(|v| {
            let result = v.get("result")?;
            let chunks = result
                .get("chunks")?
                .array()?
                .iter()
                .map(|c| Some((c.get("seq")?.u64()?, c.get("chunk")?.bytes()?)))
                .collect::<Option<Vec<_>>>()?;
            let gap_bytes = match result.get("gap") {
                None | Some(Json::Null) => 0,
                Some(gap) => gap.get("bytes")?.u64()?,
            };
            Some(ReadReply {
                chunks,
                next_seq: result.get("nextSeq")?.u64()?,
                closed: match result.get("closed") {
                    None => false,
                    Some(c) => c.bool()?,
                },
                gap_bytes,
            })
        });
        if let Some(reply) = quick {
            return Ok(reply);
        }
        let reply: RawReply = serde_json::from_slice(message).context("process/read reply")?;
        let result = match (reply.result, reply.error) {
            (Some(result), None) => result,
            (_, error) => bail!("process/read failed: {error:?}"),
        };
        Ok(ReadReply {
            chunks: result
                .chunks
                .iter()
                .map(|c| (c.seq, c.chunk.as_bytes()))
                .collect(),
            next_seq: result.next_seq,
            closed: result.closed,
            gap_bytes: result.gap.map_or(0, |g| g.bytes),
        })
    }
}

/// Any message, as serde_json reads it (the fallback of [`Note::parse`]).
#[derive(serde::Deserialize)]
struct RawMessage<'a> {
    id: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    error: Option<&'a serde_json::value::RawValue>,
    method: Option<&'a str>,
    #[serde(borrow)]
    params: Option<RawNoteParams<'a>>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNoteParams<'a> {
    process_id: &'a str,
    chunk: Option<&'a str>,
}

/// A `process/read` reply, borrowing from its text.
#[derive(serde::Deserialize)]
struct RawReply<'a> {
    #[serde(borrow)]
    result: Option<RawRead<'a>>,
    error: Option<Value>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRead<'a> {
    #[serde(borrow)]
    chunks: Vec<RawChunk<'a>>,
    next_seq: u64,
    #[serde(default)]
    closed: bool,
    #[serde(default)]
    gap: Option<RawGap>,
}

#[derive(serde::Deserialize)]
struct RawChunk<'a> {
    seq: u64,
    chunk: &'a str,
}

#[derive(serde::Deserialize)]
struct RawGap {
    bytes: u64,
}

/// The `process/read` stream, received with the raw client (see [`crate::lean::RawConn`]). The
/// server also pushes the output as notifications; they are recognised by their first bytes
/// and skipped unparsed.
fn read_stream(url: &str, bytes: u64) -> Result<Figures> {
    let mut conn = LeanClient::connect_initialized(url)?.into_raw()?;
    let id = "read-stream";
    let params = start_params(id, &["/bin/sh", "-c", &head_command(bytes)]).to_string();
    let started = Instant::now();
    conn.send_request("process/start", &params)?;
    // A reply: `None` from `Note::parse`, which fails on an error reply.
    Note::parse(conn.next_reply()?).context("process/start")?;
    let mut after_seq = 0u64;
    let mut last_chunk_seq = 0u64;
    let mut missing_seqs = 0u64;
    let mut received = 0u64;
    let mut reads = 0u64;
    let mut reported_gap_bytes = 0u64;
    let mut scratch = Vec::with_capacity(1 << 20);
    loop {
        let params =
            json!({"processId": id, "afterSeq": after_seq, "maxBytes": 4 << 20, "waitMs": 1000});
        conn.send_request("process/read", &params.to_string())?;
        let reply = ReadReply::parse(conn.next_reply()?)?;
        reads += 1;
        // Extension of our server: evicted output is reported as `gap` instead of skipped.
        reported_gap_bytes += reply.gap_bytes;
        for &(seq, chunk) in &reply.chunks {
            if seq <= last_chunk_seq {
                bail!("chunk seq {seq} not after {last_chunk_seq}");
            }
            missing_seqs += seq - last_chunk_seq - 1;
            last_chunk_seq = seq;
            received += chunk_len(chunk, seq, &mut scratch)?;
        }
        after_seq = reply.next_seq.saturating_sub(1).max(after_seq);
        if reply.closed && reply.chunks.is_empty() {
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    // The exit event may take one sequence number between output chunks.
    let lossless = received == bytes && missing_seqs <= 1;
    if !lossless {
        eprintln!(
            "    process/read stream: received {received} of {bytes} bytes in {reads} reads, {missing_seqs} sequence numbers skipped, server-reported gaps {reported_gap_bytes} bytes"
        );
    }
    Ok(vec![
        ("read_mibs", mib(received) / secs),
        ("read_lossless", if lossless { 1.0 } else { 0.0 }),
        ("read_received_mib", mib(received)),
    ])
}
