//! The tokenizer of the Starlark subset a rules file is written in: identifiers, string
//! literals (single, double or triple quoted, raw with `r`), numbers, `(`, `)`, `[`, `]`, `,`,
//! `=`, `;`, comments and logical newlines.
//!
//! As in Starlark, a newline inside brackets is not a token (a call may span lines), a
//! backslash at the end of a line joins it to the next, and a statement may not be indented.
//! Tokens are produced one at a time, so the first error in source order is the one reported.
//! Positions are 1-based lines and columns, the column counted in characters.

/// What a token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// A name, such as `prefix_rule` or `True`.
    Ident(String),
    /// A string literal, escapes resolved.
    Str(String),
    /// A number literal, kept as written (no rule takes a number; it is only reported).
    Number(String),
    /// `(`
    LParen,
    /// `)`
    RParen,
    /// `[`
    LBracket,
    /// `]`
    RBracket,
    /// `,`
    Comma,
    /// `=`
    Equals,
    /// `;`
    Semicolon,
    /// The end of a logical line (never inside brackets).
    Newline,
    /// The end of the text.
    Eof,
}

impl TokenKind {
    /// How the token is named in an error message.
    pub(crate) fn describe(&self) -> String {
        match self {
            TokenKind::Ident(name) => format!("`{name}`"),
            TokenKind::Str(_) => "a string".to_string(),
            TokenKind::Number(text) => format!("`{text}`"),
            TokenKind::LParen => "'('".to_string(),
            TokenKind::RParen => "')'".to_string(),
            TokenKind::LBracket => "'['".to_string(),
            TokenKind::RBracket => "']'".to_string(),
            TokenKind::Comma => "','".to_string(),
            TokenKind::Equals => "'='".to_string(),
            TokenKind::Semicolon => "';'".to_string(),
            TokenKind::Newline => "a newline".to_string(),
            TokenKind::Eof => "the end of the file".to_string(),
        }
    }
}

/// A token and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) kind: TokenKind,
    pub(crate) line: usize,
    pub(crate) column: usize,
}

/// A tokenizer error: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LexError {
    pub(crate) line: usize,
    pub(crate) column: usize,
    pub(crate) message: String,
}

/// Produces the tokens of one text, one at a time.
pub(crate) struct Lexer<'a> {
    src: &'a str,
    /// Byte offset of the next character.
    pos: usize,
    line: usize,
    column: usize,
    /// Open brackets; newlines are tokens only at depth 0.
    depth: usize,
    /// Whether the next character starts a line outside brackets (indentation is checked).
    at_line_start: bool,
}

impl<'a> Lexer<'a> {
    /// A lexer at the start of `src`.
    pub(crate) fn new(src: &'a str) -> Lexer<'a> {
        Lexer {
            src,
            pos: 0,
            line: 1,
            column: 1,
            depth: 0,
            at_line_start: true,
        }
    }

    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn peek_nth(&self, n: usize) -> Option<char> {
        self.src[self.pos..].chars().nth(n)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn error(&self, line: usize, column: usize, message: impl Into<String>) -> LexError {
        LexError {
            line,
            column,
            message: message.into(),
        }
    }

    /// Whether a backslash-newline (or backslash-CRLF) starts at the next character.
    fn at_line_continuation(&self) -> bool {
        self.peek() == Some('\\')
            && (self.peek_nth(1) == Some('\n')
                || (self.peek_nth(1) == Some('\r') && self.peek_nth(2) == Some('\n')))
    }

    /// The next token.
    pub(crate) fn next_token(&mut self) -> Result<Token, LexError> {
        loop {
            if self.at_line_start && self.depth == 0 {
                self.at_line_start = false;
                let mut indented = false;
                while matches!(self.peek(), Some(' ' | '\t' | '\x0c')) {
                    self.bump();
                    indented = true;
                }
                let blank = matches!(self.peek(), None | Some('#' | '\n' | '\r'));
                if indented && !blank {
                    return Err(self.error(
                        self.line,
                        self.column,
                        "unexpected indentation: a statement starts at column 1",
                    ));
                }
            }
            let (line, column) = (self.line, self.column);
            let token = |kind| Token { kind, line, column };
            let Some(c) = self.peek() else {
                return Ok(token(TokenKind::Eof));
            };
            match c {
                ' ' | '\t' | '\r' | '\x0c' => {
                    self.bump();
                }
                '#' => {
                    while !matches!(self.peek(), None | Some('\n')) {
                        self.bump();
                    }
                }
                '\\' if self.at_line_continuation() => while self.bump() != Some('\n') {},
                '\n' => {
                    self.bump();
                    if self.depth == 0 {
                        self.at_line_start = true;
                        return Ok(token(TokenKind::Newline));
                    }
                }
                '(' | '[' => {
                    self.bump();
                    self.depth += 1;
                    return Ok(token(if c == '(' {
                        TokenKind::LParen
                    } else {
                        TokenKind::LBracket
                    }));
                }
                ')' | ']' => {
                    self.bump();
                    self.depth = self.depth.saturating_sub(1);
                    return Ok(token(if c == ')' {
                        TokenKind::RParen
                    } else {
                        TokenKind::RBracket
                    }));
                }
                ',' => {
                    self.bump();
                    return Ok(token(TokenKind::Comma));
                }
                '=' => {
                    self.bump();
                    return Ok(token(TokenKind::Equals));
                }
                ';' => {
                    self.bump();
                    return Ok(token(TokenKind::Semicolon));
                }
                '"' | '\'' => return self.string(false).map(|s| token(TokenKind::Str(s))),
                'r' | 'R' if matches!(self.peek_nth(1), Some('"' | '\'')) => {
                    self.bump();
                    return self.string(true).map(|s| token(TokenKind::Str(s)));
                }
                c if c.is_ascii_alphabetic() || c == '_' => {
                    let start = self.pos;
                    while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == '_') {
                        self.bump();
                    }
                    let name = self.src[start..self.pos].to_string();
                    return Ok(token(TokenKind::Ident(name)));
                }
                c if c.is_ascii_digit() => {
                    let start = self.pos;
                    while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == '_' || c == '.')
                    {
                        self.bump();
                    }
                    let text = self.src[start..self.pos].to_string();
                    return Ok(token(TokenKind::Number(text)));
                }
                other => {
                    return Err(self.error(
                        line,
                        column,
                        format!("unexpected character {other:?}"),
                    ));
                }
            }
        }
    }

    /// A string literal whose opening quote is the next character (after any `r` prefix).
    fn string(&mut self, raw: bool) -> Result<String, LexError> {
        // The position of the literal, prefix included, for "unterminated" errors.
        let (line, column) = (self.line, self.column - usize::from(raw));
        let Some(quote) = self.bump() else {
            return Err(self.error(line, column, "unterminated string"));
        };
        let triple = self.peek() == Some(quote) && self.peek_nth(1) == Some(quote);
        if triple {
            self.bump();
            self.bump();
        }
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(self.error(line, column, "unterminated string"));
            };
            if c == quote {
                self.bump();
                if !triple {
                    return Ok(out);
                }
                if self.peek() == Some(quote) && self.peek_nth(1) == Some(quote) {
                    self.bump();
                    self.bump();
                    return Ok(out);
                }
                out.push(c);
                continue;
            }
            if c == '\n' && !triple {
                return Err(self.error(line, column, "unterminated string"));
            }
            if c != '\\' {
                self.bump();
                out.push(c);
                continue;
            }
            let (esc_line, esc_column) = (self.line, self.column);
            self.bump();
            if raw {
                // A raw string keeps the backslash, and the quote or backslash after it does
                // not end the literal.
                out.push('\\');
                if let Some(next) = self.peek() {
                    if next == quote || next == '\\' || (next == '\n' && triple) {
                        self.bump();
                        out.push(next);
                    }
                }
                continue;
            }
            self.escape(&mut out, esc_line, esc_column)?;
        }
    }

    /// Resolves the escape whose backslash was just consumed, appending to `out`.
    fn escape(&mut self, out: &mut String, line: usize, column: usize) -> Result<(), LexError> {
        let invalid = |lexer: &Self, what: String| lexer.error(line, column, what);
        let Some(c) = self.bump() else {
            return Err(self.error(line, column, "unterminated string"));
        };
        let simple = match c {
            '\n' => return Ok(()),
            '\r' if self.peek() == Some('\n') => {
                self.bump();
                return Ok(());
            }
            '\\' => '\\',
            '\'' => '\'',
            '"' => '"',
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            'a' => '\x07',
            'b' => '\x08',
            'f' => '\x0c',
            'v' => '\x0b',
            '0'..='7' => {
                let mut value = c.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    match self.peek().and_then(|d| d.to_digit(8)) {
                        Some(d) => {
                            self.bump();
                            value = value * 8 + d;
                        }
                        None => break,
                    }
                }
                return self.ascii_escape(out, value, line, column);
            }
            'x' | 'u' | 'U' => {
                let digits = match c {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let mut value: u32 = 0;
                for _ in 0..digits {
                    match self.peek().and_then(|d| d.to_digit(16)) {
                        Some(d) => {
                            self.bump();
                            value = value * 16 + d;
                        }
                        None => {
                            return Err(invalid(
                                self,
                                format!("invalid escape sequence: \\{c} needs {digits} hex digits"),
                            ))
                        }
                    }
                }
                if c == 'x' {
                    return self.ascii_escape(out, value, line, column);
                }
                match char::from_u32(value) {
                    Some(ch) => {
                        out.push(ch);
                        return Ok(());
                    }
                    None => {
                        return Err(invalid(
                            self,
                            format!("invalid escape sequence: \\{c}{value:x} is not a character"),
                        ))
                    }
                }
            }
            other => {
                return Err(invalid(
                    self,
                    format!("invalid escape sequence \\{}", other.escape_debug()),
                ))
            }
        };
        out.push(simple);
        Ok(())
    }

    /// Appends an octal or `\x` escape, which must name an ASCII character.
    fn ascii_escape(
        &self,
        out: &mut String,
        value: u32,
        line: usize,
        column: usize,
    ) -> Result<(), LexError> {
        match u8::try_from(value) {
            Ok(byte) if byte.is_ascii() => {
                out.push(char::from(byte));
                Ok(())
            }
            _ => Err(self.error(
                line,
                column,
                "invalid escape sequence: an octal or \\x escape must be ASCII (use \\u for other characters)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Result<Vec<TokenKind>, LexError> {
        let mut lexer = Lexer::new(src);
        let mut out = Vec::new();
        loop {
            let token = lexer.next_token()?;
            if token.kind == TokenKind::Eof {
                return Ok(out);
            }
            out.push(token.kind);
        }
    }

    fn string(src: &str) -> Result<String, LexError> {
        match kinds(src)?.as_slice() {
            [TokenKind::Str(s)] => Ok(s.clone()),
            other => panic!("not one string: {other:?}"),
        }
    }

    fn error(src: &str) -> (usize, usize, String) {
        let err = kinds(src).expect_err("should fail");
        (err.line, err.column, err.message)
    }

    #[test]
    fn tokens_of_a_call_with_comments_and_newlines_inside_brackets() {
        let src = "prefix_rule( # comment\n  pattern = ['a',\n],\n)\n";
        assert_eq!(
            kinds(src).unwrap(),
            vec![
                TokenKind::Ident("prefix_rule".into()),
                TokenKind::LParen,
                TokenKind::Ident("pattern".into()),
                TokenKind::Equals,
                TokenKind::LBracket,
                TokenKind::Str("a".into()),
                TokenKind::Comma,
                TokenKind::RBracket,
                TokenKind::Comma,
                TokenKind::RParen,
                TokenKind::Newline,
            ]
        );
    }

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let mut lexer = Lexer::new("é = 'x'\n  \n[1");
        // `é` is not an identifier character.
        let err = lexer.next_token().unwrap_err();
        assert_eq!((err.line, err.column), (1, 1));
        let mut lexer = Lexer::new("\"é\" = x\n\n[1");
        let mut positions = Vec::new();
        loop {
            let token = lexer.next_token().unwrap();
            positions.push((token.line, token.column));
            if token.kind == TokenKind::Eof {
                break;
            }
        }
        assert_eq!(
            positions,
            vec![
                (1, 1),
                (1, 5),
                (1, 7),
                (1, 8),
                (2, 1),
                (3, 1),
                (3, 2),
                (3, 3)
            ]
        );
    }

    #[test]
    fn quoting_and_escapes() {
        assert_eq!(string(r#""it's""#).unwrap(), "it's");
        assert_eq!(string(r#"'say "hi"'"#).unwrap(), "say \"hi\"");
        assert_eq!(string(r#""a\"b\'c\\d""#).unwrap(), "a\"b'c\\d");
        assert_eq!(
            string(r#""\n\t\r\a\b\f\v""#).unwrap(),
            "\n\t\r\x07\x08\x0c\x0b"
        );
        assert_eq!(
            string(r#""\101\x42\u00e9\U0001F600\0""#).unwrap(),
            "ABé😀\0"
        );
        assert_eq!(string("\"a\\\nb\"").unwrap(), "ab");
        assert_eq!(string(r#"r"a\d\"""#).unwrap(), "a\\d\\\"");
        assert_eq!(string(r"R'\\'").unwrap(), "\\\\");
        assert_eq!(string("'''a\n'b'\"'''").unwrap(), "a\n'b'\"");
        assert_eq!(string(r#""""x""y""""#).unwrap(), "x\"\"y");
        assert_eq!(string("''").unwrap(), "");
    }

    #[test]
    fn invalid_strings_name_their_position() {
        assert_eq!(error("x = 'abc"), (1, 5, "unterminated string".into()));
        assert_eq!(error("'ab\nc'"), (1, 1, "unterminated string".into()));
        assert_eq!(
            error("x = [\n  r'''ab"),
            (2, 3, "unterminated string".into())
        );
        assert_eq!(error("[r'''ab"), (1, 2, "unterminated string".into()));
        assert_eq!(
            error(r#"["a\q"]"#),
            (1, 4, "invalid escape sequence \\q".into())
        );
        assert_eq!(
            error(r#"["\x4"]"#).2,
            "invalid escape sequence: \\x needs 2 hex digits"
        );
        assert!(error(r#"["\xff"]"#).2.contains("must be ASCII"));
        assert!(error(r#"["\400"]"#).2.contains("must be ASCII"));
        assert!(error(r#"["\ud800"]"#).2.contains("is not a character"));
    }

    #[test]
    fn unexpected_characters_and_indentation() {
        assert_eq!(error("a + b"), (1, 3, "unexpected character '+'".into()));
        assert_eq!(error("[\n  {"), (2, 3, "unexpected character '{'".into()));
        assert_eq!(
            error("a\n  b"),
            (
                2,
                3,
                "unexpected indentation: a statement starts at column 1".into()
            )
        );
        // Indented blank and comment lines, and indentation inside brackets, are fine.
        assert!(kinds("  \n    # note\n[\n    1]\r\n").is_ok());
    }

    #[test]
    fn backslash_joins_lines_outside_strings() {
        assert_eq!(
            kinds("a \\\n= 1").unwrap(),
            vec![
                TokenKind::Ident("a".into()),
                TokenKind::Equals,
                TokenKind::Number("1".into())
            ]
        );
        assert_eq!(
            error("a \\ b"),
            (1, 3, "unexpected character '\\\\'".into())
        );
    }
}
