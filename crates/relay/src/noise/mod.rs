//! The Noise channel of remote mode (spec §10.5): `Noise_hybridIK_X25519+MLKEM768_AESGCM_SHA256`,
//! built on clatter's hybrid IK pattern, which is what upstream uses.
//!
//! ```text
//! <- s                              (responder = executor; its keys come from the registry)
//! ...
//! -> skem, e, es, s, ss             msg1, payload = harness key authorization (≤ 4096 B)
//! <- ekem, skem, e, ee, se          msg2, payload empty
//! ```
//!
//! Every token moves both key kinds: `e`/`s` carry an X25519 key and an ML-KEM-768 key, `ekem`
//! and `skem` are ML-KEM-768 encapsulations. The handshake is bound to the registration and the
//! stream by the [`prologue`]. After it, each direction is one AES-256-GCM cipher with implicit
//! nonces, so records must be decrypted in order ([`crate::ordering`] restores that order).
//!
//! Two names: the registry JSON carries the suite string [`NOISE_CHANNEL_SUITE`] (with
//! `X25519`), while the name hashed into the handshake is clatter's [`NOISE_PROTOCOL_NAME`]
//! (with `25519`, the Noise spec's DH name). Upstream uses clatter's X25519 with its own
//! ML-KEM-768 named `MLKEM768`, so the hashed names agree; a test pins ours. ML-KEM here is
//! RustCrypto's `ml-kem`; upstream's is aws-lc's. Both implement FIPS 203, whose key, ciphertext
//! and shared-secret encodings are fixed, so the bytes interoperate.
//!
//! Sizes (checked by tests, matching spec §10.11): msg1 is 3568 bytes plus the authorization,
//! msg2 is 3424 bytes. Every Noise message is at most [`MAX_NOISE_MESSAGE_LEN`] bytes; larger
//! inputs are rejected before they reach clatter, which would panic on them.

mod cipher;
mod handshake;
pub mod keys;
mod transport;

pub use handshake::{prologue, read_request, Initiator, PendingResponder};
pub use keys::{KeyError, PublicKey, PublicKeyJson, StaticIdentity};
pub use transport::NoiseTransport;

/// The suite string of `NoiseChannelPublicKey.suite` and of logs (spec §10.1, §10.5).
pub const NOISE_CHANNEL_SUITE: &str = "Noise_hybridIK_X25519+MLKEM768_AESGCM_SHA256";
/// The Noise protocol name hashed into the handshake state, as clatter builds it for this suite.
pub const NOISE_PROTOCOL_NAME: &str = "Noise_hybridIK_25519+MLKEM768_AESGCM_SHA256";
/// Domain string, the first part of the [`prologue`].
pub const PROLOGUE_DOMAIN: &str = "codex-exec-server-relay-noise/v1";
/// Largest Noise message (handshake or transport), in bytes.
pub const MAX_NOISE_MESSAGE_LEN: usize = 65_535;
/// AES-GCM tag length: a transport message is its plaintext plus this.
pub const TAG_LEN: usize = 16;
/// Largest harness key authorization (msg1 payload), in bytes.
pub const MAX_AUTHORIZATION_LEN: usize = 4096;
/// Length of msg1 without its payload.
pub const MSG1_OVERHEAD: usize = 3568;
/// Length of msg2 (its payload is always empty).
pub const MSG2_LEN: usize = 3424;
/// Most transport records one direction may carry: relay `seq` is a `u32` that never wraps.
pub const MAX_RECORDS_PER_DIRECTION: u64 = u32::MAX as u64;

/// The handshake type: X25519, ML-KEM-768 for both ephemeral and static KEM, AES-GCM (ring:
/// [`cipher`]), SHA-256.
type Handshake = clatter::HybridHandshake<
    clatter::crypto::dh::X25519,
    clatter::crypto::kem::rust_crypto_ml_kem::MlKem768,
    clatter::crypto::kem::rust_crypto_ml_kem::MlKem768,
    cipher::AesGcm,
    clatter::crypto::hash::Sha256,
>;

/// Why a Noise handshake or transport operation failed. Any of these resets the stream with
/// [`crate::PROTOCOL_ERROR_RESET_REASON`]; details stay in local logs (spec §10.6).
#[derive(Debug, thiserror::Error)]
pub enum NoiseError {
    /// A handshake message is over [`MAX_NOISE_MESSAGE_LEN`].
    #[error("handshake payload is too large ({len} bytes)")]
    HandshakeTooLarge {
        /// Message or payload length.
        len: usize,
    },
    /// The harness key authorization is over [`MAX_AUTHORIZATION_LEN`].
    #[error(
        "harness key authorization is {len} bytes, over the {MAX_AUTHORIZATION_LEN}-byte limit"
    )]
    AuthorizationTooLong {
        /// Length in bytes.
        len: usize,
    },
    /// The harness key authorization is not UTF-8.
    #[error("harness key authorization is not UTF-8")]
    AuthorizationNotUtf8,
    /// msg2 carried a payload.
    #[error("handshake response payload must be empty")]
    ResponsePayloadNotEmpty,
    /// The peer's static key was not available after msg1 (cannot happen with hybrid IK).
    #[error("handshake did not reveal the initiator static key")]
    MissingRemoteStatic,
    /// clatter rejected a handshake message (bad length, failed decryption, wrong key...).
    /// (clatter's errors do not implement `std::error::Error`, so they are shown, not chained.)
    #[error("noise handshake failed: {0}")]
    Handshake(clatter::error::HandshakeError),
    /// A transport ciphertext is over [`MAX_NOISE_MESSAGE_LEN`].
    #[error("transport ciphertext is too large ({len} bytes)")]
    CiphertextTooLarge {
        /// Ciphertext length.
        len: usize,
    },
    /// A transport ciphertext is shorter than the tag.
    #[error("transport ciphertext is too short ({len} bytes)")]
    CiphertextTooShort {
        /// Ciphertext length.
        len: usize,
    },
    /// A plaintext record would not fit one Noise message.
    #[error("transport plaintext is too large ({len} bytes)")]
    PlaintextTooLarge {
        /// Plaintext length.
        len: usize,
    },
    /// Encryption or decryption failed (tampered, replayed or reordered ciphertext, or a key
    /// mismatch).
    #[error("noise transport failed: {0}")]
    Transport(clatter::error::TransportError),
    /// [`MAX_RECORDS_PER_DIRECTION`] records were used.
    #[error("sequence number exhausted")]
    SequenceExhausted,
}
