//! `bench`: measures exec-server implementations over their WebSocket JSON-RPC interface.
//!
//! Launches each server under test itself (`--ours`, `--upstream`: command templates with
//! `{listen}`), or measures an already running one (`--url`), runs the selected measurements
//! for `--rounds` rounds (alternating servers, restarting each per round) and prints a
//! markdown table of medians, ratios and per-round figures. See docs/benchmarks.md.

#![allow(clippy::print_stdout)]

mod fs;
mod lean;
mod mcp;
mod measures;
mod quick_json;
mod relay;
mod report;
mod rpc;
mod server;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::json;

use crate::measures::{Config, Measure, MEASURES};
use crate::relay::world::{RelayCommands, RelayWorld};
use crate::report::TargetResults;
use crate::server::Server;

/// Benchmark exec-server implementations (ours vs upstream `codex exec-server`).
#[derive(Parser, Debug)]
#[command(name = "bench")]
struct Args {
    /// Launch command for our server; `{listen}` becomes `ws://127.0.0.1:PORT`
    /// (e.g. `target/release/exec-server --listen {listen}`).
    #[arg(long)]
    ours: Option<String>,
    /// Launch command for the upstream server, e.g.
    /// `CODEX_HOME=$(mktemp -d) /path/codex exec-server --listen {listen}`.
    #[arg(long)]
    upstream: Option<String>,
    /// Measure an already running server at this ws:// URL (not restarted between rounds).
    #[arg(long)]
    url: Option<String>,
    /// Rounds per server (servers alternate: ours, upstream, ours, ...).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Comma-separated measurements to run: idle-rss, retained-rss, rpc, rpc-awake, spawn,
    /// sleep200, multi-conn, notify-stream, read-stream, fs-read, fs-write64, fs-write8, fs-blocks,
    /// fs-sandbox, relay-rpc, relay-rpc-awake, relay-handshake, relay-streams, relay-stream,
    /// mcp-exec (default: all).
    /// The relay measurements need our rendezvous (--rendezvous) and each server in remote
    /// mode (--ours-remote / --upstream-remote, derived from --ours / --upstream by default).
    /// mcp-exec runs the MCP shell tools (--ours-mcp / --upstream-mcp) instead.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Size of the output streams, MiB.
    #[arg(long, default_value_t = 256)]
    stream_mib: u64,
    /// Write all results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Sequential `environment/info` calls for the rpc measurement.
    #[arg(long, default_value_t = 2000)]
    rpc_calls: usize,
    /// Sequential spawns of `true` for the spawn measurement.
    #[arg(long, default_value_t = 300)]
    spawn_runs: usize,
    /// Concurrent `sleep 1` processes.
    #[arg(long, default_value_t = 200)]
    sleepers: usize,
    /// Connections for the parallel-spawn measurement.
    #[arg(long, default_value_t = 8)]
    conns: usize,
    /// Sequential spawns per connection for the parallel-spawn measurement.
    #[arg(long, default_value_t = 100)]
    spawns_per_conn: usize,
    /// Directory for the filesystem measurements' files (created if missing; the files are
    /// removed at the end, then the directory if empty; the servers under test must see it at
    /// the same path). Default: a fresh one in $TMPDIR.
    #[arg(long)]
    fs_dir: Option<PathBuf>,
    /// Rendezvous for the relay measurements; the bench appends `--listen http://127.0.0.1:PORT
    /// --config FILE`. Default: the program of --ours with `rendezvous`
    /// (e.g. `target/release/exec-server rendezvous`).
    #[arg(long)]
    rendezvous: Option<String>,
    /// Our server in remote mode, for the relay measurements: `{remote}` becomes the registry
    /// URL and `{env}` the environment id; the registration bearer is written to its stdin.
    /// Default: --ours with `--listen {listen}` replaced by `--remote {remote}
    /// --environment-id {env} --registration-bearer-stdin`.
    #[arg(long)]
    ours_remote: Option<String>,
    /// The upstream server in remote mode (as --ours-remote; default derived from --upstream).
    #[arg(long)]
    upstream_remote: Option<String>,
    /// Our MCP shell tool for mcp-exec, speaking MCP on stdio (`--rules FILE` is appended for
    /// the variant with rules). Default: the program of --ours with `mcp-serve --stdio`.
    #[arg(long)]
    ours_mcp: Option<String>,
    /// Upstream's MCP shell tool for mcp-exec, e.g. `node /tmp/shell-tool-mcp-0.97.0/
    /// node_modules/@openai/codex-shell-tool-mcp/bin/mcp-server.js`; its rules go to
    /// `$CODEX_HOME/rules`. Without it, upstream's mcp-exec is skipped.
    #[arg(long)]
    upstream_mcp: Option<String>,
    /// Timed `shell` calls per variant in mcp-exec (after one warm-up call each).
    #[arg(long, default_value_t = 5)]
    mcp_calls: usize,
    /// Directory for the launched servers' stdout/stderr logs.
    #[arg(long, default_value = "/tmp/bench-logs")]
    log_dir: PathBuf,
}

enum Source {
    Launch(String),
    Url(String),
    /// Only an MCP command was given for this server (mcp-exec).
    None,
}

struct Target {
    label: &'static str,
    source: Source,
    /// How to run this server behind our rendezvous (relay measurements), or why it cannot be.
    relay: Result<RelayCommands, String>,
    /// Its MCP shell tool (mcp-exec), or why it has none.
    mcp: Result<mcp::McpServer, String>,
}

impl Target {
    fn describe(&self) -> &str {
        match &self.source {
            Source::Launch(cmd) => cmd,
            Source::Url(url) => url,
            Source::None => self.mcp.as_ref().map_or("", |m| m.command.as_str()),
        }
    }

    async fn start(&self, log_name: &str, log_dir: &std::path::Path) -> Result<Server> {
        match &self.source {
            Source::Launch(cmd) => Server::launch(cmd, &log_dir.join(log_name)).await,
            Source::Url(url) => Server::external(url),
            Source::None => bail!("no --{} command", self.label),
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let rendezvous = args
        .rendezvous
        .clone()
        .or_else(|| args.ours.as_deref().map(relay::world::derive_rendezvous))
        .ok_or_else(|| "no rendezvous command: give --rendezvous (or --ours)".to_string());
    let relay_commands = |launch: &str, remote: &Option<String>, flag: &str| {
        let executor = remote
            .clone()
            .or_else(|| relay::world::derive_executor(launch))
            .ok_or_else(|| {
                format!("cannot derive the remote-mode command (no `--listen {{listen}}`): give --{flag}")
            })?;
        Ok(RelayCommands {
            rendezvous: rendezvous.clone()?,
            executor,
        })
    };
    let mut targets = Vec::new();
    let no_command = |flag: &str| Err(format!("no --{flag} command"));
    if args.ours.is_some() || args.ours_mcp.is_some() {
        targets.push(Target {
            label: "ours",
            source: args.ours.clone().map_or(Source::None, Source::Launch),
            relay: args.ours.as_deref().map_or_else(
                || no_command("ours"),
                |cmd| relay_commands(cmd, &args.ours_remote, "ours-remote"),
            ),
            mcp: mcp::ours(args.ours_mcp.as_deref(), args.ours.as_deref()),
        });
    }
    if args.upstream.is_some() || args.upstream_mcp.is_some() {
        targets.push(Target {
            label: "upstream",
            source: args.upstream.clone().map_or(Source::None, Source::Launch),
            relay: args.upstream.as_deref().map_or_else(
                || no_command("upstream"),
                |cmd| relay_commands(cmd, &args.upstream_remote, "upstream-remote"),
            ),
            mcp: mcp::upstream(args.upstream_mcp.as_deref()),
        });
    }
    if let Some(url) = &args.url {
        targets.push(Target {
            label: "url",
            source: Source::Url(url.clone()),
            relay: Err("the relay measurements launch their executor: not with --url".into()),
            mcp: Err("mcp-exec launches its MCP server: not with --url".into()),
        });
    }
    if targets.is_empty() {
        bail!(
            "nothing to measure: give --ours, --upstream, --url, --ours-mcp and/or --upstream-mcp"
        );
    }
    for target in &targets {
        if let Source::Launch(cmd) = &target.source {
            if !cmd.contains("{listen}") && !cmd.contains("{port}") {
                bail!(
                    "--{} command has no {{listen}} placeholder: {cmd}",
                    target.label
                );
            }
        }
    }
    let measures: Vec<&Measure> = if args.only.is_empty() {
        MEASURES.iter().collect()
    } else {
        let mut selected = Vec::new();
        for name in &args.only {
            let measure = MEASURES
                .iter()
                .find(|m| m.name == name.trim())
                .with_context(|| {
                    let names: Vec<_> = MEASURES.iter().map(|m| m.name).collect();
                    format!("unknown measurement {name:?}; known: {}", names.join(", "))
                })?;
            selected.push(measure);
        }
        // Keep the canonical order (idle RSS must come first on a fresh server).
        MEASURES
            .iter()
            .filter(|m| selected.iter().any(|s| s.name == m.name))
            .collect()
    };
    // mcp-exec runs the MCP servers, not the WebSocket server, so apart from the round.
    let (mcp_measures, measures): (Vec<&Measure>, Vec<&Measure>) =
        measures.into_iter().partition(|m| mcp::is_mcp(m.name));
    let config = Config {
        rpc_calls: args.rpc_calls,
        spawn_runs: args.spawn_runs,
        stream_bytes: args.stream_mib << 20,
        sleepers: args.sleepers,
        conns: args.conns,
        spawns_per_conn: args.spawns_per_conn,
        fs_dir: args.fs_dir.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("bench-fs-{}", std::process::id()))
        }),
    };
    std::fs::create_dir_all(&args.log_dir)
        .with_context(|| format!("creating {}", args.log_dir.display()))?;

    let mut results: Vec<TargetResults> = targets
        .iter()
        .map(|t| match (&t.source, &t.mcp) {
            (Source::Launch(_) | Source::Url(_), Ok(m)) if !mcp_measures.is_empty() => {
                TargetResults::new(t.label, &format!("{}; mcp: {}", t.describe(), m.command))
            }
            _ => TargetResults::new(t.label, t.describe()),
        })
        .collect();
    for round in 1..=args.rounds {
        for (target, result) in targets.iter().zip(results.iter_mut()) {
            eprintln!("== round {round}/{}: {}", args.rounds, target.label);
            if !measures.is_empty() {
                run_round(target, round, &measures, &config, &args, result).await;
            }
            if !mcp_measures.is_empty() {
                let (mcp, calls) = (&target.mcp, args.mcp_calls);
                mcp::run_round(target.label, mcp, round, calls, &args.log_dir, result).await;
            }
        }
    }

    crate::fs::FsFixture::new(config.fs_dir.clone()).remove();

    let (nproc, cpu) = server::machine();
    println!();
    println!(
        "machine: {nproc} CPUs, {cpu}; rounds: {}; rpc calls {}, spawns {}, sleepers {}, {}×{} parallel spawns, streams {} MiB",
        args.rounds, config.rpc_calls, config.spawn_runs, config.sleepers, config.conns,
        config.spawns_per_conn, args.stream_mib
    );
    println!();
    let measures: Vec<&Measure> = measures.into_iter().chain(mcp_measures.clone()).collect();
    report::print_table(&measures, &results);
    if !mcp_measures.is_empty() {
        for target in &targets {
            if let Err(why) = &target.mcp {
                println!();
                println!("{}: {} skipped ({why})", target.label, mcp::NAME);
            }
        }
    }
    report::print_goals(&results);

    if let Some(path) = &args.json {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let meta = json!({
            "unixTime": unix,
            "nproc": nproc,
            "cpu": cpu,
            "rounds": args.rounds,
            "config": format!("{config:?}"),
            "streamMib": args.stream_mib,
            "mcpCalls": args.mcp_calls,
        });
        let doc = report::to_json(&measures, &results, meta);
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Starts `target`, runs every measurement once, stops it. Failures are recorded, never fatal.
async fn run_round(
    target: &Target,
    round: usize,
    measures: &[&Measure],
    config: &Config,
    args: &Args,
    result: &mut TargetResults,
) {
    let log_name = format!("{}-round{round}.log", target.label);
    let mut server = match target.start(&log_name, &args.log_dir).await {
        Ok(server) => server,
        Err(e) => {
            let message = format!("server start failed: {e:#}");
            eprintln!("   {message}");
            for measure in measures {
                for figure in measure.figures {
                    result.record(figure.key, Err(message.clone()));
                }
            }
            return;
        }
    };
    // The rendezvous and the executor in remote mode, started before the first relay
    // measurement (and again if one of them died).
    let mut relay: Option<RelayWorld> = None;
    // Why the setup failed in this round (not retried for the next relay measurement).
    let mut relay_failed: Option<String> = None;
    for measure in measures {
        if measures::is_relay(measure.name) {
            if let Some(status) = relay.as_mut().and_then(RelayWorld::exited) {
                eprintln!("   {status}; restarting the remote-mode setup");
                if let Some(mut world) = relay.take() {
                    world.stop().await;
                }
            }
            if relay.is_none() {
                let started = match (&relay_failed, &target.relay) {
                    (Some(e), _) => Err(e.clone()),
                    (None, Ok(commands)) => {
                        let stem = format!("{}-round{round}-{}", target.label, measure.name);
                        RelayWorld::start(commands, &args.log_dir, &stem)
                            .await
                            .map_err(|e| format!("remote-mode setup failed: {e:#}"))
                    }
                    (None, Err(e)) => Err(e.clone()),
                };
                match started {
                    Ok(world) => relay = Some(world),
                    Err(message) => {
                        eprintln!("   {:<14} {message}", measure.name);
                        relay_failed = Some(message.clone());
                        for figure in measure.figures {
                            result.record(figure.key, Err(message.clone()));
                        }
                        continue;
                    }
                }
            }
        }
        if let Some(status) = server.exited() {
            eprintln!(
                "   server exited ({status}); restarting it for {}",
                measure.name
            );
            server.stop().await;
            match target
                .start(
                    &format!("{}-round{round}-{}.log", target.label, measure.name),
                    &args.log_dir,
                )
                .await
            {
                Ok(restarted) => server = restarted,
                Err(e) => {
                    let message = format!("server restart failed: {e:#}");
                    for figure in measure.figures {
                        result.record(figure.key, Err(message.clone()));
                    }
                    continue;
                }
            }
        }
        let started = std::time::Instant::now();
        let cpu_before = server::own_cpu_secs();
        let server_pid = server.pid();
        let server_cpu_before = server_pid.and_then(server::pid_cpu_secs);
        // For the relay measurements: the executor's and the rendezvous's CPU.
        let relay_pids = relay
            .as_ref()
            .filter(|_| measures::is_relay(measure.name))
            .map(|w| (w.executor_pid(), w.rendezvous_pid()));
        let relay_cpu_before = relay_pids.map(|(e, r)| {
            (
                e.and_then(server::pid_cpu_secs),
                r.and_then(server::pid_cpu_secs),
            )
        });
        let outcome = tokio::time::timeout(
            measure.timeout,
            measures::run(measure.name, &server, relay.as_ref(), config),
        )
        .await;
        let outcome = match outcome {
            Ok(Ok(figures)) => Ok(figures),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(_) => Err(format!("timed out after {}s", measure.timeout.as_secs())),
        };
        let outcome = outcome.map_err(|mut e| {
            if let Some(status) = relay.as_mut().and_then(RelayWorld::exited) {
                e.push_str(&format!(" ({status})"));
            }
            if let Some(status) = server.exited() {
                e.push_str(&format!(" (server exited: {status}"));
                if let Some(log) = &server.log {
                    e.push_str(&format!("; log {}", log.display()));
                }
                e.push(')');
            }
            e
        });
        let wall = started.elapsed().as_secs_f64();
        let client_cpu = server::own_cpu_secs() - cpu_before;
        let server_cpu = server_pid
            .and_then(server::pid_cpu_secs)
            .zip(server_cpu_before)
            .map(|(after, before)| after - before);
        let relay_cpu = relay_pids.zip(relay_cpu_before).map(|((e, r), (e0, r0))| {
            let used = |pid: Option<u32>, before: Option<f64>| {
                pid.and_then(server::pid_cpu_secs)
                    .zip(before)
                    .map(|(after, before)| after - before)
            };
            (used(e, e0), used(r, r0))
        });
        // Server CPU per GiB streamed: insensitive to other load on the machine.
        let gib = config.stream_bytes as f64 / f64::from(1u32 << 30);
        let outcome = outcome.map(|mut figures| {
            if measure.name == "notify-stream" {
                if let Some(cpu) = server_cpu {
                    figures.push(("notify_server_cpu_s_per_gib", cpu / gib));
                }
            }
            if measure.name == "relay-stream" {
                if let Some((executor, rendezvous)) = relay_cpu {
                    if let Some(cpu) = executor {
                        figures.push(("relay_stream_exec_cpu_s_per_gib", cpu / gib));
                    }
                    if let Some(cpu) = rendezvous {
                        figures.push(("relay_stream_rendezvous_cpu_s_per_gib", cpu / gib));
                    }
                }
            }
            figures
        });
        let cpu_text = |c: Option<f64>| c.map_or("?".to_string(), |c| format!("{c:.1}s"));
        let server_cpu_text = match relay_cpu {
            Some((executor, rendezvous)) => format!(
                "executor {}, rendezvous {}",
                cpu_text(executor),
                cpu_text(rendezvous)
            ),
            None => format!("server {}", cpu_text(server_cpu)),
        };
        let summary = summary(&outcome);
        eprintln!(
            "   {:<14} {wall:>6.1}s (cpu: bench {client_cpu:.1}s, {server_cpu_text})  {summary}",
            measure.name
        );
        for figure in measure.figures {
            let value = match &outcome {
                Ok(figures) => figures
                    .iter()
                    .find(|(k, _)| *k == figure.key)
                    .map(|(_, v)| *v)
                    .ok_or_else(|| format!("measurement did not report {}", figure.key)),
                Err(e) => Err(e.clone()),
            };
            result.record(figure.key, value);
        }
        // Let the server settle (reap children, flush) between measurements.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    if let Some(mut world) = relay {
        world.stop().await;
    }
    server.stop().await;
}

/// One measurement's figures (or its error) on one line, for the progress log.
pub(crate) fn summary(outcome: &Result<measures::Figures, String>) -> String {
    match outcome {
        Ok(figures) => figures
            .iter()
            .map(|(k, v)| format!("{k}={v:.1}"))
            .collect::<Vec<_>>()
            .join(" "),
        Err(e) => format!("error: {e}"),
    }
}
