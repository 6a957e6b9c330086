//! The tool's captured output: stdout and stderr interleaved as they arrive, plus the guard's
//! `Execution denied: …` lines, bounded: the first [`HEAD`] bytes and the last [`TAIL`] bytes
//! are kept, and what was dropped between them is counted and marked.

use std::collections::VecDeque;

/// Bytes kept from the start of the output.
pub const HEAD: usize = 64 * 1024;
/// Bytes kept from the end of the output.
pub const TAIL: usize = 960 * 1024;

/// A bounded capture.
#[derive(Debug, Default)]
pub struct Output {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    dropped: u64,
}

impl Output {
    /// Appends `bytes`.
    pub fn push(&mut self, mut bytes: &[u8]) {
        if self.head.len() < HEAD {
            let n = bytes.len().min(HEAD - self.head.len());
            self.head.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
        if bytes.len() >= TAIL {
            self.dropped += (self.tail.len() + bytes.len() - TAIL) as u64;
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - TAIL..]);
            return;
        }
        let over = (self.tail.len() + bytes.len()).saturating_sub(TAIL);
        self.tail.drain(..over);
        self.dropped += over as u64;
        self.tail.extend(bytes);
    }

    /// The text (UTF-8, lossy), with a marker where bytes were dropped.
    pub fn text(&self) -> String {
        let mut all = self.head.clone();
        if self.dropped > 0 {
            all.extend_from_slice(
                format!("\n[... {} bytes of output omitted ...]\n", self.dropped).as_bytes(),
            );
        }
        all.extend(self.tail.iter());
        String::from_utf8_lossy(&all).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_output_is_kept_whole() {
        let mut o = Output::default();
        o.push(b"hello ");
        o.push(b"world");
        assert_eq!(o.text(), "hello world");
    }

    #[test]
    fn large_output_keeps_head_and_tail_and_counts_the_rest() {
        let mut o = Output::default();
        let total = HEAD + TAIL + 12_345;
        for i in 0..total / 1000 + 1 {
            let chunk: Vec<u8> = (0..1000)
                .map(|j| b'a' + ((i * 1000 + j) % 26) as u8)
                .collect();
            o.push(&chunk);
        }
        let pushed = (total / 1000 + 1) * 1000;
        let text = o.text();
        assert!(text.contains(&format!(
            "[... {} bytes of output omitted ...]",
            pushed - HEAD - TAIL
        )));
        assert!(text.starts_with("abcdef"));
        assert_eq!(o.head.len() + o.tail.len(), HEAD + TAIL);
        // A single push larger than the tail.
        let mut o = Output::default();
        o.push(&vec![b'x'; HEAD + TAIL + 10]);
        assert_eq!(o.dropped, 10);
    }
}
