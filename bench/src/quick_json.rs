//! A borrowed JSON reader for the stream measurements' replies and notifications.
//!
//! The streams carry 256 MiB of output as ~340 MB of base64 strings. serde_json scans every
//! string byte by byte for escapes; on the 2-vCPU machines we measure on, that scan was a
//! quarter of the bench client's CPU and took CPU away from the server under test, the same
//! for every server (it only compressed ratios). Here strings are delimited with `memchr`
//! (SIMD) instead. Strings are kept raw: one holding a backslash is marked `escaped`, and the
//! callers, which only need base64 and ids, refuse it and fall back to serde.
//!
//! It reads bytes, not `str`: the stream measurements receive messages straight from the
//! socket, and a UTF-8 check of every base64 chunk would be one more pass over the stream.
//! Strings are checked when a caller asks for them as `str` (ids and method names).
//!
//! This is a measuring instrument, not a validator: it accepts what a server writes and fails
//! (`None`) on anything else, whereupon the caller parses the text with serde_json.

/// A JSON value, borrowing its strings and numbers from the text.
#[derive(Debug, PartialEq)]
pub(crate) enum Json<'a> {
    Null,
    Bool(bool),
    /// The number's text.
    Num(&'a [u8]),
    /// The string's raw bytes between the quotes, and whether they hold escapes.
    Str {
        raw: &'a [u8],
        escaped: bool,
    },
    Arr(Vec<Json<'a>>),
    Obj(Vec<(&'a [u8], Json<'a>)>),
}

impl<'a> Json<'a> {
    /// Parses a whole text; `None` if it is not JSON as servers write it.
    pub(crate) fn parse(text: &'a [u8]) -> Option<Json<'a>> {
        let mut p = Parser { text, at: 0 };
        let value = p.value(0)?;
        p.ws();
        (p.at == text.len()).then_some(value)
    }

    /// The member `key` of an object.
    pub(crate) fn get(&self, key: &str) -> Option<&Json<'a>> {
        match self {
            Json::Obj(members) => members
                .iter()
                .find(|(k, _)| *k == key.as_bytes())
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// A string without escapes, as bytes (not checked to be UTF-8).
    pub(crate) fn bytes(&self) -> Option<&'a [u8]> {
        match self {
            Json::Str {
                raw,
                escaped: false,
            } => Some(raw),
            _ => None,
        }
    }

    /// A UTF-8 string without escapes.
    pub(crate) fn str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }

    pub(crate) fn u64(&self) -> Option<u64> {
        match self {
            Json::Num(n) => std::str::from_utf8(n).ok()?.parse().ok(),
            _ => None,
        }
    }

    pub(crate) fn bool(&self) -> Option<bool> {
        match self {
            Json::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub(crate) fn array(&self) -> Option<&[Json<'a>]> {
        match self {
            Json::Arr(items) => Some(items),
            _ => None,
        }
    }
}

/// Nesting deeper than this is refused (servers' messages are a few levels deep).
const MAX_DEPTH: usize = 32;

struct Parser<'a> {
    text: &'a [u8],
    at: usize,
}

impl<'a> Parser<'a> {
    fn ws(&mut self) {
        let bytes = self.text;
        while self.at < bytes.len() && matches!(bytes[self.at], b' ' | b'\t' | b'\n' | b'\r') {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.text.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    fn value(&mut self, depth: usize) -> Option<Json<'a>> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.string(),
            b'{' => {
                self.at += 1;
                let mut members = Vec::new();
                if self.eat(b'}').is_some() {
                    return Some(Json::Obj(members));
                }
                loop {
                    let key = self.string()?.bytes()?;
                    self.eat(b':')?;
                    members.push((key, self.value(depth + 1)?));
                    match self.peek()? {
                        b',' => self.at += 1,
                        b'}' => {
                            self.at += 1;
                            return Some(Json::Obj(members));
                        }
                        _ => return None,
                    }
                }
            }
            b'[' => {
                self.at += 1;
                let mut items = Vec::new();
                if self.eat(b']').is_some() {
                    return Some(Json::Arr(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    match self.peek()? {
                        b',' => self.at += 1,
                        b']' => {
                            self.at += 1;
                            return Some(Json::Arr(items));
                        }
                        _ => return None,
                    }
                }
            }
            _ => self.scalar(),
        }
    }

    /// A string starting at the current `"`.
    fn string(&mut self) -> Option<Json<'a>> {
        self.eat(b'"')?;
        let bytes = self.text;
        let start = self.at;
        let mut escaped = false;
        loop {
            let i = self.at + memchr::memchr2(b'"', b'\\', &bytes[self.at..])?;
            if bytes[i] == b'"' {
                self.at = i + 1;
                let raw = self.text.get(start..i)?;
                return Some(Json::Str { raw, escaped });
            }
            escaped = true;
            self.at = i + 2; // the backslash and the escaped character
            if self.at > bytes.len() {
                return None;
            }
        }
    }

    fn scalar(&mut self) -> Option<Json<'a>> {
        let bytes = self.text;
        let start = self.at;
        while self.at < bytes.len()
            && matches!(bytes[self.at], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E' | b'a'..=b'z')
        {
            self.at += 1;
        }
        match self.text.get(start..self.at)? {
            b"null" => Some(Json::Null),
            b"true" => Some(Json::Bool(true)),
            b"false" => Some(Json::Bool(false)),
            n if matches!(n.first(), Some(b'-' | b'0'..=b'9')) => Some(Json::Num(n)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_servers_write() {
        let text = r#" {"id":3,"result":{"chunks":[{"seq":1,"stream":"stdout","chunk":"QUJD"}],
            "nextSeq":2,"closed":false,"gap":null,"x":[-1.5e3,true,{}],"e":"a\"b\\"}} "#;
        let v = Json::parse(text.as_bytes()).expect("parsed");
        let result = v.get("result").unwrap();
        let chunks = result.get("chunks").unwrap().array().unwrap();
        assert_eq!(chunks[0].get("chunk").unwrap().str(), Some("QUJD"));
        assert_eq!(chunks[0].get("seq").unwrap().u64(), Some(1));
        assert_eq!(result.get("nextSeq").unwrap().u64(), Some(2));
        assert_eq!(result.get("closed").unwrap().bool(), Some(false));
        assert_eq!(result.get("gap"), Some(&Json::Null));
        assert_eq!(result.get("e").unwrap().str(), None, "escaped");
        assert_eq!(
            result.get("e"),
            Some(&Json::Str {
                raw: br#"a\"b\\"#,
                escaped: true
            })
        );
    }

    #[test]
    fn refuses_what_is_not_json() {
        for bad in [
            "",
            "{",
            r#"{"a":1"#,
            r#"{"a" 1}"#,
            r#"{"a":"x}"#,
            "[1,]",
            "nul",
            r#"{"a":1}x"#,
            r#""\"#,
        ] {
            assert_eq!(Json::parse(bad.as_bytes()), None, "{bad:?}");
        }
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(Json::parse(deep.as_bytes()), None);
        assert_eq!(Json::parse(b"\"\xff\"").unwrap().str(), None, "not UTF-8");
        assert_eq!(
            Json::parse(b"\"\xff\"").unwrap().bytes(),
            Some(&b"\xff"[..])
        );
    }
}
