//! `exec-server`: the binary. Parses the command line, builds a `ServeConfig`, and serves over
//! WebSocket or stdio until stopped.

mod args;
mod cmd;
mod remote_args;
mod serve_args;
mod telemetry;

use anyhow::Context as _;
use clap::Parser as _;
use exec_server_server::{transport, ServerState};

use crate::args::{Cli, Listen, ServeArgs};

fn main() -> std::process::ExitCode {
    // The same binary serves as the sandbox helper: hidden first arguments select it.
    if let Some(code) = exec_server_core::fs::sandboxed::maybe_run_helper() {
        std::process::exit(code);
    }
    let args: Vec<std::ffi::OsString> = std::env::args_os().take(2).collect();
    if args
        .get(1)
        .is_some_and(|a| a == exec_server_execguard::GUARD_HELPER_ARG)
    {
        let rest: Vec<std::ffi::OsString> = std::env::args_os().skip(2).collect();
        std::process::exit(exec_server_execguard::helper_main(&rest));
    }
    keep_freed_memory();
    let cli = Cli::parse();
    let _telemetry = telemetry::init(cli.log_format);
    let runtime = match runtime_for(&cli).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("exec-server: failed to start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return std::process::ExitCode::SUCCESS;
            }
            eprintln!("exec-server: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The runtime the command runs on: multi-thread, except `rendezvous --threads 1`.
fn runtime_for(cli: &Cli) -> tokio::runtime::Builder {
    match &cli.command {
        Some(args::Command::Rendezvous(args)) if args.threads == 1 => {
            tokio::runtime::Builder::new_current_thread()
        }
        Some(args::Command::Rendezvous(args)) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(usize::from(args.threads));
            builder
        }
        _ => tokio::runtime::Builder::new_multi_thread(),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => serve(cli.serve).await,
        Some(command) => cmd::dispatch(command).await,
    }
}

async fn serve(mut args: ServeArgs) -> anyhow::Result<()> {
    let remote = std::mem::take(&mut args.remote);
    let (listen, config) = args.into_config()?;
    if let Some(remote) = remote.into_config(config.ping_interval).await? {
        let state = ServerState::new(config);
        let target = transport::relay::Target::Serve(state.clone());
        transport::relay::serve(remote, target, shutdown_signal()).await?;
        state.sessions.shutdown_all();
        return Ok(());
    }
    let state = ServerState::new(config);
    match listen {
        Listen::Stdio => {
            transport::stdio::serve(tokio::io::stdin(), tokio::io::stdout(), state.clone()).await;
            state.sessions.shutdown_all();
        }
        Listen::Ws(addr) => {
            let (listener, bound) = bind(addr).await?;
            if !bound.ip().is_loopback() {
                tracing::warn!(%bound, "listening on a non-loopback address without auth");
            }
            announce(&format!("ws://{bound}"))?;
            tracing::info!(url = %format!("ws://{bound}"), "exec-server listening");
            let st = state.clone();
            transport::ws::serve(listener, st, shutdown_signal())
                .await
                .context("websocket server failed")?;
            state.sessions.shutdown_all();
        }
    }
    Ok(())
}

/// Binds a TCP listener; returns it with the address it got (port 0 picks one).
pub(crate) async fn bind(
    addr: std::net::SocketAddr,
) -> anyhow::Result<(tokio::net::TcpListener, std::net::SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("failed to bind {addr}"))?;
    let bound = listener
        .local_addr()
        .context("failed to read the bound address")?;
    Ok((listener, bound))
}

/// Prints the bound URL alone on the first line of stdout, as upstream does.
#[allow(clippy::print_stdout)]
fn announce(url: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{url}")?;
    out.flush()?;
    Ok(())
}

pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    tracing::info!("shutting down");
}

/// Lets glibc's allocator reuse freed blocks of up to 16 MiB instead of handing them back to
/// the kernel. By default a block over 128 KiB is its own mapping, unmapped when freed, so
/// every output chunk (up to 256 KiB) and every large request frame (an 8 MiB write is an
/// 11 MiB frame) came in fresh pages, each faulted in and zeroed by the kernel: about a tenth
/// of the server's CPU in a fast output stream. The cost is bounded: free memory at the top of
/// each allocator arena is returned once it exceeds 16 MiB (docs/protocol.md, Limits).
fn keep_freed_memory() {
    #[cfg(target_env = "gnu")]
    {
        const BYTES: libc::c_int = 16 << 20;
        // SAFETY: mallopt only sets allocator parameters; it is called first thing in main,
        // before any other thread exists.
        #[allow(unsafe_code)]
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, BYTES);
            libc::mallopt(libc::M_TRIM_THRESHOLD, BYTES);
        }
    }
}
