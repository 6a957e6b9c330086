//! Record plaintext framing (spec §10.4): the JSON-RPC byte stream of a virtual stream is a
//! sequence of `u32` big-endian length ‖ JSON bytes messages, cut into records of at most
//! [`MAX_RECORD_PLAINTEXT_LEN`] bytes, each sealed as one Noise transport message. A record may
//! hold several messages or part of one, so the reader reassembles across record boundaries.
//!
//! Bounds: a message is 1 to [`MAX_MESSAGE_LEN`] bytes; the reader holds at most one partial
//! message, grown only as its bytes arrive (a length prefix alone reserves nothing), so its
//! memory is bounded by [`MAX_MESSAGE_LEN`] plus the 4-byte prefix.

/// Length of the big-endian `u32` message length prefix.
pub const LENGTH_PREFIX_LEN: usize = 4;
/// Largest JSON-RPC message on a relay stream: 64 MiB.
pub const MAX_MESSAGE_LEN: usize = 64 * 1024 * 1024;
/// Largest record plaintext we send: 60 KiB (61 440 bytes), so a sealed record (plus the 16-byte
/// tag) stays under the 65 535-byte Noise limit.
pub const MAX_RECORD_PLAINTEXT_LEN: usize = 60 * 1024;

/// Why a message could not be framed or a record stream could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// A message of length 0 (sent or announced).
    #[error("relay stream message is empty")]
    EmptyMessage,
    /// A message over [`MAX_MESSAGE_LEN`] (sent or announced).
    #[error("relay stream message is {len} bytes, over the {MAX_MESSAGE_LEN}-byte limit")]
    MessageTooLarge {
        /// Length sent or announced.
        len: usize,
    },
}

/// Frames one message (length prefix ‖ bytes). Cut the result with [`records`]; consecutive
/// framed messages may also be concatenated before cutting.
pub fn frame_message(message: &[u8]) -> Result<Vec<u8>, RecordError> {
    check_len(message.len())?;
    let mut out = Vec::with_capacity(LENGTH_PREFIX_LEN + message.len());
    // `check_len` bounds the length to 64 MiB, so it fits a u32.
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    Ok(out)
}

/// Cuts framed bytes into record plaintexts of at most [`MAX_RECORD_PLAINTEXT_LEN`] bytes.
pub fn records(framed: &[u8]) -> impl Iterator<Item = &[u8]> {
    framed.chunks(MAX_RECORD_PLAINTEXT_LEN)
}

fn check_len(len: usize) -> Result<(), RecordError> {
    if len == 0 {
        return Err(RecordError::EmptyMessage);
    }
    if len > MAX_MESSAGE_LEN {
        return Err(RecordError::MessageTooLarge { len });
    }
    Ok(())
}

/// Reassembles messages from record plaintexts delivered in order.
#[derive(Debug, Default)]
pub struct MessageReader {
    header: [u8; LENGTH_PREFIX_LEN],
    header_len: usize,
    /// Announced length of the message being read; `None` while reading a prefix.
    expected: Option<usize>,
    body: Vec<u8>,
}

impl MessageReader {
    /// A reader at a message boundary.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one record plaintext and returns the messages it completed, in order. After an
    /// error the stream is broken and must be reset.
    pub fn push(&mut self, mut record: &[u8]) -> Result<Vec<Vec<u8>>, RecordError> {
        let mut done = Vec::new();
        while !record.is_empty() {
            match self.expected {
                None => {
                    let take = (LENGTH_PREFIX_LEN - self.header_len).min(record.len());
                    self.header[self.header_len..self.header_len + take]
                        .copy_from_slice(&record[..take]);
                    self.header_len += take;
                    record = &record[take..];
                    if self.header_len == LENGTH_PREFIX_LEN {
                        let len = u32::from_be_bytes(self.header) as usize;
                        check_len(len)?;
                        self.expected = Some(len);
                        self.header_len = 0;
                    }
                }
                Some(len) => {
                    let take = (len - self.body.len()).min(record.len());
                    self.body.extend_from_slice(&record[..take]);
                    record = &record[take..];
                    if self.body.len() == len {
                        done.push(std::mem::take(&mut self.body));
                        self.expected = None;
                    }
                }
            }
        }
        Ok(done)
    }

    /// True at a message boundary (nothing partial buffered).
    pub fn is_idle(&self) -> bool {
        self.expected.is_none() && self.header_len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_message_is_prefixed_with_its_big_endian_length() {
        assert_eq!(frame_message(b"{}").unwrap(), [0, 0, 0, 2, b'{', b'}']);
        assert_eq!(frame_message(b""), Err(RecordError::EmptyMessage));
    }

    #[test]
    fn large_messages_span_records_of_at_most_60_kib() {
        let msg = vec![b'x'; 150_000];
        let framed = frame_message(&msg).unwrap();
        let recs: Vec<_> = records(&framed).collect();
        assert_eq!(
            recs.iter().map(|r| r.len()).collect::<Vec<_>>(),
            [61_440, 61_440, 150_004 - 2 * 61_440]
        );
        let mut reader = MessageReader::new();
        assert!(reader.push(recs[0]).unwrap().is_empty());
        assert!(reader.push(recs[1]).unwrap().is_empty());
        assert!(!reader.is_idle());
        assert_eq!(reader.push(recs[2]).unwrap(), [msg]);
        assert!(reader.is_idle());
    }

    #[test]
    fn one_record_may_hold_several_messages_and_split_prefixes() {
        let mut framed = frame_message(b"a").unwrap();
        framed.extend(frame_message(b"bc").unwrap());
        framed.extend(frame_message(b"def").unwrap());
        let mut reader = MessageReader::new();
        // Split inside the second length prefix.
        assert_eq!(reader.push(&framed[..7]).unwrap(), [b"a".to_vec()]);
        assert_eq!(
            reader.push(&framed[7..]).unwrap(),
            [b"bc".to_vec(), b"def".to_vec()]
        );
    }

    #[test]
    fn zero_or_oversize_announced_lengths_are_errors() {
        let mut reader = MessageReader::new();
        assert_eq!(reader.push(&[0, 0, 0, 0]), Err(RecordError::EmptyMessage));
        let mut reader = MessageReader::new();
        let too_big = (MAX_MESSAGE_LEN as u32 + 1).to_be_bytes();
        assert_eq!(
            reader.push(&too_big),
            Err(RecordError::MessageTooLarge {
                len: MAX_MESSAGE_LEN + 1
            })
        );
        // An announced 64 MiB message reserves nothing up front.
        let mut reader = MessageReader::new();
        reader
            .push(&(MAX_MESSAGE_LEN as u32).to_be_bytes())
            .unwrap();
        assert_eq!(reader.body.capacity(), 0);
    }

    proptest! {
        #[test]
        fn any_cut_of_the_byte_stream_reassembles(
            msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 1..8),
            cuts in proptest::collection::vec(1usize..200, 1..40),
        ) {
            let mut stream = Vec::new();
            for m in &msgs {
                stream.extend(frame_message(m).unwrap());
            }
            let mut reader = MessageReader::new();
            let mut got = Vec::new();
            let mut rest = &stream[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = cuts[i % cuts.len()].min(rest.len());
                got.extend(reader.push(&rest[..n]).unwrap());
                rest = &rest[n..];
                i += 1;
            }
            prop_assert_eq!(got, msgs);
            prop_assert!(reader.is_idle());
        }

        #[test]
        fn arbitrary_records_never_panic(recs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8)) {
            let mut reader = MessageReader::new();
            for r in &recs {
                if reader.push(r).is_err() {
                    break;
                }
            }
        }
    }
}
