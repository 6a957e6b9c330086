//! Manual interop probe: the harness side of one relay stream, driven over stdin/stdout so a
//! script can put it behind any rendezvous (`interop/upstream_executor.py` puts it in front of
//! the real upstream executor).
//!
//! Usage: `harness_probe <executor public key JSON> <environment id> <registration id> <auth>`.
//! Prints `HARNESS_KEY <json>` (our static key, for the registry's `validate` check), then one
//! `SEND <hex>` line per relay frame to forward, and reads `RECV <hex>` lines (frames from the
//! executor). Once the handshake completes it sends `initialize`; it prints `MSG <json>` for each
//! message received and `DONE` after the first one, then exits 0. Errors exit 1.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use exec_server_relay::frame::Frame;
use exec_server_relay::harness::{new_stream_id, ConnectInfo, HarnessStream};
use exec_server_relay::noise::{PublicKey, StaticIdentity};

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

fn emit(out: &mut impl Write, frames: &[Frame]) -> Result<(), String> {
    for f in frames {
        let bytes = f.encode().map_err(|e| e.to_string())?;
        writeln!(out, "SEND {}", hex(&bytes)).map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [key_json, env, reg, auth] = args.as_slice() else {
        return Err(
            "usage: harness_probe <executor key json> <env id> <registration id> <auth>".into(),
        );
    };
    let executor_key: PublicKey = serde_json::from_str(key_json).map_err(|e| e.to_string())?;
    let identity = StaticIdentity::generate().map_err(|e| e.to_string())?;
    let connect = ConnectInfo {
        environment_id: env.clone(),
        executor_registration_id: reg.clone(),
        executor_public_key: executor_key,
        harness_key_authorization: auth.clone(),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let key = serde_json::to_string(identity.public_key()).map_err(|e| e.to_string())?;
    writeln!(out, "HARNESS_KEY {key}").map_err(|e| e.to_string())?;
    let (mut stream, frames) =
        HarnessStream::start(&identity, &connect, new_stream_id()).map_err(|e| e.to_string())?;
    emit(&mut out, &frames)?;
    let mut initialized = false;
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        let Some(bytes) = line.strip_prefix("RECV ").and_then(unhex) else {
            continue;
        };
        let frame = Frame::decode(&bytes).map_err(|e| e.to_string())?;
        let messages = stream.on_frame(frame.body).map_err(|e| e.to_string())?;
        if stream.is_established() && !initialized {
            initialized = true;
            let request =
                br#"{"id":1,"method":"initialize","params":{"clientName":"relay-probe"}}"#;
            emit(&mut out, &stream.send(request).map_err(|e| e.to_string())?)?;
        }
        if let Some(first) = messages.first() {
            writeln!(out, "MSG {}", String::from_utf8_lossy(first)).map_err(|e| e.to_string())?;
            writeln!(out, "DONE").map_err(|e| e.to_string())?;
            return Ok(());
        }
    }
    Err("stdin closed before a reply".into())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("harness_probe: {e}");
            ExitCode::FAILURE
        }
    }
}
