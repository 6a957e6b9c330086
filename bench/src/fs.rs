//! Filesystem measurements: `fs/readFile`, `fs/writeFile` (one large, several concurrent),
//! `fs/open` + `fs/readBlock` streaming, and one sandboxed `fs/getMetadata`.
//!
//! The test files live in a directory the bench creates (`--fs-dir`) and are read by the
//! server under test directly, so the bench and the servers must share a machine (or at
//! least that directory). Their content is pseudo-random (not compressible, no runs of
//! zeros) and every transfer is checked against it.

use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::lean::LeanClient;
use crate::rpc::{self, Client};
use crate::server::{self, Server};

/// Size of the `fs/readFile` and single `fs/writeFile` payloads.
pub(crate) const BIG_FILE: u64 = 64 << 20;
/// Size of the file streamed with `fs/readBlock`.
pub(crate) const STREAM_FILE: u64 = 256 << 20;
/// Concurrent `fs/writeFile`s, and the size of each.
pub(crate) const WRITERS: usize = 8;
pub(crate) const WRITER_BYTES: usize = 8 << 20;
/// Block size of `fs/readBlock` streaming (the protocol's maximum).
pub(crate) const BLOCK: u64 = 1 << 20;
/// Sandboxed `fs/getMetadata` calls (after 3 warm-up calls).
pub(crate) const SANDBOX_CALLS: usize = 50;

/// The read-only managed sandbox of the sandboxed-operation measurement.
fn read_only_sandbox() -> Value {
    json!({
        "permissions": {
            "type": "managed",
            "file_system": {
                "type": "restricted",
                "entries": [{"path": {"type": "special", "value": {"kind": "root"}}, "access": "read"}]
            },
            "network": "restricted"
        },
        "windowsSandboxLevel": "disabled"
    })
}

/// Deterministic pseudo-random bytes (xorshift64*), different per `seed`.
pub(crate) fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The directory of the test files; the source files are created on first use.
pub(crate) struct FsFixture {
    dir: PathBuf,
}

impl FsFixture {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// A source file of `len` bytes (pattern `seed`), created if missing or of another size.
    fn source(&self, name: &str, len: u64, seed: u64) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let path = self.dir.join(name);
        if std::fs::metadata(&path).map(|m| m.len()).ok() != Some(len) {
            let tmp = self.dir.join(format!("{name}.tmp"));
            std::fs::write(&tmp, pattern(len as usize, seed))
                .with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &path)?;
        }
        Ok(path)
    }

    /// A fresh destination path (removed first if it exists).
    fn destination(&self, name: &str) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(name);
        let _ = std::fs::remove_file(&path);
        Ok(path)
    }

    /// Removes the files the measurements create, then the directory if it is empty.
    pub(crate) fn remove(&self) {
        let mut names = vec![
            "read-64m.bin".to_string(),
            "stream-256m.bin".to_string(),
            "small.bin".to_string(),
            "write-64m.bin".to_string(),
        ];
        names.extend((0..WRITERS).map(|i| format!("write-8m-{i}.bin")));
        for name in names {
            let _ = std::fs::remove_file(self.dir.join(&name));
            let _ = std::fs::remove_file(self.dir.join(format!("{name}.tmp")));
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The text of an `fs/writeFile` request, built before the clock starts: the client's own
/// JSON encoding of megabytes of base64 (a copy into a `Value`, then serde_json's escape scan)
/// took longer than a fast server's whole write and is the same for every server.
fn write_request(id: i64, path: &Path, data: &[u8]) -> String {
    let path = serde_json::to_string(&uri(path)).unwrap_or_default();
    let b64 = STANDARD.encode(data);
    format!(
        r#"{{"id":{id},"method":"fs/writeFile","params":{{"path":{path},"dataBase64":"{b64}"}}}}"#
    )
}

fn uri(path: &Path) -> String {
    format!("file://{}", path.display())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

/// Decoded length of padded base64 text (exact for valid base64).
fn base64_len(text: &str) -> Result<u64> {
    ensure!(
        text.len().is_multiple_of(4),
        "not padded base64 (length {})",
        text.len()
    );
    let padding = text.bytes().rev().take(2).filter(|&b| b == b'=').count();
    Ok((text.len() / 4 * 3 - padding) as u64)
}

/// Length and `eof` of an `fs/readBlock` reply, without a full JSON parse: the base64 text
/// of `"chunk"` is measured (it cannot contain `"`), `"eof":true` looked for around it.
fn block_reply(text: &str) -> Result<(u64, bool)> {
    const KEY: &str = r#""chunk":""#;
    let start = text.find(KEY).with_context(|| {
        format!(
            "not an fs/readBlock result: {}",
            &text[..text.len().min(200)]
        )
    })? + KEY.len();
    let len = text[start..].find('"').context("unterminated chunk")?;
    let outside = [&text[..start], &text[start + len..]];
    let eof = outside.iter().any(|t| t.contains(r#""eof":true"#));
    ensure!(
        eof || outside.iter().any(|t| t.contains(r#""eof":false"#)),
        "fs/readBlock result without eof"
    );
    Ok((base64_len(&text[start..start + len])?, eof))
}

/// Peak RSS of `pid` from now on: resets the kernel's high-water mark (`clear_refs` 5) when
/// allowed and also samples `VmRSS` every 2 ms, so the figure is right either way.
struct PeakRss {
    pid: u32,
    reset: bool,
    sampler: tokio::task::JoinHandle<u64>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl PeakRss {
    fn start(pid: u32) -> Self {
        let reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let sampler = tokio::spawn(async move {
            let mut peak = 0;
            let mut tick = tokio::time::interval(Duration::from_millis(2));
            loop {
                if let Ok(kib) = server::rss_kib(pid) {
                    peak = peak.max(kib);
                }
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => return peak,
                }
            }
        });
        Self {
            pid,
            reset,
            sampler,
            stop,
        }
    }

    /// Peak RSS in KiB.
    async fn finish(self) -> u64 {
        let hwm = if self.reset {
            status_kib(self.pid, "VmHWM:").unwrap_or(0)
        } else {
            0
        };
        let _ = self.stop.send(true);
        let sampled = self.sampler.await.unwrap_or(0);
        hwm.max(sampled)
    }
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `fs/readFile` of a 64 MiB file: throughput and the server's peak RSS during the call.
///
/// The reply is received by the lean client ([`crate::lean::LeanClient::call_raw`]) into a
/// buffer whose pages are already mapped: the async client spent more time assembling and
/// checking the 85 MB frame than a fast server takes to send it, so it measured itself.
pub(crate) async fn read_file(
    server: &Server,
    fixture: &FsFixture,
) -> Result<Vec<(&'static str, f64)>> {
    let path = fixture.source("read-64m.bin", BIG_FILE, 1)?;
    let expected = std::fs::read(&path)?;
    let url = server.url.clone();
    let params = json!({"path": uri(&path)}).to_string();
    let mut client =
        tokio::task::spawn_blocking(move || LeanClient::connect_initialized(&url)).await??;
    // The file is in the page cache (just written or read above); measure one call.
    let pid = server.pid().context("cannot find the server pid")?;
    let peak = PeakRss::start(pid);
    let (secs, reply) = tokio::task::spawn_blocking(move || -> Result<(f64, Vec<u8>)> {
        // A mapped buffer as large as the reply (base64 and a little JSON).
        let mut buf = vec![1u8; (BIG_FILE as usize).div_ceil(3) * 4 + 4096];
        let started = Instant::now();
        client.call_raw("fs/readFile", &params, &mut buf)?;
        Ok((started.elapsed().as_secs_f64(), buf))
    })
    .await??;
    let peak_kib = peak.finish().await;
    let text = std::str::from_utf8(&reply).context("fs/readFile reply is not UTF-8")?;
    let reply = rpc::parse_reply(text).context("fs/readFile")?;
    let text = reply["dataBase64"]
        .as_str()
        .context("reply without dataBase64")?;
    let data = STANDARD.decode(text).context("dataBase64 is not base64")?;
    ensure!(
        data == expected,
        "fs/readFile returned {} bytes that differ from the file's {}",
        data.len(),
        expected.len()
    );
    Ok(vec![
        ("fs_read_mibs", mib(BIG_FILE) / secs),
        ("fs_read_peak_rss_mib", peak_kib as f64 / 1024.0),
    ])
}

/// One 64 MiB `fs/writeFile`: success and time.
pub(crate) async fn write_big(
    server: &Server,
    fixture: &FsFixture,
) -> Result<Vec<(&'static str, f64)>> {
    let path = fixture.destination("write-64m.bin")?;
    let data = pattern(BIG_FILE as usize, 2);
    let mut client = Client::connect_initialized(&server.url).await?;
    let id = client.reserve_id();
    let text = write_request(id, &path, &data);
    let started = Instant::now();
    let outcome = async {
        client.send_text(text).await?;
        client.wait_response(id).await
    }
    .await;
    let secs = started.elapsed().as_secs_f64();
    let result = outcome.context("64 MiB fs/writeFile failed").and_then(|_| {
        let written = std::fs::read(&path).context("reading the written file")?;
        ensure!(
            written == data,
            "the written file differs ({} bytes)",
            written.len()
        );
        Ok(())
    });
    let _ = std::fs::remove_file(&path);
    result?;
    Ok(vec![("fs_write64_ok", 1.0), ("fs_write64_s", secs)])
}

/// 8 × 8 MiB `fs/writeFile`, all sent at once on one connection.
pub(crate) async fn write_concurrent(
    server: &Server,
    fixture: &FsFixture,
) -> Result<Vec<(&'static str, f64)>> {
    let mut paths = Vec::new();
    let mut payloads = Vec::new();
    for i in 0..WRITERS {
        paths.push(fixture.destination(&format!("write-8m-{i}.bin"))?);
        payloads.push(pattern(WRITER_BYTES, 10 + i as u64));
    }
    let mut client = Client::connect_initialized(&server.url).await?;
    let mut ids = Vec::new();
    let mut texts = Vec::new();
    for (path, data) in paths.iter().zip(&payloads) {
        let id = client.reserve_id();
        ids.push(id);
        texts.push(write_request(id, path, data));
    }
    let started = Instant::now();
    for text in texts {
        client.send_text(text).await?;
    }
    for (i, id) in ids.into_iter().enumerate() {
        client
            .wait_response(id)
            .await
            .with_context(|| format!("fs/writeFile {i}"))?;
    }
    let secs = started.elapsed().as_secs_f64();
    for (path, data) in paths.iter().zip(&payloads) {
        let written = std::fs::read(path)?;
        ensure!(
            &written == data,
            "{} differs after the write",
            path.display()
        );
        let _ = std::fs::remove_file(path);
    }
    let total = (WRITERS * WRITER_BYTES) as u64;
    Ok(vec![("fs_write8_mibs", mib(total) / secs)])
}

/// `fs/open` + `fs/readBlock` of a 256 MiB file in 1 MiB blocks, `in_flight` at once.
async fn stream_blocks(client: &mut Client, path: &Path, in_flight: u64) -> Result<f64> {
    let file = std::fs::File::open(path)?;
    let handle = format!("bench-{in_flight}");
    let started = Instant::now();
    client
        .call(
            "fs/open",
            json!({"handleId": handle, "path": uri(path), "mode": "read"}),
        )
        .await?;
    let mut next_offset = 0u64;
    let mut pending = std::collections::VecDeque::new();
    let mut received = 0u64;
    let mut blocks = 0u64;
    let mut expected = vec![0u8; BLOCK as usize];
    let mut done = false;
    while !done || !pending.is_empty() {
        while !done && (pending.len() as u64) < in_flight {
            let id = client
                .send_request_raw(
                    "fs/readBlock",
                    json!({"handleId": handle, "offset": next_offset, "len": BLOCK}),
                )
                .await?;
            pending.push_back((id, next_offset));
            next_offset += BLOCK;
            // Stop asking past the end (the server answers a short block or eof there).
            if next_offset >= STREAM_FILE + BLOCK {
                done = true;
            }
        }
        let Some((id, offset)) = pending.pop_front() else {
            break;
        };
        let text = client.wait_raw(id).await?;
        let (len, eof) = if blocks.is_multiple_of(16) {
            // Every 16th block is parsed, decoded and compared with the file.
            let reply = rpc::parse_reply(&text).context("fs/readBlock")?;
            let chunk = reply["chunk"].as_str().context("reply without chunk")?;
            let eof = reply["eof"].as_bool().context("reply without eof")?;
            let data = STANDARD.decode(chunk).context("chunk is not base64")?;
            let n = file.read_at(&mut expected, offset)?;
            ensure!(
                data == expected[..n],
                "block at {offset} differs from the file"
            );
            (data.len() as u64, eof)
        } else {
            block_reply(&text)?
        };
        blocks += 1;
        received += len;
        if eof {
            done = true;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    client.call("fs/close", json!({"handleId": handle})).await?;
    if received != STREAM_FILE {
        bail!("received {received} of {STREAM_FILE} bytes");
    }
    Ok(mib(received) / secs)
}

pub(crate) async fn read_blocks(
    server: &Server,
    fixture: &FsFixture,
) -> Result<Vec<(&'static str, f64)>> {
    let path = fixture.source("stream-256m.bin", STREAM_FILE, 3)?;
    let mut client = Client::connect_initialized(&server.url).await?;
    let one = stream_blocks(&mut client, &path, 1).await?;
    let four = stream_blocks(&mut client, &path, 4).await?;
    Ok(vec![("fs_block1_mibs", one), ("fs_block4_mibs", four)])
}

/// `fs/getMetadata` with a read-only managed sandbox: p50 of 50 sequential calls.
pub(crate) async fn sandboxed_op(
    server: &Server,
    fixture: &FsFixture,
) -> Result<Vec<(&'static str, f64)>> {
    let path = fixture.source("small.bin", 4096, 4)?;
    let mut client = Client::connect_initialized(&server.url).await?;
    let params = json!({"path": uri(&path), "sandbox": read_only_sandbox()});
    for _ in 0..3 {
        let meta = client.call("fs/getMetadata", params.clone()).await?;
        ensure!(meta["size"] == 4096, "unexpected metadata: {meta}");
    }
    let mut samples = Vec::with_capacity(SANDBOX_CALLS);
    for _ in 0..SANDBOX_CALLS {
        let started = Instant::now();
        client.call("fs/getMetadata", params.clone()).await?;
        samples.push(started.elapsed());
    }
    samples.sort();
    let p50 = samples[(samples.len() - 1) / 2];
    Ok(vec![("fs_sandbox_p50_ms", p50.as_secs_f64() * 1e3)])
}
