//! The grammar of a rules file: a sequence of calls `name(key = value, ...)`, each value a
//! string or a list of values, statements separated by newlines or `;`.
//!
//! This stage only checks the shape of the text; which function and which keyword arguments
//! are allowed, and the types of their values, are checked by `rule`. As in Starlark, the
//! whole file is parsed before any rule is built, so a syntax error anywhere is reported
//! before a wrong argument.

use crate::lexer::{LexError, Lexer, Token, TokenKind};

/// How deep lists may nest. No valid rule needs more than two levels; the bound keeps the
/// recursive descent's stack small whatever the input.
const MAX_LIST_DEPTH: usize = 8;

/// A call statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Call {
    pub(crate) name: String,
    pub(crate) line: usize,
    pub(crate) column: usize,
    pub(crate) args: Vec<Arg>,
}

/// A keyword argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Arg {
    pub(crate) name: String,
    pub(crate) line: usize,
    pub(crate) column: usize,
    pub(crate) value: Value,
}

/// An argument value and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Value {
    pub(crate) line: usize,
    pub(crate) column: usize,
    pub(crate) kind: ValueKind,
}

/// What a value is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ValueKind {
    /// A string literal.
    Str(String),
    /// A list literal.
    List(Vec<Value>),
    /// A name or number, which no argument accepts; kept as written for the error message.
    Other(String),
}

/// Parses a whole text into its calls, or the first syntax error.
pub(crate) fn parse(src: &str) -> Result<Vec<Call>, LexError> {
    let mut parser = Parser {
        lexer: Lexer::new(src),
        peeked: None,
    };
    parser.file()
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    peeked: Option<Token>,
}

fn error_at(token: &Token, message: impl Into<String>) -> LexError {
    LexError {
        line: token.line,
        column: token.column,
        message: message.into(),
    }
}

impl Parser<'_> {
    fn peek(&mut self) -> Result<&Token, LexError> {
        let token = match self.peeked.take() {
            Some(token) => token,
            None => self.lexer.next_token()?,
        };
        Ok(self.peeked.insert(token))
    }

    fn next(&mut self) -> Result<Token, LexError> {
        match self.peeked.take() {
            Some(token) => Ok(token),
            None => self.lexer.next_token(),
        }
    }

    fn file(&mut self) -> Result<Vec<Call>, LexError> {
        let mut calls = Vec::new();
        loop {
            let token = self.next()?;
            match token.kind {
                TokenKind::Eof => return Ok(calls),
                TokenKind::Newline | TokenKind::Semicolon => {}
                TokenKind::Ident(name) => {
                    calls.push(self.call(name, token.line, token.column)?);
                    let after = self.next()?;
                    if !matches!(
                        after.kind,
                        TokenKind::Newline | TokenKind::Semicolon | TokenKind::Eof
                    ) {
                        return Err(error_at(&after, "expected a newline or ';' after ')'"));
                    }
                }
                _ => {
                    return Err(error_at(&token, "expected a prefix_rule(...) call"));
                }
            }
        }
    }

    /// The rest of a call whose name was just read.
    fn call(&mut self, name: String, line: usize, column: usize) -> Result<Call, LexError> {
        let open = self.next()?;
        if open.kind != TokenKind::LParen {
            return Err(error_at(
                &open,
                format!(
                    "expected '(' after `{name}`: a rules file holds only prefix_rule(...) calls"
                ),
            ));
        }
        let mut args = Vec::new();
        loop {
            let token = self.next()?;
            let arg_name = match token.kind {
                TokenKind::RParen => break,
                TokenKind::Ident(arg_name) => arg_name,
                _ => {
                    return Err(error_at(
                        &token,
                        "expected a keyword argument such as pattern = [...], or ')'",
                    ))
                }
            };
            let equals = self.next()?;
            if equals.kind != TokenKind::Equals {
                return Err(error_at(
                    &equals,
                    format!("expected '=' after `{arg_name}`: arguments are passed by keyword"),
                ));
            }
            let value = self.value(0)?;
            args.push(Arg {
                name: arg_name,
                line: token.line,
                column: token.column,
                value,
            });
            let sep = self.next()?;
            match sep.kind {
                TokenKind::Comma => {}
                TokenKind::RParen => break,
                _ => return Err(error_at(&sep, "expected ',' or ')'")),
            }
        }
        Ok(Call {
            name,
            line,
            column,
            args,
        })
    }

    /// A value: a string, a list, or a name or number (rejected later with its position).
    fn value(&mut self, depth: usize) -> Result<Value, LexError> {
        let token = self.next()?;
        let kind = match token.kind {
            TokenKind::Str(s) => ValueKind::Str(s),
            TokenKind::Ident(text) | TokenKind::Number(text) => ValueKind::Other(text),
            TokenKind::LBracket => {
                if depth >= MAX_LIST_DEPTH {
                    return Err(error_at(&token, "lists nested too deeply"));
                }
                let mut items = Vec::new();
                loop {
                    if self.peek()?.kind == TokenKind::RBracket {
                        self.next()?;
                        break;
                    }
                    items.push(self.value(depth + 1)?);
                    let sep = self.next()?;
                    match sep.kind {
                        TokenKind::Comma => {}
                        TokenKind::RBracket => break,
                        _ => return Err(error_at(&sep, "expected ',' or ']'")),
                    }
                }
                ValueKind::List(items)
            }
            other => {
                return Err(LexError {
                    line: token.line,
                    column: token.column,
                    message: format!("expected a string or a list, found {}", other.describe()),
                })
            }
        };
        Ok(Value {
            line: token.line,
            column: token.column,
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(src: &str) -> (usize, usize, String) {
        let err = parse(src).expect_err("should fail");
        (err.line, err.column, err.message)
    }

    fn s(line: usize, column: usize, text: &str) -> Value {
        Value {
            line,
            column,
            kind: ValueKind::Str(text.into()),
        }
    }

    #[test]
    fn parses_calls_with_keyword_arguments_over_several_lines() {
        let src = "# rules\n\nprefix_rule(\n    pattern = [\"git\", ['status', \"diff\",],],\n    decision='prompt',\n)\nprefix_rule(pattern=[\"ls\"]); prefix_rule(pattern=[], x=True)\n";
        let calls = parse(src).unwrap();
        assert_eq!(calls.len(), 3);
        assert_eq!((calls[0].line, calls[0].column), (3, 1));
        assert_eq!(calls[0].args.len(), 2);
        assert_eq!(calls[0].args[0].name, "pattern");
        assert_eq!(
            calls[0].args[0].value,
            Value {
                line: 4,
                column: 15,
                kind: ValueKind::List(vec![
                    s(4, 16, "git"),
                    Value {
                        line: 4,
                        column: 23,
                        kind: ValueKind::List(vec![s(4, 24, "status"), s(4, 34, "diff")]),
                    },
                ]),
            }
        );
        assert_eq!((calls[0].args[1].line, calls[0].args[1].column), (5, 5));
        assert_eq!((calls[2].line, calls[2].column), (7, 30));
        assert_eq!(calls[2].args[1].value.kind, ValueKind::Other("True".into()));
    }

    #[test]
    fn empty_text_and_comments_only_have_no_calls() {
        assert_eq!(parse("").unwrap(), vec![]);
        assert_eq!(parse("# nothing\n\n   # here\n").unwrap(), vec![]);
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        assert_eq!(
            error("prefix_rule(\n    pattern = [\"git\",\n        \"push\" \"x\"],\n)"),
            (3, 16, "expected ',' or ']'".into())
        );
        assert_eq!(
            error("prefix_rule(pattern=[\"a\"] decision=\"allow\")"),
            (1, 27, "expected ',' or ')'".into())
        );
        assert_eq!(
            error("prefix_rule(pattern=[\"a\"]"),
            (1, 26, "expected ',' or ')'".into())
        );
        assert_eq!(
            error("prefix_rule([\"git\"])"),
            (
                1,
                13,
                "expected a keyword argument such as pattern = [...], or ')'".into()
            )
        );
        assert_eq!(
            error("prefix_rule(pattern)"),
            (
                1,
                20,
                "expected '=' after `pattern`: arguments are passed by keyword".into()
            )
        );
        assert_eq!(
            error("x = 1"),
            (
                1,
                3,
                "expected '(' after `x`: a rules file holds only prefix_rule(...) calls".into()
            )
        );
        assert_eq!(
            error("prefix_rule(pattern=[\"a\"]) prefix_rule(pattern=[\"b\"])"),
            (1, 28, "expected a newline or ';' after ')'".into())
        );
        assert_eq!(
            error("\"a\""),
            (1, 1, "expected a prefix_rule(...) call".into())
        );
        assert_eq!(
            error("prefix_rule(pattern=)"),
            (1, 21, "expected a string or a list, found ')'".into())
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let src = format!("prefix_rule(pattern={})", "[".repeat(100_000));
        assert_eq!(error(&src), (1, 29, "lists nested too deeply".into()));
    }
}
