//! Remote-mode measurements: the executor under test registered with our rendezvous
//! ([`world::RelayWorld`]), the bench as the harness ([`harness::Harness`]), every JSON-RPC
//! message through the rendezvous inside a Noise stream. Each function blocks its thread.

pub(crate) mod harness;
pub(crate) mod world;

use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::measures::{head_command, mib, percentile_us, start_params, Figures, Note, OutputCount};
use harness::{Harness, OpenTimes, RelayConn};

/// Streams opened by `relay-handshake` after 2 warm-up streams.
const HANDSHAKES: usize = 30;
/// Concurrent streams of `relay-streams` (upstream's executor allows 128 established streams
/// per socket).
const STREAMS: usize = 128;
/// Streams of `relay-streams` in their handshake at once: an executor resets a stream beyond
/// 32 waiting for the registry's validation (spec §10.4), so a harness opening many streams
/// paces its handshakes.
const HANDSHAKES_IN_FLIGHT: usize = 32;

/// `relay-rpc`: `calls` sequential `environment/info` round trips through the relay and as
/// many over a direct WebSocket to `direct_url` (the same server command listening), after
/// 100 warm-up calls each, interleaved in blocks of 50, for the relay/direct ratio.
/// With `awake` (`relay-rpc-awake`: the CPUs kept awake by SCHED_IDLE spinners) the figures
/// are named `relay_awake_*`.
pub(crate) fn rpc(
    harness: &Harness,
    direct_url: &str,
    calls: usize,
    awake: bool,
) -> Result<Figures> {
    let mut conn = harness.open()?;
    conn.initialize()?;
    let mut direct_conn =
        crate::lean::LeanClient::connect_initialized(direct_url).context("direct connection")?;
    for _ in 0..calls.min(100) {
        conn.call("environment/info", "null")?;
        direct_conn.call("environment/info", "null")?;
    }
    // Interleaved in blocks of 50, so both see the same machine state (on a VM the direct
    // figure moves by 2-3x with where the scheduler happens to put the two processes).
    let mut samples = Vec::with_capacity(calls);
    let mut direct = Vec::with_capacity(calls);
    while samples.len() < calls {
        let block = (calls - samples.len()).min(50);
        for _ in 0..block {
            let started = Instant::now();
            conn.call("environment/info", "null")?;
            samples.push(started.elapsed());
        }
        for _ in 0..block {
            let started = Instant::now();
            direct_conn
                .call("environment/info", "null")
                .context("direct rpc")?;
            direct.push(started.elapsed());
        }
    }
    conn.close();
    samples.sort();
    direct.sort();
    let (relay_p50, direct_p50) = (percentile_us(&samples, 50), percentile_us(&direct, 50));
    let [p50, p99, direct, ratio] = if awake {
        [
            "relay_awake_rpc_p50_us",
            "relay_awake_rpc_p99_us",
            "relay_awake_direct_rpc_p50_us",
            "relay_awake_rpc_over_direct",
        ]
    } else {
        [
            "relay_rpc_p50_us",
            "relay_rpc_p99_us",
            "relay_direct_rpc_p50_us",
            "relay_rpc_over_direct",
        ]
    };
    Ok(vec![
        (p50, relay_p50),
        (p99, percentile_us(&samples, 99)),
        (direct, direct_p50),
        (ratio, relay_p50 / direct_p50),
    ])
}

/// `relay-stream`: `head -c BYTES /dev/zero` with its output pushed as `process/output`
/// notifications through the relay, from `process/start` to `process/closed`.
pub(crate) fn stream(harness: &Harness, bytes: u64) -> Result<Figures> {
    let mut conn = harness.open()?;
    conn.initialize()?;
    let id = "relay-stream";
    let params = start_params(id, &["/bin/sh", "-c", &head_command(bytes)]).to_string();
    let started = Instant::now();
    conn.send_request("process/start", &params)?;
    let mut output = OutputCount::new(id);
    while !output.feed(&conn.next_message()?)? {}
    let received = output.received;
    let secs = started.elapsed().as_secs_f64();
    conn.close();
    if received != bytes {
        eprintln!("    relay stream: received {received} of {bytes} bytes");
    }
    Ok(vec![
        ("relay_stream_mibs", mib(received) / secs),
        (
            "relay_stream_lossless",
            if received == bytes { 1.0 } else { 0.0 },
        ),
    ])
}

/// `relay-handshake`: opening a stream, one at a time: registry `connect`, harness WebSocket,
/// Noise handshake (with the executor's registry validation), `initialize`.
pub(crate) fn handshake(harness: &Harness) -> Result<Figures> {
    let mut totals = Vec::with_capacity(HANDSHAKES);
    let mut steps: Vec<(OpenTimes, Duration)> = Vec::with_capacity(HANDSHAKES);
    for i in 0..HANDSHAKES + 2 {
        let started = Instant::now();
        let (mut conn, times) = harness.open_timed()?;
        let init_started = Instant::now();
        conn.initialize()?;
        let init = init_started.elapsed();
        let total = started.elapsed();
        conn.close();
        if i >= 2 {
            totals.push(total);
            steps.push((times, init));
        }
    }
    totals.sort();
    let median_ms = |mut v: Vec<Duration>| {
        v.sort();
        percentile_us(&v, 50) / 1000.0
    };
    eprintln!(
        "    relay handshake p50 by step (ms): connect {:.2}, websocket {:.2}, noise {:.2}, initialize {:.2}",
        median_ms(steps.iter().map(|s| s.0.connect).collect()),
        median_ms(steps.iter().map(|s| s.0.websocket).collect()),
        median_ms(steps.iter().map(|s| s.0.noise).collect()),
        median_ms(steps.iter().map(|s| s.1).collect()),
    );
    Ok(vec![
        (
            "relay_handshake_p50_ms",
            percentile_us(&totals, 50) / 1000.0,
        ),
        (
            "relay_handshake_p90_ms",
            percentile_us(&totals, 90) / 1000.0,
        ),
    ])
}

/// `relay-streams`: [`STREAMS`] streams at once on the executor's one socket (one harness
/// socket each, one thread each), each opening, initializing and running `echo hi` to
/// `process/closed`; all stay open until the last is done. The figure is the time until the
/// last one was done.
pub(crate) fn many_streams(harness: &Arc<Harness>) -> Result<Figures> {
    let gate = Arc::new(Gate::new(HANDSHAKES_IN_FLIGHT));
    let barrier = Arc::new(Barrier::new(STREAMS));
    let started = Instant::now();
    let threads: Vec<_> = (0..STREAMS)
        .map(|i| {
            let (harness, gate, barrier) = (harness.clone(), gate.clone(), barrier.clone());
            std::thread::Builder::new()
                .name(format!("relay-stream-{i}"))
                .stack_size(256 << 10)
                .spawn(move || {
                    let result = (|| {
                        let conn = {
                            let _slot = gate.acquire();
                            harness.open()?
                        };
                        let mut conn = conn;
                        conn.initialize()?;
                        run_echo(&mut conn, &format!("s{i}"))?;
                        anyhow::Ok(conn)
                    })();
                    let done = started.elapsed();
                    // Every stream stays open until all are done.
                    barrier.wait();
                    let outcome = result.map(RelayConn::close);
                    (outcome, done)
                })
        })
        .collect::<Result<_, _>>()
        .context("starting the stream threads")?;
    let mut failures = Vec::new();
    let mut last = Duration::ZERO;
    for thread in threads {
        let (outcome, done) = thread
            .join()
            .map_err(|_| anyhow::anyhow!("a stream thread panicked"))?;
        last = last.max(done);
        if let Err(e) = outcome {
            failures.push(format!("{e:#}"));
        }
    }
    if !failures.is_empty() {
        eprintln!(
            "    relay streams: {} of {STREAMS} failed; first: {}",
            failures.len(),
            failures[0]
        );
    }
    Ok(vec![
        ("relay_streams_s", last.as_secs_f64()),
        (
            "relay_streams_ok",
            if failures.is_empty() { 1.0 } else { 0.0 },
        ),
    ])
}

/// Runs `echo hi` as process `id` on `conn` until its `process/closed`; checks the output.
fn run_echo(conn: &mut RelayConn, id: &str) -> Result<()> {
    let params = start_params(id, &["/bin/echo", "hi"]).to_string();
    conn.send_request("process/start", &params)?;
    let (mut replied, mut closed) = (false, false);
    let mut output = Vec::new();
    while !(replied && closed) {
        let message = conn.next_message()?;
        let Some(note) = Note::parse(&message)? else {
            replied = true;
            continue;
        };
        if note.process_id != id {
            continue;
        }
        match note.method {
            "process/output" => {
                use base64::Engine as _;
                let chunk = note.chunk.context("process/output without chunk")?;
                base64::engine::general_purpose::STANDARD
                    .decode_vec(chunk, &mut output)
                    .context("process/output chunk")?;
            }
            "process/closed" => closed = true,
            _ => {}
        }
    }
    if output != b"hi\n" {
        bail!(
            "process {id} wrote {:?}, not \"hi\\n\"",
            String::from_utf8_lossy(&output)
        );
    }
    Ok(())
}

/// A counting semaphore for threads.
struct Gate {
    free: Mutex<usize>,
    freed: Condvar,
}

/// A slot of a [`Gate`], given back when dropped.
struct Slot<'a>(&'a Gate);

impl Gate {
    fn new(slots: usize) -> Self {
        Self {
            free: Mutex::new(slots),
            freed: Condvar::new(),
        }
    }

    fn acquire(&self) -> Slot<'_> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}
