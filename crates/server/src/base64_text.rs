//! [`Base64Text`]: an outgoing message made of JSON text and the base64 of some bytes, encoded
//! only while it is written.
//!
//! A file data reply (`fs/readFile`, `fs/readBlock`) is a short JSON head, the data in base64
//! and a short tail; a `process/read` reply or a `process/output` notification is text around
//! the base64 of output chunks. Building such a message as one `String` costs a buffer of
//! 4/3 the data's size (85 MB for a 64 MiB file: fresh pages, faulted in one by one) and a
//! pass over it before the first byte leaves. A transport that can write a message in parts
//! asks [`Base64Text::fill`] for the next part in a buffer it reuses (the peer receives the
//! start while the rest is encoded); the others use [`Base64Text::into_string`].

use bytes::Bytes;
use exec_server_protocol::bytes::{encode_into, encode_into_vec};

/// A message's text as JSON text parts and base64-to-be parts, in order.
#[derive(Debug, Default)]
pub struct Base64Text {
    parts: Vec<Part>,
    len: usize,
}

#[derive(Debug)]
enum Part {
    Text(String),
    Base64(Bytes),
}

/// Where a writer is in a [`Base64Text`]: the part, and the bytes of it already written
/// (for a base64 part, the data bytes already encoded).
#[derive(Debug, Default, Clone, Copy)]
pub struct Cursor {
    part: usize,
    at: usize,
}

/// The length of the base64 of `n` bytes (padded).
pub(crate) fn base64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

impl Base64Text {
    /// The text `head` + base64(`data`) + `tail`. `head` and `tail` must be JSON text that
    /// opens and closes a string (the base64 needs no escaping).
    pub fn new(head: String, data: impl Into<Bytes>, tail: &str) -> Self {
        let mut t = Base64Text::default();
        t.push_text(head);
        t.push_base64(data.into());
        t.push_str(tail);
        t
    }

    /// Appends JSON text.
    pub fn push_text(&mut self, text: String) {
        self.len += text.len();
        match self.parts.last_mut() {
            Some(Part::Text(last)) => last.push_str(&text),
            _ => self.parts.push(Part::Text(text)),
        }
    }

    /// Appends JSON text.
    pub fn push_str(&mut self, text: &str) {
        self.len += text.len();
        match self.parts.last_mut() {
            Some(Part::Text(last)) => last.push_str(text),
            _ => self.parts.push(Part::Text(text.to_string())),
        }
    }

    /// Appends the base64 of `data` (inside a JSON string the text around it opens and
    /// closes).
    pub fn push_base64(&mut self, data: Bytes) {
        self.len += base64_len(data.len());
        self.parts.push(Part::Base64(data));
    }

    /// Length of the whole text in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole text in one string.
    pub fn into_string(self) -> String {
        let mut s = String::with_capacity(self.len);
        for part in &self.parts {
            match part {
                Part::Text(t) => s.push_str(t),
                Part::Base64(data) => encode_into(data, &mut s),
            }
        }
        s
    }

    /// Appends the next part of the text after `cursor` to `out`: the rest of a text part,
    /// or the base64 of at most `max / 4 * 3` data bytes (whole 3-byte groups, so parts join
    /// into the same text as [`Base64Text::into_string`]). Returns `false` once everything
    /// has been appended.
    pub fn fill(&self, cursor: &mut Cursor, out: &mut Vec<u8>, max: usize) -> bool {
        loop {
            let Some(part) = self.parts.get(cursor.part) else {
                return false;
            };
            match part {
                Part::Text(t) if cursor.at < t.len() => {
                    out.extend_from_slice(&t.as_bytes()[cursor.at..]);
                    cursor.at = t.len();
                    return true;
                }
                Part::Base64(data) if cursor.at < data.len() => {
                    let take = (max / 4 * 3).max(3);
                    let end = (cursor.at + take).min(data.len());
                    encode_into_vec(&data[cursor.at..end], out);
                    cursor.at = end;
                    return true;
                }
                _ => {
                    cursor.part += 1;
                    cursor.at = 0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(t: &Base64Text, max: usize) -> Vec<u8> {
        let mut cursor = Cursor::default();
        let mut out = Vec::new();
        while t.fill(&mut cursor, &mut out, max) {}
        out
    }

    #[test]
    fn parts_join_into_the_whole_text_for_any_part_size_and_data_length() {
        for n in [0usize, 1, 2, 3, 4, 5, 100, 1000, 3 * 1024 + 1] {
            let data: Vec<u8> = (0..n).map(|i| (i * 7 % 256) as u8).collect();
            let t = Base64Text::new(r#"{"id":1,"result":{"x":""#.into(), data, r#""}}"#);
            let whole = Base64Text::new(
                r#"{"id":1,"result":{"x":""#.into(),
                (0..n).map(|i| (i * 7 % 256) as u8).collect::<Vec<u8>>(),
                r#""}}"#,
            )
            .into_string();
            assert_eq!(whole.len(), t.len(), "len for {n} bytes");
            for max in [1, 4, 7, 64, 4096, 1 << 20] {
                assert_eq!(
                    joined(&t, max),
                    whole.as_bytes(),
                    "{n} bytes in parts of {max}"
                );
            }
        }
    }

    #[test]
    fn many_parts_join_like_the_whole_text() {
        let mut t = Base64Text::default();
        let mut expected = String::new();
        for i in 0..20usize {
            let text = format!("{{\"n\":{i},\"c\":\"");
            t.push_text(text.clone());
            expected.push_str(&text);
            let data: Vec<u8> = (0..i * 37).map(|j| (j % 256) as u8).collect();
            encode_into(&data, &mut expected);
            t.push_base64(data.into());
            t.push_str("\"},");
            expected.push_str("\"},");
        }
        assert_eq!(t.len(), expected.len());
        for max in [4, 64, 1 << 20] {
            assert_eq!(joined(&t, max), expected.as_bytes(), "parts of {max}");
        }
        assert_eq!(t.into_string(), expected);
    }

    #[test]
    fn a_part_of_data_is_at_most_max_bytes_of_base64() {
        let t = Base64Text::new(String::new(), vec![7; 10_000], "");
        let mut cursor = Cursor::default();
        let mut out = Vec::new();
        assert!(t.fill(&mut cursor, &mut out, 1024)); // the (empty) head
        out.clear();
        assert!(t.fill(&mut cursor, &mut out, 1024));
        assert_eq!(out.len(), 1024);
    }
}
