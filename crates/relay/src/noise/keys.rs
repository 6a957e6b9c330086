//! Noise static identities and the public key JSON of the registry API (spec §10.1, §10.5).
//!
//! A [`StaticIdentity`] is an X25519 key pair plus an ML-KEM-768 key pair, generated once per
//! process and kept for its lifetime (spec §10.1, §10.7). Its secret halves live in clatter's
//! `KeyPair`/`SensitiveByteArray`, which zeroise on drop, as does every clone handed to a
//! handshake. A [`PublicKey`] is the public half; it serialises as `NoiseChannelPublicKey`:
//!
//! ```json
//! {"suite":"Noise_hybridIK_X25519+MLKEM768_AESGCM_SHA256",
//!  "x25519_public_key":"<std base64, 32 bytes>","mlkem768_public_key":"<std base64, 1184 bytes>"}
//! ```
//!
//! Unknown fields, another suite and wrong key lengths are rejected. Base64 strings longer than
//! their key could need are rejected before decoding, so decoding is bounded whatever the input.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use clatter::bytearray::{ByteArray, HeapArray, SensitiveByteArray};
use clatter::crypto::dh::X25519;
use clatter::crypto::kem::rust_crypto_ml_kem::MlKem768;
use clatter::traits::{Dh, Kem};
use clatter::KeyPair;

use super::NOISE_CHANNEL_SUITE;

/// Length of an X25519 public key.
pub const X25519_PUBLIC_KEY_LEN: usize = 32;
/// Length of an ML-KEM-768 encapsulation (public) key (FIPS 203).
pub const MLKEM768_PUBLIC_KEY_LEN: usize = 1184;

pub(crate) type DhKeyPair = KeyPair<[u8; 32], SensitiveByteArray<[u8; 32]>>;
pub(crate) type KemKeyPair =
    KeyPair<HeapArray<MLKEM768_PUBLIC_KEY_LEN>, SensitiveByteArray<HeapArray<2400>>>;

/// Why a public key or key pair was rejected.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The JSON `suite` is not [`NOISE_CHANNEL_SUITE`].
    #[error("unsupported Noise channel suite `{0}`")]
    UnsupportedSuite(String),
    /// The X25519 key does not decode to 32 bytes.
    #[error("invalid X25519 public key length {0}")]
    X25519Length(usize),
    /// The ML-KEM key does not decode to 1184 bytes.
    #[error("invalid ML-KEM-768 public key length {0}")]
    MlKemLength(usize),
    /// A key is not standard padded base64.
    #[error("invalid base64 in Noise channel public key")]
    Base64(#[source] base64::DecodeError),
    /// Key generation failed.
    #[error("failed to generate Noise static keys")]
    Generate,
}

/// The public half of a Noise static identity: an X25519 key and an ML-KEM-768 key.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "PublicKeyJson", into = "PublicKeyJson")]
pub struct PublicKey {
    x25519: [u8; X25519_PUBLIC_KEY_LEN],
    /// Always [`MLKEM768_PUBLIC_KEY_LEN`] bytes.
    mlkem768: Vec<u8>,
}

impl PublicKey {
    /// Builds a key from raw parts, checking their lengths.
    pub fn from_parts(x25519: &[u8], mlkem768: &[u8]) -> Result<Self, KeyError> {
        let x25519: [u8; X25519_PUBLIC_KEY_LEN] = x25519
            .try_into()
            .map_err(|_| KeyError::X25519Length(x25519.len()))?;
        if mlkem768.len() != MLKEM768_PUBLIC_KEY_LEN {
            return Err(KeyError::MlKemLength(mlkem768.len()));
        }
        Ok(Self {
            x25519,
            mlkem768: mlkem768.to_vec(),
        })
    }

    /// The X25519 public key.
    pub fn x25519(&self) -> &[u8; X25519_PUBLIC_KEY_LEN] {
        &self.x25519
    }

    /// The ML-KEM-768 encapsulation key ([`MLKEM768_PUBLIC_KEY_LEN`] bytes).
    pub fn mlkem768(&self) -> &[u8] {
        &self.mlkem768
    }

    pub(crate) fn kem_array(&self) -> HeapArray<MLKEM768_PUBLIC_KEY_LEN> {
        HeapArray::from_slice(&self.mlkem768)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Enough to tell keys apart in logs without 1.6 KB of base64.
        write!(f, "PublicKey(x25519:")?;
        for b in &self.x25519[..8] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// The `NoiseChannelPublicKey` JSON object, as it appears in registry requests and responses.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeyJson {
    /// Must be [`NOISE_CHANNEL_SUITE`].
    pub suite: String,
    /// Standard padded base64 of 32 bytes.
    pub x25519_public_key: String,
    /// Standard padded base64 of 1184 bytes.
    pub mlkem768_public_key: String,
}

impl From<PublicKey> for PublicKeyJson {
    fn from(key: PublicKey) -> Self {
        Self {
            suite: NOISE_CHANNEL_SUITE.to_string(),
            x25519_public_key: STANDARD.encode(key.x25519),
            mlkem768_public_key: STANDARD.encode(&key.mlkem768),
        }
    }
}

impl TryFrom<PublicKeyJson> for PublicKey {
    type Error = KeyError;

    fn try_from(json: PublicKeyJson) -> Result<Self, KeyError> {
        if json.suite != NOISE_CHANNEL_SUITE {
            return Err(KeyError::UnsupportedSuite(json.suite));
        }
        let x25519 = decode_bounded(
            &json.x25519_public_key,
            X25519_PUBLIC_KEY_LEN,
            KeyError::X25519Length,
        )?;
        let mlkem = decode_bounded(
            &json.mlkem768_public_key,
            MLKEM768_PUBLIC_KEY_LEN,
            KeyError::MlKemLength,
        )?;
        Self::from_parts(&x25519, &mlkem)
    }
}

/// Decodes base64 whose decoded form should be `want` bytes. Text too long to be that key is
/// rejected with `length_error` of its approximate decoded length before any decoding, so the
/// work is bounded by the key size whatever the input.
fn decode_bounded(
    text: &str,
    want: usize,
    length_error: fn(usize) -> KeyError,
) -> Result<Vec<u8>, KeyError> {
    if text.len() > want.div_ceil(3) * 4 {
        return Err(length_error(text.len() / 4 * 3));
    }
    STANDARD.decode(text).map_err(KeyError::Base64)
}

/// A Noise static identity: X25519 and ML-KEM-768 key pairs. Secrets are zeroised on drop and
/// never printed.
#[derive(Clone)]
pub struct StaticIdentity {
    pub(crate) dh: DhKeyPair,
    pub(crate) kem: KemKeyPair,
    public: PublicKey,
}

impl StaticIdentity {
    /// Generates a fresh identity from the operating system's RNG.
    pub fn generate() -> Result<Self, KeyError> {
        let dh = X25519::genkey().map_err(|_| KeyError::Generate)?;
        let kem = MlKem768::genkey().map_err(|_| KeyError::Generate)?;
        let public = PublicKey::from_parts(&dh.public, kem.public.as_slice())?;
        Ok(Self { dh, kem, public })
    }

    /// The public half, for registration (§10.1) or the harness `connect` call (§10.7).
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }
}

impl fmt::Debug for StaticIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticIdentity")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_json_round_trips_with_the_spec_field_names() {
        let id = StaticIdentity::generate().unwrap();
        let json = serde_json::to_value(id.public_key()).unwrap();
        let obj = json.as_object().unwrap();
        let mut keys: Vec<_> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["mlkem768_public_key", "suite", "x25519_public_key"]);
        assert_eq!(obj["suite"], NOISE_CHANNEL_SUITE);
        assert_eq!(obj["x25519_public_key"].as_str().unwrap().len(), 44);
        assert_eq!(obj["mlkem768_public_key"].as_str().unwrap().len(), 1580);
        let back: PublicKey = serde_json::from_value(json).unwrap();
        assert_eq!(&back, id.public_key());
    }

    fn sample_json() -> serde_json::Value {
        serde_json::json!({
            "suite": NOISE_CHANNEL_SUITE,
            "x25519_public_key": STANDARD.encode([1u8; 32]),
            "mlkem768_public_key": STANDARD.encode([2u8; 1184]),
        })
    }

    fn parse(v: serde_json::Value) -> Result<PublicKey, String> {
        serde_json::from_value::<PublicKey>(v).map_err(|e| e.to_string())
    }

    #[test]
    fn public_key_json_rejects_bad_input() {
        assert!(parse(sample_json()).is_ok());

        let mut v = sample_json();
        v["suite"] = "Noise_IK_25519_AESGCM_SHA256".into();
        assert!(parse(v)
            .unwrap_err()
            .contains("unsupported Noise channel suite"));

        let mut v = sample_json();
        v["extra"] = 1.into();
        assert!(parse(v).unwrap_err().contains("unknown field"));

        let mut v = sample_json();
        v["x25519_public_key"] = STANDARD.encode([1u8; 31]).into();
        assert!(parse(v)
            .unwrap_err()
            .contains("invalid X25519 public key length 31"));

        let mut v = sample_json();
        v["mlkem768_public_key"] = STANDARD.encode([2u8; 1183]).into();
        assert!(parse(v)
            .unwrap_err()
            .contains("invalid ML-KEM-768 public key length 1183"));

        let mut v = sample_json();
        v["mlkem768_public_key"] = "A".repeat(100_000).into();
        assert!(parse(v)
            .unwrap_err()
            .contains("ML-KEM-768 public key length"));

        let mut v = sample_json();
        v["x25519_public_key"] = "not base64!".into();
        assert!(parse(v).unwrap_err().contains("invalid base64"));

        let mut v = sample_json();
        v.as_object_mut().unwrap().remove("suite");
        assert!(parse(v).unwrap_err().contains("missing field `suite`"));
    }

    #[test]
    fn secret_key_material_is_zeroised_on_drop() {
        fn zeroize_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        // Static key pairs (and every clone handed to a handshake), the handshake's symmetric
        // state and the transport ciphers all wipe themselves.
        zeroize_on_drop::<DhKeyPair>();
        zeroize_on_drop::<KemKeyPair>();
        zeroize_on_drop::<
            clatter::symmetricstate::SymmetricState<
                super::super::cipher::AesGcm,
                clatter::crypto::hash::Sha256,
            >,
        >();
        zeroize_on_drop::<clatter::cipherstate::CipherState<super::super::cipher::AesGcm>>();
    }

    #[test]
    fn debug_output_hides_secrets() {
        let id = StaticIdentity::generate().unwrap();
        let text = format!("{id:?}");
        assert!(text.starts_with("StaticIdentity { public: PublicKey(x25519:"));
        assert!(text.len() < 100, "{text}");
    }
}
