//! Manual interop probe: the executor side of the relay ([`ExecutorRelay`]) driven over
//! stdin/stdout, so a script can put the real upstream harness in front of it
//! (`interop/upstream_harness.py`).
//!
//! Usage: `executor_probe <environment id> <registration id>`. Prints `EXECUTOR_KEY <json>` (our
//! static key, for the fake registry's `connect` answer), reads `RECV <hex>` lines (frames from
//! the harness) and prints `SEND <hex>` lines (frames to forward). Every validation is accepted,
//! after printing `VALIDATE <authorization>`. Prints `MSG <json>` for the first JSON-RPC message
//! the harness sends through the channel, then `DONE`, and exits 0. Errors exit 1.

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Instant;

use exec_server_relay::executor::{Action, ExecutorRelay};
use exec_server_relay::frame::Frame;
use exec_server_relay::noise::StaticIdentity;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [env, reg] = args.as_slice() else {
        return Err("usage: executor_probe <env id> <registration id>".into());
    };
    let identity = StaticIdentity::generate().map_err(|e| e.to_string())?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let key = serde_json::to_string(identity.public_key()).map_err(|e| e.to_string())?;
    writeln!(out, "EXECUTOR_KEY {key}").map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    let mut relay = ExecutorRelay::new(identity, env, reg);
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        let Some(bytes) = line.strip_prefix("RECV ").and_then(unhex) else {
            continue;
        };
        let frame = match Frame::decode(&bytes) {
            Ok(frame) => frame,
            Err(e) => {
                eprintln!("executor_probe: dropping invalid frame: {e}");
                continue;
            }
        };
        let mut queue: VecDeque<Action> = relay.on_frame(frame, Instant::now()).into();
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Send(f) => {
                    let bytes = f.encode().map_err(|e| e.to_string())?;
                    writeln!(out, "SEND {}", hex(&bytes)).map_err(|e| e.to_string())?;
                }
                Action::Validate {
                    stream_id,
                    authorization,
                    ..
                } => {
                    writeln!(out, "VALIDATE {authorization}").map_err(|e| e.to_string())?;
                    // msg2 goes out before anything later in the batch.
                    for next in relay.validated(&stream_id, true).into_iter().rev() {
                        queue.push_front(next);
                    }
                }
                Action::Deliver(_, messages) => {
                    let first = messages.first().map(|m| String::from_utf8_lossy(m));
                    writeln!(out, "MSG {}", first.unwrap_or_default())
                        .map_err(|e| e.to_string())?;
                    writeln!(out, "DONE").map_err(|e| e.to_string())?;
                    out.flush().map_err(|e| e.to_string())?;
                    return Ok(());
                }
                Action::Opened(_) | Action::Closed(_) => {}
            }
        }
        out.flush().map_err(|e| e.to_string())?;
    }
    Err("stdin closed before a message".into())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("executor_probe: {e}");
            ExitCode::FAILURE
        }
    }
}
