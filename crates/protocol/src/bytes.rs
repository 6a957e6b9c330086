//! Base64 byte payloads (`chunk`, `dataBase64`, ...): standard alphabet with padding.

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The base64 engine of the wire: standard alphabet, padded.
pub const ENGINE: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Appends the standard padded base64 of `data` to `out`. This is the hot path of output
/// streaming, so it uses SIMD (about 5x the scalar encoder on this machine's CPUs); decoding
/// stays with the `base64` crate, whose error texts the protocol reports.
pub fn encode_into(data: &[u8], out: &mut String) {
    base64_simd::STANDARD.encode_append(data, out);
}

/// Bytes that travel as a standard base64 string.
///
/// Decoding is lazy: the params keep the string, and the handler decodes it so that it can
/// report a bad encoding with the error code its method requires (`process/write` answers
/// `-32602`, `fs/writeFile` `-32600`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Base64(pub String);

impl Base64 {
    /// Encodes bytes.
    pub fn encode(data: &[u8]) -> Self {
        let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
        encode_into(data, &mut s);
        Base64(s)
    }

    /// Decodes the string, returning the base64 error text on failure.
    pub fn decode(&self) -> Result<Vec<u8>, String> {
        ENGINE.decode(self.0.as_bytes()).map_err(|e| e.to_string())
    }
}

impl Serialize for Base64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Base64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Base64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_binary() {
        let b = Base64::encode(&[0, 255, 1]);
        assert_eq!(b.0, "AP8B");
        assert_eq!(b.decode().unwrap(), vec![0, 255, 1]);
    }

    #[test]
    fn simd_encoding_matches_the_reference() {
        for n in 0..300 {
            let data: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(Base64::encode(&data).0, ENGINE.encode(&data), "length {n}");
        }
    }

    #[test]
    fn rejects_garbage() {
        assert!(Base64("!!not-base64!!".into()).decode().is_err());
    }
}
