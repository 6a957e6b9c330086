//! Noise transport mode: one AES-256-GCM cipher per direction with implicit, strictly increasing
//! nonces. A record must be decrypted exactly once and in order; a replayed, reordered, tampered
//! or foreign record fails authentication and the stream must be reset.

use std::fmt;

use clatter::bytearray::ByteArray;
use clatter::crypto::hash::Sha256;
use clatter::transportstate::TransportState;

use super::cipher::AesGcm;
use super::{NoiseError, MAX_NOISE_MESSAGE_LEN, MAX_RECORDS_PER_DIRECTION, TAG_LEN};

/// An established Noise channel. The cipher keys live in clatter's `CipherState`, which zeroises
/// them on drop.
pub struct NoiseTransport {
    inner: TransportState<AesGcm, Sha256>,
    sent: u64,
    received: u64,
}

impl NoiseTransport {
    pub(super) fn new(inner: TransportState<AesGcm, Sha256>) -> Self {
        Self {
            inner,
            sent: 0,
            received: 0,
        }
    }

    /// Encrypts one record. `plaintext` is at most `MAX_NOISE_MESSAGE_LEN - TAG_LEN` bytes (the
    /// record layer sends at most [`crate::record::MAX_RECORD_PLAINTEXT_LEN`]); the ciphertext is
    /// `TAG_LEN` bytes longer.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, NoiseError> {
        if plaintext.len() > MAX_NOISE_MESSAGE_LEN - TAG_LEN {
            return Err(NoiseError::PlaintextTooLarge {
                len: plaintext.len(),
            });
        }
        if self.sent >= MAX_RECORDS_PER_DIRECTION {
            return Err(NoiseError::SequenceExhausted);
        }
        let out = self
            .inner
            .send_vec(plaintext)
            .map_err(NoiseError::Transport)?;
        self.sent += 1;
        Ok(out)
    }

    /// Decrypts the next record in order. Ciphertexts outside `TAG_LEN..=MAX_NOISE_MESSAGE_LEN`
    /// are rejected before decryption.
    pub fn decrypt(&mut self, ciphertext: &[u8]) -> Result<Vec<u8>, NoiseError> {
        if ciphertext.len() < TAG_LEN {
            return Err(NoiseError::CiphertextTooShort {
                len: ciphertext.len(),
            });
        }
        if ciphertext.len() > MAX_NOISE_MESSAGE_LEN {
            return Err(NoiseError::CiphertextTooLarge {
                len: ciphertext.len(),
            });
        }
        if self.received >= MAX_RECORDS_PER_DIRECTION {
            return Err(NoiseError::SequenceExhausted);
        }
        let out = self
            .inner
            .receive_vec(ciphertext)
            .map_err(NoiseError::Transport)?;
        self.received += 1;
        Ok(out)
    }

    /// The handshake transcript hash (channel binding); equal on both ends.
    pub fn handshake_hash(&self) -> [u8; 32] {
        let hash = self.inner.get_handshake_hash();
        let mut out = [0; 32];
        out.copy_from_slice(hash.as_slice());
        out
    }

    /// Records encrypted so far.
    pub fn records_sent(&self) -> u64 {
        self.sent
    }

    /// Records decrypted so far.
    pub fn records_received(&self) -> u64 {
        self.received
    }
}

impl fmt::Debug for NoiseTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoiseTransport")
            .field("sent", &self.sent)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}
