//! Base64 byte payloads (`chunk`, `dataBase64`, ...): standard alphabet with padding.

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The base64 engine of the wire: standard alphabet, padded.
pub const ENGINE: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Appends the standard padded base64 of `data` to `out`. This is the hot path of output
/// streaming, so it uses SIMD (about 5x the scalar encoder on this machine's CPUs).
pub fn encode_into(data: &[u8], out: &mut String) {
    base64_simd::STANDARD.encode_append(data, out);
}

/// Appends the standard padded base64 of `data` to the bytes in `out` (a writer's buffer).
pub fn encode_into_vec(data: &[u8], out: &mut Vec<u8>) {
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
        decode(self.0.as_bytes())
    }
}

/// Decodes standard padded base64 with exactly the acceptance rules of [`ENGINE`] (canonical
/// padding, zero trailing bits, no whitespace). The SIMD decoder (several times the scalar one)
/// does the work; anything it rejects is decoded again by the `base64` crate, so an error
/// carries that crate's text (the protocol reports it verbatim).
pub fn decode(input: &[u8]) -> Result<Vec<u8>, String> {
    match base64_simd::STANDARD.decode_to_vec(input) {
        Ok(data) => Ok(data),
        Err(_) => ENGINE.decode(input).map_err(|e| e.to_string()),
    }
}

/// Bytes that travel as a standard base64 string and are decoded while the params are
/// parsed: a multi-megabyte `dataBase64` goes from the request text to bytes in one pass,
/// with no copy of the text. A bad encoding is not a parse error: it is kept, with the
/// decoder's message, for the handler to report with its method's code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base64Data(Repr);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Repr {
    Bytes(Vec<u8>),
    Invalid { text: String, error: String },
}

impl Base64Data {
    /// Bytes to send.
    pub fn new(data: Vec<u8>) -> Self {
        Base64Data(Repr::Bytes(data))
    }

    /// The decoded bytes, or the decoder's message for a bad encoding.
    pub fn into_bytes(self) -> Result<Vec<u8>, String> {
        match self.0 {
            Repr::Bytes(data) => Ok(data),
            Repr::Invalid { error, .. } => Err(error),
        }
    }
}

impl Serialize for Base64Data {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Repr::Bytes(data) => s.serialize_str(&Base64::encode(data).0),
            Repr::Invalid { text, .. } => s.serialize_str(text),
        }
    }
}

impl<'de> Deserialize<'de> for Base64Data {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Base64Data;

            // The wording of `String`'s, so a wrong type reads as it did.
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Base64Data, E> {
                Ok(Base64Data(match decode(v.as_bytes()) {
                    Ok(data) => Repr::Bytes(data),
                    Err(error) => Repr::Invalid {
                        text: v.to_owned(),
                        error,
                    },
                }))
            }
        }
        d.deserialize_str(Visitor)
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
    fn base64_data_decodes_while_parsed() {
        let ok: Base64Data = serde_json::from_str(r#""AP8B""#).unwrap();
        assert_eq!(ok.clone().into_bytes().unwrap(), vec![0, 255, 1]);
        assert_eq!(serde_json::to_string(&ok).unwrap(), r#""AP8B""#);
        // JSON escapes are undone before decoding.
        let escaped: Base64Data = serde_json::from_str(r#""AP8\u0042""#).unwrap();
        assert_eq!(escaped.into_bytes().unwrap(), vec![0, 255, 1]);
        let bad: Base64Data = serde_json::from_str(r#""A?==""#).unwrap();
        assert_eq!(serde_json::to_string(&bad).unwrap(), r#""A?==""#);
        assert_eq!(bad.into_bytes().unwrap_err(), decode(b"A?==").unwrap_err());
        let wrong = serde_json::from_str::<Base64Data>("5")
            .unwrap_err()
            .to_string();
        let as_string = serde_json::from_str::<String>("5").unwrap_err().to_string();
        assert_eq!(wrong, as_string);
    }

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

    /// The SIMD decoder accepts exactly what the `base64` crate accepts, with the same bytes.
    #[test]
    fn simd_decoding_matches_the_reference() {
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        // Valid encodings of every length class, then mutations of them.
        for n in 0..200usize {
            let data: Vec<u8> = (0..n).map(|_| next() as u8).collect();
            inputs.push(ENGINE.encode(&data).into_bytes());
        }
        let specials = [
            b'=', b' ', b'\n', b'-', b'_', b'.', 0u8, 0xff, b'A', b'/', b'+',
        ];
        for base in inputs.clone() {
            for _ in 0..20 {
                let mut m = base.clone();
                match next() % 5 {
                    0 if !m.is_empty() => {
                        let i = next() as usize % m.len();
                        m[i] = specials[next() as usize % specials.len()];
                    }
                    1 if !m.is_empty() => {
                        let i = next() as usize % m.len();
                        m[i] = alphabet[next() as usize % 64];
                    }
                    2 => m.push(specials[next() as usize % specials.len()]),
                    3 if !m.is_empty() => {
                        m.pop();
                    }
                    _ => {
                        let i = next() as usize % (m.len() + 1);
                        m.insert(i, b'=');
                    }
                }
                inputs.push(m);
            }
        }
        for short in [
            &b""[..],
            b"=",
            b"==",
            b"===",
            b"====",
            b"A",
            b"A=",
            b"A==",
            b"A===",
            b"AA==",
            b"AB==",
            b"AAA=",
            b"AAB=",
            b"AA=A",
            b"AAAA====",
            b"AA==AA==",
            b"QQ",
            b"QUI",
            b"QUJD",
        ] {
            inputs.push(short.to_vec());
        }
        for input in &inputs {
            let reference = ENGINE.decode(input).map_err(|e| e.to_string());
            assert_eq!(
                decode(input),
                reference,
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn rejects_garbage() {
        assert!(Base64("!!not-base64!!".into()).decode().is_err());
    }
}
