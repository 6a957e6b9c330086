//! An incremental Server-Sent Events parser (the WHATWG `text/event-stream` rules) that turns
//! body chunks into [`Sse`] events as they arrive, and [`sse_events`], which runs it over an
//! [`HttpBody`].
//!
//! Chunk boundaries may fall anywhere, even inside a `\r\n` or a UTF-8 sequence: the parser
//! keeps only the unfinished line and the event being built.
//!
//! **Bound:** the bytes the parser holds (the unfinished line plus every retained field of the
//! current event) never exceed `max_event_size`; a stream that would need more fails with
//! [`EventTooLarge`] (wrapped in `SseError::Body`) and yields nothing after it. Comment lines
//! (`: keep-alive`) count only while they are unfinished. Besides that bound, one chunk's worth
//! of parsed events is queued before they are handed on.
//!
//! Dispatch follows what rmcp's own parser (sse-stream) produces: an event is dispatched at a
//! blank line when any field (`data`, `event`, `id`, `retry`) was set since the last one, so an
//! `id`-only priming event reaches the transport's resumption logic. Unlike sse-stream, a line
//! without a colon is a field with an empty value (the WHATWG rule), a repeated `event`/`id`
//! replaces the earlier one, and a malformed `retry` is ignored instead of failing the stream.

use std::collections::VecDeque;

use bytes::Bytes;
use exec_server_core::http::HttpBody;
use futures::stream::BoxStream;
use sse_stream::{Error as SseError, Sse};

/// Bytes a UTF-8 byte order mark takes at the start of a stream.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A line or an event larger than the configured bound.
#[derive(Debug, thiserror::Error)]
#[error("SSE event exceeded the maximum size of {max_size} bytes")]
pub struct EventTooLarge {
    /// The bound.
    pub max_size: usize,
}

/// The parser: feed it chunks, take events out.
#[derive(Debug)]
pub struct SseParser {
    max_event_size: usize,
    /// The unfinished line (without its terminator).
    line: Vec<u8>,
    /// The last byte fed was `\r`: a `\n` right after it ends nothing.
    after_cr: bool,
    /// No line has ended yet, so a leading BOM is still to be dropped.
    at_start: bool,
    /// The event being built.
    event: Option<Sse>,
    /// Bytes the current event retains.
    event_size: usize,
    failed: bool,
}

impl SseParser {
    /// A parser that holds at most `max_event_size` bytes (see the module's bound).
    pub fn new(max_event_size: usize) -> Self {
        SseParser {
            max_event_size,
            line: Vec::new(),
            after_cr: false,
            at_start: true,
            event: None,
            event_size: 0,
            failed: false,
        }
    }

    /// Parses `chunk`, appending the events it completes to `out`. After an error the parser
    /// accepts nothing more.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut VecDeque<Sse>) -> Result<(), SseError> {
        if self.failed {
            return Ok(());
        }
        let result = (|| {
            while !chunk.is_empty() {
                if self.after_cr {
                    self.after_cr = false;
                    if chunk[0] == b'\n' {
                        chunk = &chunk[1..];
                        continue;
                    }
                }
                match chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
                    Some(end) => {
                        self.push_line_bytes(&chunk[..end])?;
                        self.after_cr = chunk[end] == b'\r';
                        chunk = &chunk[end + 1..];
                        self.end_line(out)?;
                    }
                    None => {
                        self.push_line_bytes(chunk)?;
                        chunk = &[];
                    }
                }
            }
            Ok(())
        })();
        if result.is_err() {
            self.failed = true;
            self.line = Vec::new();
            self.event = None;
        }
        result
    }

    fn push_line_bytes(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.event_size + self.line.len() + bytes.len() > self.max_event_size {
            return Err(self.too_large());
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn too_large(&self) -> SseError {
        SseError::Body(Box::new(EventTooLarge {
            max_size: self.max_event_size,
        }))
    }

    fn end_line(&mut self, out: &mut VecDeque<Sse>) -> Result<(), SseError> {
        let mut line = std::mem::take(&mut self.line);
        let mut body: &[u8] = &line;
        if self.at_start {
            self.at_start = false;
            body = body.strip_prefix(BOM).unwrap_or(body);
        }
        let result = self.field(body, out);
        line.clear();
        // Keep a reasonably sized buffer for the next line; give back a huge one.
        if line.capacity() <= 64 * 1024 {
            self.line = line;
        }
        result
    }

    fn field(&mut self, line: &[u8], out: &mut VecDeque<Sse>) -> Result<(), SseError> {
        if line.is_empty() {
            if let Some(event) = self.event.take() {
                out.push_back(event);
            }
            self.event_size = 0;
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        let text = || std::str::from_utf8(value).map_err(SseError::Utf8Parse);
        match name {
            b"data" => {
                let value = text()?;
                let event = self.event.get_or_insert_with(Sse::default);
                match event.data.as_mut() {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                        self.event_size += value.len() + 1;
                    }
                    None => {
                        event.data = Some(value.to_string());
                        self.event_size += value.len();
                    }
                }
            }
            b"event" => {
                let value = text()?.to_string();
                let event = self.event.get_or_insert_with(Sse::default);
                self.event_size += value.len();
                event.event = Some(value);
            }
            // An id with NUL is ignored (WHATWG).
            b"id" if !value.contains(&0) => {
                let value = text()?.to_string();
                let event = self.event.get_or_insert_with(Sse::default);
                self.event_size += value.len();
                event.id = Some(value);
            }
            // A retry that is not all digits is ignored.
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                if let Ok(ms) = text()?.parse::<u64>() {
                    self.event.get_or_insert_with(Sse::default).retry = Some(ms);
                }
            }
            _ => {}
        }
        if self.event_size > self.max_event_size {
            return Err(self.too_large());
        }
        Ok(())
    }
}

/// The events of an SSE response body, parsed as its chunks arrive. A body error ends the
/// stream with `SseError::Body` holding the [`HttpError`](exec_server_core::http::HttpError);
/// an event cut off by the end of the body is dropped (WHATWG rule).
pub fn sse_events(
    body: HttpBody,
    max_event_size: usize,
) -> BoxStream<'static, Result<Sse, SseError>> {
    struct State {
        body: HttpBody,
        parser: SseParser,
        ready: VecDeque<Sse>,
        done: bool,
    }
    let state = State {
        body,
        parser: SseParser::new(max_event_size),
        ready: VecDeque::new(),
        done: false,
    };
    Box::pin(futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(event) = s.ready.pop_front() {
                return Some((Ok(event), s));
            }
            if s.done {
                return None;
            }
            match s.body.next_chunk().await {
                None => return None,
                Some(Err(e)) => {
                    s.done = true;
                    return Some((Err(SseError::Body(Box::new(e))), s));
                }
                Some(Ok(chunk)) => {
                    let chunk: Bytes = chunk;
                    if let Err(e) = s.parser.feed(&chunk, &mut s.ready) {
                        s.done = true;
                        s.ready.clear();
                        return Some((Err(e), s));
                    }
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use proptest::prelude::*;

    fn parse_all(chunks: &[&[u8]], max: usize) -> (Vec<Sse>, Option<String>) {
        let mut p = SseParser::new(max);
        let mut out = VecDeque::new();
        for c in chunks {
            if let Err(e) = p.feed(c, &mut out) {
                return (out.into(), Some(e.to_string()));
            }
        }
        (out.into(), None)
    }

    fn data(d: &str) -> Sse {
        Sse::default().data(d)
    }

    #[test]
    fn parses_fields_and_joins_data_lines() {
        let (events, err) = parse_all(
            &[b"event: message\ndata: {\"a\":1}\ndata:two\nid: 7\nretry: 300\n\n"],
            1024,
        );
        assert_eq!(err, None);
        assert_eq!(
            events,
            [Sse::default()
                .event("message")
                .data("{\"a\":1}\ntwo")
                .id("7")
                .retry(300)]
        );
    }

    #[test]
    fn every_line_ending_works_and_crlf_split_across_chunks_is_one_ending() {
        let (events, _) = parse_all(&[b"data: a\r", b"\n\r", b"\ndata: b\r\rdata: c\n\n"], 1024);
        assert_eq!(events, [data("a"), data("b"), data("c")]);
    }

    #[test]
    fn comments_unknown_fields_and_bare_names() {
        let (events, _) = parse_all(
            &[b": keep-alive\n\nfoo: bar\ndata\n\ndata\ndata\n\nretry: 1x\nid: a\0b\n\n"],
            1024,
        );
        assert_eq!(events, [data(""), data("\n")]);
    }

    #[test]
    fn id_only_priming_event_is_dispatched_and_bom_is_dropped() {
        let (events, _) = parse_all(&[b"\xEF\xBB", b"\xBFid: 0\nretry: 5\n\n"], 1024);
        assert_eq!(events, [Sse::default().id("0").retry(5)]);
    }

    #[test]
    fn utf8_split_inside_a_character_is_fine_and_invalid_utf8_fails() {
        let text = "data: héllo\n\n".as_bytes();
        let (events, _) = parse_all(&[&text[..8], &text[8..]], 1024);
        assert_eq!(events, [data("héllo")]);
        let (_, err) = parse_all(&[b"data: \xff\n\n"], 1024);
        assert!(err.expect("fails").contains("utf8"));
    }

    #[test]
    fn an_unfinished_line_is_bounded() {
        let mut p = SseParser::new(16);
        let mut out = VecDeque::new();
        p.feed(b"data: 0123456789", &mut out).expect("fits");
        let err = p.feed(b"abcdef", &mut out).expect_err("too long");
        assert_eq!(
            err.to_string(),
            "body error: SSE event exceeded the maximum size of 16 bytes"
        );
        // Nothing more after an error.
        p.feed(b"\n\ndata: x\n\n", &mut out).expect("ignored");
        assert!(out.is_empty());
    }

    #[test]
    fn an_event_of_many_small_lines_is_bounded() {
        let (events, err) = parse_all(&[b"data: 12345\ndata: 12345\ndata: 12345\n\n"], 16);
        assert!(events.is_empty());
        assert!(err.expect("fails").contains("maximum size of 16"));
        // Each event alone fits: the size is per event.
        let (events, err) = parse_all(&[b"data: 1234567890\n\ndata: 1234567890\n\n"], 16);
        assert_eq!(err, None);
        assert_eq!(events.len(), 2);
    }

    #[tokio::test]
    async fn events_stream_from_a_body_and_errors_end_it() {
        use exec_server_core::http::HttpError;
        let items: Vec<Result<Bytes, HttpError>> = vec![
            Ok(Bytes::from_static(b"data: 1\n\nda")),
            Ok(Bytes::from_static(b"ta: 2\n\ndata: cut")),
            Err(HttpError::Body {
                cause: ": executor connection closed".into(),
            }),
        ];
        let body = HttpBody::new(futures::stream::iter(items), None);
        let got: Vec<_> = sse_events(body, 1024).collect().await;
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].as_ref().expect("one"), &data("1"));
        assert_eq!(got[1].as_ref().expect("two"), &data("2"));
        let err = got[2].as_ref().expect_err("error").to_string();
        assert!(err.contains("executor connection closed"), "{err}");
    }

    /// A stream with every SSE feature, to be split at arbitrary points.
    const SAMPLE: &[u8] =
        b"\xEF\xBB\xBF: hi\r\nevent: a\r\ndata: x\xc3\xa9\r\n\r\nid: 1\nretry: 9\n\n\
data: multi\rdata: line\r\rdata\n\nevent:b\ndata:{\"k\":\"v\"}\nid:2\n\n: trailing comment\n";

    proptest! {
        #[test]
        fn splitting_anywhere_gives_the_same_events(cuts in proptest::collection::vec(0..SAMPLE.len(), 0..12)) {
            let (whole, err) = parse_all(&[SAMPLE], 1024);
            prop_assert_eq!(err, None);
            prop_assert_eq!(whole.len(), 5);
            let mut cuts = cuts;
            cuts.sort_unstable();
            let mut pieces: Vec<&[u8]> = Vec::new();
            let mut at = 0;
            for c in cuts {
                pieces.push(&SAMPLE[at..c]);
                at = c;
            }
            pieces.push(&SAMPLE[at..]);
            let (split, err) = parse_all(&pieces, 1024);
            prop_assert_eq!(err, None);
            prop_assert_eq!(split, whole);
        }
    }

    #[test]
    fn byte_by_byte_is_the_same_as_whole() {
        let pieces: Vec<&[u8]> = SAMPLE.chunks(1).collect();
        assert_eq!(parse_all(&pieces, 1024), parse_all(&[SAMPLE], 1024));
    }
}
