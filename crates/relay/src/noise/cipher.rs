//! The channel's AES-256-GCM (Noise `AESGCM`), on ring instead of clatter's RustCrypto one.
//!
//! Same algorithm, same bytes: a 256-bit key, the Noise nonce (32 zero bits, then the 64-bit
//! counter big-endian), 16-byte tags; the name hashed into the protocol name is clatter's,
//! `AESGCM`. Only the implementation differs: RustCrypto's `aes-gcm` computes GHASH one block
//! at a time (`polyval`'s carry-less multiply, called per block through its CPU-feature
//! dispatch), which made AES-GCM about 40 % of an executor's CPU and 60 % of a harness's when
//! streaming output through the relay (1.2 GB/s here); ring's assembly runs at 6–7 GB/s on the
//! same machine. Tests check both implementations produce and accept the same ciphertexts.

use clatter::bytearray::{ByteArray, SensitiveByteArray};
use clatter::error::{CipherError, CipherResult};
use clatter::traits::{Cipher, CryptoComponent};
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM};

use super::TAG_LEN;

/// AES-256-GCM as Noise's `AESGCM` cipher function, implemented with ring.
#[derive(Clone)]
pub(super) struct AesGcm;

impl CryptoComponent for AesGcm {
    fn name() -> &'static str {
        "AESGCM"
    }
}

/// ring's key for `k` (the key schedule is computed per message, as clatter's cipher does:
/// the `Cipher` functions get the key bytes, not a prepared key).
fn key(k: &SensitiveByteArray<[u8; 32]>) -> CipherResult<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, k.as_slice())
        .map(LessSafeKey::new)
        .map_err(|_| CipherError::MissingKeyMaterial)
}

/// The Noise AESGCM nonce: 32 bits of zeros, then `n` big-endian.
fn nonce(n: u64) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[4..].copy_from_slice(&n.to_be_bytes());
    Nonce::assume_unique_for_key(bytes)
}

impl Cipher for AesGcm {
    type Key = SensitiveByteArray<[u8; 32]>;

    fn tag_len() -> usize {
        TAG_LEN
    }

    fn encrypt(
        k: &Self::Key,
        nonce: u64,
        ad: &[u8],
        plaintext: &[u8],
        out: &mut [u8],
    ) -> CipherResult<()> {
        assert!(plaintext.len().checked_add(TAG_LEN) == Some(out.len()));
        out[..plaintext.len()].copy_from_slice(plaintext);
        Self::encrypt_in_place(k, nonce, ad, out, plaintext.len())?;
        Ok(())
    }

    fn encrypt_in_place(
        k: &Self::Key,
        n: u64,
        ad: &[u8],
        in_out: &mut [u8],
        plaintext_len: usize,
    ) -> CipherResult<usize> {
        assert!(plaintext_len
            .checked_add(TAG_LEN)
            .is_some_and(|len| len <= in_out.len()));
        let (buffer, rest) = in_out.split_at_mut(plaintext_len);
        let tag = key(k)?
            .seal_in_place_separate_tag(nonce(n), Aad::from(ad), buffer)
            .map_err(|_| CipherError::Encrypt)?;
        rest[..TAG_LEN].copy_from_slice(tag.as_ref());
        Ok(plaintext_len + TAG_LEN)
    }

    fn decrypt(
        k: &Self::Key,
        n: u64,
        ad: &[u8],
        ciphertext: &[u8],
        out: &mut [u8],
    ) -> CipherResult<()> {
        assert!(ciphertext.len().checked_sub(TAG_LEN) == Some(out.len()));
        let (body, tag) = ciphertext.split_at(out.len());
        out.copy_from_slice(body);
        open(k, n, ad, out, tag)
    }

    fn decrypt_in_place(
        k: &Self::Key,
        n: u64,
        ad: &[u8],
        in_out: &mut [u8],
        ciphertext_len: usize,
    ) -> CipherResult<usize> {
        assert!(ciphertext_len <= in_out.len());
        assert!(ciphertext_len >= TAG_LEN);
        let (buffer, tag) = in_out[..ciphertext_len].split_at_mut(ciphertext_len - TAG_LEN);
        open(k, n, ad, buffer, tag)?;
        Ok(buffer.len())
    }
}

/// Decrypts `buffer` in place and checks `tag`.
fn open(
    k: &SensitiveByteArray<[u8; 32]>,
    n: u64,
    ad: &[u8],
    buffer: &mut [u8],
    tag: &[u8],
) -> CipherResult<()> {
    let tag = Tag::try_from(tag).map_err(|_| CipherError::Decrypt)?;
    key(k)?
        .open_in_place_separate_tag(nonce(n), Aad::from(ad), tag, buffer, 0..)
        .map_err(|_| CipherError::Decrypt)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::AesGcm as Ring;
    use clatter::bytearray::{ByteArray, SensitiveByteArray};
    use clatter::crypto::cipher::AesGcm as RustCrypto;
    use clatter::traits::{Cipher, CryptoComponent};
    use proptest::prelude::*;

    fn key(seed: u8) -> SensitiveByteArray<[u8; 32]> {
        SensitiveByteArray::from_slice(&[seed; 32])
    }

    #[test]
    fn the_name_is_clatters() {
        assert_eq!(Ring::name(), RustCrypto::name());
        assert_eq!(Ring::tag_len(), RustCrypto::tag_len());
    }

    #[test]
    fn rekey_matches_clatters() {
        let k = key(9);
        let ours = Ring::rekey(&k).unwrap();
        let theirs = RustCrypto::rekey(&k).unwrap();
        assert_eq!(ours.as_slice(), theirs.as_slice());
    }

    #[test]
    fn a_tampered_ciphertext_or_wrong_nonce_or_ad_fails() {
        let k = key(1);
        let mut ct = vec![0u8; 5 + 16];
        Ring::encrypt(&k, 3, b"ad", b"hello", &mut ct).unwrap();
        let mut out = [0u8; 5];
        assert!(Ring::decrypt(&k, 4, b"ad", &ct, &mut out).is_err());
        assert!(Ring::decrypt(&k, 3, b"xx", &ct, &mut out).is_err());
        ct[0] ^= 1;
        assert!(Ring::decrypt(&k, 3, b"ad", &ct, &mut out).is_err());
        ct[0] ^= 1;
        let last = ct.len() - 1;
        ct[last] ^= 0x80;
        assert!(Ring::decrypt(&k, 3, b"ad", &ct, &mut out).is_err());
        ct[last] ^= 0x80;
        Ring::decrypt(&k, 3, b"ad", &ct, &mut out).unwrap();
        assert_eq!(&out, b"hello");
    }

    proptest! {
        /// ring and clatter's RustCrypto AES-GCM produce the same bytes and each opens the
        /// other's, in both the copying and the in-place forms.
        #[test]
        fn ring_and_rustcrypto_agree(
            seed in any::<u8>(),
            n in prop_oneof![any::<u64>(), 0u64..4],
            ad in proptest::collection::vec(any::<u8>(), 0..80),
            plaintext in proptest::collection::vec(any::<u8>(), 0..3000),
        ) {
            let k = key(seed);
            let len = plaintext.len();
            let mut ours = vec![0u8; len + 16];
            let mut theirs = vec![0u8; len + 16];
            Ring::encrypt(&k, n, &ad, &plaintext, &mut ours).unwrap();
            RustCrypto::encrypt(&k, n, &ad, &plaintext, &mut theirs).unwrap();
            prop_assert_eq!(&ours, &theirs);

            let mut in_place = plaintext.clone();
            in_place.resize(len + 16, 0);
            prop_assert_eq!(Ring::encrypt_in_place(&k, n, &ad, &mut in_place, len).unwrap(), len + 16);
            prop_assert_eq!(&in_place, &theirs);

            let mut out = vec![0u8; len];
            Ring::decrypt(&k, n, &ad, &theirs, &mut out).unwrap();
            prop_assert_eq!(&out, &plaintext);
            RustCrypto::decrypt(&k, n, &ad, &ours, &mut out).unwrap();
            prop_assert_eq!(&out, &plaintext);
            let mut buf = theirs.clone();
            prop_assert_eq!(Ring::decrypt_in_place(&k, n, &ad, &mut buf, len + 16).unwrap(), len);
            prop_assert_eq!(&buf[..len], &plaintext[..]);
        }
    }
}
