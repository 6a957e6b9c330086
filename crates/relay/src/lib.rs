//! Remote mode building blocks (spec §10): the relay frames an executor and a harness exchange
//! through a rendezvous, and the hybrid post-quantum Noise channel that keeps the rendezvous
//! blind to the JSON-RPC inside.
//!
//! The crate is sans-I/O: every type here turns bytes into bytes or state changes, and the
//! WebSocket, registry HTTP and task plumbing live with the executor and the client. Layers, from
//! the wire inwards:
//!
//! * [`frame`]: `codex.exec_server.relay.v1` protobuf frames, checked as spec §10.3 says.
//! * [`noise`]: the `Noise_hybridIK_X25519+MLKEM768_AESGCM_SHA256` handshake, transport and
//!   static keys (spec §10.5), including the registry's public key JSON.
//! * [`record`]: the `u32` length-prefixed message stream cut into ≤ 60 KiB record plaintexts.
//! * [`ordering`]: the inbound reorder window (records are decrypted in `seq` order).
//! * [`stream`]: an established stream, tying the three together: messages in, data frames out.
//! * [`executor`] and [`harness`]: the per-stream state machines of each side (resume,
//!   handshake, registry validation, data, reset) and the executor's per-socket limits.
//! * [`registry`]: the registry API's JSON bodies, paths and header names (spec §10.1, §10.6,
//!   §10.7).
//!
//! Wire compatibility is checked by hand against the real 0.169.0 binary, both ways, through a
//! fake registry and rendezvous: `interop/upstream_executor.py` has `examples/harness_probe.rs`
//! handshake with `codex exec-server --remote` and get its `initialize` answer;
//! `interop/upstream_harness.py` has `examples/executor_probe.rs` accept `codex exec`'s handshake
//! and decrypt its `initialize`.
#![deny(missing_docs)]

pub mod executor;
pub mod frame;
pub mod harness;
pub mod noise;
pub mod ordering;
pub mod record;
pub mod registry;
pub mod stream;

/// The reset reason 0.169.0 sends for every stream-level failure: data before the handshake,
/// a bad handshake, failed validation or limits, decryption or framing errors (spec §10.4).
/// Older upstream sources used `secure_relay_protocol_error`.
pub const PROTOCOL_ERROR_RESET_REASON: &str = "noise_relay_protocol_error";
