//! An established secure virtual stream: JSON-RPC messages in, relay data bodies out, and back.
//!
//! Outbound, [`SecureStream::seal`] frames a message ([`crate::record`]), cuts it into records,
//! encrypts each and numbers them with `seq` from 0 (spec §10.4 item 4). Inbound,
//! [`SecureStream::open`] checks the ciphertext size, restores order ([`crate::ordering`]),
//! decrypts in order and reassembles messages.
//!
//! Replay and reordering: a record whose `seq` was already seen is dropped before decryption. A
//! ciphertext replayed or moved under another `seq` reaches the cipher with the wrong implicit
//! nonce and fails authentication, like a tampered one. Every error is fatal for the stream and
//! maps to [`PROTOCOL_ERROR_RESET_REASON`].

use crate::frame::FrameBody;
use crate::noise::{NoiseError, NoiseTransport, MAX_NOISE_MESSAGE_LEN, TAG_LEN};
use crate::ordering::{OrderError, Pushed, ReorderWindow};
use crate::record::{frame_message, records, MessageReader, RecordError};
use crate::PROTOCOL_ERROR_RESET_REASON;

/// Why a secure stream failed; the stream must be reset with [`StreamError::reset_reason`].
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Encryption, decryption or a ciphertext size check failed.
    #[error(transparent)]
    Noise(#[from] NoiseError),
    /// The inbound records broke the ordering window.
    #[error(transparent)]
    Order(#[from] OrderError),
    /// A message could not be framed, or the inbound byte stream is malformed.
    #[error(transparent)]
    Record(#[from] RecordError),
}

impl StreamError {
    /// The `RelayReset.reason` to send: always `noise_relay_protocol_error` (spec §10.4).
    pub fn reset_reason(&self) -> &'static str {
        PROTOCOL_ERROR_RESET_REASON
    }
}

/// A virtual stream after the Noise handshake.
#[derive(Debug)]
pub struct SecureStream {
    transport: NoiseTransport,
    window: ReorderWindow,
    reader: MessageReader,
}

impl SecureStream {
    /// Wraps the transport of a completed handshake.
    pub fn new(transport: NoiseTransport) -> Self {
        Self {
            transport,
            window: ReorderWindow::new(),
            reader: MessageReader::new(),
        }
    }

    /// Seals one JSON-RPC message (1 byte to 64 MiB) into data bodies to send in order.
    pub fn seal(&mut self, message: &[u8]) -> Result<Vec<FrameBody>, StreamError> {
        let framed = frame_message(message)?;
        let mut out = Vec::with_capacity(
            framed
                .len()
                .div_ceil(crate::record::MAX_RECORD_PLAINTEXT_LEN),
        );
        for record in records(&framed) {
            // `encrypt` refuses to go past u32::MAX records, so the count fits a u32.
            let seq = u32::try_from(self.transport.records_sent())
                .map_err(|_| NoiseError::SequenceExhausted)?;
            let payload = self.transport.encrypt(record)?;
            out.push(FrameBody::Data { seq, payload });
        }
        Ok(out)
    }

    /// Accepts one inbound data record and returns the messages it completed, in order. A
    /// duplicate `seq` returns nothing.
    pub fn open(&mut self, seq: u32, payload: Vec<u8>) -> Result<Vec<Vec<u8>>, StreamError> {
        // Size checks first, so an unusable record is never buffered.
        if payload.len() < TAG_LEN {
            return Err(NoiseError::CiphertextTooShort { len: payload.len() }.into());
        }
        if payload.len() > MAX_NOISE_MESSAGE_LEN {
            return Err(NoiseError::CiphertextTooLarge { len: payload.len() }.into());
        }
        let ready = match self.window.push(seq, payload)? {
            Pushed::Ready(ready) => ready,
            Pushed::Duplicate => {
                tracing::debug!(seq, "dropping duplicate relay record");
                return Ok(Vec::new());
            }
        };
        let mut messages = Vec::new();
        for ciphertext in ready {
            let plaintext = self.transport.decrypt(&ciphertext)?;
            messages.extend(self.reader.push(&plaintext)?);
        }
        Ok(messages)
    }

    /// True when no partial inbound message is buffered.
    pub fn is_at_message_boundary(&self) -> bool {
        self.reader.is_idle()
    }

    /// The Noise handshake hash of this stream.
    pub fn handshake_hash(&self) -> [u8; 32] {
        self.transport.handshake_hash()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::{prologue, read_request, Initiator, StaticIdentity};
    use crate::record::MAX_RECORD_PLAINTEXT_LEN;

    /// (harness, executor)
    fn streams() -> (SecureStream, SecureStream) {
        let executor = StaticIdentity::generate().unwrap();
        let harness = StaticIdentity::generate().unwrap();
        let pro = prologue("env", "reg", "stream");
        let (init, msg1) = Initiator::start(&harness, executor.public_key(), &pro, "auth").unwrap();
        let (msg2, exec_t) = read_request(&executor, &pro, &msg1)
            .unwrap()
            .accept()
            .unwrap();
        let harness_t = init.finish(&msg2).unwrap();
        (SecureStream::new(harness_t), SecureStream::new(exec_t))
    }

    fn data(body: FrameBody) -> (u32, Vec<u8>) {
        match body {
            FrameBody::Data { seq, payload } => (seq, payload),
            other => panic!("not data: {other:?}"),
        }
    }

    fn deliver(to: &mut SecureStream, bodies: Vec<FrameBody>) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for b in bodies {
            let (seq, payload) = data(b);
            out.extend(to.open(seq, payload).unwrap());
        }
        out
    }

    #[test]
    fn messages_flow_both_ways_with_seq_from_zero() {
        let (mut h, mut e) = streams();
        let bodies = h.seal(br#"{"id":1,"method":"initialize"}"#).unwrap();
        assert_eq!(data(bodies[0].clone()).0, 0);
        assert_eq!(
            deliver(&mut e, bodies),
            [br#"{"id":1,"method":"initialize"}"#.to_vec()]
        );
        let bodies = e.seal(b"{\"id\":1}").unwrap();
        assert_eq!(deliver(&mut h, bodies), [b"{\"id\":1}".to_vec()]);
        let bodies = h.seal(b"{}").unwrap();
        assert_eq!(data(bodies[0].clone()).0, 1);
        assert_eq!(h.handshake_hash(), e.handshake_hash());
    }

    #[test]
    fn a_message_larger_than_one_record_spans_several() {
        let (mut h, mut e) = streams();
        let msg = vec![b'z'; 3 * MAX_RECORD_PLAINTEXT_LEN + 10];
        let bodies = h.seal(&msg).unwrap();
        assert_eq!(bodies.len(), 4);
        for (i, b) in bodies.iter().enumerate() {
            let (seq, payload) = data(b.clone());
            assert_eq!(seq, i as u32);
            assert!(payload.len() <= MAX_RECORD_PLAINTEXT_LEN + TAG_LEN);
        }
        assert_eq!(deliver(&mut e, bodies), [msg]);
        assert!(e.is_at_message_boundary());
    }

    #[test]
    fn reordered_delivery_is_restored() {
        let (mut h, mut e) = streams();
        let mut bodies = Vec::new();
        for i in 0..5u8 {
            bodies.extend(h.seal(&[b'0' + i]).unwrap());
        }
        bodies.reverse();
        let got = deliver(&mut e, bodies);
        assert_eq!(got, [b"0", b"1", b"2", b"3", b"4"].map(|m| m.to_vec()));
    }

    #[test]
    fn a_replayed_record_under_its_own_seq_is_dropped() {
        let (mut h, mut e) = streams();
        let (seq, payload) = data(h.seal(b"once").unwrap().remove(0));
        assert_eq!(e.open(seq, payload.clone()).unwrap(), [b"once".to_vec()]);
        assert!(e.open(seq, payload).unwrap().is_empty());
    }

    #[test]
    fn a_replayed_record_under_a_new_seq_resets() {
        let (mut h, mut e) = streams();
        let (_, payload) = data(h.seal(b"once").unwrap().remove(0));
        e.open(0, payload.clone()).unwrap();
        let err = e.open(1, payload).unwrap_err();
        assert!(matches!(err, StreamError::Noise(NoiseError::Transport(_))));
        assert_eq!(err.reset_reason(), "noise_relay_protocol_error");
    }

    #[test]
    fn swapped_seq_numbers_reset() {
        let (mut h, mut e) = streams();
        let (_, first) = data(h.seal(b"first").unwrap().remove(0));
        let (_, second) = data(h.seal(b"second").unwrap().remove(0));
        // The relay (or an attacker) relabels the records: ciphertext order no longer matches.
        let err = e.open(0, second).unwrap_err();
        assert!(matches!(err, StreamError::Noise(NoiseError::Transport(_))));
        let _ = first;
    }

    #[test]
    fn a_tampered_record_resets() {
        let (mut h, mut e) = streams();
        let (seq, mut payload) = data(h.seal(b"hello").unwrap().remove(0));
        payload[2] ^= 1;
        assert!(matches!(
            e.open(seq, payload),
            Err(StreamError::Noise(NoiseError::Transport(_)))
        ));
    }

    #[test]
    fn a_record_from_another_stream_resets() {
        let (mut h1, _) = streams();
        let (_, mut e2) = streams();
        let (seq, payload) = data(h1.seal(b"hello").unwrap().remove(0));
        assert!(e2.open(seq, payload).is_err());
    }

    #[test]
    fn oversize_and_undersize_records_reset_before_buffering() {
        let (_, mut e) = streams();
        assert!(matches!(
            e.open(3, vec![0; MAX_NOISE_MESSAGE_LEN + 1]),
            Err(StreamError::Noise(NoiseError::CiphertextTooLarge { .. }))
        ));
        assert!(matches!(
            e.open(3, vec![0; TAG_LEN - 1]),
            Err(StreamError::Noise(NoiseError::CiphertextTooShort { .. }))
        ));
        assert_eq!(e.window.next_seq(), 0);
    }

    #[test]
    fn a_seq_too_far_ahead_resets() {
        let (mut h, mut e) = streams();
        let (_, payload) = data(h.seal(b"x").unwrap().remove(0));
        assert!(matches!(
            e.open(65, payload),
            Err(StreamError::Order(OrderError::GapTooLarge { .. }))
        ));
    }

    #[test]
    fn an_empty_message_cannot_be_sent() {
        let (mut h, _) = streams();
        assert!(matches!(
            h.seal(b""),
            Err(StreamError::Record(RecordError::EmptyMessage))
        ));
    }
}
