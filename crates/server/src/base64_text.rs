//! [`Base64Text`]: an outgoing message whose middle is the base64 of some bytes, encoded only
//! while it is written.
//!
//! A file data reply (`fs/readFile`, `fs/readBlock`) is a short JSON head, the data in base64
//! and a short tail. Building it as one `String` costs a buffer of 4/3 the data's size (85 MB
//! for a 64 MiB file: fresh pages, faulted in one by one) and, on the WebSocket, a copy of it
//! into the frame. A transport that can write a message in parts asks [`Base64Text::fill`] for
//! the next part in a buffer it reuses; the others use [`Base64Text::into_string`].

use exec_server_protocol::bytes::{encode_into, encode_into_vec};

/// `head` + base64 of `data` + `tail`: a message's text, not yet encoded.
#[derive(Debug)]
pub struct Base64Text {
    head: String,
    data: Vec<u8>,
    tail: &'static str,
}

/// Where a writer is in a [`Base64Text`]: the data bytes already encoded.
#[derive(Debug, Default, Clone, Copy)]
pub struct Cursor {
    head_done: bool,
    data_done: usize,
    tail_done: bool,
}

/// The length of the base64 of `n` bytes (padded).
pub(crate) fn base64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

impl Base64Text {
    /// The text `head` + base64(`data`) + `tail`. `head` and `tail` must be JSON text that
    /// opens and closes a string (the base64 needs no escaping).
    pub fn new(head: String, data: Vec<u8>, tail: &'static str) -> Self {
        Base64Text { head, data, tail }
    }

    /// Length of the whole text in bytes.
    pub fn len(&self) -> usize {
        self.head.len() + base64_len(self.data.len()) + self.tail.len()
    }

    /// Whether the text is empty (never: a head or tail is always there, but clippy asks).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole text in one string.
    pub fn into_string(self) -> String {
        let mut s = String::with_capacity(self.len());
        s.push_str(&self.head);
        encode_into(&self.data, &mut s);
        s.push_str(self.tail);
        s
    }

    /// Appends the next part of the text after `cursor` to `out`: the head, then the base64
    /// of at most `max / 4 * 3` data bytes (whole 3-byte groups, so parts join into the same
    /// text as [`Base64Text::into_string`]), then the tail. Returns `false` once everything has
    /// been appended.
    pub fn fill(&self, cursor: &mut Cursor, out: &mut Vec<u8>, max: usize) -> bool {
        if !cursor.head_done {
            cursor.head_done = true;
            out.extend_from_slice(self.head.as_bytes());
            return true;
        }
        if cursor.data_done < self.data.len() {
            let take = (max / 4 * 3).max(3);
            let end = (cursor.data_done + take).min(self.data.len());
            encode_into_vec(&self.data[cursor.data_done..end], out);
            cursor.data_done = end;
            return true;
        }
        if !cursor.tail_done {
            cursor.tail_done = true;
            out.extend_from_slice(self.tail.as_bytes());
            return true;
        }
        false
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
            let whole = Base64Text::new(t.head.clone(), t.data.clone(), t.tail).into_string();
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
